// The page: log in, upload, follow conversions live, listen, download.

import { ApiError, Session } from "./api.js";
import { formatAbsolute, formatBytes, formatSpeed, formatWhen, SpeedMeter } from "./format.js";
import { JobList } from "./jobs.js";
import { ApiKeys } from "./keys.js";
import { LiveEvents } from "./live.js";
import { OptionsPanel } from "./options.js";
import { uploadFile } from "./upload.js";
import { initAccounts } from "./accounts.js";

const $ = (selector) => document.querySelector(selector);
const PAGE_SIZE = 20;
const PARALLEL_UPLOADS = 2;
const NOTIFICATION_POLL_MS = 60_000;
const FINAL_EVENTS = new Set(["job.completed", "job.failed", "job.cancelled"]);

const session = new Session();
const live = new LiveEvents(session);

// --- announcements for screen readers -------------------------------------------------------

let announceTimer = null;
function announce(text) {
  const region = $("#announcer");
  clearTimeout(announceTimer);
  region.textContent = "";
  announceTimer = setTimeout(() => {
    region.textContent = text;
  }, 50);
}

// --- log in / create an account -------------------------------------------------------------

const auth = {
  mode: "login",

  init() {
    $("#auth-switch").addEventListener("click", () => {
      this.setMode(this.mode === "login" ? "register" : "login");
      $("#auth-email").focus();
    });
    $("#auth-form").addEventListener("submit", (event) => {
      event.preventDefault();
      this.submit();
    });
    for (const id of ["auth-email", "auth-password"]) {
      $(`#${id}`).addEventListener("input", () => this.clearField(id));
    }
  },

  setMode(mode) {
    this.mode = mode;
    const register = mode === "register";
    $("#auth-heading").textContent = register ? "Create your account" : "Log in";
    $("#auth-submit").textContent = register ? "Create account" : "Log in";
    $("#auth-switch-text").textContent = register ? "Already have an account?" : "New here?";
    $("#auth-switch").textContent = register ? "Log in" : "Create an account";
    $("#auth-password").autocomplete = register ? "new-password" : "current-password";
    $("#auth-password-hint").hidden = !register;
    $("#auth-invite-field").hidden = !register;
    this.clearErrors();
  },

  clearField(id) {
    $(`#${id}`).removeAttribute("aria-invalid");
    $(`#${id}-error`).textContent = "";
    $("#auth-error").textContent = "";
  },

  clearErrors() {
    this.clearField("auth-email");
    this.clearField("auth-password");
  },

  fieldError(id, message) {
    $(`#${id}`).setAttribute("aria-invalid", "true");
    $(`#${id}-error`).textContent = message;
  },

  show(notice = null) {
    $("#auth-notice").hidden = !notice;
    $("#auth-notice").textContent = notice || "";
    $("#auth-password").value = "";
    this.clearErrors();
  },

  async submit() {
    this.clearErrors();
    const email = $("#auth-email").value.trim();
    const password = $("#auth-password").value;
    let invalid = false;
    if (!email || !$("#auth-email").checkValidity()) {
      this.fieldError("auth-email", "Enter your email address, like ada@example.com.");
      invalid = true;
    }
    if (!password) {
      this.fieldError("auth-password", "Enter your password.");
      invalid = true;
    }
    if (invalid) {
      $("#auth-form").querySelector("[aria-invalid=true]").focus();
      return;
    }
    const button = $("#auth-submit");
    button.disabled = true;
    button.setAttribute("aria-busy", "true");
    try {
      if (this.mode === "register") await session.register(email, password, $("#auth-invite").value.trim());
      else await session.login(email, password);
    } catch (error) {
      this.showError(error);
    } finally {
      button.disabled = false;
      button.removeAttribute("aria-busy");
    }
  },

  showError(error) {
    const code = error instanceof ApiError ? error.code : "";
    const detail = error instanceof ApiError ? error.detail : String(error);
    if (code === "email_taken") {
      this.fieldError("auth-email", "An account with this email already exists. Log in instead?");
      $("#auth-email").focus();
    } else if (code === "weak_password") {
      this.fieldError("auth-password", capitalize(detail) + ".");
      $("#auth-password").focus();
    } else if (code === "invalid_credentials") {
      $("#auth-error").textContent = "Wrong email or password.";
      $("#auth-password").focus();
    } else if (code === "too_many_attempts") {
      $("#auth-error").textContent =
        "Too many failed logins. Try again in a few minutes.";
    } else if (error instanceof ApiError && error.status === 403) {
      // registration_closed, invite_required, account_disabled: the server's words say it.
      $("#auth-error").textContent = capitalize(detail) + ".";
    } else if (error instanceof ApiError && error.status === 422) {
      const field = (error.errors[0] && error.errors[0].field) || "";
      if (field.includes("email")) this.fieldError("auth-email", "This is not a valid email address.");
      else if (field.includes("password")) this.fieldError("auth-password", capitalize(detail));
      else $("#auth-error").textContent = capitalize(detail);
    } else {
      $("#auth-error").textContent = `Something went wrong: ${detail}.`;
    }
  },
};

function capitalize(text) {
  return text ? text[0].toUpperCase() + text.slice(1) : text;
}

// --- the job history -------------------------------------------------------------------------

const jobs = new JobList({
  list: $("#jobs"),
  session,
  announce,
  onChange: () => updateEmptyState(),
});

const history = {
  cursor: null,
  loading: false,

  async loadFirst() {
    this.cursor = null;
    $("#history-error").textContent = "";
    try {
      const page = await session.json(`/v1/jobs?limit=${PAGE_SIZE}`);
      jobs.replaceAll(page.items);
      this.cursor = page.next_cursor;
    } catch (error) {
      if (error.status !== 401) $("#history-error").textContent = `Your conversions could not be loaded: ${error.detail || error}.`;
    }
    $("#load-more").hidden = !this.cursor;
    updateEmptyState();
  },

  async loadMore() {
    if (!this.cursor || this.loading) return;
    this.loading = true;
    const button = $("#load-more");
    button.disabled = true;
    try {
      const page = await session.json(`/v1/jobs?limit=${PAGE_SIZE}&cursor=${encodeURIComponent(this.cursor)}`);
      for (const job of page.items) jobs.upsert(job);
      this.cursor = page.next_cursor;
    } catch (error) {
      $("#history-error").textContent = `Older conversions could not be loaded: ${error.detail || error}.`;
    } finally {
      this.loading = false;
      button.disabled = false;
      button.hidden = !this.cursor;
    }
  },
};

function updateEmptyState() {
  const empty = jobs.size === 0 && $("#uploads").children.length === 0;
  $("#history-empty").hidden = !empty;
}

// --- uploads ----------------------------------------------------------------------------------

const uploads = {
  queue: [],
  running: 0,

  init() {
    const input = $("#file-input");
    $("#pick-files").addEventListener("click", () => input.click());
    input.addEventListener("change", () => {
      this.add([...input.files]);
      input.value = "";
    });
    const zone = $("#dropzone");
    let depth = 0;
    zone.addEventListener("dragenter", (event) => {
      if (!hasFiles(event)) return;
      event.preventDefault();
      depth += 1;
      zone.classList.add("dragging");
    });
    zone.addEventListener("dragover", (event) => {
      if (!hasFiles(event)) return;
      event.preventDefault();
      event.dataTransfer.dropEffect = "copy";
    });
    zone.addEventListener("dragleave", () => {
      depth = Math.max(0, depth - 1);
      if (depth === 0) zone.classList.remove("dragging");
    });
    zone.addEventListener("drop", (event) => {
      event.preventDefault();
      depth = 0;
      zone.classList.remove("dragging");
      this.add([...(event.dataTransfer?.files || [])]);
    });
    // A file dropped next to the drop zone must not make the browser leave the page.
    for (const type of ["dragover", "drop"]) {
      window.addEventListener(type, (event) => {
        if (hasFiles(event)) event.preventDefault();
      });
    }
  },

  add(files) {
    if (!files.length) return;
    const fields = options.fields();
    for (const file of files) {
      const item = new UploadItem(file, fields);
      $("#uploads").append(item.element);
      this.queue.push(item);
    }
    updateEmptyState();
    announce(files.length === 1 ? `Uploading ${files[0].name}` : `Uploading ${files.length} files`);
    this.pump();
  },

  pump() {
    while (this.running < PARALLEL_UPLOADS && this.queue.length) {
      const item = this.queue.shift();
      if (item.cancelled) continue;
      this.running += 1;
      item.run().finally(() => {
        this.running -= 1;
        this.pump();
      });
    }
  },

  cancelAll() {
    for (const item of this.queue) item.cancel();
    this.queue = [];
    for (const element of [...$("#uploads").children]) element.upload?.cancel();
    $("#uploads").replaceChildren();
  },
};

function hasFiles(event) {
  return Boolean(event.dataTransfer && [...event.dataTransfer.types].includes("Files"));
}

class UploadItem {
  constructor(file, fields) {
    this.file = file;
    this.fields = fields;
    this.controller = new AbortController();
    this.cancelled = false;
    this.meter = new SpeedMeter();
    this.lastAnnounced = 0;
    const li = document.createElement("li");
    li.className = "upload";
    li.dataset.state = "waiting";
    li.upload = this;
    li.innerHTML = `
      <div class="upload-row">
        <div class="upload-name"></div>
        <button type="button" class="button button-quiet button-small upload-action">Cancel</button>
      </div>
      <progress class="bar" max="100" value="0"></progress>
      <p class="upload-status" aria-live="off"></p>`;
    li.querySelector(".upload-name").textContent = file.name;
    const bar = li.querySelector("progress");
    bar.setAttribute("aria-label", `Upload of ${file.name}`);
    this.action = li.querySelector(".upload-action");
    this.action.setAttribute("aria-label", `Cancel the upload of ${file.name}`);
    this.action.addEventListener("click", () => (this.done ? this.remove() : this.cancel()));
    this.element = li;
    this.bar = bar;
    this.status = li.querySelector(".upload-status");
    this.status.textContent = `Waiting · ${formatBytes(file.size)}`;
  }

  async run() {
    this.element.dataset.state = "uploading";
    this.status.textContent = `Starting · ${formatBytes(this.file.size)}`;
    try {
      const job = await uploadFile(
        session,
        this.file,
        this.fields,
        (loaded, total) => this.progress(loaded, total),
        this.controller.signal,
      );
      jobs.upsert(job, { fresh: true });
      announce(`${this.file.name} uploaded; converting`);
      this.remove();
    } catch (error) {
      if (this.cancelled) return;
      this.fail(error);
    }
  }

  progress(loaded, total) {
    this.meter.add(loaded);
    const percent = total ? Math.min(100, Math.floor((loaded / total) * 100)) : 0;
    this.bar.value = percent;
    const speed = this.meter.bytesPerSecond;
    this.status.textContent =
      loaded >= total
        ? `${formatBytes(total)} sent · waiting for the server`
        : `${formatBytes(loaded)} of ${formatBytes(total)}${speed ? ` · ${formatSpeed(speed)}` : ""}`;
    this.element.dataset.loaded = String(loaded);
    if (percent >= this.lastAnnounced + 25 && percent < 100) {
      this.lastAnnounced = percent - (percent % 25);
      announce(`${this.file.name}: uploaded ${this.lastAnnounced}%`);
    }
  }

  fail(error) {
    this.done = true;
    this.element.dataset.state = "failed";
    this.bar.hidden = true;
    const detail = error instanceof ApiError ? error.detail : String(error);
    const fieldErrors = (error.errors || []).map((e) => `${e.field}: ${e.reason}`).join("; ");
    this.status.textContent = `Not uploaded: ${capitalize(fieldErrors || detail)}.`;
    this.status.setAttribute("role", "alert");
    this.action.textContent = "Dismiss";
    this.action.setAttribute("aria-label", `Dismiss the failed upload of ${this.file.name}`);
  }

  cancel() {
    this.cancelled = true;
    this.controller.abort();
    this.remove();
    announce(`Upload of ${this.file.name} cancelled`);
  }

  remove() {
    const hadFocus = this.element.contains(document.activeElement);
    this.element.remove();
    if (hadFocus) $("#pick-files").focus();
    updateEmptyState();
  }
}

// --- notifications ----------------------------------------------------------------------------

const notifications = {
  items: [],
  timer: null,

  seenKey() {
    return `video2mp3.seen-notifications.${session.email}`;
  },

  seen() {
    try {
      return new Set(JSON.parse(localStorage.getItem(this.seenKey()) || "[]"));
    } catch {
      return new Set();
    }
  },

  init() {
    const button = $("#notifications-button");
    const panel = $("#notifications-panel");
    button.addEventListener("click", () => (panel.hidden ? this.open() : this.close()));
    document.addEventListener("keydown", (event) => {
      if (event.key === "Escape" && !panel.hidden) {
        this.close();
        button.focus();
      }
    });
    document.addEventListener("click", (event) => {
      if (!panel.hidden && !panel.contains(event.target) && !button.contains(event.target)) this.close();
    });
  },

  open() {
    const panel = $("#notifications-panel");
    panel.hidden = false;
    $("#notifications-button").setAttribute("aria-expanded", "true");
    panel.focus();
    // No mark-as-read endpoint yet: remember in this browser what was shown.
    const ids = this.items.map((item) => item.id);
    localStorage.setItem(this.seenKey(), JSON.stringify(ids.slice(0, 500)));
    this.renderBadge();
  },

  close() {
    $("#notifications-panel").hidden = true;
    $("#notifications-button").setAttribute("aria-expanded", "false");
  },

  start() {
    this.refresh();
    clearInterval(this.timer);
    this.timer = setInterval(() => {
      if (document.visibilityState === "visible") this.refresh();
    }, NOTIFICATION_POLL_MS);
  },

  stop() {
    clearInterval(this.timer);
    this.items = [];
    this.close();
    this.render();
  },

  /** Soon after a job ends its notification appears; look a few times. */
  refreshSoon() {
    for (const delay of [800, 3000, 8000]) setTimeout(() => this.refresh(), delay);
  },

  async refresh() {
    if (!session.loggedIn) return;
    try {
      const body = await session.json("/v1/notifications");
      this.items = [...(body.items || [])].sort((a, b) => String(b.created_at).localeCompare(String(a.created_at)));
      this.render();
    } catch {
      // the badge simply stays as it was; the next poll tries again
    }
  },

  unread() {
    const seen = this.seen();
    return this.items.filter((item) => !item.read && !seen.has(item.id)).length;
  },

  renderBadge() {
    const count = this.unread();
    const badge = $("#notification-badge");
    badge.hidden = count === 0;
    badge.textContent = count > 99 ? "99+" : String(count);
    $("#notifications-label").textContent = count ? `Notifications, ${count} unread` : "Notifications";
  },

  render() {
    this.renderBadge();
    const list = $("#notifications-list");
    $("#notifications-empty").hidden = this.items.length > 0;
    list.replaceChildren(
      ...this.items.slice(0, 50).map((item) => {
        const li = document.createElement("li");
        li.className = `notification notification-${item.type === "job.failed" ? "failed" : "done"}`;
        const title = document.createElement("p");
        title.className = "notification-title";
        title.textContent = item.title;
        const body = document.createElement("p");
        body.className = "notification-body";
        body.textContent = item.body;
        const when = document.createElement("time");
        when.className = "muted";
        when.dateTime = item.created_at;
        when.title = formatAbsolute(item.created_at);
        when.textContent = formatWhen(item.created_at);
        li.append(title, body, when);
        if (typeof item.link === "string" && /^https?:\/\//.test(item.link)) {
          const link = document.createElement("a");
          link.href = item.link;
          link.textContent = "Download link";
          link.className = "notification-link";
          li.append(" · ", link);
        }
        return li;
      }),
    );
  },
};

// --- live events ------------------------------------------------------------------------------

const LIVE_LABELS = { live: "Live", connecting: "Connecting…", reconnecting: "Reconnecting…", offline: "Offline" };

live.addEventListener("state", (event) => {
  const indicator = $("#live-state");
  indicator.dataset.state = event.detail;
  indicator.querySelector(".live-text").textContent = LIVE_LABELS[event.detail] || event.detail;
});

let snapshots = 0;
live.addEventListener("event", (event) => {
  const message = event.detail;
  if (message.type === "snapshot") {
    jobs.resync(message.jobs || []);
    // After a reconnect, anything may have happened: reload the first page of the history.
    if (snapshots > 0) history.loadFirst();
    snapshots += 1;
    return;
  }
  jobs.applyEvent(message);
  if (FINAL_EVENTS.has(message.type) && message.type !== "job.cancelled") notifications.refreshSoon();
});

// --- putting it together ----------------------------------------------------------------------

const options = new OptionsPanel($("#options"));
const apiKeys = new ApiKeys(session, $("#api-keys"));

function showApp() {
  $("#boot").hidden = true;
  $("#auth-view").hidden = true;
  $("#app-view").hidden = false;
  $("#account").hidden = false;
  $("#user-email").textContent = session.email;
  snapshots = 0;
  history.loadFirst();
  notifications.start();
  live.start();
  apiKeys.load();
}

function showAuth(notice = null) {
  $("#boot").hidden = true;
  live.stop();
  notifications.stop();
  uploads.cancelAll();
  jobs.clear();
  apiKeys.clear();
  $("#account").hidden = true;
  $("#app-view").hidden = true;
  $("#auth-view").hidden = false;
  auth.show(notice);
}

session.addEventListener("login", () => {
  showApp();
  $("#upload-heading").setAttribute("tabindex", "-1");
  $("#upload-heading").focus();
});
session.addEventListener("logout", (event) => {
  auth.setMode("login"); // they have an account: after registering too, the way back is logging in
  showAuth(event.detail.reason);
  $("#auth-email").focus();
});

$("#logout").addEventListener("click", () => session.logout());
$("#load-more").addEventListener("click", () => history.loadMore());

auth.init();
uploads.init();
notifications.init();
initAccounts(session);

if (session.loggedIn) {
  showApp();
} else {
  showAuth();
}
document.documentElement.dataset.ready = "true";
