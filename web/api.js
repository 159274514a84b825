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
const LEASE = "tiktok.refreshing"; // where locks are missing (plain http on a LAN address)
const EARLY_REFRESH_MS = 30_000; // renew this long before the access token expires
const REFRESH_TIMEOUT_MS = 10_000;

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
let skew = 0; // the server's clock minus this device's, from the Date header of each answer
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
    // on this device's clock, which may be off the server's (by `skew`)
    expiresAt: Date.parse(reply.expires_at) - skew,
    refreshToken: reply.refresh_token,
  };
  localStorage.setItem(STORE, JSON.stringify(current));
}

function end(reason) {
  if (!current && !localStorage.getItem(STORE)) return; // already over
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

async function send(method, path, body, token, { timeout = 0, keepalive = false } = {}) {
  const headers = {};
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (token) headers.Authorization = `Bearer ${token}`;
  let response;
  try {
    response = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      keepalive, // outlives the page (plays sent as it goes away)
      signal: timeout ? AbortSignal.timeout(timeout) : undefined,
    });
  } catch {
    throw new ApiError(0, "network error");
  }
  const date = Date.parse(response.headers.get("Date") ?? "");
  if (date) skew = date - Date.now();
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
        keep(await send("POST", "/v1/sessions:refresh", { refresh_token: spent }, null, {
          timeout: REFRESH_TIMEOUT_MS,
        }));
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
      return navigator.locks ? await navigator.locks.request(STORE, run) : await leased(run);
    } finally {
      refreshing = null;
    }
  })();
  return refreshing;
}

// Without Web Locks: a lease in localStorage (owner, expiry) that the other tabs wait out.
async function leased(run) {
  const me = crypto.randomUUID();
  for (let waited = 0; waited < REFRESH_TIMEOUT_MS; waited += 100) {
    const lease = JSON.parse(localStorage.getItem(LEASE) || "null");
    if (!lease || lease.until < Date.now()) {
      localStorage.setItem(LEASE, JSON.stringify({ owner: me, until: Date.now() + REFRESH_TIMEOUT_MS }));
      await new Promise((resolve) => setTimeout(resolve, 50)); // a racing tab wrote last: it wins
      if (JSON.parse(localStorage.getItem(LEASE) || "null")?.owner === me) {
        try {
          return await run();
        } finally {
          localStorage.removeItem(LEASE);
        }
      }
    }
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  return run();
}

// Calls the API. `query` values that are empty are left out. Signed in, the call carries the
// access token (renewed first when it is about to expire); a 401 renews it once and retries.
// `final: true` is a call made as the page goes away: it never refreshes (an expired token is
// left out and the call goes anonymously) and it outlives the page (keepalive).
export async function call(method, path, { body, query, final = false } = {}) {
  if (query) {
    const params = new URLSearchParams();
    for (const [key, value] of Object.entries(query)) if (value) params.set(key, value);
    if ([...params].length) path += `?${params}`;
  }
  if (final) {
    const token = current && current.expiresAt > Date.now() ? current.accessToken : null;
    return send(method, path, body, token, { keepalive: true });
  }
  if (current && current.expiresAt - Date.now() < EARLY_REFRESH_MS) {
    try {
      await refresh(current.refreshToken);
    } catch (error) {
      if (!current || current.expiresAt <= Date.now()) throw error; // the token still works: use it
    }
  }
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
  } catch {
    // signed out here whatever the server said; the access token expires on its own
  } finally {
    end("");
  }
}

export const id = encodeURIComponent;
