// A profile: the person's name and counts, follow, and tabs of their videos, likes, followers
// and following, each a paged list (`page_token` → `next_page_token`).

import { ApiError, call, id, session } from "./api.js";
import { announce, count, h } from "./dom.js";
import * as viewer from "./viewer.js";

const PAGE_SIZE = 24;

const TABS = {
  videos: { label: "Videos", path: (u) => `/v1/users/${u}/videos`, field: "videos" },
  likes: { label: "Likes", path: (u) => `/v1/users/${u}/likes`, field: "videos" },
  favorites: { label: "Favorites", path: (u) => `/v1/users/${u}/favorites`, field: "videos", mine: true },
  followers: { label: "Followers", path: (u) => `/v1/users/${u}/followers`, field: "users" },
  following: { label: "Following", path: (u) => `/v1/users/${u}/following`, field: "users" },
};

export function profileView(userId, tab = "videos") {
  const element = h("section", { class: "profile", "aria-busy": "true" });
  render(element, userId, TABS[tab] ? tab : "videos").catch((error) => {
    element.replaceChildren(
      h("p", { class: "error", role: "alert" }, error.status === 404 ? "No such user." : (error.description ?? String(error))),
    );
  });
  return { element, destroy() {} };
}

async function render(element, userId, tab) {
  const user = await viewer.user(userId, { fresh: true });
  const mine = session.user?.user_id === userId;
  const stats = h(
    "dl",
    { class: "stats" },
    stat("Followers", user.follower_count, "followers"),
    stat("Following", user.following_count, "following"),
    stat("Videos", user.video_count, "videos"),
    stat("Plays", user.view_count, "plays"),
  );
  let follow = null;
  if (!mine && session.signedIn) {
    await viewer.seed();
    follow = h("button", { class: "follow", dataset: { creatorId: userId } });
    const paint = (on) => {
      follow.setAttribute("aria-pressed", String(on));
      follow.textContent = on ? "Following" : "Follow";
    };
    paint(viewer.following(userId));
    follow.addEventListener("click", async () => {
      const next = follow.getAttribute("aria-pressed") !== "true";
      try {
        await viewer.setFollow(userId, next);
        paint(next);
        const followers = stats.querySelector('[data-stat="followers"]');
        const n = Math.max(0, Number(followers.dataset.n) + (next ? 1 : -1));
        followers.dataset.n = String(n);
        followers.textContent = count(n);
      } catch (error) {
        announce(error.description ?? String(error), "error");
      }
    });
  }
  const tabs = h(
    "nav",
    { class: "tabs", "aria-label": "Profile sections" },
    Object.entries(TABS)
      .filter(([, t]) => !t.mine || mine)
      .map(([key, t]) =>
        h("a", { href: `#/u/${id(userId)}/${key}`, "aria-current": key === tab ? "page" : null }, t.label),
      ),
  );
  const body = h("div", { class: "tab-body" });
  element.replaceChildren(
    h(
      "header",
      { class: "profile-head" },
      h("h1", {}, user.display_name || user.handle),
      h("p", { class: "handle" }, `@${user.handle}`),
      follow,
      mine ? h("a", { class: "button", href: "#/upload" }, "Upload a video") : null,
    ),
    stats,
    tabs,
    body,
  );
  element.setAttribute("aria-busy", "false");
  await list(body, TABS[tab], userId);
}

function stat(label, value, key) {
  return h(
    "div",
    {},
    h("dt", {}, label),
    h("dd", { dataset: { stat: key, n: String(Number(value || 0)) } }, count(value)),
  );
}

async function list(body, tab, userId) {
  const items = h("ul", { class: tab.field === "videos" ? "grid" : "people" });
  const more = h("button", { class: "more", hidden: true }, "More");
  body.replaceChildren(items, more);
  let token = "";
  const page = async () => {
    more.hidden = true;
    try {
      const reply = await call("GET", tab.path(id(userId)), { query: { page_size: PAGE_SIZE, page_token: token } });
      for (const entry of reply[tab.field] ?? []) items.append(tab.field === "videos" ? tile(entry) : person(entry));
      token = reply.next_page_token || "";
      more.hidden = !token;
      if (!items.children.length) items.append(h("li", { class: "none" }, "Nothing here yet."));
    } catch (error) {
      const text = error instanceof ApiError ? error.description : String(error);
      body.append(h("p", { class: "error", role: "alert" }, text));
    }
  };
  more.addEventListener("click", page);
  await page();
}

function tile(video) {
  const state = {
    VIDEO_STATE_PROCESSING: "processing",
    VIDEO_STATE_READY: "",
    VIDEO_STATE_FAILED: "original only",
  }[video.state];
  return h(
    "li",
    { dataset: { videoId: video.video_id, state: video.state || "" } },
    h(
      "a",
      { href: `#/v/${id(video.video_id)}`, "aria-label": video.caption || "Video" },
      video.thumbnail_url ? h("img", { src: video.thumbnail_url, alt: "", loading: "lazy" }) : null,
      h("span", { class: "tile-plays" }, `▶ ${count(video.view_count)}`),
      state ? h("span", { class: "badge" }, state) : null,
    ),
  );
}

function person(user) {
  return h(
    "li",
    { dataset: { userId: user.user_id } },
    h("a", { href: `#/u/${id(user.user_id)}` }, user.display_name || user.handle, " ", h("span", { class: "handle" }, `@${user.handle}`)),
  );
}
