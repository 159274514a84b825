// Plays, reported as the person scrolls: `POST /v1/views` in batches (at most 50 a call, the
// API's limit), sent when a batch fills, every few seconds, and as the page is hidden (a
// keepalive request outlives the page). The server decides what counts (a play of at least 1 s;
// one per signed-in viewer and video per 10 minutes); the client reports what it saw.

import { call } from "./api.js";

const BATCH = 50;
const FLUSH_MS = 5_000;
const MIN_WATCHED_MS = 1_000; // shorter plays do not count: not worth a request

const pending = [];
let timer = 0;

// `final`: the page is going away (hidden, closed): the request must outlive it
export function flush(final = false) {
  clearTimeout(timer);
  timer = 0;
  while (pending.length) {
    const views = pending.splice(0, BATCH);
    call("POST", "/v1/views", { body: { views }, final }).catch(() => {
      // a play is a hint, not a write anyone was promised: dropped when the API is unreachable
    });
  }
}

export function report(videoId, watchedMs, completed) {
  if (watchedMs < MIN_WATCHED_MS) return;
  pending.push({ video_id: videoId, watched_ms: Math.round(watchedMs), completed });
  if (pending.length >= BATCH) flush();
  else timer ||= setTimeout(() => flush(), FLUSH_MS);
}

// (the feed finishes its current play first, then flushes: see VideoList)
window.addEventListener("pagehide", () => flush(true));

// One play of one video element: time actually spent playing (not the seek position), and
// whether it reached the end (the feed loops videos, so an end is a jump back to the start).
export class PlayTracker {
  constructor(video, videoId) {
    this.video = video;
    this.videoId = videoId;
    this.watchedMs = 0;
    this.completed = false;
    this.since = 0;
    this.lastTime = 0;
    this.listeners = {
      playing: () => this.resume(),
      pause: () => this.hold(),
      waiting: () => this.hold(),
      timeupdate: () => this.progress(),
    };
    for (const [name, listener] of Object.entries(this.listeners)) video.addEventListener(name, listener);
  }

  resume() {
    this.since ||= performance.now();
  }

  hold() {
    if (this.since) this.watchedMs += performance.now() - this.since;
    this.since = 0;
  }

  progress() {
    const { currentTime, duration } = this.video;
    if (currentTime + 0.5 < this.lastTime || (duration && currentTime >= duration - 0.25)) this.completed = true;
    this.lastTime = currentTime;
  }

  // The play is over (scrolled away, page hidden, view closed): report it and start afresh
  // (a video still playing, as behind a hidden page, counts on from now as a new play).
  finish() {
    this.hold();
    report(this.videoId, this.watchedMs, this.completed);
    this.watchedMs = 0;
    this.completed = false;
    this.lastTime = 0;
    if (!this.video.paused) this.resume();
  }

  detach() {
    this.finish();
    for (const [name, listener] of Object.entries(this.listeners)) this.video.removeEventListener(name, listener);
  }
}
