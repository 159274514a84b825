// Upload: a ticket (`POST /v1/uploads`), the bytes PUT straight to object storage at the
// presigned URL with the signed headers (XMLHttpRequest, for its upload progress events), then
// `POST /v1/videos`; the video plays from its original at once, and the page follows its state
// until the HLS ladder is READY (or FAILED: the original still plays).

import { ApiError, call, id } from "./api.js";
import { h } from "./dom.js";

const TYPES = ["video/mp4", "video/quicktime", "video/webm"]; // what the API accepts
const MAX_BYTES = 64 * 1024 * 1024;
const MAX_CAPTION = 2200;
const STATE_POLL_MS = 1_000;
const STATE_POLL_LIMIT = 180; // give up watching (not the video) after about three minutes
// set by the browser itself; XMLHttpRequest refuses to set them
const BROWSER_HEADERS = new Set(["content-length", "host", "connection"]);

export function uploadView() {
  const file = h("input", { id: "upload-file", name: "file", type: "file", accept: TYPES.join(","), required: true });
  const caption = h("textarea", { id: "upload-caption", name: "caption", maxlength: String(MAX_CAPTION), rows: "3" });
  const left = h("small", { id: "upload-caption-left", "aria-live": "polite" }, `${MAX_CAPTION} characters left`);
  caption.addEventListener("input", () => (left.textContent = `${MAX_CAPTION - caption.value.length} characters left`));
  const progress = h("progress", { id: "upload-progress", max: "100", value: "0", hidden: true, "aria-label": "Upload progress" });
  const status = h("p", { class: "upload-status", role: "status" });
  const error = h("p", { class: "error", role: "alert", hidden: true });
  const submit = h("button", { type: "submit" }, "Upload");
  let request = null;

  const fail = (text) => {
    error.textContent = text;
    error.hidden = false;
    status.textContent = "";
    progress.hidden = true;
    submit.disabled = false;
  };

  const form = h(
    "form",
    {
      class: "upload",
      "aria-labelledby": "upload-title",
      onsubmit: async (event) => {
        event.preventDefault();
        error.hidden = true;
        const chosen = file.files[0];
        const problem = check(chosen);
        if (problem) return fail(problem);
        submit.disabled = true;
        try {
          status.textContent = "Preparing the upload…";
          const ticket = await call("POST", "/v1/uploads", {
            body: { content_type: chosen.type, size_bytes: String(chosen.size) },
          });
          status.textContent = "Uploading…";
          progress.hidden = false;
          request = put(ticket, chosen, (fraction) => {
            progress.value = Math.round(fraction * 100);
            status.textContent = `Uploading… ${progress.value}%`;
          });
          await request.done;
          progress.value = 100;
          status.textContent = "Checking the video…";
          const video = await call("POST", "/v1/videos", { body: { upload_id: ticket.upload_id, caption: caption.value } });
          progress.hidden = true;
          published(video);
        } catch (e) {
          fail(e instanceof ApiError ? `The upload failed: ${e.description}` : `The upload failed: ${e.message ?? e}`);
        }
      },
    },
    h("h1", { id: "upload-title" }, "Upload a video"),
    h("div", { class: "field" }, h("label", { for: "upload-file" }, "Video (MP4, MOV or WebM, up to 60 s and 64 MiB)"), file),
    h("div", { class: "field" }, h("label", { for: "upload-caption" }, "Caption"), caption, left),
    progress,
    status,
    error,
    submit,
  );

  let watching = 0;
  const published = async (video) => {
    const link = h("a", { href: `#/v/${id(video.video_id)}`, class: "button" }, "Watch it");
    const state = h("span", { class: "video-state", dataset: { state: video.state } }, describe(video.state));
    status.replaceChildren("Published. ", state, " ", link);
    form.reset();
    submit.disabled = false;
    for (let polls = 0; polls < STATE_POLL_LIMIT && video.state === "VIDEO_STATE_PROCESSING"; polls++) {
      await new Promise((resolve) => (watching = setTimeout(resolve, STATE_POLL_MS)));
      if (!form.isConnected) return;
      try {
        video = await call("GET", `/v1/videos/${id(video.video_id)}`);
      } catch {
        continue; // a blip: keep watching
      }
      state.dataset.state = video.state;
      state.textContent = describe(video.state);
    }
  };

  return {
    element: h("section", { class: "page" }, form),
    destroy() {
      clearTimeout(watching);
      request?.abort();
    },
  };
}

function check(chosen) {
  if (!chosen) return "Choose a video file.";
  if (!TYPES.includes(chosen.type)) return `That file is ${chosen.type || "of an unknown type"}; choose an MP4, MOV or WebM video.`;
  if (chosen.size > MAX_BYTES) return `That file is ${(chosen.size / 2 ** 20).toFixed(0)} MiB; the limit is 64 MiB.`;
  if (chosen.size === 0) return "That file is empty.";
  return "";
}

function describe(state) {
  return (
    {
      VIDEO_STATE_PROCESSING: "Preparing streaming versions (it already plays from the original)…",
      VIDEO_STATE_READY: "Ready: streaming (HLS) versions are available.",
      VIDEO_STATE_FAILED: "Streaming versions could not be made; it plays from the original.",
    }[state] ?? ""
  );
}

// The PUT to storage with progress; storage's own error (an XML body) is summarised.
function put(ticket, body, onProgress) {
  const xhr = new XMLHttpRequest();
  const done = new Promise((resolve, reject) => {
    xhr.open("PUT", ticket.upload_url);
    for (const [name, value] of Object.entries(ticket.upload_headers ?? {})) {
      if (!BROWSER_HEADERS.has(name.toLowerCase())) xhr.setRequestHeader(name, value);
    }
    xhr.upload.addEventListener("progress", (e) => e.lengthComputable && onProgress(e.loaded / e.total));
    xhr.addEventListener("load", () => {
      if (xhr.status >= 200 && xhr.status < 300) return resolve();
      const code = /<Code>([^<]+)<\/Code>/.exec(xhr.responseText)?.[1];
      reject(new Error(`storage answered ${xhr.status}${code ? ` (${code})` : ""}`));
    });
    xhr.addEventListener("error", () => reject(new Error("the connection to storage failed")));
    xhr.addEventListener("abort", () => reject(new Error("cancelled")));
    xhr.send(body);
  });
  return { done, abort: () => xhr.abort() };
}
