// The session and every call to the public API.
//
// The session (tokens and email) lives in localStorage so that a reload keeps the user logged
// in. Refresh tokens rotate and a reused one revokes the whole family, so only one refresh may
// ever be in flight: within a tab a shared promise, across tabs a Web Lock (where the browser
// offers one) plus a re-read of the storage, since another tab may have refreshed meanwhile.

const STORAGE_KEY = "video2mp3.session";
// Device tokens by email, kept across logouts: a login from this browser then gets past a lock
// that strangers' failed logins put on the account.
const DEVICES_KEY = "video2mp3.devices";
const LOCK_NAME = "video2mp3.refresh";
// Refresh this long before the access token expires, so requests never race its expiry.
const EXPIRY_MARGIN_MS = 30_000;

export class ApiError extends Error {
  constructor(status, detail, code, errors = []) {
    super(detail);
    this.status = status;
    this.detail = detail;
    this.code = code;
    this.errors = errors;
  }
}

/** An ApiError from a failed response, reading its `{detail, code}` body when it has one. */
export async function errorFrom(response) {
  let body = null;
  try {
    body = await response.json();
  } catch {
    // not JSON: fall back to the status text
  }
  const detail =
    body && typeof body.detail === "string"
      ? body.detail
      : `the server answered ${response.status} ${response.statusText}`.trim();
  const code = body && typeof body.code === "string" ? body.code : `http_${response.status}`;
  return new ApiError(response.status, detail, code, (body && body.errors) || []);
}

function readSession() {
  try {
    const parsed = JSON.parse(localStorage.getItem(STORAGE_KEY) || "null");
    return parsed && typeof parsed.refresh_token === "string" ? parsed : null;
  } catch {
    return null;
  }
}

function writeSession(session) {
  if (session) {
    localStorage.setItem(STORAGE_KEY, JSON.stringify(session));
  } else {
    localStorage.removeItem(STORAGE_KEY);
  }
}

function sessionFromTokens(email, tokens) {
  return {
    email,
    access_token: tokens.access_token,
    access_expires_at: Date.now() + tokens.expires_in * 1000,
    refresh_token: tokens.refresh_token,
  };
}

function readDevices() {
  try {
    const parsed = JSON.parse(localStorage.getItem(DEVICES_KEY) || "{}");
    return parsed && typeof parsed === "object" && !Array.isArray(parsed) ? parsed : {};
  } catch {
    return {};
  }
}

function deviceKey(email) {
  return email.trim().toLowerCase();
}

function rememberDevice(email, token) {
  if (typeof token !== "string") return;
  const devices = readDevices();
  devices[deviceKey(email)] = token;
  localStorage.setItem(DEVICES_KEY, JSON.stringify(devices));
}

function withLock(task) {
  if (navigator.locks && typeof navigator.locks.request === "function") {
    return navigator.locks.request(LOCK_NAME, task);
  }
  return task();
}

export class Session extends EventTarget {
  constructor() {
    super();
    this._refreshing = null;
    // Another tab logged out or in: follow it.
    window.addEventListener("storage", (event) => {
      if (event.key !== STORAGE_KEY) return;
      const current = readSession();
      if (!current && event.oldValue) this._ended("You were logged out in another tab.");
    });
  }

  get email() {
    return readSession()?.email ?? null;
  }

  get loggedIn() {
    return readSession() !== null;
  }

  async register(email, password, invite = "") {
    const response = await fetch("/v1/auth/register", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify(invite ? { email, password, invite } : { email, password }),
    });
    if (!response.ok) throw await errorFrom(response);
    await this.login(email, password);
  }

  async login(email, password) {
    const form = new URLSearchParams({ username: email, password });
    const device = readDevices()[deviceKey(email)];
    if (typeof device === "string") form.set("device_token", device);
    const response = await fetch("/v1/auth/login", { method: "POST", body: form });
    if (!response.ok) throw await errorFrom(response);
    const tokens = await response.json();
    rememberDevice(email, tokens.device_token);
    writeSession(sessionFromTokens(email, tokens));
    this.dispatchEvent(new Event("login"));
  }

  logout() {
    writeSession(null);
    this.dispatchEvent(new CustomEvent("logout", { detail: { reason: null } }));
  }

  _ended(reason) {
    writeSession(null);
    this.dispatchEvent(new CustomEvent("logout", { detail: { reason } }));
  }

  /**
   * A valid access token, refreshed first when it is about to expire. With `stale`, the token
   * a request was just refused with: refresh unless another refresh already replaced it.
   */
  async accessToken(stale = null) {
    const session = readSession();
    if (!session) throw new ApiError(401, "you are not logged in", "not_authenticated");
    if (this._fresh(session, stale)) return session.access_token;
    if (!this._refreshing) {
      this._refreshing = withLock(() => this._refresh(stale)).finally(() => {
        this._refreshing = null;
      });
    }
    return this._refreshing;
  }

  _fresh(session, stale) {
    return (
      Boolean(session.access_token) &&
      session.access_token !== stale &&
      session.access_expires_at - EXPIRY_MARGIN_MS > Date.now()
    );
  }

  async _refresh(stale) {
    // Re-read inside the lock: another tab may have rotated the tokens while we waited.
    const session = readSession();
    if (!session) throw new ApiError(401, "you are not logged in", "not_authenticated");
    if (this._fresh(session, stale)) return session.access_token;
    let response;
    try {
      response = await fetch("/v1/auth/refresh", {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ refresh_token: session.refresh_token }),
      });
    } catch (error) {
      throw new ApiError(0, "the server cannot be reached; check your connection", "offline");
    }
    if (response.status === 401 || response.status === 422) {
      const error = await errorFrom(response);
      this._ended("Your session has expired. Please log in again.");
      throw error;
    }
    if (!response.ok) throw await errorFrom(response);
    const next = sessionFromTokens(session.email, await response.json());
    writeSession(next);
    return next.access_token;
  }

  /** fetch() with the bearer token; on a 401 refresh once and retry. */
  async fetch(path, init = {}) {
    let token = await this.accessToken();
    for (let attempt = 0; ; attempt += 1) {
      const headers = new Headers(init.headers || {});
      headers.set("authorization", `Bearer ${token}`);
      let response;
      try {
        response = await fetch(path, { ...init, headers });
      } catch (error) {
        if (error && error.name === "AbortError") throw error;
        throw new ApiError(0, "the server cannot be reached; check your connection", "offline");
      }
      if (response.status !== 401 || attempt > 0) return response;
      token = await this.accessToken(token);
    }
  }

  async json(path, init = {}) {
    const response = await this.fetch(path, init);
    if (!response.ok) throw await errorFrom(response);
    if (response.status === 204) return null;
    return response.json();
  }
}
