// Resumable uploads: a tus 1.0.0 client for /v1/uploads (creation, HEAD, PATCH, termination).
//
// Each unfinished upload is remembered in localStorage under the file's name, size and date
// (and the account), so that after a dropped connection, or a reload and the same file picked
// again, the upload goes on from the offset the server holds instead of from the start.

import { ApiError, errorFrom } from "./api.js";

const STORE_KEY = "video2mp3.uploads";
const TUS = { "tus-resumable": "1.0.0" };
// Waits before each new attempt after a dropped connection or a busy server.
const RETRY_DELAYS_MS = [0, 1000, 3000, 5000, 10000];
const RETRY_STATUSES = new Set([0, 409, 423, 429, 500, 502, 503, 504]);

function fingerprint(owner, file) {
  return JSON.stringify([owner, file.name, file.size, file.lastModified]);
}

function remembered() {
  try {
    const parsed = JSON.parse(localStorage.getItem(STORE_KEY) || "{}");
    return parsed && typeof parsed === "object" && !Array.isArray(parsed) ? parsed : {};
  } catch {
    return {};
  }
}

function remember(key, url) {
  localStorage.setItem(STORE_KEY, JSON.stringify({ ...remembered(), [key]: url }));
}

function forget(key) {
  const all = remembered();
  delete all[key];
  localStorage.setItem(STORE_KEY, JSON.stringify(all));
}

function base64(text) {
  let binary = "";
  for (const byte of new TextEncoder().encode(text)) binary += String.fromCharCode(byte);
  return btoa(binary);
}

function metadata(fields) {
  return Object.entries(fields)
    .map(([key, value]) => `${key} ${base64(String(value))}`)
    .join(",");
}

function sleep(ms, signal) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(resolve, ms);
    signal?.addEventListener(
      "abort",
      () => {
        clearTimeout(timer);
        reject(new ApiError(0, "upload cancelled", "upload_cancelled"));
      },
      { once: true },
    );
  });
}

function xhrError(xhr) {
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

/** One PATCH of the file from `offset`; resolves with the server's new offset and job id. */
function patch(token, url, file, offset, onProgress, signal) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open("PATCH", url);
    xhr.setRequestHeader("authorization", `Bearer ${token}`);
    xhr.setRequestHeader("tus-resumable", TUS["tus-resumable"]);
    xhr.setRequestHeader("upload-offset", String(offset));
    xhr.setRequestHeader("content-type", "application/offset+octet-stream");
    xhr.upload.addEventListener("progress", (event) => onProgress(offset + event.loaded, file.size));
    xhr.addEventListener("load", () => {
      if (xhr.status === 204) {
        resolve({
          offset: Number(xhr.getResponseHeader("upload-offset")),
          jobId: xhr.getResponseHeader("job-id"),
        });
      } else {
        reject(xhrError(xhr));
      }
    });
    xhr.addEventListener("error", () =>
      reject(new ApiError(0, "the upload was interrupted; check your connection", "offline")),
    );
    xhr.addEventListener("abort", () =>
      reject(new ApiError(0, "upload cancelled", "upload_cancelled")),
    );
    if (signal?.aborted) return reject(new ApiError(0, "upload cancelled", "upload_cancelled"));
    signal?.addEventListener("abort", () => xhr.abort(), { once: true });
    xhr.send(file.slice(offset));
  });
}

/** Where the server stands: `{offset, jobId}`, or null when it no longer knows the upload. */
async function status(session, url, signal) {
  const response = await session.fetch(url, { method: "HEAD", headers: TUS, signal });
  if (response.status === 404 || response.status === 410) return null;
  if (!response.ok) throw await errorFrom(response);
  return {
    offset: Number(response.headers.get("upload-offset")),
    jobId: response.headers.get("job-id"),
  };
}

async function create(session, file, fields, signal) {
  const response = await session.fetch("/v1/uploads", {
    method: "POST",
    headers: {
      ...TUS,
      "upload-length": String(file.size),
      "upload-metadata": metadata({ filename: file.name, ...fields }),
    },
    signal,
  });
  if (response.status !== 201) throw await errorFrom(response);
  return response.headers.get("location");
}

/**
 * Upload `file` with conversion options `fields`, resuming an unfinished upload of the same
 * file; resolves with the id of the job its last byte made. Cancelling (`signal`) terminates
 * the upload on the server.
 */
export async function resumableUpload(session, file, fields, onProgress, signal) {
  const key = fingerprint(session.email, file);
  let url = remembered()[key] ?? null;
  let state = url ? await status(session, url, signal) : null;
  if (!state) {
    url = await create(session, file, fields, signal);
    remember(key, url);
    state = { offset: 0, jobId: null };
  }
  signal?.addEventListener(
    "abort",
    () => {
      forget(key);
      session.fetch(url, { method: "DELETE", headers: TUS }).catch(() => {});
    },
    { once: true },
  );
  let attempt = 0;
  let token = await session.accessToken();
  onProgress(state.offset, file.size);
  while (!state.jobId) {
    try {
      state = await patch(token, url, file, state.offset, onProgress, signal);
      attempt = 0;
    } catch (error) {
      if (!(error instanceof ApiError) || error.code === "upload_cancelled") throw error;
      const retryable = error.status === 401 || RETRY_STATUSES.has(error.status);
      if (!retryable || attempt >= RETRY_DELAYS_MS.length) {
        if (error.status >= 400 && error.status < 500) forget(key);
        throw error;
      }
      if (error.status === 401) token = await session.accessToken(token);
      await sleep(RETRY_DELAYS_MS[attempt], signal);
      attempt += 1;
      state = await status(session, url, signal);
      if (!state) {
        forget(key);
        throw new ApiError(404, "the upload expired on the server; add the file again", "not_found");
      }
    }
  }
  forget(key);
  return state.jobId;
}
