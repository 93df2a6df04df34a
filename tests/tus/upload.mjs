// Uploads one file with the reference tus client (tus-js-client), as an integrator would.
// Usage: node upload.mjs ENDPOINT FILE TOKEN URL_STORAGE [RETRIES]
// Prints one JSON line per request ({method, offset}) and per response ({status, offset}),
// then {"done": true, "location", "jobId"} and exits 0, or {"error": "..."} and exits 1.
// URL_STORAGE is a JSON file where the client remembers unfinished uploads: a second run
// with the same file resumes the upload the first one left.
import fs from "node:fs";
import path from "node:path";

import tus from "tus-js-client";

const [endpoint, file, token, storage, retries = "0"] = process.argv.slice(2);
const say = (line) => process.stdout.write(`${JSON.stringify(line)}\n`);

const upload = new tus.Upload(fs.createReadStream(file), {
  endpoint,
  uploadSize: fs.statSync(file).size,
  headers: { Authorization: `Bearer ${token}` },
  metadata: { filename: path.basename(file), filetype: "video/mp4" },
  urlStorage: new tus.FileUrlStorage(storage),
  retryDelays: Array.from({ length: Number(retries) }, (_, i) => 200 * (i + 1)),
  onBeforeRequest: (req) => {
    say({ method: req.getMethod(), offset: req.getHeader("Upload-Offset") ?? null });
  },
  onAfterResponse: (req, res) => {
    say({ method: req.getMethod(), status: res.getStatus(), offset: res.getHeader("Upload-Offset") ?? null });
  },
  onError: (error) => {
    say({ error: String(error) });
    process.exit(1);
  },
  onSuccess: ({ lastResponse }) => {
    say({
      done: true,
      url: upload.url,
      location: lastResponse.getHeader("Location") ?? null,
      jobId: lastResponse.getHeader("Job-Id") ?? null,
    });
  },
});

const previous = await upload.findPreviousUploads();
if (previous.length > 0) {
  say({ resuming: previous[0].uploadUrl });
  upload.resumeFromPreviousUpload(previous[0]);
}
upload.start();
