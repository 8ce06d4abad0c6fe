// The chat page: sends questions over the JSON API and renders answers from one
// EventSource per open conversation. Text is only ever inserted as text, never as HTML.
"use strict";

(function () {
  const pageData = JSON.parse(document.getElementById("page-data").textContent);
  const i18n = JSON.parse(document.getElementById("i18n").textContent);
  const messageList = document.getElementById("messages");
  const composer = document.getElementById("composer");
  const input = document.getElementById("composer-input");
  const modelSelect = document.getElementById("model-select");
  const sendButton = document.getElementById("send-button");
  const stopButton = document.getElementById("stop-button");
  const composerError = document.getElementById("composer-error");
  const connection = document.getElementById("connection");

  const announcer = document.getElementById("announcer");
  const language = document.getElementById("language-select");
  const numbers = new Intl.NumberFormat(document.documentElement.lang);
  const decimals = new Intl.NumberFormat(document.documentElement.lang, { maximumFractionDigits: 1 });
  const dates = new Intl.DateTimeFormat(document.documentElement.lang, { dateStyle: "medium", timeStyle: "short" });

  let conversation = pageData.conversation || null;
  let source = null;
  let streamingId = null;
  let sending = false;
  // The raw (Markdown) text of answers this page follows live, by message id.
  const rawText = new Map(Object.entries(pageData.streaming || {}).map(([id, text]) => [Number(id), text]));
  const pendingRender = new Set();
  let waitingTimer = null;

  function csrfToken() {
    const match = document.cookie.match(/(?:^|;\s*)csrftoken=([^;]+)/);
    return match ? decodeURIComponent(match[1]) : "";
  }

  function postJson(url, body) {
    return requestJson("POST", url, body);
  }

  async function requestJson(method, url, body) {
    const response = await fetch(url, {
      method: method,
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRFToken": csrfToken() },
      body: method === "GET" ? undefined : JSON.stringify(body || {}),
    });
    const data = response.status === 204 ? {} : await response.json().catch(() => ({}));
    if (!response.ok) {
      const error = new Error((data.error && data.error.message) || response.statusText);
      error.status = response.status;
      throw error;
    }
    return data;
  }

  function showError(text) {
    composerError.textContent = text;
    composerError.hidden = !text;
  }

  function interpolate(template, values) {
    return template.replace(/%\((\w+)\)s/g, (_, key) => values[key]);
  }

  // Answers are untrusted: rendered by the sanitizing Markdown renderer when the page
  // has it, else as plain text. Never as HTML straight from the model.
  function renderAnswer(node, raw) {
    if (window.AssistantMarkdown) {
      node.innerHTML = window.AssistantMarkdown.render(raw);
      window.AssistantMarkdown.highlight(node);
      window.AssistantMarkdown.addCopyButtons(node, i18n.copy, i18n.copied);
    } else {
      node.textContent = raw;
    }
  }

  // Streaming re-renders the whole answer, at most once per frame.
  function scheduleRender(id) {
    if (pendingRender.size === 0) {
      requestAnimationFrame(() => {
        pendingRender.forEach((pendingId) => {
          const item = findMessage(pendingId);
          if (item) renderAnswer(item.querySelector(".text"), rawText.get(pendingId) || "");
        });
        pendingRender.clear();
        scrollToEnd();
      });
    }
    pendingRender.add(id);
  }

  function showDetails(item, data) {
    let details = item.querySelector(".details");
    if (!details) {
      details = document.createElement("div");
      details.className = "details";
      item.appendChild(details);
    }
    Object.assign(details.dataset, data);
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
    if (!details.dataset.created) details.dataset.created = new Date().toISOString();
    parts.push(dates.format(new Date(details.dataset.created)));
    details.textContent = parts.join(" · ");
    addCopyAnswerButton(item, details);
    addFeedbackButtons(item, details);
  }

  const RATINGS = { 1: "up", "-1": "down", up: "up", down: "down" };

  function addFeedbackButtons(item, details) {
    const current = RATINGS[details.dataset.feedback] || null;
    [
      ["up", "👍", i18n.good],
      ["down", "👎", i18n.bad],
    ].forEach(([rating, symbol, label]) => {
      const button = document.createElement("button");
      button.type = "button";
      button.className = "link feedback";
      button.textContent = symbol;
      button.setAttribute("aria-label", label);
      button.title = label;
      button.setAttribute("aria-pressed", String(current === rating));
      button.addEventListener("click", () => sendFeedback(item, details, rating));
      details.append(" ", button);
    });
  }

  async function sendFeedback(item, details, rating) {
    // Pressing the chosen rating again takes it back.
    const clearing = RATINGS[details.dataset.feedback] === rating;
    const url = pageData.feedback_url.replace("/0/", "/" + item.dataset.messageId + "/");
    try {
      const result = await postJson(url, { rating: clearing ? null : rating });
      details.dataset.feedback = result.feedback || "";
      showDetails(item, {});
      if (result.feedback === "down") askFeedbackComment(item, url);
    } catch (error) {
      showError(error.message);
    }
  }

  function askFeedbackComment(item, url) {
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
        showError(error.message);
      }
    });
    item.appendChild(form);
    area.focus();
  }

  // The latest question can be edited and sent again; the old exchange stays stored.
  function updateEditButton() {
    messageList.querySelectorAll(".edit-question").forEach((node) => node.remove());
    const questions = messageList.querySelectorAll('.message.user:not([data-superseded="true"])');
    const last = questions[questions.length - 1];
    if (!last || streamingId !== null) return;
    const button = document.createElement("button");
    button.type = "button";
    button.className = "link edit-question";
    button.textContent = i18n.edit;
    button.addEventListener("click", () => editQuestion(last));
    last.appendChild(button);
  }

  function editQuestion(item) {
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
      updateEditButton();
    };
    cancel.addEventListener("click", close);
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      if (!area.value.trim()) return;
      save.disabled = true;
      try {
        await postJson(pageData.edit_url.replace("/0/", "/" + item.dataset.messageId + "/"), {
          content: area.value,
          model: modelSelect.value,
        });
        form.remove();
        text.hidden = false;
      } catch (error) {
        save.disabled = false;
        showError(error.status ? error.message : i18n.send_failed);
      }
    });
  }

  function addCopyAnswerButton(item, details) {
    if (details.querySelector(".copy-answer")) return;
    const button = document.createElement("button");
    button.type = "button";
    button.className = "link copy-answer";
    button.textContent = i18n.copy;
    button.addEventListener("click", async () => {
      const text = await answerMarkdown(Number(item.dataset.messageId), item);
      if (await copyText(text)) {
        button.textContent = i18n.copied;
        setTimeout(() => (button.textContent = i18n.copy), 1500);
      }
    });
    details.append(" ", button);
  }

  // Stored answers are on the page rendered; their Markdown comes from the API once.
  let storedAnswers = null;

  async function answerMarkdown(id, item) {
    if (rawText.has(id)) return rawText.get(id);
    if (!storedAnswers) {
      try {
        const state = await fetch(conversation.detail_url, { credentials: "same-origin" }).then((r) => r.json());
        storedAnswers = new Map(state.messages.map((m) => [m.id, m.content]));
      } catch {
        storedAnswers = new Map();
      }
    }
    return storedAnswers.get(id) ?? item.querySelector(".text").innerText;
  }

  // The clipboard API needs a secure context; plain HTTP on the intranet gets a fallback.
  async function copyText(text) {
    try {
      await navigator.clipboard.writeText(text);
      return true;
    } catch {
      const area = document.createElement("textarea");
      area.value = text;
      area.setAttribute("readonly", "");
      area.className = "visually-hidden";
      document.body.appendChild(area);
      area.select();
      const copied = document.execCommand("copy");
      area.remove();
      return copied;
    }
  }

  // Until the first word arrives, the answer shows how long it has been waiting.
  function startWaiting(item) {
    stopWaiting();
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
    waitingTimer = setInterval(tick, 100);
  }

  function stopWaiting() {
    clearInterval(waitingTimer);
    waitingTimer = null;
    messageList.querySelectorAll(".waiting").forEach((node) => node.remove());
  }

  function findMessage(id) {
    return messageList.querySelector('[data-message-id="' + String(id) + '"]');
  }

  function renderMessage(message) {
    let item = findMessage(message.id);
    if (!item) {
      item = document.createElement("li");
      item.dataset.messageId = String(message.id);
      const text = document.createElement("div");
      text.className = "text";
      item.appendChild(text);
      messageList.appendChild(item);
    }
    item.className = "message " + message.role;
    item.dataset.status = message.status;
    const text = item.querySelector(".text");
    if (message.role === "assistant") {
      renderAnswer(text, message.content || "");
    } else {
      text.textContent = message.content || "";
    }
    item.querySelectorAll(".message-error").forEach((node) => node.remove());
    if (message.superseded) item.dataset.superseded = "true";
    if (message.error) {
      showMessageError(item, message.error.detail, message.error.retryable);
    }
    return item;
  }

  function showMessageError(item, detail, retryable) {
    const error = document.createElement("div");
    error.className = "message-error";
    error.setAttribute("role", "alert");
    error.textContent = detail;
    if (retryable) addRetryButton(error, item.dataset.messageId);
    item.appendChild(error);
  }

  function addRetryButton(errorNode, id) {
    const retry = document.createElement("button");
    retry.type = "button";
    retry.className = "secondary";
    retry.textContent = i18n.retry;
    retry.addEventListener("click", () => retryAnswer(id));
    errorNode.append(" ", retry);
  }

  let retrying = false;

  async function retryAnswer(id) {
    if (retrying) return; // a double click starts one answer
    retrying = true;
    showError("");
    try {
      await postJson(pageData.retry_url.replace("/0/", "/" + id + "/"));
    } catch (error) {
      showError(error.status ? error.message : i18n.send_failed);
    } finally {
      retrying = false;
    }
  }

  function setStreaming(id) {
    // The stop button disappears: keep the keyboard user's focus on the page.
    if (id === null && document.activeElement === stopButton) input.focus();
    messageList.querySelectorAll('[aria-busy="true"]').forEach((node) => node.removeAttribute("aria-busy"));
    if (id !== null && findMessage(id)) findMessage(id).setAttribute("aria-busy", "true");
    streamingId = id;
    updateEditButton();
    stopButton.hidden = id === null;
    sendButton.disabled = id !== null || sending;
  }

  function scrollToEnd() {
    messageList.lastElementChild && messageList.lastElementChild.scrollIntoView({ block: "end" });
  }

  function onStart(event) {
    const data = JSON.parse(event.data);
    const question = data.user_message;
    [data.replaces, data.replaces_question].forEach((id) => {
      const replaced = id && findMessage(id);
      if (!replaced) return;
      replaced.dataset.superseded = "true";
      // Only the latest answer can be regenerated.
      replaced.querySelectorAll(".message-error button").forEach((button) => button.remove());
    });
    renderMessage({ id: question.id, role: "user", status: "done", content: question.content });
    // A replayed start rebuilds the answer from its first delta: never a word twice.
    const answer = renderMessage({ id: data.message, role: "assistant", status: "streaming", content: "" });
    answer.querySelectorAll(".message-error, .details").forEach((node) => node.remove());
    rawText.set(data.message, "");
    answer.dataset.model = data.model;
    setStreaming(data.message);
    startWaiting(answer);
    scrollToEnd();
  }

  function onDelta(event) {
    const data = JSON.parse(event.data);
    if (!findMessage(data.message)) return;
    stopWaiting();
    rawText.set(data.message, (rawText.get(data.message) || "") + data.text);
    scheduleRender(data.message);
  }

  function onDone(event) {
    const data = JSON.parse(event.data);
    const item = findMessage(data.message);
    stopWaiting();
    if (item) {
      item.dataset.status = data.finish_reason === "cancelled" ? "cancelled" : "done";
      showDetails(item, {
        promptTokens: data.usage.prompt_tokens ?? "",
        completionTokens: data.usage.completion_tokens ?? "",
        durationMs: data.duration_ms ?? "",
        model: item.dataset.model || "",
      });
      announcer.textContent = i18n.answer_ready;
    }
    if (streamingId === data.message) setStreaming(null);
  }

  function onError(event) {
    const data = JSON.parse(event.data);
    const item = findMessage(data.message);
    stopWaiting();
    if (item) {
      item.dataset.status = data.type === "interrupted" ? "interrupted" : "error";
      showMessageError(item, data.detail, data.retryable);
      announcer.textContent = data.detail;
    }
    if (streamingId === data.message) setStreaming(null);
  }

  async function onReset() {
    // The server cannot replay from our position: re-render from the stored state.
    disconnect();
    const state = await fetch(conversation.detail_url, {
      credentials: "same-origin",
    }).then((response) => response.json());
    messageList.replaceChildren();
    state.messages.forEach(renderMessage);
    const streaming = state.messages.find((m) => m.status === "streaming");
    setStreaming(streaming ? streaming.id : null);
    connect(state.last_event_id);
  }

  // The position of the last event this page applied, to reconnect from by itself.
  let position = null;
  let watchdog = null;
  let dropped = false;

  function connect(lastEventId) {
    position = lastEventId;
    const url = conversation.events_url + "?lastEventId=" + encodeURIComponent(lastEventId);
    source = new EventSource(url);
    const listen = (name, handler) =>
      source.addEventListener(name, (event) => {
        if (event.lastEventId) position = event.lastEventId;
        heard();
        if (handler) handler(event);
      });
    listen("open", () => {
      connection.textContent = dropped ? i18n.resumed : "";
      dropped = false;
    });
    source.addEventListener("error", (event) => {
      if (event.data) return;
      if (source && source.readyState === EventSource.CONNECTING) lost();
    });
    listen("stream-open");
    listen("keep-alive");
    listen("start", onStart);
    listen("delta", onDelta);
    listen("done", onDone);
    listen("error", (event) => event.data && onError(event));
    listen("stream-reset", onReset);
    listen("title", (event) => showTitle(JSON.parse(event.data).title));
    listen("unauthorized", onUnauthorized);
    listen("stream-closed", onStreamClosed);
  }

  // The session was logged out, the account deactivated or the password changed: the
  // server ended the stream for good (a reconnect would be refused). Stop listening and
  // offer the login page. After a password change, this browser may be the one that
  // made it and still be signed in: then it simply listens on from where it was.
  async function onUnauthorized(event) {
    const from = position;
    disconnect();
    position = null; // nothing to reconnect to (see reconnect)
    if (JSON.parse(event.data).reason === "password_changed" && (await stillSignedIn())) {
      connect(from);
      return;
    }
    stopWaiting();
    setStreaming(null);
    const login = document.createElement("a");
    login.href = pageData.login_url + "?next=" + encodeURIComponent(window.location.pathname);
    login.textContent = i18n.sign_in_again;
    connection.replaceChildren(i18n.signed_out + " ", login);
  }

  async function stillSignedIn() {
    try {
      const response = await fetch(conversation.detail_url, { credentials: "same-origin" });
      return response.ok;
    } catch {
      return false;
    }
  }

  // This user opened more streams than the server keeps (other tabs), and this one was
  // the oldest. Reconnecting by itself would close another tab's, so it only offers to.
  function onStreamClosed(event) {
    const from = position;
    disconnect();
    position = null; // no reconnect by itself (see reconnect)
    const again = document.createElement("button");
    again.type = "button";
    again.className = "secondary";
    again.textContent = i18n.reconnect;
    again.addEventListener("click", () => {
      connection.textContent = "";
      connect(from);
    });
    const notice = interpolate(i18n.too_many_streams, { limit: JSON.parse(event.data).limit });
    connection.replaceChildren(notice + " ", again);
  }

  function lost() {
    dropped = true;
    connection.textContent = i18n.reconnecting;
  }

  // A connection can die without the browser noticing (a proxy or NAT forgetting it):
  // the server speaks at least every keep-alive interval, so silence means reconnect.
  function heard() {
    clearTimeout(watchdog);
    watchdog = setTimeout(() => {
      lost();
      reconnect();
    }, pageData.keepalive_seconds * 2000 + 2000);
  }

  function reconnect() {
    if (!conversation || position === null) return;
    disconnect();
    connect(position);
  }

  function disconnect() {
    clearTimeout(watchdog);
    if (source) source.close();
    source = null;
  }

  window.addEventListener("online", reconnect);

  function showTitle(title) {
    conversation.title = title;
    const heading = document.getElementById("conversation-title");
    if (heading) heading.textContent = title;
    document.title = title + " · Assistant";
    const link = document.querySelector('[data-conversation-id="' + conversation.id + '"]');
    if (link) link.textContent = title;
  }

  function setUpConversationActions() {
    const rename = document.getElementById("rename-button");
    if (!rename || !conversation) return;
    const archive = document.getElementById("archive-button");
    const remove = document.getElementById("delete-button");
    const dialog = document.getElementById("delete-dialog");
    rename.addEventListener("click", () => {
      const heading = document.getElementById("conversation-title");
      const input = document.createElement("input");
      input.value = conversation.title || "";
      input.maxLength = 200;
      input.className = "title-input";
      input.setAttribute("aria-label", rename.textContent);
      heading.replaceWith(input);
      input.focus();
      input.select();
      let done = false;
      const finish = async (save) => {
        if (done) return;
        done = true;
        input.replaceWith(heading);
        if (save && input.value.trim() && input.value.trim() !== conversation.title) {
          try {
            const result = await requestJson("PATCH", conversation.detail_url, { title: input.value });
            showTitle(result.title);
          } catch (error) {
            showError(error.message);
          }
        }
        rename.focus();
      };
      input.addEventListener("keydown", (event) => {
        if (event.key === "Enter") finish(true);
        if (event.key === "Escape") finish(false);
      });
      input.addEventListener("blur", () => finish(true));
    });
    archive.addEventListener("click", async () => {
      try {
        await requestJson("PATCH", conversation.detail_url, { archived: archive.dataset.archived !== "1" });
        window.location.assign(pageData.home_url);
      } catch (error) {
        showError(error.message);
      }
    });
    remove.addEventListener("click", () => dialog.showModal());
    dialog.addEventListener("close", async () => {
      if (dialog.returnValue !== "delete") return;
      try {
        await requestJson("DELETE", conversation.detail_url);
        window.location.assign(pageData.home_url);
      } catch (error) {
        showError(error.message);
      }
    });
  }

  function addToSidebar(item) {
    document.getElementById("conversation-title").textContent = item.title || i18n.untitled;
    const list = document.getElementById("conversation-list");
    const empty = document.getElementById("list-empty");
    if (empty) empty.remove();
    let today = list.querySelector('ul[data-group="1"]');
    const firstLabel = list.querySelector(".group-label");
    if (!today || !firstLabel || firstLabel.textContent !== i18n.today) {
      const label = document.createElement("h2");
      label.className = "group-label";
      label.textContent = i18n.today;
      today = document.createElement("ul");
      today.dataset.group = "1";
      list.prepend(label, today);
    }
    today.prepend(sidebarEntry(item));
  }

  function sidebarEntry(item) {
    const entry = document.createElement("li");
    const link = document.createElement("a");
    link.href = item.url;
    link.dataset.conversationId = item.id;
    link.textContent = item.title || i18n.untitled;
    if (conversation && item.id === conversation.id) link.setAttribute("aria-current", "page");
    entry.appendChild(link);
    return entry;
  }

  // The sidebar shows the newest conversations; "show more" appends the next page of
  // the list API, each one in its recency section (the page's sections, continued).
  function setUpShowMore() {
    const button = document.getElementById("show-more");
    if (!button) return;
    const sidebar = pageData.sidebar;
    const sectionOf = (item) => {
      const updated = new Date(item.updated_at);
      return sidebar.groups.find((group) => group.start === null || updated >= new Date(group.start)).label;
    };
    const section = (label) => {
      const labels = document.querySelectorAll("#conversation-list .group-label");
      const last = labels[labels.length - 1];
      if (last && last.textContent === label) return last.nextElementSibling;
      const heading = document.createElement("h2");
      heading.className = "group-label";
      heading.textContent = label;
      const list = document.createElement("ul");
      list.dataset.group = String(labels.length + 1);
      button.before(heading, list);
      return list;
    };
    button.addEventListener("click", async () => {
      button.disabled = true;
      const query = new URLSearchParams({
        q: sidebar.query,
        archived: sidebar.archived ? "1" : "0",
        before: sidebar.next,
      });
      try {
        const result = await requestJson("GET", sidebar.list_url + "?" + query);
        let first = null;
        result.conversations.forEach((item) => {
          // One that moved up meanwhile (a new message elsewhere) is already listed.
          if (document.querySelector('[data-conversation-id="' + item.id + '"]')) return;
          const entry = sidebarEntry(item);
          section(sectionOf(item)).appendChild(entry);
          first = first || entry.firstChild;
        });
        sidebar.next = result.next;
        if (sidebar.next === null) {
          button.remove();
          if (first) first.focus();
        }
      } catch (error) {
        showError(error.message);
      } finally {
        button.disabled = false;
      }
    });
  }

  async function send() {
    const content = input.value;
    if (!content.trim() || sending || streamingId !== null) return;
    if (!navigator.onLine) {
      showError(i18n.offline);
      return;
    }
    sending = true;
    sendButton.disabled = true;
    showError("");
    try {
      const question = { content: content, model: modelSelect.value };
      let result;
      if (conversation) {
        result = await postJson(conversation.messages_url, question);
      } else {
        // A new chat: the conversation and its first question in one request, stored
        // together or not at all.
        result = await postJson(pageData.create_url, question);
        conversation = result;
        history.pushState({}, "", conversation.url);
        document.getElementById("chat-header").hidden = false;
        setUpConversationActions();
        const hint = document.getElementById("empty-hint");
        if (hint) hint.remove();
      }
      input.value = "";
      if (!source) {
        conversation.title = conversation.title || content.slice(0, 60);
        addToSidebar(conversation);
        connect(result.assistant_message.last_event_id);
      }
    } catch (error) {
      showError(error.status ? error.message : i18n.send_failed);
    } finally {
      sending = false;
      setStreaming(streamingId);
    }
  }

  composer.addEventListener("submit", (event) => {
    event.preventDefault();
    send();
  });
  input.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      if (!event.repeat) send();
    }
  });
  stopButton.addEventListener("click", async () => {
    if (streamingId === null) return;
    try {
      await postJson(pageData.cancel_url.replace("/0/", "/" + streamingId + "/"));
    } catch (error) {
      showError(error.message);
    }
  });

  // Stored answers come rendered and sanitized from the server; highlight them here,
  // as live ones are.
  messageList.querySelectorAll(".message.assistant .text").forEach((node) => {
    window.AssistantMarkdown.highlight(node);
    window.AssistantMarkdown.addCopyButtons(node, i18n.copy, i18n.copied);
  });
  messageList.querySelectorAll(".message.assistant .details").forEach((details) => {
    showDetails(details.closest("[data-message-id]"), {});
  });
  rawText.forEach((raw, id) => {
    const item = findMessage(id);
    if (item) renderAnswer(item.querySelector(".text"), raw);
  });
  if (language) language.addEventListener("change", () => language.form.submit());
  setUpConversationActions();
  setUpShowMore();

  messageList.querySelectorAll(".message-error[data-error-type]").forEach((node) => {
    const item = node.closest("[data-message-id]");
    if (pageData.retryable_types.includes(node.dataset.errorType) && !item.dataset.superseded) {
      addRetryButton(node, item.dataset.messageId);
    }
  });

  updateEditButton();

  if (conversation) {
    const streaming = messageList.querySelector('[data-status="streaming"]');
    if (streaming) setStreaming(Number(streaming.dataset.messageId));
    connect(pageData.last_event_id);
  }
  input.focus();
})();
