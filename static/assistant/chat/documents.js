// The conversation's documents: adding files (the attach button, dropping them on the
// conversation, pasting them), each file's way through upload and reading as the
// `document` events tell it, its download, and its removal.
//
// A document's state is applied from three sources: the page data (first render), the
// API's answers (upload, details, the list after a stream reset) and the `document`
// events (live, replayed after a reconnect, from other tabs). Events come in order and
// always apply; an API answer never takes a document back to an earlier stage than the
// one shown (an event may have overtaken it), so each may come any number of times.
import { ApiError, getJson, requestJson, uploadFile } from "./api.js";
import { i18n, icon, iconButton, interpolate, pageData } from "./page.js";

const STAGE = { uploading: 0, queued: 1, processing: 2, ready: 3, failed: 3 };
// The kinds as people know them (names of formats: the same in every language).
const KIND_NAMES = {
  pdf: "PDF",
  docx: "DOCX",
  odt: "ODT",
  pptx: "PPTX",
  xlsx: "XLSX",
  csv: "CSV",
  txt: "TXT",
  md: "Markdown",
  html: "HTML",
};
const language = document.documentElement.lang;

// "1.2 MB", "340 kB", "12 bytes" in the page's language.
export function formatSize(bytes) {
  const units = [
    [1e9, "gigabyte"],
    [1e6, "megabyte"],
    [1e3, "kilobyte"],
  ];
  for (const [size, unit] of units) {
    if (bytes >= size) {
      return new Intl.NumberFormat(language, {
        style: "unit",
        unit,
        maximumFractionDigits: bytes >= size * 10 ? 0 : 1,
      }).format(bytes / size);
    }
  }
  return new Intl.NumberFormat(language, { style: "unit", unit: "byte", unitDisplay: "long" }).format(bytes);
}

function kindOf(name) {
  const extension = (name.split(".").pop() || "").toLowerCase();
  if (extension === "markdown") return "md";
  if (extension === "htm") return "html";
  return KIND_NAMES[extension] ? extension : "";
}

let uploads = 0;

export class Documents {
  // `actions`: conversation() (a promise of the conversation, created first in a new
  // chat), announce(text) (the page's live region), changed() (the layout changed).
  constructor(actions) {
    this.actions = actions;
    this.list = document.getElementById("documents");
    this.input = document.getElementById("document-input");
    this.attach = document.getElementById("attach-button");
    this.dropZone = document.getElementById("drop-zone");
    this.area = document.querySelector("main.chat");
    this.dialog = document.getElementById("document-remove-dialog");
    this.conversationId = pageData.conversation ? pageData.conversation.id : null;
    this.entries = new Map(); // key -> entry; a stored document's key is its id
    this.removed = new Set(); // ids of documents deleted: no late answer brings one back
    this.unavailable = false;
    this.queue = Promise.resolve(); // uploads go one after another, in the order chosen
    this.sending = null; // the entry whose file is being sent
    (pageData.documents || []).forEach((document) => this.apply(document, { from: "api" }));
    this.input.addEventListener("change", () => {
      const files = [...this.input.files];
      this.input.value = ""; // the same file can be chosen again
      this.add(files);
    });
    this.setUpDropping();
    document.getElementById("composer-input").addEventListener("paste", (event) => {
      const files = [...(event.clipboardData ? event.clipboardData.files : [])];
      if (!files.length) return;
      event.preventDefault(); // a pasted file's name is not text for the question
      this.add(files);
    });
    this.dialog.addEventListener("close", () => this.removeConfirmed());
  }

  // --- adding files

  setUpDropping() {
    let depth = 0; // dragenter and dragleave fire for every element crossed
    const carriesFiles = (event) => event.dataTransfer && [...event.dataTransfer.types].includes("Files");
    const hide = () => {
      depth = 0;
      this.dropZone.hidden = true;
    };
    this.area.addEventListener("dragenter", (event) => {
      if (!carriesFiles(event) || this.unavailable) return;
      event.preventDefault();
      depth += 1;
      this.dropZone.hidden = false;
    });
    this.area.addEventListener("dragover", (event) => {
      if (!carriesFiles(event) || this.unavailable) return;
      event.preventDefault();
      event.dataTransfer.dropEffect = "copy";
      this.dropZone.hidden = false;
    });
    this.area.addEventListener("dragleave", (event) => {
      if (!carriesFiles(event)) return;
      depth = Math.max(0, depth - 1);
      if (depth === 0) this.dropZone.hidden = true;
    });
    this.area.addEventListener("drop", (event) => {
      hide();
      if (!carriesFiles(event) && !(event.dataTransfer && event.dataTransfer.files.length)) return;
      event.preventDefault();
      if (this.unavailable) return;
      this.add([...event.dataTransfer.files]);
    });
    // Dropped anywhere else on the page, a file would open in the tab: leaving the chat.
    window.addEventListener("dragover", (event) => {
      if (carriesFiles(event)) event.preventDefault();
    });
    window.addEventListener("drop", (event) => {
      if (carriesFiles(event)) event.preventDefault();
      hide();
    });
  }

  // Files the user chose: each is shown at once, checked against the size limit, then
  // uploaded in turn (a new chat's conversation is created first).
  add(files) {
    if (!files.length || this.unavailable) return;
    const waiting = files.map((file) => {
      uploads += 1;
      const entry = {
        key: "upload-" + uploads,
        id: null,
        name: file.name || "document",
        kind: kindOf(file.name || ""),
        size: file.size,
        status: "uploading",
        sent: null, // share of the file sent so far, while uploading
        error: null,
        file,
      };
      if (file.size > pageData.upload.max_bytes) {
        entry.status = "refused";
        entry.error = { code: "too_large", message: pageData.upload.too_large };
      }
      this.entries.set(entry.key, entry);
      this.draw(entry);
      return entry;
    });
    const refused = waiting.filter((entry) => entry.error);
    if (refused.length) this.actions.announce(refused.map((entry) => this.describe(entry)).join(" "));
    const accepted = waiting.filter((entry) => !entry.error);
    if (!accepted.length) return;
    this.queue = this.queue.then(() => this.upload(accepted));
  }

  async upload(waiting) {
    let conversation;
    try {
      conversation = await this.actions.conversation();
    } catch (error) {
      waiting.forEach((entry) => this.refuse(entry, error));
      return;
    }
    this.conversationId = conversation.id;
    const url = pageData.document_urls.list.replace("{id}", encodeURIComponent(conversation.id));
    for (const entry of waiting) {
      if (!this.entries.has(entry.key)) continue; // dismissed while it waited
      this.sending = entry;
      try {
        const stored = await uploadFile(url, entry.file, (share) => {
          if (entry.status !== "uploading") return; // its reading began already
          entry.sent = share;
          this.draw(entry);
        });
        this.uploaded(entry, stored);
      } catch (error) {
        this.refuse(entry, error);
      } finally {
        this.sending = null;
      }
    }
  }

  // The server took the file: the entry is that document from now on. Its `document`
  // event may have come first: then the entry is that document already, or (not this
  // tab's file after all) another card shows it.
  uploaded(entry, stored) {
    if (entry.id === stored.id) {
      this.apply(stored, { from: "api" });
      return;
    }
    const node = this.nodeOf(entry.key);
    this.entries.delete(entry.key);
    if (this.entries.has(stored.id) || this.removed.has(stored.id)) {
      const focused = node && node.contains(document.activeElement);
      if (node) node.remove();
      this.apply(stored, { from: "api" });
      if (focused) this.focusEntry(stored.id);
      return;
    }
    if (node) node.dataset.key = stored.id;
    this.apply(stored, { from: "api" });
  }

  refuse(entry, error) {
    entry.status = "refused";
    entry.sent = null;
    entry.error = {
      code: error.code,
      message: error instanceof ApiError && error.status ? error.message : i18n.request_failed,
    };
    this.draw(entry);
    this.actions.announce(this.describe(entry));
  }

  // --- documents as the server tells them

  // A `document` event: {document, name, status, pages_done, pages, error?}.
  onEvent(data) {
    if (data.status === "deleted") {
      this.forget(data.document);
      return;
    }
    let known = this.entries.has(data.document);
    // The file this tab is sending, told of before the upload's own answer came.
    const sending = this.sending;
    if (!known && sending && !sending.id && !this.removed.has(data.document) && sending.name === data.name) {
      const node = this.nodeOf(sending.key);
      this.entries.delete(sending.key);
      sending.key = sending.id = data.document;
      this.entries.set(sending.key, sending);
      if (node) node.dataset.key = sending.key;
      known = true; // its upload's answer brings the rest
    }
    this.apply(
      {
        id: data.document,
        name: data.name,
        status: data.status,
        pages_done: data.pages_done,
        pages: data.pages,
        error: data.error || null,
      },
      { from: "event" }
    );
    // Added in another tab (or its upload's answer is still on its way): the rest of
    // what the list shows comes from the API.
    if (!known && this.entries.has(data.document)) this.details(data.document);
  }

  async details(id) {
    try {
      const stored = await getJson(pageData.document_urls.detail.replace("{id}", encodeURIComponent(id)));
      this.apply(stored, { from: "api" });
    } catch (error) {
      if (error.status === 404) this.forget(id);
    }
  }

  // The list again from the server (the stream could not resume: events may be lost).
  async reload() {
    if (!this.conversationId) return;
    try {
      const url = pageData.document_urls.list.replace("{id}", encodeURIComponent(this.conversationId));
      const { documents } = await getJson(url);
      const ids = new Set(documents.map((document) => document.id));
      [...this.entries.values()].forEach((entry) => {
        if (entry.id && !ids.has(entry.id)) this.forget(entry.id);
      });
      documents.forEach((document) => this.apply(document, { from: "event" }));
    } catch {
      // The next event or reload tries again; what is shown stays.
    }
  }

  apply(document, { from }) {
    if (this.removed.has(document.id)) return;
    const entry = this.entries.get(document.id);
    if (entry && from === "api" && STAGE[document.status] < STAGE[entry.status]) {
      // An event was faster than this answer: keep its stage, take the other facts.
      Object.assign(entry, pick(document, ["kind", "size", "file_url", "created_at"]));
      this.draw(entry);
      return;
    }
    const before = entry ? entry.status : null;
    const next = Object.assign(entry || { key: document.id }, pick(document, Object.keys(document)), {
      id: document.id,
      sent: null,
      file: null,
    });
    if (!next.kind) next.kind = kindOf(next.name || "");
    this.entries.set(next.key, next);
    this.draw(next);
    // Said once per change, not for a replay of what is shown already.
    if (before !== next.status && before !== null && (next.status === "ready" || next.status === "failed")) {
      this.actions.announce(this.describe(next));
    }
  }

  forget(id) {
    this.removed.add(id);
    const entry = this.entries.get(id);
    if (!entry) return;
    this.entries.delete(id);
    const node = this.nodeOf(id);
    if (node) this.removeNode(node);
    this.actions.announce(interpolate(i18n.document_removed, { name: entry.name }));
  }

  // --- drawing

  nodeOf(key) {
    return this.list.querySelector('[data-key="' + CSS.escape(key) + '"]');
  }

  // A node leaves the list; a keyboard user's focus goes to a neighbour, else the input.
  removeNode(node) {
    const focused = node.contains(document.activeElement);
    const neighbour = node.nextElementSibling || node.previousElementSibling;
    node.remove();
    this.list.hidden = this.list.childElementCount === 0;
    if (focused) {
      const target = neighbour && neighbour.querySelector("button, a");
      (target || document.getElementById("composer-input")).focus();
    }
    this.actions.changed();
  }

  focusEntry(key) {
    const node = this.nodeOf(key);
    const target = node && node.querySelector(".document-remove");
    if (target) target.focus();
  }

  // One document's card, made once and updated in place (focus stays on its buttons).
  draw(entry) {
    let node = this.nodeOf(entry.key);
    if (!node) {
      node = this.card(entry);
      this.list.appendChild(node);
      this.list.hidden = false;
      this.actions.changed();
    }
    node.dataset.status = entry.status;
    node.querySelector(".document-name").textContent = entry.name;
    node.querySelector(".document-name").title = entry.name;
    const meta = [KIND_NAMES[entry.kind], typeof entry.size === "number" ? formatSize(entry.size) : ""];
    node.querySelector(".document-meta").textContent = meta.filter(Boolean).join(" · ");
    const status = node.querySelector(".document-status");
    status.replaceChildren(...this.statusParts(entry));
    const bar = node.querySelector("progress");
    const share = this.progress(entry);
    bar.hidden = share === undefined;
    if (share === null) bar.removeAttribute("value");
    else if (share !== undefined) bar.value = share;
    const download = node.querySelector(".document-download");
    download.hidden = !entry.id;
    if (entry.id) {
      download.href = entry.file_url || pageData.document_urls.file.replace("{id}", encodeURIComponent(entry.id));
    }
    node.querySelector(".document-icon").replaceChildren(
      icon(entry.status === "failed" || entry.status === "refused" ? "alert" : entry.status === "ready" ? "file-check" : "file")
    );
  }

  card(entry) {
    const node = document.createElement("li");
    node.className = "document";
    node.dataset.key = entry.key;
    const badge = document.createElement("span");
    badge.className = "document-icon";
    const body = document.createElement("div");
    body.className = "document-body";
    const name = document.createElement("span");
    name.className = "document-name";
    const meta = document.createElement("span");
    meta.className = "document-meta";
    const status = document.createElement("span");
    status.className = "document-status";
    const line = document.createElement("span");
    line.className = "document-line";
    line.append(meta, status);
    const bar = document.createElement("progress");
    bar.max = 1;
    bar.setAttribute("aria-hidden", "true"); // the status says it in words
    body.append(name, line, bar);
    const download = document.createElement("a");
    download.className = "document-download icon-link";
    download.setAttribute("download", "");
    download.title = interpolate(i18n.download_named, { name: entry.name });
    const downloadText = document.createElement("span");
    downloadText.className = "visually-hidden";
    downloadText.textContent = download.title;
    download.append(icon("download"), downloadText);
    const remove = iconButton("trash", interpolate(i18n.remove_named, { name: entry.name }), {
      compact: true,
      className: "link document-remove",
    });
    remove.addEventListener("click", () => this.askRemove(node.dataset.key));
    node.append(badge, body, download, remove);
    return node;
  }

  // Where the document stands, in words (and an alert's words for a failure).
  statusParts(entry) {
    switch (entry.status) {
      case "uploading":
        return [entry.sent === null ? i18n.upload_waiting : i18n.uploading];
      case "queued":
        return [i18n.document_queued];
      case "processing":
        return [
          entry.pages
            ? interpolate(i18n.document_reading_page, { page: Math.min(entry.pages_done + 1, entry.pages), pages: entry.pages })
            : i18n.document_reading,
        ];
      case "ready":
        return [i18n.document_ready];
      default: {
        const error = document.createElement("span");
        error.className = "document-error";
        error.textContent = (entry.error && entry.error.message) || i18n.request_failed;
        return [error];
      }
    }
  }

  // The bar's value from 0 to 1; null while the end is unknown; undefined: no bar.
  progress(entry) {
    if (entry.status === "uploading") return entry.sent === null ? undefined : entry.sent;
    if (entry.status === "queued") return null;
    if (entry.status === "processing") return entry.pages ? entry.pages_done / entry.pages : null;
    return undefined;
  }

  // "Vertrag.pdf is ready." / "Vertrag.pdf could not be read: …", for the live region.
  describe(entry) {
    if (entry.status === "ready") return interpolate(i18n.document_ready_named, { name: entry.name });
    return interpolate(i18n.document_failed_named, {
      name: entry.name,
      reason: (entry.error && entry.error.message) || i18n.request_failed,
    });
  }

  // --- removing

  askRemove(key) {
    const entry = this.entries.get(key);
    if (!entry) return;
    if (!entry.id) {
      // Never stored (refused, or still waiting): it only leaves the list.
      this.entries.delete(key);
      const node = this.nodeOf(key);
      if (node) this.removeNode(node);
      return;
    }
    this.dialog.dataset.document = entry.id;
    document.getElementById("document-remove-name").textContent = interpolate(i18n.remove_document_text, {
      name: entry.name,
    });
    this.dialog.returnValue = "";
    this.dialog.showModal();
  }

  async removeConfirmed() {
    const id = this.dialog.dataset.document;
    delete this.dialog.dataset.document;
    const node = id && this.nodeOf(id);
    if (this.dialog.returnValue !== "remove" || !id) {
      const button = node && node.querySelector(".document-remove");
      if (button) button.focus();
      return;
    }
    try {
      await requestJson("DELETE", pageData.document_urls.detail.replace("{id}", encodeURIComponent(id)));
      if (node) node.querySelector(".document-remove").focus(); // forget() moves it on
      this.forget(id);
    } catch (error) {
      if (error.status === 404) {
        this.forget(id); // gone already (another tab)
        return;
      }
      const entry = this.entries.get(id);
      if (!entry) return;
      const note = error.status ? error.message : i18n.request_failed;
      this.actions.announce(note);
      const status = node && node.querySelector(".document-status");
      if (status) {
        const line = document.createElement("span");
        line.className = "document-error";
        line.textContent = note;
        status.replaceChildren(...this.statusParts(entry), " ", line);
      }
    }
  }

  // The conversation cannot go on (its assistant was retired): no more files either.
  setUnavailable(unavailable) {
    this.unavailable = unavailable;
    this.input.disabled = unavailable;
    this.input.hidden = unavailable;
    this.attach.hidden = unavailable;
  }
}

function pick(object, keys) {
  return Object.fromEntries(keys.filter((key) => object[key] !== undefined).map((key) => [key, object[key]]));
}
