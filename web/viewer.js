// What the signed-in person has done to the videos and creators on screen (liked, favorited,
// following), and the creators' profiles. The API's video resource carries no viewer state, so
// the sets start from the first page of the viewer's own likes, favorites and following lists
// and follow every toggle made here. Toggles are idempotent calls, so a stale set costs nothing
// worse than a button in the wrong state until the next toggle.

import { call, id, session } from "./api.js";

const SEED_PAGE = 100;

const state = { liked: new Set(), favorited: new Set(), following: new Set() };
let seeded = null;
const users = new Map(); // user_id -> Promise<User>

export function seed() {
  if (!session.signedIn) return Promise.resolve();
  const who = session.user.user_id;
  const me = id(who);
  const page = { page_size: SEED_PAGE };
  seeded ??= Promise.all([
    call("GET", `/v1/users/${me}/likes`, { query: page }).then((r) => r.videos ?? []),
    call("GET", `/v1/users/${me}/favorites`, { query: page }).then((r) => r.videos ?? []),
    call("GET", `/v1/users/${me}/following`, { query: page }).then((r) => r.users ?? []),
  ])
    .then(([likes, favorites, following]) => {
      if (session.user?.user_id !== who) return; // signed out (or in as someone else) meanwhile
      for (const v of likes) state.liked.add(v.video_id);
      for (const v of favorites) state.favorited.add(v.video_id);
      for (const u of following) state.following.add(u.user_id);
    })
    .catch(() => {}); // buttons start unpressed; toggles still work
  return seeded;
}

export function forget() {
  for (const set of Object.values(state)) set.clear();
  seeded = null;
}

export const liked = (videoId) => state.liked.has(videoId);
export const favorited = (videoId) => state.favorited.has(videoId);
export const following = (userId) => state.following.has(userId);

// Each toggle: the call, then the set; returns the new state. Errors reach the caller.
export async function setLike(videoId, on) {
  if (on) await call("POST", "/v1/likes", { body: { video_id: videoId } });
  else await call("DELETE", `/v1/likes/${id(videoId)}`);
  toggle(state.liked, videoId, on);
}

export async function setFavorite(videoId, on) {
  if (on) await call("POST", "/v1/favorites", { body: { video_id: videoId } });
  else await call("DELETE", `/v1/favorites/${id(videoId)}`);
  toggle(state.favorited, videoId, on);
}

export async function setFollow(userId, on) {
  if (on) await call("POST", "/v1/follows", { body: { followee_id: userId } });
  else await call("DELETE", `/v1/follows/${id(userId)}`);
  toggle(state.following, userId, on);
}

function toggle(set, key, on) {
  if (on) set.add(key);
  else set.delete(key);
}

export function user(userId, { fresh = false } = {}) {
  if (fresh || !users.has(userId)) {
    const request = call("GET", `/v1/users/${id(userId)}`);
    request.catch(() => users.delete(userId));
    users.set(userId, request);
  }
  return users.get(userId);
}
