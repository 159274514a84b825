// The public REST API, and the session that signs its calls. Everything the client knows comes
// from here: the same routes, bodies and errors as the OpenAPI document at /openapi.json.
//
// The session (user, access token, its expiry, the single-use refresh token) lives in
// localStorage so a reload stays signed in. An access token about to expire, or one the API
// rejects with 401, is renewed once with the refresh token; tabs take a Web Lock around the
// refresh and re-read the stored session inside it, so two tabs never spend one refresh token
// (the second would look like a replay and end the session). When the refresh fails the session
// is over: `onSignedOut` listeners run and the app shows the sign-in screen.

const STORE = "tiktok.session";
const EARLY_REFRESH_MS = 30_000; // renew this long before the access token expires

export class ApiError extends Error {
  constructor(status, message, retryAfter = 0) {
    super(message);
    this.status = status;
    this.retryAfter = retryAfter; // seconds, from Retry-After on 429
  }

  // What to show a person: the API's own message, with the wait when there is one.
  get description() {
    if (this.status === 429) {
      if (/retry in \d+/i.test(this.message)) return this.message; // the wait is in the message
      const wait = this.retryAfter ? `Try again in ${this.retryAfter} s.` : "Try again shortly.";
      return `${this.message.replace(/\.$/, "")}. ${wait}`;
    }
    if (this.status === 0) return "The server could not be reached. Check your connection.";
    if (this.status >= 500) return `The service is having trouble (${this.message}). Try again in a moment.`;
    return this.message;
  }
}

function load() {
  try {
    return JSON.parse(localStorage.getItem(STORE)) || null;
  } catch {
    return null;
  }
}

let current = load();
const signedOutListeners = [];

export const session = {
  get user() {
    return current?.user ?? null;
  },
  get signedIn() {
    return current !== null;
  },
  onSignedOut(listener) {
    signedOutListeners.push(listener);
  },
};

// A sign-up, sign-in or refresh reply: {user, access_token, expires_at, refresh_token}.
function keep(reply) {
  current = {
    user: reply.user,
    accessToken: reply.access_token,
    expiresAt: Date.parse(reply.expires_at),
    refreshToken: reply.refresh_token,
  };
  localStorage.setItem(STORE, JSON.stringify(current));
}

function end(reason) {
  current = null;
  localStorage.removeItem(STORE);
  for (const listener of signedOutListeners) listener(reason);
}

// Another tab may have signed in, out, or refreshed.
window.addEventListener("storage", (event) => {
  if (event.key !== STORE) return;
  const before = current;
  current = load();
  if (before && !current) for (const listener of signedOutListeners) listener("");
});

async function send(method, path, body, token) {
  const headers = {};
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (token) headers.Authorization = `Bearer ${token}`;
  let response;
  try {
    response = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      keepalive: method === "POST" && path === "/v1/views", // plays sent as the page goes away
    });
  } catch {
    throw new ApiError(0, "network error");
  }
  const text = await response.text();
  let reply = {};
  try {
    reply = text ? JSON.parse(text) : {};
  } catch {
    reply = { message: text.trim() || response.statusText };
  }
  if (!response.ok) {
    const retryAfter = Number(response.headers.get("Retry-After")) || 0;
    throw new ApiError(response.status, reply.message || response.statusText, retryAfter);
  }
  return reply;
}

let refreshing = null;

async function refresh(spent) {
  // one refresh at a time in this tab, and across tabs by the lock
  refreshing ??= (async () => {
    const run = async () => {
      const stored = load();
      if (!stored) return false;
      if (stored.refreshToken !== spent) {
        current = stored; // another tab already renewed it
        return true;
      }
      try {
        keep(await send("POST", "/v1/sessions:refresh", { refresh_token: spent }));
        return true;
      } catch (error) {
        if (error.status === 401 || error.status === 400) {
          end("Your session has ended. Sign in again.");
          return false;
        }
        throw error; // the network or the service: the session may still be good
      }
    };
    try {
      return navigator.locks ? await navigator.locks.request(STORE, run) : await run();
    } finally {
      refreshing = null;
    }
  })();
  return refreshing;
}

// Calls the API. `query` values that are empty are left out. Signed in, the call carries the
// access token (renewed first when it is about to expire); a 401 renews it once and retries.
export async function call(method, path, { body, query } = {}) {
  if (query) {
    const params = new URLSearchParams();
    for (const [key, value] of Object.entries(query)) if (value) params.set(key, value);
    if ([...params].length) path += `?${params}`;
  }
  if (current && current.expiresAt - Date.now() < EARLY_REFRESH_MS) await refresh(current.refreshToken);
  const token = current?.accessToken;
  try {
    return await send(method, path, body, token);
  } catch (error) {
    if (error.status !== 401 || !token || !current) throw error;
    if (current.accessToken === token && !(await refresh(current.refreshToken))) throw error;
    return send(method, path, body, current.accessToken);
  }
}

export async function signUp(handle, password, displayName) {
  keep(await send("POST", "/v1/users", { handle, password, display_name: displayName }));
}

export async function signIn(handle, password) {
  keep(await send("POST", "/v1/sessions", { handle, password }));
}

export async function signOut() {
  try {
    if (current) await call("DELETE", "/v1/sessions/current");
  } finally {
    end("");
  }
}

export const id = encodeURIComponent;
