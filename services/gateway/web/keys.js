// API keys: list, create (the key is shown once, with a copy button) and revoke.

import { ApiError } from "./api.js";
import { formatWhen } from "./format.js";

const SCOPES = [
  ["jobs:read", "Read jobs and download results"],
  ["jobs:write", "Upload, convert and delete"],
  ["webhooks:write", "Manage webhooks"],
];

function element(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(props)) {
    if (name === "class") node.className = value;
    else if (name === "text") node.textContent = value;
    else node.setAttribute(name, value);
  }
  node.append(...children);
  return node;
}

export class ApiKeys {
  /** Builds its own markup inside `root` (an empty section of the page). */
  constructor(session, root) {
    this.session = session;
    this.root = root;
    this.build();
  }

  build() {
    this.list = element("ul", { class: "api-keys-list", "aria-label": "Your API keys" });
    this.empty = element("p", { class: "muted", text: "No API keys yet." });
    this.error = element("p", { class: "form-error", role: "alert" });
    this.name = element("input", {
      id: "api-key-name", name: "name", maxlength: "100", autocomplete: "off", required: "",
    });
    const scopes = SCOPES.map(([scope, label]) => {
      const id = `api-key-scope-${scope.replace(":", "-")}`;
      const box = element("input", { id, type: "checkbox", name: "scopes", value: scope });
      if (scope.startsWith("jobs:")) box.checked = true;
      return element("div", { class: "check" }, box, element("label", { for: id, text: `${scope}: ${label}` }));
    });
    this.form = element(
      "form",
      { class: "api-keys-form", id: "api-key-form", novalidate: "" },
      element("div", { class: "field" }, element("label", { for: "api-key-name", text: "Name" }), this.name),
      element("fieldset", {}, element("legend", { text: "Scopes" }), ...scopes),
      element("button", { type: "submit", class: "button button-primary", text: "Create key" }),
    );
    this.created = element("div", { class: "api-key-created", id: "api-key-created", role: "status" });
    this.created.hidden = true;
    this.root.append(
      element("h2", { id: "api-keys-heading", text: "API keys" }),
      element("p", {
        class: "hint",
        text: "For scripts and servers: send a key as the header Authorization: Bearer v2m_…. It is shown once.",
      }),
      this.created,
      this.error,
      this.list,
      this.empty,
      this.form,
    );
    this.form.addEventListener("submit", (event) => {
      event.preventDefault();
      this.create();
    });
  }

  async load() {
    this.error.textContent = "";
    try {
      const { items } = await this.session.json("/v1/api-keys");
      this.render(items);
    } catch (error) {
      this.error.textContent = error instanceof ApiError ? error.detail : String(error);
    }
  }

  clear() {
    this.list.replaceChildren();
    this.created.hidden = true;
    this.created.replaceChildren();
  }

  render(items) {
    this.empty.hidden = items.length > 0;
    this.list.replaceChildren(...items.map((key) => this.row(key)));
  }

  row(key) {
    const used = key.last_used_at ? `last used ${formatWhen(key.last_used_at)}` : "never used";
    const revoke = element("button", {
      type: "button", class: "button button-quiet button-small", text: "Revoke",
      "aria-label": `Revoke ${key.name}`,
    });
    revoke.addEventListener("click", () => this.revoke(key, revoke));
    return element(
      "li",
      { class: "api-key", "data-key-id": key.id },
      element("strong", { class: "api-key-name", text: key.name }),
      element("span", { class: "api-key-scopes", text: key.scopes.join(", ") }),
      element("span", { class: "muted", text: `created ${formatWhen(key.created_at)}, ${used}` }),
      revoke,
    );
  }

  async create() {
    this.error.textContent = "";
    const scopes = [...this.form.querySelectorAll("input[name=scopes]:checked")].map((box) => box.value);
    const name = this.name.value.trim();
    if (!name || scopes.length === 0) {
      this.error.textContent = "Give the key a name and at least one scope.";
      return;
    }
    try {
      const key = await this.session.json("/v1/api-keys", {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ name, scopes }),
      });
      this.name.value = "";
      this.showOnce(key);
      await this.load();
    } catch (error) {
      this.error.textContent = error instanceof ApiError ? error.detail : String(error);
    }
  }

  showOnce(key) {
    const value = element("input", {
      id: "api-key-value", class: "api-key-value", readonly: "", "aria-label": `The key ${key.name}`,
    });
    value.value = key.key;
    const copy = element("button", { type: "button", class: "button button-quiet button-small", text: "Copy" });
    copy.addEventListener("click", async () => {
      value.select();
      try {
        await navigator.clipboard.writeText(key.key);
        copy.textContent = "Copied";
      } catch {
        copy.textContent = "Press Ctrl+C";
      }
    });
    this.created.replaceChildren(
      element("p", { text: `Your new key "${key.name}". Copy it now: it will not be shown again.` }),
      value,
      copy,
    );
    this.created.hidden = false;
  }

  async revoke(key, button) {
    button.disabled = true;
    try {
      await this.session.json(`/v1/api-keys/${encodeURIComponent(key.id)}`, { method: "DELETE" });
      await this.load();
    } catch (error) {
      button.disabled = false;
      this.error.textContent = error instanceof ApiError ? error.detail : String(error);
    }
  }
}
