// The vertical feed: one full-screen item per video, snapped as the person scrolls or swipes.
// The item in view plays (muted, looping), the next ones are preloaded, far ones are released.
// Keys: ArrowDown/ArrowUp move, Space pauses, L likes, M toggles sound, C opens comments.
// Each item is `<article data-video-id="...">` with one `<video>` inside (DESIGN.md's test hooks).

import { ApiError, call, id, session } from "./api.js";
import { openComments } from "./comments.js";
import { announce, count, h, icon } from "./dom.js";
import { Player } from "./player.js";
import { PlayTracker, flush } from "./plays.js";
import * as viewer from "./viewer.js";

const PAGE_SIZE = 10;
const PRELOAD_AHEAD = 2; // items after the one in view that buffer a few seconds
const KEEP_AROUND = 3; // items further than this from the one in view release their player
const LOAD_AHEAD = 3; // fetch the next page when this few items are left

let muted = true; // for the whole page: unmuting one video unmutes the next ones too

export class VideoList {
  // `more()` resolves to the next videos, or null at the end
  constructor({ more, empty }) {
    this.more = more;
    this.emptyText = empty;
    this.entries = []; // {item, element, video, player, tracker}
    this.active = -1;
    this.loading = null;
    this.done = false;
    this.element = h("section", { class: "feed", role: "feed", "aria-busy": "true", "aria-label": "Videos" });
    this.observer = new IntersectionObserver((seen) => this.onSeen(seen), {
      root: this.element,
      threshold: 0.6,
    });
    this.onKey = (event) => this.key(event);
    this.onHidden = () => {
      if (document.visibilityState !== "hidden") return;
      this.current?.tracker.finish();
      flush(true); // a phone may end a hidden tab without another word
    };
    this.destroyed = false;
    this.failure = false; // a page failed: load again only when asked (Retry)
    document.addEventListener("keydown", this.onKey);
    document.addEventListener("visibilitychange", this.onHidden);
    this.load();
  }

  get current() {
    return this.entries[this.active];
  }

  async load() {
    if (this.loading || this.done || this.failure || this.destroyed) return this.loading;
    this.loading = (async () => {
      try {
        const videos = await this.more();
        if (this.destroyed) return; // the person moved on while the page was on its way
        if (videos === null) this.done = true;
        else for (const video of videos) this.add(video);
        if (this.done) this.end();
      } catch (error) {
        if (!this.destroyed) this.failed(error);
      } finally {
        this.loading = null;
        this.element.setAttribute("aria-busy", "false");
      }
    })();
    return this.loading;
  }

  add(item) {
    if (this.entries.some((e) => e.item.video_id === item.video_id)) return;
    const video = h("video", {
      muted: true,
      loop: true,
      playsinline: true,
      preload: "none",
      poster: item.thumbnail_url || null,
      "aria-label": item.caption ? `Video: ${item.caption}` : "Video",
    });
    video.muted = muted;
    const element = h("article", { class: "item", dataset: { videoId: item.video_id }, tabindex: "-1" }, video);
    const entry = { item, element, video, player: new Player(video, item), tracker: new PlayTracker(video, item.video_id) };
    element.append(overlay(entry, () => this.toggle()));
    video.addEventListener("click", () => this.toggle());
    this.entries.push(entry);
    this.element.append(element);
    this.observer.observe(element);
    if (this.active < 0) this.activate(0);
    else if (this.entries.length - 1 - this.active <= PRELOAD_AHEAD) entry.player.attach();
  }

  end() {
    const text = this.entries.length ? "You're all caught up." : this.emptyText;
    this.element.append(h("div", { class: "end" }, text));
  }

  failed(error) {
    this.failure = true;
    const text = error instanceof ApiError ? error.description : String(error);
    this.element.append(
      h("div", { class: "end", role: "alert" }, text, " ", h("button", { onclick: (e) => this.retry(e) }, "Retry")),
    );
  }

  retry(event) {
    event.target.parentElement.remove();
    this.failure = false;
    this.load();
  }

  onSeen(seen) {
    for (const s of seen) {
      if (!s.isIntersecting) continue;
      const index = this.entries.findIndex((e) => e.element === s.target);
      if (index >= 0 && index !== this.active) this.activate(index);
    }
  }

  activate(index) {
    const before = this.current;
    if (before) {
      before.player.pause();
      before.tracker.finish();
      before.element.classList.remove("active");
    }
    this.active = index;
    this.entries.forEach((entry, i) => {
      const distance = i - index;
      if (distance === 0) {
        entry.element.classList.add("active");
        entry.element.classList.remove("paused");
        entry.video.muted = muted;
        entry.player.play();
      } else if (distance > 0 && distance <= PRELOAD_AHEAD) {
        entry.player.attach();
      } else if (Math.abs(distance) > KEEP_AROUND) {
        entry.player.release();
      }
    });
    if (this.entries.length - index <= LOAD_AHEAD) this.load();
  }

  move(step) {
    const target = this.entries[this.active + step];
    if (target) target.element.scrollIntoView({ behavior: "smooth", block: "start" });
  }

  toggle() {
    const entry = this.current;
    if (!entry) return;
    const pausing = !entry.video.paused;
    if (pausing) entry.player.pause();
    else entry.player.play();
    entry.element.classList.toggle("paused", pausing);
    const button = entry.element.querySelector(".playpause");
    button.setAttribute("aria-pressed", String(pausing));
    button.replaceChildren(icon(pausing ? "play" : "pause"), h("span", { class: "sr" }, "Paused"));
  }

  key(event) {
    if (event.defaultPrevented || event.altKey || event.ctrlKey || event.metaKey) return;
    if (event.target.closest?.("input, textarea, select, button, dialog, a")) {
      if (event.key !== "ArrowDown" && event.key !== "ArrowUp") return;
      if (event.target.closest("input, textarea, select, dialog")) return;
    }
    const entry = this.current;
    const actions = {
      ArrowDown: () => this.move(1),
      ArrowUp: () => this.move(-1),
      " ": () => this.toggle(),
      l: () => entry?.element.querySelector(".like").click(),
      m: () => entry?.element.querySelector(".sound").click(),
      c: () => entry?.element.querySelector(".comments").click(),
    };
    const action = actions[event.key.length === 1 ? event.key.toLowerCase() : event.key];
    if (!action) return;
    event.preventDefault();
    action();
  }

  destroy() {
    this.destroyed = true;
    document.removeEventListener("keydown", this.onKey);
    document.removeEventListener("visibilitychange", this.onHidden);
    this.observer.disconnect();
    for (const entry of this.entries) {
      entry.tracker.detach();
      entry.player.release();
    }
    flush();
  }
}

// The buttons and text over a video: creator, caption, like, comments, favorite, follow, sound.
function overlay(entry, togglePlay) {
  const { item } = entry;
  const creator = h("a", { class: "creator", href: `#/u/${id(item.creator_id)}` }, "@…");
  viewer.user(item.creator_id).then(
    (user) => (creator.textContent = `@${user.handle}`),
    () => (creator.textContent = "@unknown"),
  );
  const like = counter("like", "Like", "heart", item.like_count, viewer.liked(item.video_id), (on) =>
    viewer.setLike(item.video_id, on),
  );
  const favorite = counter("favorite", "Favorite", "star", item.favorite_count, viewer.favorited(item.video_id), (on) =>
    viewer.setFavorite(item.video_id, on),
  );
  const comments = h(
    "button",
    { class: "comments", onclick: () => openComments(item, comments) },
    icon("comment"),
    h("span", { class: "sr" }, "Comments: "),
    h("span", { class: "n" }, count(item.comment_count)),
  );
  const mine = session.user?.user_id === item.creator_id;
  const follow = mine
    ? null
    : h(
        "button",
        { class: "follow", dataset: { creatorId: item.creator_id }, onclick: () => toggleFollow(item.creator_id, follow) },
        "Follow",
      );
  if (follow) paintFollow(follow, viewer.following(item.creator_id));
  const sound = h(
    "button",
    {
      class: "sound",
      "aria-label": "Sound on",
      "aria-pressed": String(!muted),
      onclick: () => {
        muted = !muted;
        for (const v of document.querySelectorAll(".feed video")) v.muted = muted;
        for (const b of document.querySelectorAll(".feed .sound")) {
          b.setAttribute("aria-pressed", String(!muted));
          b.replaceChildren(icon(muted ? "muted" : "sound"));
        }
      },
    },
    icon(muted ? "muted" : "sound"),
  );
  // once the viewer's lists arrive, the buttons show what they already did
  viewer.seed().then(() => {
    paint(like, viewer.liked(item.video_id));
    paint(favorite, viewer.favorited(item.video_id));
    if (follow) paintFollow(follow, viewer.following(item.creator_id));
  });
  const state = item.state === "VIDEO_STATE_PROCESSING" ? h("span", { class: "badge" }, "processing") : null;
  return h(
    "div",
    { class: "overlay" },
    h(
      "div",
      { class: "meta" },
      h("div", {}, creator, " ", follow),
      h("p", { class: "caption" }, item.caption),
      h("p", { class: "plays" }, `${count(item.view_count)} plays `, state),
    ),
    h(
      "div",
      { class: "actions" },
      like,
      comments,
      favorite,
      sound,
      h(
        "button",
        { class: "playpause", "aria-pressed": "false", onclick: togglePlay },
        icon("pause"),
        h("span", { class: "sr" }, "Paused"),
      ),
    ),
  );
}

function counter(name, label, symbolName, value, on, set) {
  // the label and the count are both read out ("Like 12"), the icon is not
  const button = h(
    "button",
    { class: name },
    icon(symbolName),
    h("span", { class: "sr" }, `${label} `),
    h("span", { class: "n" }, count(value)),
  );
  button.dataset.count = String(Number(value || 0));
  paint(button, on);
  button.addEventListener("click", async () => {
    if (!session.signedIn) {
      location.hash = "#/signin";
      return;
    }
    if (button.dataset.busy) return; // one call at a time: a double click must not race itself
    button.dataset.busy = "1";
    const next = button.getAttribute("aria-pressed") !== "true";
    paint(button, next);
    bump(button, next ? 1 : -1);
    try {
      await set(next);
    } catch (error) {
      paint(button, !next);
      bump(button, next ? -1 : 1);
      announce(error.description ?? String(error), "error");
    } finally {
      delete button.dataset.busy;
    }
  });
  return button;
}

function paint(button, on) {
  button.setAttribute("aria-pressed", String(on));
}

function bump(button, step) {
  const n = Math.max(0, Number(button.dataset.count) + step);
  button.dataset.count = String(n);
  button.querySelector(".n").textContent = count(n);
}

function paintFollow(button, on) {
  button.setAttribute("aria-pressed", String(on));
  button.textContent = on ? "Following" : "Follow";
}

async function toggleFollow(userId, button) {
  if (!session.signedIn) {
    location.hash = "#/signin";
    return;
  }
  const next = button.getAttribute("aria-pressed") !== "true";
  try {
    await viewer.setFollow(userId, next);
    // every item of this creator on the page
    for (const b of document.querySelectorAll(`.follow[data-creator-id="${CSS.escape(userId)}"]`)) paintFollow(b, next);
  } catch (error) {
    announce(error.description ?? String(error), "error");
  }
}

// `GET /v1/feed` of one kind, page by page, following the cursor.
export function feedView(kind) {
  let cursor = "";
  let started = false;
  const list = new VideoList({
    empty:
      kind === "following"
        ? "Nothing here yet: follow creators and their new videos appear here."
        : "No videos yet. Be the first to upload one!",
    more: async () => {
      // a page can come back empty with a cursor (everything on it was served already): read on
      for (let pages = 0; pages < 5; pages++) {
        if (started && !cursor) return null;
        const page = await call("GET", "/v1/feed", { query: { kind, page_size: PAGE_SIZE, cursor } });
        started = true;
        cursor = page.next_cursor || "";
        if (page.items?.length) return page.items;
      }
      return null;
    },
  });
  return list;
}

// One video, on its own (from a profile or a link).
export function videoView(videoId) {
  let done = false;
  return new VideoList({
    empty: "This video is not available.",
    more: async () => {
      if (done) return null;
      done = true;
      try {
        return [await call("GET", `/v1/videos/${id(videoId)}`)];
      } catch (error) {
        if (error.status === 404) return null;
        throw error;
      }
    },
  });
}
