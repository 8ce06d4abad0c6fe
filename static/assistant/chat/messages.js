// The messages of the open conversation: rendering them, their details and actions, and
// the live answer. Text is only ever inserted as text; answers go through the sanitizing
// Markdown renderer (markdown.js), never as HTML straight from the model.
import { messageUrl, postJson, getJson } from "./api.js";
import { dates, decimals, i18n, icon, iconButton, interpolate, numbers, pageData } from "./page.js";
import { ScrollFollow } from "./scroll.js";

// Twenty renders a second at most: the text still flows, at a fraction of the layouts.
const RENDER_EVERY_MS = 50;
const RATINGS = { 1: "up", "-1": "down", up: "up", down: "down" };

export class Messages {
  // `actions` from the page: retry(id), continueAnswer(id), showVersion(id), showError(text)
  // and requestFailed(error) (an edit refused); `sources`: the answers' sources (sources.js).
  constructor(list, actions, sources) {
    this.list = list;
    this.actions = actions;
    this.sources = sources;
    this.scroll = new ScrollFollow(list);
    // The raw (Markdown) text of answers this page follows live, by message id.
    this.rawText = new Map(Object.entries(pageData.streaming || {}).map(([id, text]) => [Number(id), text]));
    this.pendingRender = new Set();
    this.renderedAt = 0;
    this.live = new Map(); // the answers rendering as they stream, by id
    // Each shown message's versions ({index, count, ids}), by id (docs/protocol.md).
    this.versions = new Map(Object.entries(pageData.versions || {}).map(([id, v]) => [Number(id), v]));
    this.streamingId = null;
    this.waitingTimer = null;
    this.stalledTimer = null;
    this.stalledNote = null;
    this.storedAnswers = null;
    this.conversation = null;
    // The conversation cannot go on (its assistant was retired): no edit, regenerate or retry.
    this.readOnly = false;
  }

  // Server-rendered messages: labels, highlighting, details and actions.
  adopt(conversation) {
    this.conversation = conversation;
    this.list.querySelectorAll(".message").forEach((item) => this.label(item));
    this.list.querySelectorAll(".message.assistant .text").forEach((node) => {
      window.AssistantMarkdown.highlight(node);
      window.AssistantMarkdown.addCopyButtons(node, i18n.copy, i18n.copied);
      const item = node.closest("[data-message-id]");
      this.sources.link(node, item.dataset.messageId);
      this.sources.showList(item);
    });
    this.list.querySelectorAll(".message .details").forEach((details) => {
      this.showDetails(details.closest("[data-message-id]"), {});
    });
    this.rawText.forEach((raw, id) => {
      const item = this.find(id);
      if (item) this.renderAnswer(item, raw);
    });
    this.list.querySelectorAll(".message-error[data-error-type]").forEach((node) => {
      const item = node.closest("[data-message-id]");
      if (pageData.retryable_types.includes(node.dataset.errorType)) {
        this.addRetryButton(node, item.dataset.messageId);
      }
    });
    this.list.querySelectorAll('.message.assistant[data-status="cancelled"]').forEach((item) => this.showStopped(item));
    this.list.querySelectorAll(".message").forEach((item) => this.showVersions(item));
    const streaming = this.list.querySelector('[data-status="streaming"]');
    this.setStreaming(streaming ? Number(streaming.dataset.messageId) : null);
    // Opening or reloading a conversation lands on its latest message.
    this.scroll.toEnd();
  }

  find(id) {
    return this.list.querySelector('[data-message-id="' + String(id) + '"]');
  }

  // Who said it, for assistive technology (the bubbles' look says it to the eye).
  label(item) {
    if (item.querySelector(".speaker")) return;
    const speaker = document.createElement("span");
    speaker.className = "speaker visually-hidden";
    speaker.textContent = item.classList.contains("user") ? i18n.you_said : i18n.assistant_said;
    item.prepend(speaker);
  }

  // Streaming renders an answer at most every RENDER_EVERY_MS, in a frame, and only its
  // block in progress: each render costs a layout of the list (to follow the answer).
  scheduleRender(id) {
    if (this.pendingRender.size === 0) {
      const wait = Math.max(0, this.renderedAt + RENDER_EVERY_MS - performance.now());
      setTimeout(() => requestAnimationFrame(() => {
        this.renderedAt = performance.now();
        this.pendingRender.forEach((pendingId) => {
          const item = this.find(pendingId);
          if (!item || item.dataset.status !== "streaming") return; // ended: rendered whole
          let live = this.live.get(pendingId);
          if (!live || live.node !== item.querySelector(".text")) {
            live = new LiveAnswer(item.querySelector(".text"), (node) => this.sources.link(node, pendingId));
            this.live.set(pendingId, live);
          }
          live.update(this.rawText.get(pendingId) || "");
        });
        this.pendingRender.clear();
        this.scroll.changed();
      }), wait);
    }
    this.pendingRender.add(id);
  }

  render(message) {
    let item = this.find(message.id);
    if (!item) {
      item = document.createElement("li");
      item.dataset.messageId = String(message.id);
      const text = document.createElement("div");
      text.className = "text";
      item.appendChild(text);
      this.list.appendChild(item);
    }
    item.className = "message " + message.role;
    item.dataset.status = message.status;
    if (message.finish_reason) item.dataset.finishReason = message.finish_reason;
    else delete item.dataset.finishReason;
    if (message.versions) this.versions.set(message.id, message.versions);
    this.label(item);
    const text = item.querySelector(".text");
    if (message.role === "assistant") {
      this.sources.set(message.id, message.sources);
      this.renderAnswer(item, message.content || "");
      this.sources.showList(item);
    } else {
      text.textContent = message.content || "";
      if (message.created_at) this.showDetails(item, { created: message.created_at });
    }
    item.querySelectorAll(".message-error, .stopped").forEach((node) => node.remove());
    if (message.error) this.showError(item, message.error.detail, message.error.retryable);
    if (message.status === "cancelled") this.showStopped(item);
    if (message.role === "assistant" && message.status !== "streaming") {
      this.showDetails(item, {
        promptTokens: message.usage?.prompt_tokens ?? "",
        completionTokens: message.usage?.completion_tokens ?? "",
        model: message.model || "",
        created: message.created_at || "",
        feedback: message.feedback || "",
      });
    }
    this.showVersions(item);
    this.scroll.changed();
    return item;
  }

  showDetails(item, data) {
    let details = item.querySelector(".details");
    if (!details) {
      details = document.createElement("div");
      details.className = "details";
      item.appendChild(details);
    }
    Object.assign(details.dataset, data);
    if (!details.dataset.created) details.dataset.created = new Date().toISOString();
    const parts = [];
    if (details.dataset.completionTokens) {
      parts.push(
        interpolate(i18n.tokens, {
          prompt: numbers.format(Number(details.dataset.promptTokens || 0)),
          completion: numbers.format(Number(details.dataset.completionTokens)),
        })
      );
    }
    if (details.dataset.durationMs) {
      parts.push(interpolate(i18n.seconds, { seconds: decimals.format(details.dataset.durationMs / 1000) }));
    }
    if (details.dataset.model) parts.push(details.dataset.model);
    const time = document.createElement("time");
    time.dateTime = details.dataset.created;
    time.textContent = dates.format(new Date(details.dataset.created));
    details.replaceChildren(parts.length ? parts.join(" · ") + " · " : "", time);
    if (item.classList.contains("assistant")) {
      this.addCopyAnswerButton(item, details);
      this.addFeedbackButtons(item, details);
    }
  }

  addFeedbackButtons(item, details) {
    const current = RATINGS[details.dataset.feedback] || null;
    [
      ["up", "thumb-up", i18n.good],
      ["down", "thumb-down", i18n.bad],
    ].forEach(([rating, name, label]) => {
      const button = iconButton(name, label, { compact: true, className: "link feedback" });
      button.setAttribute("aria-pressed", String(current === rating));
      button.addEventListener("click", () => this.sendFeedback(item, details, rating));
      details.append(" ", button);
    });
  }

  async sendFeedback(item, details, rating) {
    // Pressing the chosen rating again takes it back.
    const clearing = RATINGS[details.dataset.feedback] === rating;
    const url = messageUrl("feedback", item.dataset.messageId);
    try {
      const result = await postJson(url, { rating: clearing ? null : rating });
      details.dataset.feedback = result.feedback || "";
      this.showDetails(item, {});
      if (result.feedback === "down") this.askFeedbackComment(item, url);
    } catch (error) {
      this.actions.showError(error.message);
    }
  }

  askFeedbackComment(item, url) {
    item.querySelectorAll(".feedback-form").forEach((node) => node.remove());
    const form = document.createElement("form");
    form.className = "feedback-form";
    const label = document.createElement("label");
    label.textContent = i18n.feedback_comment;
    const area = document.createElement("textarea");
    area.maxLength = 2000;
    area.rows = 2;
    label.appendChild(area);
    const submit = document.createElement("button");
    submit.type = "submit";
    submit.className = "secondary";
    submit.textContent = i18n.feedback_send;
    form.append(label, submit);
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      try {
        await postJson(url, { rating: "down", comment: area.value });
        form.replaceChildren(i18n.feedback_thanks);
      } catch (error) {
        this.actions.showError(error.message);
      }
    });
    item.appendChild(form);
    area.focus();
  }

  addCopyAnswerButton(item, details) {
    if (details.querySelector(".copy-answer")) return;
    const button = iconButton("copy", i18n.copy, { className: "link copy-answer" });
    button.addEventListener("click", async () => {
      const text = await this.answerMarkdown(Number(item.dataset.messageId), item);
      if (await window.AssistantMarkdown.copyText(text)) {
        button.lastChild.textContent = i18n.copied;
        setTimeout(() => (button.lastChild.textContent = i18n.copy), 1500);
      }
    });
    details.append(" ", button);
  }

  // Stored answers are on the page rendered; their Markdown comes from the API once.
  async answerMarkdown(id, item) {
    if (this.rawText.has(id)) return this.rawText.get(id);
    if (!this.storedAnswers) {
      try {
        const state = await getJson(this.conversation.detail_url);
        this.storedAnswers = new Map(state.messages.map((m) => [m.id, m.content]));
      } catch {
        this.storedAnswers = new Map();
      }
    }
    return this.storedAnswers.get(id) ?? item.querySelector(".text").innerText;
  }

  // The latest question can be edited and sent again, the latest answer regenerated and,
  // when the length limit cut it or it was stopped, continued; earlier versions stay
  // stored behind the version switcher.
  updateActions() {
    this.list.querySelectorAll(".edit-question, .answer-actions, .cut-note").forEach((node) => node.remove());
    if (this.streamingId !== null || this.readOnly) return;
    const questions = this.list.querySelectorAll(".message.user");
    const question = questions[questions.length - 1];
    if (question) {
      const button = iconButton("edit", i18n.edit, { className: "link edit-question" });
      button.addEventListener("click", () => this.editQuestion(question));
      question.appendChild(button);
    }
    // The last message (a guided flow's divider may follow it).
    const shown = this.list.querySelectorAll(":scope > .message");
    const answer = shown[shown.length - 1];
    if (!answer || !answer.classList.contains("assistant")) return;
    const cut = answer.dataset.status === "done" && answer.dataset.finishReason === "length";
    if (cut) {
      const note = document.createElement("div");
      note.className = "cut-note";
      note.textContent = i18n.cut_off;
      answer.querySelector(".text").after(note);
    }
    const actions = document.createElement("div");
    actions.className = "answer-actions";
    if (cut || answer.dataset.status === "cancelled") {
      const more = iconButton("continue", i18n.continue, { className: "secondary continue-answer" });
      more.addEventListener("click", () => this.actions.continueAnswer(answer.dataset.messageId));
      actions.appendChild(more);
    }
    // A failed answer offers Retry in its error; the others Regenerate here.
    if (!answer.querySelector(".message-error button")) {
      const again = iconButton("retry", i18n.regenerate, { className: "secondary regenerate" });
      again.addEventListener("click", () => this.actions.retry(answer.dataset.messageId));
      actions.appendChild(again);
    }
    if (actions.childElementCount) answer.appendChild(actions);
  }

  // "‹ 2/3 ›" on a message with earlier or later versions; the arrows show another one.
  showVersions(item) {
    item.querySelectorAll(":scope > .versions").forEach((node) => node.remove());
    const versions = this.versions.get(Number(item.dataset.messageId));
    if (!versions || versions.count < 2) return;
    const nav = document.createElement("div");
    nav.className = "versions";
    nav.setAttribute("role", "group");
    nav.setAttribute("aria-label", i18n.versions);
    const step = (delta, name, label) => {
      const button = iconButton(name, label, { compact: true, className: "link version-step" });
      const target = versions.ids[versions.index + delta];
      button.disabled = target === undefined || this.streamingId !== null;
      button.addEventListener("click", () => this.actions.showVersion(target));
      return button;
    };
    const position = document.createElement("span");
    position.className = "version-position";
    position.textContent = interpolate(i18n.version_of, { index: versions.index + 1, count: versions.count });
    nav.append(step(-1, "previous", i18n.previous_version), position, step(1, "next", i18n.next_version));
    item.querySelector(".text").after(nav);
  }

  editQuestion(item) {
    const text = item.querySelector(".text");
    const form = document.createElement("form");
    form.className = "edit-form";
    const area = document.createElement("textarea");
    area.value = text.textContent;
    area.rows = Math.min(12, area.value.split("\n").length + 1);
    area.setAttribute("aria-label", i18n.edit);
    const save = document.createElement("button");
    save.type = "submit";
    save.className = "primary";
    save.textContent = i18n.save_send;
    const cancel = document.createElement("button");
    cancel.type = "button";
    cancel.className = "secondary";
    cancel.textContent = i18n.cancel;
    form.append(area, save, cancel);
    item.querySelector(".edit-question").remove();
    text.hidden = true;
    item.appendChild(form);
    area.focus();
    const close = () => {
      form.remove();
      text.hidden = false;
      this.updateActions();
    };
    cancel.addEventListener("click", close);
    form.addEventListener("keydown", (event) => {
      if (event.key === "Escape") {
        event.stopPropagation();
        close();
      }
    });
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      if (!area.value.trim()) return;
      save.disabled = true;
      try {
        await postJson(messageUrl("edit", item.dataset.messageId), {
          content: area.value,
          model: modelChosen(),
        });
        form.remove();
        text.hidden = false;
      } catch (error) {
        save.disabled = false;
        this.actions.requestFailed(error);
      }
    });
  }

  // An answer's text, rendered from its Markdown, its citations linked to its sources.
  renderAnswer(item, raw) {
    const node = item.querySelector(".text");
    renderMarkdown(node, raw);
    this.sources.link(node, item.dataset.messageId);
  }

  showError(item, detail, retryable) {
    const error = document.createElement("div");
    error.className = "message-error";
    error.setAttribute("role", "alert");
    error.textContent = detail;
    if (retryable) this.addRetryButton(error, item.dataset.messageId);
    item.appendChild(error);
  }

  addRetryButton(errorNode, id) {
    if (this.readOnly) return;
    const retry = iconButton("retry", i18n.retry, { className: "secondary" });
    retry.addEventListener("click", () => this.actions.retry(id));
    errorNode.append(" ", retry);
  }

  // A stopped answer says so in words.
  showStopped(item) {
    if (item.querySelector(".stopped")) return;
    const note = document.createElement("div");
    note.className = "stopped";
    note.append(icon("stop"), " ", i18n.stopped);
    item.querySelector(".text").after(note);
  }

  setStreaming(id) {
    this.list.querySelectorAll('[aria-busy="true"]').forEach((node) => node.removeAttribute("aria-busy"));
    if (id !== null && this.find(id)) this.find(id).setAttribute("aria-busy", "true");
    this.streamingId = id;
    this.updateActions();
    this.list.querySelectorAll(".message").forEach((item) => this.showVersions(item));
  }

  // Until the first word arrives, the answer shows how long it has been waiting.
  startWaiting(item) {
    this.stopWaiting();
    const started = performance.now();
    const waiting = document.createElement("div");
    waiting.className = "waiting";
    item.appendChild(waiting);
    const tick = () => {
      waiting.textContent = interpolate(i18n.waiting, {
        seconds: decimals.format((performance.now() - started) / 1000),
      });
    };
    tick();
    this.waitingTimer = setInterval(tick, 100);
  }

  stopWaiting() {
    if (this.waitingTimer === null) return;
    clearInterval(this.waitingTimer);
    this.waitingTimer = null;
    this.list.querySelectorAll(".waiting").forEach((node) => node.remove());
  }

  // A word arrived (or the answer began): a silence of `stalled_after_ms` says the model
  // is slow.
  heardFrom(id) {
    clearTimeout(this.stalledTimer);
    if (this.stalledNote) this.stalledNote.remove();
    this.stalledNote = null;
    if (id === null) return;
    this.stalledTimer = setTimeout(() => {
      const item = this.find(id);
      if (!item || this.streamingId !== id || item.querySelector(".waiting")) return;
      const note = document.createElement("div");
      note.className = "stalled";
      note.setAttribute("role", "status");
      note.textContent = i18n.still_waiting;
      item.appendChild(note);
      this.stalledNote = note;
      this.scroll.changed();
    }, pageData.stalled_after_ms);
  }

  // --- the stream's events

  onStart(data) {
    // What the new answer replaces is an earlier version now, behind the switcher.
    [data.replaces, data.replaces_question].forEach((id) => {
      const replaced = id && this.find(id);
      if (replaced) replaced.remove();
    });
    const question = data.user_message;
    this.render({
      id: question.id,
      role: "user",
      status: "done",
      content: question.content,
      // A question shown again (a replay) keeps the time it first showed.
      created_at: question.created_at || this.find(question.id)?.querySelector("time")?.dateTime || new Date().toISOString(),
      versions: question.versions,
    });
    // A replayed start rebuilds the answer from its first delta: never a word twice.
    const answer = this.render({
      id: data.message,
      role: "assistant",
      status: "streaming",
      content: "",
      versions: data.versions,
      sources: data.sources,
    });
    answer.querySelectorAll(".message-error, .details, .stopped").forEach((node) => node.remove());
    this.rawText.set(data.message, "");
    this.live.delete(data.message);
    answer.dataset.model = data.model;
    this.setStreaming(data.message);
    this.startWaiting(answer);
    this.heardFrom(data.message);
  }

  onDelta(data) {
    if (!this.find(data.message)) return;
    this.stopWaiting();
    this.heardFrom(data.message);
    this.rawText.set(data.message, (this.rawText.get(data.message) || "") + data.text);
    this.scheduleRender(data.message);
  }

  // Returns whether the answer this page followed ended.
  onDone(data) {
    const item = this.find(data.message);
    this.stopWaiting();
    this.heardFrom(null);
    if (item) {
      item.dataset.status = data.finish_reason === "cancelled" ? "cancelled" : "done";
      item.dataset.finishReason = data.finish_reason;
      if (data.finish_reason === "cancelled") this.showStopped(item);
      this.showDetails(item, {
        promptTokens: data.usage.prompt_tokens ?? "",
        completionTokens: data.usage.completion_tokens ?? "",
        durationMs: data.duration_ms ?? "",
        model: item.dataset.model || "",
      });
      this.scroll.changed();
    }
    return this.ended(data.message);
  }

  onError(data) {
    const item = this.find(data.message);
    this.stopWaiting();
    this.heardFrom(null);
    if (item) {
      item.dataset.status = data.type === "interrupted" ? "interrupted" : "error";
      this.showError(item, data.detail, data.retryable);
      this.scroll.changed();
    }
    return this.ended(data.message);
  }

  ended(id) {
    // The whole text once, as a stored answer renders (a block split while streaming
    // may join its neighbour, e.g. a loose list).
    const item = this.find(id);
    this.live.delete(id);
    if (item && this.rawText.has(id)) this.renderAnswer(item, this.rawText.get(id));
    if (this.streamingId !== id) return false;
    this.setStreaming(null);
    return true;
  }

  // Everything again from the stored state (the server cannot replay from our position,
  // or another version is shown); the reader lands on the latest message unless `stay`.
  replaceAll(messages, { stay = false } = {}) {
    this.list.replaceChildren();
    this.rawText.clear();
    this.live.clear();
    messages.forEach((message) => this.render(message));
    const streaming = messages.find((m) => m.status === "streaming");
    if (streaming) this.rawText.set(streaming.id, streaming.content || "");
    this.setStreaming(streaming ? streaming.id : null);
    if (!stay) this.scroll.toEnd();
  }
}

// An answer as it streams. Its settled part (up to the last blank line outside a code
// fence) is rendered once, block by block as it grows, and kept; only the block being
// written renders again. Each frame costs the length of that block, not of the answer.
class LiveAnswer {
  // `decorate(node)`: what a rendered part gets added (the citations' buttons).
  constructor(node, decorate) {
    this.node = node;
    this.decorate = decorate;
    this.settledTo = 0; // raw text before this index is rendered in `settled`
    this.settled = document.createElement("div");
    this.settled.className = "md-settled";
    this.tail = document.createElement("div");
    this.tail.className = "md-tail";
    node.replaceChildren(this.settled, this.tail);
  }

  update(raw) {
    const end = settledEnd(raw, this.settledTo);
    if (end > this.settledTo) {
      const block = document.createElement("div");
      block.className = "md-block";
      renderMarkdown(block, raw.slice(this.settledTo, end));
      this.decorate(block);
      this.settled.appendChild(block);
      this.settledTo = end;
    }
    renderMarkdown(this.tail, raw.slice(this.settledTo));
    this.decorate(this.tail);
  }
}

const FENCE = /^ {0,3}(`{3,}|~{3,})/;

// Where the settled part of `raw` ends: after its last blank line outside a code fence,
// looking from `from` (itself such a point, or 0).
function settledEnd(raw, from) {
  let end = from;
  let fence = null;
  let at = from;
  while (at < raw.length) {
    const newline = raw.indexOf("\n", at);
    if (newline === -1) break; // the last line is still being written
    const line = raw.slice(at, newline);
    const opens = FENCE.exec(line);
    if (fence === null && opens) fence = opens[1][0];
    else if (fence !== null && opens && opens[1][0] === fence) fence = null;
    else if (fence === null && line.trim() === "") end = newline + 1;
    at = newline + 1;
  }
  return end;
}

// The model the user chose; none when the choice is hidden (an assistant names its own).
function modelChosen() {
  const select = document.getElementById("model-select");
  return select.hidden ? "" : select.value;
}

function renderMarkdown(node, raw) {
  if (!window.AssistantMarkdown) {
    node.textContent = raw;
    return;
  }
  node.innerHTML = window.AssistantMarkdown.render(raw);
  window.AssistantMarkdown.highlight(node);
  window.AssistantMarkdown.addCopyButtons(node, i18n.copy, i18n.copied);
}
