// The sources of answers: each "[n]" an answer cites becomes a button that opens the
// passage it came from (a dialog), and a compact list below the answer names them all.
//
// Which document and page each [n] is comes with the answer (the `start` event, the
// message JSON, the page data); the passage itself from GET /api/messages/<id>/sources/,
// once per answer, and is shown as text, never as HTML: it is a document's content.
import { getJson, messageUrl } from "./api.js";
import { i18n, icon, interpolate, pageData } from "./page.js";

// "[3]", or a group "[1, 2]" / "[1,2; 4]": numbers a model cites its sources with.
const CITATION = /\[(\d{1,3}(?:\s*[,;]\s*\d{1,3})*)\]/g;
// Text in these stays as it is: code is quoted literally, links and buttons are taken.
const LITERAL = "pre, code, a, button, kbd, samp";

export class Sources {
  constructor() {
    // The sources of each answer, by message id: [{n, document, name, page}].
    this.byMessage = new Map(Object.entries(pageData.sources || {}).map(([id, list]) => [Number(id), list]));
    this.passages = new Map(); // message id -> promise of the stored sources, with their text
    this.dialog = document.getElementById("source-dialog");
    this.title = document.getElementById("source-dialog-title");
    this.where = document.getElementById("source-where");
    this.passage = document.getElementById("source-passage");
    this.download = document.getElementById("source-download");
    this.opener = null;
    this.showing = null; // [message id, n] of the passage the dialog shows
    this.dialog.addEventListener("close", () => {
      this.showing = null;
      if (this.opener && this.opener.isConnected) this.opener.focus();
      this.opener = null;
    });
    // A click on the backdrop (outside the dialog's box) closes it, as Escape does.
    this.dialog.addEventListener("click", (event) => {
      if (event.target === this.dialog) this.dialog.close();
    });
  }

  // Sources as the server gives them with an answer (absent: it has none).
  set(id, list) {
    if (list && list.length) this.byMessage.set(Number(id), list);
    else this.byMessage.delete(Number(id));
    this.passages.delete(Number(id));
  }

  of(id) {
    return this.byMessage.get(Number(id)) || [];
  }

  // What a citation is called for assistive technology: "Source 1: Vertrag.pdf, page 3".
  label(source) {
    return interpolate(source.where ? i18n.source_label_where : i18n.source_label, {
      n: source.n,
      name: source.name,
      where: source.where,
    });
  }

  // The rendered answer `node` of message `id`: its citations of known sources become
  // buttons. Only text outside code and links; safe to call again on the same node.
  link(node, id) {
    const known = new Map(this.of(id).map((source) => [source.n, source]));
    if (!known.size) return;
    const walker = document.createTreeWalker(node, NodeFilter.SHOW_TEXT, {
      acceptNode: (text) => {
        if (text.parentElement.closest(LITERAL)) return NodeFilter.FILTER_REJECT;
        CITATION.lastIndex = 0;
        return CITATION.test(text.data) ? NodeFilter.FILTER_ACCEPT : NodeFilter.FILTER_SKIP;
      },
    });
    const found = [];
    while (walker.nextNode()) found.push(walker.currentNode);
    found.forEach((text) => this.linkText(text, known, Number(id)));
  }

  linkText(text, known, id) {
    const parts = [];
    let at = 0;
    text.data.replace(CITATION, (match, group, offset) => {
      const numbers = group.split(/\s*([,;])\s*/);
      // Cited numbers that are no source of this answer stay text.
      if (!numbers.some((part, index) => index % 2 === 0 && known.has(Number(part)))) return match;
      parts.push(text.data.slice(at, offset));
      // A group "[1, 2]" becomes one citation after the other: [1][2].
      numbers.forEach((part, index) => {
        if (index % 2 === 1) return;
        const source = known.get(Number(part));
        parts.push(source ? this.citation(id, source, "[" + part + "]") : "[" + part + "]");
      });
      at = offset + match.length;
      return match;
    });
    if (!parts.length) return;
    parts.push(text.data.slice(at));
    text.replaceWith(...parts.filter((part) => part !== ""));
  }

  citation(id, source, shown) {
    const button = document.createElement("button");
    button.type = "button";
    button.className = "citation";
    button.textContent = shown;
    button.setAttribute("aria-label", this.label(source));
    button.setAttribute("aria-haspopup", "dialog");
    button.addEventListener("click", () => this.open(id, source.n, button));
    return button;
  }

  // The list of an answer's sources below its text (none when it has none).
  showList(item) {
    const id = Number(item.dataset.messageId);
    item.querySelectorAll(":scope > .sources").forEach((node) => node.remove());
    const list = this.of(id);
    if (!list.length) return;
    const section = document.createElement("section");
    section.className = "sources";
    const headingId = "sources-" + id;
    section.setAttribute("aria-labelledby", headingId);
    const heading = document.createElement("h3");
    heading.className = "sources-heading";
    heading.id = headingId;
    heading.append(icon("source"), " ", i18n.sources);
    const items = document.createElement("ol");
    items.className = "sources-list";
    list.forEach((source) => {
      const entry = document.createElement("li");
      const button = document.createElement("button");
      button.type = "button";
      button.className = "source-item";
      button.setAttribute("aria-haspopup", "dialog");
      button.setAttribute("aria-label", this.label(source));
      const number = document.createElement("span");
      number.className = "source-n";
      number.textContent = String(source.n);
      const name = document.createElement("span");
      name.className = "source-name";
      name.textContent = source.name;
      button.append(number, name);
      if (source.where) {
        const page = document.createElement("span");
        page.className = "source-page";
        page.textContent = source.where;
        button.append(page);
      }
      button.addEventListener("click", () => this.open(id, source.n, button));
      entry.appendChild(button);
      items.appendChild(entry);
    });
    section.append(heading, items);
    item.querySelector(":scope > .text").after(section);
  }

  // The stored sources of answer `id`, with their passages; fetched once.
  fetch(id) {
    if (!this.passages.has(id)) {
      const request = getJson(messageUrl("sources", id)).then((data) => data.sources || []);
      request.catch(() => this.passages.delete(id)); // a failure is tried again next time
      this.passages.set(id, request);
    }
    return this.passages.get(id);
  }

  // The passage [n] of answer `id` in the dialog; `opener` gets the focus back after.
  async open(id, n, opener) {
    const source = this.of(id).find((entry) => entry.n === n);
    if (!source) return;
    this.opener = opener;
    this.showing = [id, n];
    this.title.textContent = interpolate(i18n.source_title, { n });
    this.where.replaceChildren(icon("file"), " ", source.where ? interpolate(i18n.source_where, {
      name: source.name,
      where: source.where,
    }) : source.name);
    this.download.href = pageData.document_urls.file.replace("{id}", encodeURIComponent(source.document));
    this.download.lastChild.textContent = interpolate(i18n.download_named, { name: source.name });
    this.passage.classList.remove("failed");
    this.passage.setAttribute("aria-busy", "true");
    this.passage.textContent = i18n.source_loading;
    if (!this.dialog.open) this.dialog.showModal();
    let text;
    try {
      const stored = (await this.fetch(id)).find((entry) => entry.n === n);
      text = stored ? stored.text : null;
    } catch (error) {
      text = null;
      this.passage.classList.add("failed");
      this.passage.textContent = error.status ? error.message : i18n.request_failed;
    }
    // Another passage was opened meanwhile, or the dialog closed: that one stands.
    if (!this.showing || this.showing[0] !== id || this.showing[1] !== n) return;
    this.passage.removeAttribute("aria-busy");
    if (text !== null) this.passage.textContent = text;
    else if (!this.passage.classList.contains("failed")) {
      this.passage.classList.add("failed");
      this.passage.textContent = i18n.source_missing;
    }
  }
}
