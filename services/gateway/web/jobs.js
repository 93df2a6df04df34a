// The history of conversions: one card per job, kept in place and updated as events arrive, so
// that a playing <audio> is never torn down by an unrelated update.
//
// A finished job carries `output.stream_url`: a signed link that needs no bearer token, serves
// byte ranges and lives for an hour. The player streams from it (so it can seek without loading
// the whole file) and the download link points at it. Links older than STALE_MS are fetched
// again (GET /v1/jobs/{id}) before they are used, and a player whose link failed gets a new one.

import { errorFrom } from "./api.js";
import { formatAbsolute, formatBytes, formatDuration, formatWhen } from "./format.js";

const FINAL = new Set(["completed", "failed", "cancelled"]);
const RANK = { queued: 0, processing: 1, completed: 2, failed: 2, cancelled: 2 };
const STATUS_LABELS = {
  queued: "Queued",
  processing: "Converting",
  completed: "Done",
  failed: "Failed",
  cancelled: "Cancelled",
};
const CONFIRM_MS = 4000;
// Stream links live an hour; past this age one is replaced before it is used.
const STALE_MS = 50 * 60_000;
// A player that fails again this soon after getting a new link gives up instead of looping.
const RETRY_GAP_MS = 10_000;

/** The newer of two views of one job: a job never goes back from final, progress never drops. */
function merge(old, next) {
  if (!old) return next;
  // Only events tell how far a URL import's download is: the job document does not keep it.
  const fetched = Math.max(old.fetched ?? -1, next.fetched ?? -1);
  const known = fetched >= 0 ? { fetched } : {};
  if (RANK[old.status] > RANK[next.status]) {
    return { ...next, ...known, status: old.status, progress: old.progress, output: old.output, error: old.error };
  }
  if (old.status === next.status && !FINAL.has(next.status)) {
    return { ...next, ...known, progress: Math.max(old.progress || 0, next.progress || 0) };
  }
  return { ...next, ...known };
}

/** A queued URL import whose download is under way. */
function fetching(job) {
  return job.status === "queued" && job.fetched !== undefined && job.fetched < 100;
}

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function extensionOf(job) {
  const name = job.output?.filename || "";
  const dot = name.lastIndexOf(".");
  return dot > 0 ? name.slice(dot + 1).toUpperCase() : "MP3";
}

export class JobList {
  constructor({ list, session, announce, onChange }) {
    this.list = list;
    this.session = session;
    this.announce = announce;
    this.onChange = onChange;
    this.jobs = new Map();
    this.cards = new Map();
    this.links = new Map(); // job id -> {url, at}: the latest stream link and when it came
    this.fetching = new Map();
    this.touched = new Map();
    this.observer =
      "IntersectionObserver" in window
        ? new IntersectionObserver((entries) => this._onVisible(entries), { rootMargin: "200px" })
        : null;
    this.clock = setInterval(() => this._refreshTimes(), 30_000);
  }

  get size() {
    return this.jobs.size;
  }

  clear() {
    for (const card of this.cards.values()) this._stopPlayer(card);
    this.links.clear();
    this.jobs.clear();
    this.cards.clear();
    this.touched.clear();
    this.list.replaceChildren();
    this.onChange();
  }

  /** The first page of the history: add or update each, drop the ones deleted elsewhere. */
  replaceAll(items) {
    const ids = new Set(items.map((job) => job.id));
    const oldest = items.length ? items[items.length - 1].created_at : null;
    const now = Date.now();
    for (const [id, job] of this.jobs) {
      const inRange = oldest === null || job.created_at >= oldest;
      if (inRange && !ids.has(id) && now - (this.touched.get(id) || 0) > 10_000) this._remove(id);
    }
    for (const job of items) this.upsert(job);
  }

  upsert(job, { fresh = false } = {}) {
    const merged = merge(this.jobs.get(job.id), job);
    this.jobs.set(job.id, merged);
    this.touched.set(job.id, Date.now());
    const url = merged.status === "completed" ? merged.output?.stream_url : null;
    if (url && this.links.get(job.id)?.url !== url) this.links.set(job.id, { url, at: Date.now() });
    let card = this.cards.get(job.id);
    if (!card) {
      card = this._createCard(merged);
      this.cards.set(job.id, card);
      this._insertSorted(card, merged);
      if (fresh) card.classList.add("job-new");
    }
    this._render(card, merged);
    this.onChange();
  }

  /** A snapshot lists every active job; ones we thought active and are not there have ended. */
  resync(active) {
    const ids = new Set(active.map((job) => job.id));
    for (const job of active) this.upsert(job);
    for (const [id, job] of this.jobs) {
      if (!FINAL.has(job.status) && !ids.has(id)) this.fetchJob(id);
    }
  }

  applyEvent(event) {
    const id = event.job_id;
    const job = this.jobs.get(id);
    if (!job) {
      this.fetchJob(id);
      return;
    }
    const next = { ...job };
    switch (event.type) {
      case "job.started":
        next.status = "processing";
        this.fetchJob(id); // the converter has probed the source: duration and codecs are known
        break;
      case "job.progress":
        if (event.stage === "fetch") {
          next.fetched = Math.max(job.fetched || 0, event.progress ?? 0);
          break;
        }
        next.status = "processing";
        next.progress = Math.max(job.progress || 0, event.progress ?? 0);
        break;
      case "job.completed":
        next.status = "completed";
        next.progress = 100;
        this.announce(`${job.filename} is ready`);
        this.fetchJob(id);
        break;
      case "job.failed":
        next.status = "failed";
        next.error = { code: event.code, detail: event.detail };
        this.announce(`${job.filename} failed: ${event.detail}`);
        this.fetchJob(id);
        break;
      case "job.cancelled":
        next.status = "cancelled";
        this.announce(`${job.filename} cancelled`);
        break;
      default:
        return;
    }
    this.upsert(next);
  }

  /** Load one job from the API (deduplicated); a 404 means it is gone. True when it loaded. */
  fetchJob(id) {
    if (this.fetching.has(id)) return this.fetching.get(id);
    const task = (async () => {
      try {
        const response = await this.session.fetch(`/v1/jobs/${encodeURIComponent(id)}`);
        if (response.status === 404) this._remove(id);
        else if (response.ok) {
          this.upsert(await response.json());
          return true;
        }
        return false;
      } catch {
        return false; // the next snapshot resyncs
      } finally {
        this.fetching.delete(id);
      }
    })();
    this.fetching.set(id, task);
    return task;
  }

  // --- cards ---

  _insertSorted(card, job) {
    const before = [...this.list.children].find((other) => {
      const otherJob = this.jobs.get(other.dataset.id);
      return otherJob && otherJob.created_at < job.created_at;
    });
    this.list.insertBefore(card, before || null);
  }

  _createCard(job) {
    const card = el("li", "job");
    card.dataset.id = job.id;
    card.setAttribute("aria-labelledby", `job-${job.id}-name`);
    const icon = el("div", "job-icon");
    icon.setAttribute("aria-hidden", "true");
    const main = el("div", "job-main");
    const head = el("div", "job-head");
    const name = el("h3", "job-name", job.filename);
    name.id = `job-${job.id}-name`;
    name.title = job.filename;
    const pill = el("span", "status-pill");
    pill.id = `job-${job.id}-status`;
    head.append(name, pill);
    const meta = el("p", "job-meta");
    const bar = el("progress", "bar");
    bar.max = 100;
    bar.setAttribute("aria-labelledby", `job-${job.id}-name`);
    bar.setAttribute("aria-describedby", `job-${job.id}-status`);
    const error = el("p", "job-error");
    const player = el("div", "job-player");
    const actions = el("div", "job-actions");
    main.append(head, meta, bar, error, player, actions);
    card.append(icon, main);
    card.parts = { name, pill, meta, bar, error, player, actions };
    return card;
  }

  _render(card, job) {
    const { pill, meta, bar, error } = card.parts;
    const active = !FINAL.has(job.status);
    card.dataset.status = job.status;
    card.dataset.progress = String(job.progress ?? 0);

    let label = STATUS_LABELS[job.status] || job.status;
    if (job.status === "processing") label = `Converting ${job.progress ?? 0}%`;
    else if (fetching(job)) label = `Fetching ${job.fetched}%`;
    pill.textContent = label;
    pill.className = `status-pill status-${job.status}`;

    bar.hidden = !active;
    if (active) {
      if (fetching(job)) bar.value = job.fetched;
      else if (job.status === "queued" && !job.progress) bar.removeAttribute("value");
      else bar.value = job.progress ?? 0;
    }

    meta.replaceChildren(...this._metaParts(job));
    error.hidden = job.status !== "failed";
    error.textContent = job.status === "failed" ? this._reason(job) : "";
    const link = job.status === "completed" && job.output ? this.links.get(job.id) : null;
    if (link) this._ensurePlayer(card, job);
    this._renderActions(card, job, link);
    if (link) this._linkChanged(card, link);
  }

  _metaParts(job) {
    const parts = [];
    const when = el("time", null, formatWhen(job.created_at));
    when.dateTime = job.created_at;
    when.title = formatAbsolute(job.created_at);
    when.dataset.when = job.created_at;
    parts.push(when);
    const duration = job.output?.duration ?? job.source?.duration;
    if (Number.isFinite(duration)) parts.push(el("span", null, formatDuration(duration)));
    if (job.source?.size) parts.push(el("span", null, `video ${formatBytes(job.source.size)}`));
    if (job.status === "completed" && job.output) {
      let text = `${extensionOf(job)} ${formatBytes(job.output.size)}`;
      if (job.output.bitrate) text += `, ${Math.round(job.output.bitrate / 1000)} kbit/s`;
      parts.push(el("span", "meta-output", text));
    }
    const out = [];
    parts.forEach((part, index) => {
      if (index) out.push(el("span", "meta-sep", " · "));
      out.push(part);
    });
    return out;
  }

  _reason(job) {
    const detail = job.error?.detail || "the conversion failed";
    return detail[0].toUpperCase() + detail.slice(1) + (/[.!?]$/.test(detail) ? "" : ".");
  }

  _renderActions(card, job, link) {
    const { actions } = card.parts;
    const key = `${job.status}:${link ? "o" : ""}`;
    if (actions.dataset.key === key) return;
    actions.dataset.key = key;
    const buttons = [];
    card.parts.download = null;
    if (link) {
      // A plain link: the browser downloads it itself (the server names the file too).
      const download = el("a", "button button-primary button-small", "Download");
      download.href = link.url;
      download.download = job.output.filename || "";
      download.setAttribute("aria-label", `Download ${job.output.filename || job.filename}`);
      download.addEventListener("click", (event) => this._download(job.id, download, event));
      // About to be used (or copied, or middle-clicked): renew an old link ahead of the click.
      const renew = () => {
        if (this._stale(this.links.get(job.id))) this._freshLink(job.id).catch(() => {});
      };
      download.addEventListener("pointerenter", renew);
      download.addEventListener("focus", renew);
      card.parts.download = download;
      buttons.push(download);
    }
    if (FINAL.has(job.status)) {
      const remove = el("button", "button button-quiet button-small", "Delete");
      remove.type = "button";
      remove.setAttribute("aria-label", `Delete ${job.filename}`);
      remove.addEventListener("click", () => this._confirmDelete(job.id, remove));
      buttons.push(remove);
    } else {
      const cancel = el("button", "button button-quiet button-small", "Cancel");
      cancel.type = "button";
      cancel.setAttribute("aria-label", `Cancel the conversion of ${job.filename}`);
      cancel.addEventListener("click", () => this._cancel(job.id, cancel));
      buttons.push(cancel);
    }
    const hadFocus = actions.contains(document.activeElement);
    actions.replaceChildren(...buttons);
    if (hadFocus) buttons[buttons.length - 1].focus();
  }

  async _cancel(id, button) {
    button.disabled = true;
    try {
      const response = await this.session.fetch(`/v1/jobs/${encodeURIComponent(id)}`, { method: "DELETE" });
      if (!response.ok && response.status !== 404) throw await errorFrom(response);
      await this.fetchJob(id);
    } catch (error) {
      button.disabled = false;
      this.announce(`Could not cancel: ${error.detail || error}`);
    }
  }

  _confirmDelete(id, button) {
    if (button.dataset.confirming !== "true") {
      button.dataset.confirming = "true";
      button.textContent = "Delete for good?";
      button.classList.add("button-danger");
      this.announce("Press again to delete this conversion and its files");
      button.confirmTimer = setTimeout(() => {
        button.dataset.confirming = "false";
        button.textContent = "Delete";
        button.classList.remove("button-danger");
      }, CONFIRM_MS);
      return;
    }
    clearTimeout(button.confirmTimer);
    this._delete(id, button);
  }

  async _delete(id, button) {
    button.disabled = true;
    const job = this.jobs.get(id);
    try {
      const response = await this.session.fetch(`/v1/jobs/${encodeURIComponent(id)}`, { method: "DELETE" });
      if (!response.ok && response.status !== 404) throw await errorFrom(response);
      const card = this.cards.get(id);
      const next = card?.nextElementSibling || card?.previousElementSibling;
      this._remove(id);
      this.announce(`${job ? job.filename : "The conversion"} deleted`);
      (next?.querySelector("button") || document.querySelector("#pick-files"))?.focus();
    } catch (error) {
      button.disabled = false;
      this.announce(`Could not delete: ${error.detail || error}`);
    }
  }

  _remove(id) {
    const card = this.cards.get(id);
    if (card) {
      this.observer?.unobserve(card.parts.player);
      this._stopPlayer(card);
      card.remove();
    }
    this.links.delete(id);
    this.cards.delete(id);
    this.jobs.delete(id);
    this.touched.delete(id);
    this.onChange();
  }

  // --- listening and downloading ---

  _stale(link) {
    return !link || Date.now() - link.at > STALE_MS;
  }

  /** A stream link young enough to use, fetching the job again when ours is stale (or `force`). */
  async _freshLink(id, { force = false } = {}) {
    const link = this.links.get(id);
    if (!force && !this._stale(link)) return link;
    const loaded = await this.fetchJob(id);
    const next = this.links.get(id);
    if (!loaded || !next || this._stale(next)) {
      throw new Error("a new link to the file could not be fetched");
    }
    return next;
  }

  _ensurePlayer(card, job) {
    const { player } = card.parts;
    if (player.dataset.ready) return;
    player.dataset.ready = "true";
    const audio = el("audio");
    audio.controls = true;
    audio.preload = "metadata"; // only the headers until it plays; the rest streams in ranges
    audio.setAttribute("aria-label", `Listen to ${job.output.filename || job.filename}`);
    const note = el("span", "player-note muted", "Loading audio…");
    player.append(audio, note);
    card.parts.audio = audio;
    card.parts.note = note;
    card.parts.loaded = null; // the link the player was given, {url, at}
    audio.addEventListener("loadedmetadata", () => {
      note.hidden = true;
      note.textContent = "";
    });
    audio.addEventListener("play", () => this._onPlay(card));
    audio.addEventListener("error", () => this._onAudioError(card));
    // Lazily: the player gets its link when it scrolls into view.
    if (this.observer) this.observer.observe(player);
    else this._loadAudio(job.id);
  }

  _onVisible(entries) {
    for (const entry of entries) {
      if (!entry.isIntersecting) continue;
      this.observer.unobserve(entry.target);
      const card = entry.target.closest(".job");
      if (card) this._loadAudio(card.dataset.id);
    }
  }

  /** Point the player at the stream link, after making sure that the link is fresh. */
  async _loadAudio(id) {
    const card = this.cards.get(id);
    if (!card?.parts.audio || card.parts.loaded) return;
    try {
      const link = await this._freshLink(id);
      if (!card.parts.loaded) this._setSource(card, link);
    } catch (error) {
      this._audioFailed(card, error);
    }
  }

  /**
   * Give the player a link, keeping its position (and playing on if it was meant to be playing).
   * Never called while it is playing normally: a playing <audio> is left alone.
   */
  _setSource(card, link, { resume = false } = {}) {
    const { audio } = card.parts;
    const position = card.parts.loaded ? audio.currentTime : 0;
    card.parts.loaded = link;
    audio.src = link.url;
    if (position > 0 || resume) {
      audio.addEventListener(
        "loadedmetadata",
        () => {
          if (position > 0) audio.currentTime = position;
          if (resume) audio.play().catch(() => {});
        },
        { once: true },
      );
    }
  }

  /** A new link arrived: move a paused player whose link is stale over to it, and the button. */
  _linkChanged(card, link) {
    if (card.parts.download && card.parts.download.href !== new URL(link.url, location.href).href) {
      card.parts.download.href = link.url;
    }
    const { audio, loaded } = card.parts;
    if (card.parts.refreshing || !audio || !loaded || loaded.url === link.url) return;
    if (audio.paused && this._stale(loaded)) {
      this._setSource(card, link);
    }
  }

  /** Pressing play on an old link: get a new one first, then play on from the same place. */
  async _onPlay(card) {
    const { audio, loaded } = card.parts;
    if (!loaded || !this._stale(loaded) || card.parts.refreshing) return;
    card.parts.refreshing = true;
    audio.pause();
    try {
      this._setSource(card, await this._freshLink(card.dataset.id), { resume: true });
    } catch (error) {
      this._audioFailed(card, error);
    } finally {
      card.parts.refreshing = false;
    }
  }

  /** The player could not load its link (most likely expired): fetch a new one, once. */
  async _onAudioError(card) {
    const { audio } = card.parts;
    if (!card.parts.loaded || card.parts.refreshing || !audio.getAttribute("src")) return;
    const now = Date.now();
    if (now - (card.parts.retriedAt || 0) < RETRY_GAP_MS) {
      this._audioFailed(card, audio.error?.message || "the server refused the file");
      return;
    }
    card.parts.retriedAt = now;
    card.parts.refreshing = true;
    const resume = !audio.paused;
    try {
      this._setSource(card, await this._freshLink(card.dataset.id, { force: true }), { resume });
    } catch (error) {
      this._audioFailed(card, error);
    } finally {
      card.parts.refreshing = false;
    }
  }

  _audioFailed(card, error) {
    const { note } = card.parts;
    if (!note || !card.isConnected) return;
    const reason = String(error?.detail || error?.message || error || "unknown error").replace(/\.$/, "");
    note.textContent = `The audio could not be loaded: ${reason}.`;
    note.hidden = false;
  }

  _stopPlayer(card) {
    const { audio } = card.parts;
    if (!audio) return;
    audio.pause();
    card.parts.loaded = null;
    audio.removeAttribute("src");
    audio.load(); // drops the connection and anything buffered
  }

  /** The link downloads by itself; when its URL is stale, fetch a new one first. */
  async _download(id, link, event) {
    if (link.getAttribute("aria-busy") === "true") {
      event.preventDefault(); // already fetching a new link
      return;
    }
    if (!this._stale(this.links.get(id))) return;
    event.preventDefault();
    link.setAttribute("aria-busy", "true");
    try {
      const fresh = await this._freshLink(id);
      link.href = fresh.url;
      link.removeAttribute("aria-busy");
      if (link.isConnected) link.click(); // fresh now, so this one goes through
    } catch (error) {
      this.announce(`The download failed: ${error.detail || error.message || error}`);
    } finally {
      link.removeAttribute("aria-busy");
    }
  }

  _refreshTimes() {
    for (const time of this.list.querySelectorAll("time[data-when]")) {
      time.textContent = formatWhen(time.dataset.when);
    }
  }
}
