// Uploads with progress: XMLHttpRequest, because fetch() reports no upload progress.

import { ApiError } from "./api.js";

function parseError(xhr) {
  let body = null;
  try {
    body = JSON.parse(xhr.responseText);
  } catch {
    // not JSON
  }
  const detail =
    body && typeof body.detail === "string"
      ? body.detail
      : `the server answered ${xhr.status} ${xhr.statusText}`.trim();
  const code = body && typeof body.code === "string" ? body.code : `http_${xhr.status}`;
  return new ApiError(xhr.status, detail, code, (body && body.errors) || []);
}

function send(file, fields, token, onProgress, signal) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    const form = new FormData();
    // Options first, then the file: the server reads fields either way, but this order lets it
    // see them before the (large) file part.
    for (const [name, value] of Object.entries(fields)) form.append(name, value);
    form.append("file", file, file.name);
    xhr.open("POST", "/v1/jobs");
    xhr.setRequestHeader("authorization", `Bearer ${token}`);
    xhr.upload.addEventListener("progress", (event) => {
      onProgress(event.loaded, event.lengthComputable ? event.total : file.size);
    });
    xhr.addEventListener("load", () => {
      if (xhr.status === 202 || xhr.status === 201 || xhr.status === 200) {
        try {
          resolve(JSON.parse(xhr.responseText));
        } catch {
          reject(new ApiError(xhr.status, "the server sent an unreadable answer", "bad_reply"));
        }
      } else {
        reject(parseError(xhr));
      }
    });
    xhr.addEventListener("error", () =>
      reject(new ApiError(0, "the upload was interrupted; check your connection", "offline")),
    );
    xhr.addEventListener("abort", () =>
      reject(new ApiError(0, "upload cancelled", "upload_cancelled")),
    );
    if (signal) {
      if (signal.aborted) {
        xhr.abort();
      } else {
        signal.addEventListener("abort", () => xhr.abort(), { once: true });
      }
    }
    xhr.send(form);
  });
}

/**
 * Upload one file as a new job; resolves with the job. A 401 (token expired during a long
 * queue) refreshes once and retries from the start.
 */
export async function uploadFile(session, file, fields, onProgress, signal) {
  let token = await session.accessToken();
  try {
    return await send(file, fields, token, onProgress, signal);
  } catch (error) {
    if (!(error instanceof ApiError) || error.status !== 401) throw error;
    token = await session.accessToken(token);
    onProgress(0, file.size);
    return send(file, fields, token, onProgress, signal);
  }
}
