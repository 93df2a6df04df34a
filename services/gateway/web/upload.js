// Uploads with progress, resumable: the bytes go over tus (./tus.js), and the job that the last
// byte makes is what the page shows next.

import { resumableUpload } from "./tus.js";

/**
 * Upload one file as a new job; resolves with the job. An upload cut off (a dropped
 * connection, a reload) goes on from where the server stands when the same file comes again.
 */
export async function uploadFile(session, file, fields, onProgress, signal) {
  const jobId = await resumableUpload(session, file, fields, onProgress, signal);
  return session.json(`/v1/jobs/${jobId}`, { signal });
}
