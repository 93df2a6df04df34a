// The live event stream (WS /v1/ws): connects with a single-use ticket, answers with a snapshot of
// the active jobs, then pushes every event of the user's jobs. Reconnects with exponential
// backoff and jitter; every (re)connection starts with a fresh snapshot, which resyncs the page.

const PING_INTERVAL_MS = 25_000;
const MAX_BACKOFF_MS = 15_000;

export class LiveEvents extends EventTarget {
  constructor(session) {
    super();
    this.session = session;
    this.socket = null;
    this.connecting = false;
    this.attempt = 0;
    this.stopped = true;
    this.retryTimer = null;
    this.pingTimer = null;
    this.state = "offline";
    this.onVisible = () => {
      if (document.visibilityState === "visible" && !this.stopped && !this.socket) {
        this._retryNow();
      }
    };
    this.onOnline = () => {
      if (!this.stopped && !this.socket) this._retryNow();
    };
  }

  start() {
    if (!this.stopped) return;
    this.stopped = false;
    this.attempt = 0;
    document.addEventListener("visibilitychange", this.onVisible);
    window.addEventListener("online", this.onOnline);
    this._connect();
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.retryTimer);
    clearInterval(this.pingTimer);
    document.removeEventListener("visibilitychange", this.onVisible);
    window.removeEventListener("online", this.onOnline);
    if (this.socket) {
      const socket = this.socket;
      this.socket = null;
      socket.close(1000, "bye");
    }
    this._setState("offline");
  }

  _setState(state) {
    if (this.state === state) return;
    this.state = state;
    this.dispatchEvent(new CustomEvent("state", { detail: state }));
  }

  _retryNow() {
    clearTimeout(this.retryTimer);
    this.attempt = 0;
    this._connect();
  }

  async _connect() {
    if (this.stopped || this.socket || this.connecting) return;
    this._setState(this.attempt === 0 ? "connecting" : "reconnecting");
    let ticket;
    this.connecting = true;
    try {
      // A single-use ticket, not the access token: the URL may be logged on the way.
      ({ ticket } = await this.session.json("/v1/ws-ticket", { method: "POST" }));
    } catch (error) {
      if (error.status === 401) return; // logged out; the session ends the page
      this._scheduleRetry();
      return;
    } finally {
      this.connecting = false;
    }
    if (this.stopped || this.socket) return;
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const url = `${scheme}//${location.host}/v1/ws?ticket=${encodeURIComponent(ticket)}`;
    const socket = new WebSocket(url);
    this.socket = socket;
    socket.addEventListener("message", (message) => {
      if (this.socket !== socket) return;
      let event;
      try {
        event = JSON.parse(message.data);
      } catch {
        return;
      }
      if (!event || typeof event.type !== "string" || event.type === "pong") return;
      if (event.type === "snapshot") {
        this.attempt = 0;
        this._setState("live");
      }
      this.dispatchEvent(new CustomEvent("event", { detail: event }));
    });
    socket.addEventListener("open", () => {
      clearInterval(this.pingTimer);
      this.pingTimer = setInterval(() => {
        if (socket.readyState === WebSocket.OPEN) socket.send("ping");
      }, PING_INTERVAL_MS);
    });
    socket.addEventListener("close", (close) => {
      if (this.socket !== socket) return;
      this.socket = null;
      clearInterval(this.pingTimer);
      if (this.stopped) return;
      // A refused ticket, or a token that ran out while the socket was open (1008): the next
      // ticket is asked for with a fresh token, which the session refreshes by itself.
      this._scheduleRetry();
    });
  }

  _delay() {
    const base = Math.min(MAX_BACKOFF_MS, 500 * 2 ** Math.max(0, this.attempt - 1));
    return base / 2 + Math.random() * (base / 2);
  }

  _scheduleRetry() {
    if (this.stopped) return;
    this.attempt += 1;
    this._setState("reconnecting");
    clearTimeout(this.retryTimer);
    this.retryTimer = setTimeout(() => this._connect(), this._delay());
  }
}
