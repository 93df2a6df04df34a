// The "Options" panel: conversion options as multipart form fields (see shared/options.py).
// Only what differs from the defaults is sent, so an untouched panel sends nothing.

const LOSSLESS = new Set(["flac", "wav"]);
const COVER_FORMATS = new Set(["mp3", "m4a", "flac"]);
const DEFAULT_BITRATE = { m4a: 192, opus: 128 };
const TEXT_FIELDS = ["start", "end", "audio_track", "title", "artist", "album", "year", "genre"];

export class OptionsPanel {
  constructor(root) {
    this.root = root;
    this.form = root.querySelector("#options-form");
    this.el = (id) => this.form.querySelector(`#${id}`);
    this.summary = root.querySelector("#options-summary");
    this.form.addEventListener("input", () => this.sync());
    this.form.addEventListener("change", () => this.sync());
    this.form.addEventListener("reset", () => setTimeout(() => this.sync(), 0));
    this.form.addEventListener("submit", (event) => event.preventDefault());
    this.sync();
  }

  /** Enable what applies to the chosen format, and say so in the summary line. */
  sync() {
    const format = this.el("opt-format").value;
    const quality = this.el("opt-quality");
    const lossless = LOSSLESS.has(format);
    quality.disabled = lossless;
    for (const option of quality.options) {
      option.disabled = option.hasAttribute("data-vbr") && format !== "mp3";
    }
    if (quality.selectedOptions[0]?.disabled) quality.value = "";
    const hint = this.el("opt-quality-hint");
    if (lossless) hint.textContent = "Lossless: no quality setting.";
    else if (format === "mp3") hint.textContent = "Standard is VBR V2, about 190 kbit/s.";
    else hint.textContent = `Standard is ${DEFAULT_BITRATE[format]} kbit/s.`;

    const sampleRate = this.el("opt-sample-rate");
    sampleRate.disabled = format === "opus";
    if (format === "opus") sampleRate.value = "keep";

    const cover = this.el("opt-cover");
    cover.disabled = !COVER_FORMATS.has(format);
    if (cover.disabled) cover.checked = false;

    this.el("opt-loudness-field").hidden = !this.el("opt-normalize").checked;
    this.summary.textContent = this.describe();
  }

  describe() {
    const fields = this.fields();
    const parts = [(fields.format || "mp3").toUpperCase()];
    if (fields.bitrate) parts.push(`${fields.bitrate} kbit/s`);
    else if (fields.quality) parts.push(`VBR V${fields.quality}`);
    else if (!LOSSLESS.has(fields.format || "mp3")) parts.push("standard quality");
    if (fields.start || fields.end) parts.push("trimmed");
    if (fields.normalize) parts.push("normalized");
    if (fields.title || fields.artist || fields.album) parts.push("tagged");
    return parts.join(", ");
  }

  /** The form fields to send with each upload: only those that differ from the defaults. */
  fields() {
    const out = {};
    const format = this.el("opt-format").value;
    if (format !== "mp3") out.format = format;
    const preset = this.el("opt-quality").disabled ? "" : this.el("opt-quality").value;
    if (preset.startsWith("q:")) out.quality = preset.slice(2);
    if (preset.startsWith("b:")) out.bitrate = preset.slice(2);
    const sampleRate = this.el("opt-sample-rate");
    if (!sampleRate.disabled && sampleRate.value !== "keep") out.sample_rate = sampleRate.value;
    if (this.el("opt-channels").value !== "2") out.channels = this.el("opt-channels").value;
    for (const name of TEXT_FIELDS) {
      const value = this.form.elements[name].value.trim();
      if (value !== "") out[name] = value;
    }
    if (this.el("opt-normalize").checked) {
      out.normalize = "true";
      const target = this.el("opt-loudness").value.trim();
      if (target !== "" && Number(target) !== -14) out.loudness_target = target;
    }
    if (this.el("opt-cover").checked && !this.el("opt-cover").disabled) out.cover = "frame";
    return out;
  }
}
