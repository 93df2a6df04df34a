// Accounts beyond logging in: proving an address, a forgotten password, and the admin's view.
// Links in mails carry their token in the fragment (`/#verify=…`, `/#reset=…`): no server log
// ever sees it, and it is removed from the address bar as soon as it is read.

import { ApiError, errorFrom } from "./api.js";
import { formatBytes } from "./format.js";

const $ = (selector) => document.querySelector(selector);

function element(tag, properties = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(properties)) {
    if (key === "class") node.className = value;
    else if (key.startsWith("data-") || key.startsWith("aria-")) node.setAttribute(key, value);
    else node[key] = value;
  }
  for (const child of children) node.append(child);
  return node;
}

async function postJson(path, body) {
  const response = await fetch(path, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify(body),
  });
  if (!response.ok) throw await errorFrom(response);
  return response.status === 204 ? null : response.json();
}

function explain(error) {
  if (error instanceof ApiError) {
    if (error.code === "invalid_token") return "This link is invalid, used or expired. Ask for a new one.";
    if (error.code === "weak_password") return error.detail[0].toUpperCase() + error.detail.slice(1) + ".";
    return error.detail;
  }
  return String(error);
}

// --- messages above the page -------------------------------------------------------------------

function showNotice(text, kind = "info") {
  let box = $("#account-notice");
  if (!box) {
    box = element("p", { id: "account-notice", class: "notice", role: "status" });
    $("#main").prepend(box);
  }
  box.dataset.kind = kind;
  box.textContent = text;
  box.hidden = false;
}

// --- #verify=<token> and #reset=<token> ----------------------------------------------------------

function takeFragment() {
  const match = /^#(verify|reset)=([A-Za-z0-9_-]{1,256})$/.exec(location.hash);
  if (!match) return null;
  history.replaceState(null, "", location.pathname + location.search);
  return { action: match[1], token: match[2] };
}

async function verify(session, token) {
  try {
    await postJson("/v1/auth/verify", { token });
    showNotice("Your address is confirmed: mails about your conversions will reach it.");
    if (session.loggedIn) {
      // A token issued after the proof says so: the next jobs are mailed.
      const current = await session.accessToken();
      await session.accessToken(current);
      $("#verify-hint")?.remove();
    }
  } catch (error) {
    showNotice(explain(error), "error");
  }
}

function resetForm(token) {
  const password = element("input", {
    id: "reset-password",
    type: "password",
    autocomplete: "new-password",
    required: true,
  });
  const error = element("p", { class: "form-error", id: "reset-error", role: "alert" });
  const form = element(
    "form",
    { class: "card auth-card", id: "reset-form", noValidate: true },
    element("h2", { textContent: "Choose a new password" }),
    element(
      "div",
      { class: "field" },
      element("label", { htmlFor: "reset-password", textContent: "New password" }),
      password,
      element("p", { class: "hint", textContent: "At least 8 characters, and not a common one." }),
    ),
    error,
    element("button", { type: "submit", class: "button button-primary button-wide", textContent: "Set password" }),
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    error.textContent = "";
    try {
      await postJson("/v1/auth/password-reset/confirm", { token, password: password.value });
      form.remove();
      showNotice("Your password is changed, and every other session ended. Log in with it.");
      $("#auth-password")?.focus();
    } catch (failure) {
      error.textContent = explain(failure);
      password.focus();
    }
  });
  $("#auth-view").prepend(form);
  password.focus();
}

// --- "Forgot your password?" ---------------------------------------------------------------------

function forgotPassword() {
  const button = element("button", {
    type: "button",
    class: "link-button",
    id: "forgot-password",
    textContent: "Forgot your password?",
  });
  button.addEventListener("click", async () => {
    const email = $("#auth-email").value.trim();
    if (!email || !$("#auth-email").checkValidity()) {
      $("#auth-error").textContent = "Enter your email address above first.";
      $("#auth-email").focus();
      return;
    }
    try {
      const answer = await postJson("/v1/auth/password-reset", { email });
      showNotice(answer.detail[0].toUpperCase() + answer.detail.slice(1) + ".");
    } catch (error) {
      $("#auth-error").textContent = explain(error);
    }
  });
  $("#auth-form").append(element("p", { class: "auth-switch" }, button));
}

// --- after logging in: "confirm your address", and the admin's view ---------------------------

function verifyHint(session) {
  if ($("#verify-hint")) return;
  const status = element("span", { id: "verify-resend-status" });
  const resend = element("button", { type: "button", class: "link-button", textContent: "Send the link again" });
  resend.addEventListener("click", async () => {
    resend.disabled = true;
    try {
      await session.json("/v1/auth/verify/resend", { method: "POST" });
      status.textContent = " A new link is on its way.";
    } catch (error) {
      if (error instanceof ApiError && error.code === "already_verified") $("#verify-hint")?.remove();
      status.textContent = ` ${explain(error)}`;
    } finally {
      resend.disabled = false;
    }
  });
  const hint = element(
    "p",
    { class: "notice", id: "verify-hint", role: "status" },
    "Confirm your address with the link we mailed you: until then, conversions are announced here only, not by mail. ",
    resend,
    status,
  );
  $("#app-view").prepend(hint);
}

function limitInput(user, name, label) {
  const value = user.limits[name];
  return element("input", {
    type: "number",
    min: "0",
    step: "1",
    value: value === null ? "" : String(value),
    placeholder: "default",
    title: label,
    "data-limit": name,
    "aria-label": `${label} of ${user.email}`,
  });
}

class AdminView {
  constructor(session) {
    this.session = session;
    this.section = null;
  }

  mount() {
    if (this.section) return;
    const toggle = element("button", {
      type: "button",
      class: "button button-quiet",
      id: "admin-toggle",
      textContent: "Admin",
    });
    toggle.setAttribute("aria-expanded", "false");
    toggle.setAttribute("aria-controls", "admin-view");
    $("#logout").before(toggle);
    this.status = element("p", { class: "muted", id: "admin-status", role: "status" });
    this.invite = element("p", { id: "admin-invite" });
    const inviteButton = element("button", {
      type: "button",
      class: "button",
      id: "admin-new-invite",
      textContent: "New invite",
    });
    inviteButton.addEventListener("click", () => this.newInvite());
    this.rows = element("tbody", { id: "admin-users" });
    const head = element(
      "tr",
      {},
      ...["Email", "Status", "Active jobs", "Jobs today", "Storage", "Limits (active / per day / bytes)", ""].map(
        (text) => element("th", { scope: "col", textContent: text }),
      ),
    );
    this.section = element(
      "section",
      { class: "card admin-card", id: "admin-view", hidden: true },
      element("h2", { id: "admin-heading", textContent: "Accounts" }),
      element("p", { class: "hint", textContent: "Empty limits use the installation's defaults; 0 is unlimited." }),
      element("div", { class: "admin-table" }, element("table", {}, element("thead", {}, head), this.rows)),
      element("div", { class: "admin-invites" }, inviteButton, this.invite),
      this.status,
    );
    this.section.setAttribute("aria-labelledby", "admin-heading");
    $("#app-view").append(this.section);
    toggle.addEventListener("click", () => {
      const open = this.section.hidden;
      this.section.hidden = !open;
      toggle.setAttribute("aria-expanded", String(open));
      if (open) this.load();
    });
  }

  unmount() {
    $("#admin-toggle")?.remove();
    this.section?.remove();
    this.section = null;
  }

  async load() {
    try {
      const body = await this.session.json("/v1/admin/users");
      this.rows.replaceChildren(...body.items.map((user) => this.row(user)));
      this.status.textContent = `${body.items.length} accounts.`;
    } catch (error) {
      this.status.textContent = explain(error);
    }
  }

  row(user) {
    const usage = user.usage;
    const state = [user.disabled ? "disabled" : "active", user.admin ? "admin" : "", user.email_verified ? "" : "unconfirmed"]
      .filter(Boolean)
      .join(", ");
    const limits = [
      limitInput(user, "max_active_jobs", "Active jobs limit"),
      limitInput(user, "jobs_per_day", "Jobs per day limit"),
      limitInput(user, "storage_bytes", "Storage limit in bytes"),
    ];
    const save = element("button", { type: "button", class: "button", textContent: "Save limits" });
    save.addEventListener("click", () => {
      const values = {};
      for (const input of limits) values[input.dataset.limit] = input.value === "" ? null : Number(input.value);
      this.change(user, { limits: values }, "Limits saved");
    });
    const flip = element("button", {
      type: "button",
      class: "button button-quiet",
      textContent: user.disabled ? "Enable" : "Disable",
    });
    flip.addEventListener("click", () =>
      this.change(user, { disabled: !user.disabled }, user.disabled ? "Enabled" : "Disabled; its jobs are cancelled"),
    );
    return element(
      "tr",
      { "data-user": user.email },
      element("th", { scope: "row", textContent: user.email }),
      element("td", { textContent: state }),
      element("td", { textContent: usage ? String(usage.active_jobs) : "?" }),
      element("td", { textContent: usage ? String(usage.jobs_today) : "?" }),
      element("td", { textContent: usage ? formatBytes(usage.storage_bytes) : "?" }),
      element("td", { class: "admin-limits" }, ...limits),
      element("td", {}, save, flip),
    );
  }

  async change(user, patch, done) {
    try {
      await this.session.json(`/v1/admin/users/${encodeURIComponent(user.id)}`, {
        method: "PATCH",
        headers: { "content-type": "application/json" },
        body: JSON.stringify(patch),
      });
      await this.load();
      this.status.textContent = `${done}: ${user.email}.`;
    } catch (error) {
      this.status.textContent = explain(error);
    }
  }

  async newInvite() {
    try {
      const body = await this.session.json("/v1/admin/invites", {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: "{}",
      });
      const expires = new Date(body.expires_at).toLocaleString();
      this.invite.replaceChildren(
        "Invite code (one account, until " + expires + "): ",
        element("code", { id: "admin-invite-code", textContent: body.invite }),
      );
    } catch (error) {
      this.status.textContent = explain(error);
    }
  }
}

export function initAccounts(session) {
  const admin = new AdminView(session);
  forgotPassword();

  async function loggedIn() {
    try {
      const me = await session.json("/v1/auth/me");
      if (!me.email_verified) verifyHint(session);
      if (me.admin) admin.mount();
    } catch (error) {
      // The page works without these extras; the next login tries again.
    }
  }

  session.addEventListener("login", loggedIn);
  session.addEventListener("logout", () => {
    admin.unmount();
    $("#verify-hint")?.remove();
  });

  function followLink() {
    const fragment = takeFragment();
    if (fragment?.action === "verify") verify(session, fragment.token);
    if (fragment?.action === "reset") resetForm(fragment.token);
  }
  // A mailed link opened in a tab that shows the page already only changes its fragment.
  window.addEventListener("hashchange", followLink);
  followLink();
  if (session.loggedIn) loggedIn();
}
