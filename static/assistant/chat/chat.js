// The chat page: sends questions over the JSON API and renders answers from one event
// stream per open conversation. Each part owns its state: api.js (requests), stream.js
// (the EventSource), messages.js (rendering), sidebar.js (the list and the drawer),
// composer.js (the question), assistants.js (the new chat's assistant), flow.js (a
// guided flow's progress), documents.js (the conversation's files) and sources.js (the
// passages answers cite).
import { getJson, messageUrl, postJson, requestJson } from "./api.js";
import { AssistantGallery, showAssistant } from "./assistants.js";
import { Composer } from "./composer.js";
import { Documents } from "./documents.js";
import { FlowProgress } from "./flow.js";
import { Messages } from "./messages.js";
import { i18n, interpolate, pageData } from "./page.js";
import { Sidebar } from "./sidebar.js";
import { Sources } from "./sources.js";
import { EventStream } from "./stream.js";

const connection = document.getElementById("connection");
const announcer = document.getElementById("announcer");
let conversation = pageData.conversation || null;
let stream = null;
let creating = null; // a new chat's conversation being created for its first files

const composer = new Composer({ send, stop });
const showError = (text) => composer.showError(text);
const sidebar = new Sidebar(showError);
const announce = (text) => (announcer.textContent = text);
const messages = new Messages(
  document.getElementById("messages"),
  { retry, continueAnswer, showVersion, showError, requestFailed },
  new Sources()
);
const gallery = new AssistantGallery(document.getElementById("assistant-gallery"));
const documents = new Documents({
  conversation: conversationForDocuments,
  announce,
  changed: () => messages.scroll.changed(),
});
const flow = new FlowProgress(messages.list, {
  showError,
  announce,
  focusComposer: () => composer.input.focus(),
  changed: () => messages.scroll.changed(),
});

function setStreaming(id) {
  messages.setStreaming(id);
  streamingChanged(id !== null);
}

function streamingChanged(streaming) {
  composer.setStreaming(streaming);
  flow.setStreaming(streaming);
}

// The ends of a guided flow's phases, by answer id, from messages as the API gives them.
function phaseEnds(list) {
  return Object.fromEntries(list.filter((m) => m.phase_summary).map((m) => [m.id, m.phase_summary]));
}

// A conversation as the server describes it: its assistant, its flow, whether it can go on.
function showConversation(described, ends) {
  showAssistant(described);
  const unavailable = Boolean(described.assistant && described.assistant.retired);
  messages.readOnly = unavailable;
  composer.setUnavailable(unavailable);
  documents.setUnavailable(unavailable);
  flow.setUp(described, ends);
}

// A request refused because the conversation's assistant was retired since the page
// loaded (or is no longer the user's): the page closes the conversation and says why.
function requestFailed(error) {
  if (error.code === "assistant_unavailable" && conversation && conversation.assistant) {
    conversation.assistant.retired = true;
    showAssistant(conversation);
    messages.readOnly = true;
    messages.updateActions();
    composer.setUnavailable(true);
    documents.setUnavailable(true);
    flow.unavailable = true;
    flow.draw();
    return;
  }
  showError(error.status ? error.message : i18n.send_failed);
}

function connect(lastEventId) {
  stream = new EventStream(
    conversation.events_url,
    {
      start: (data) => {
        messages.onStart(data);
        flow.onStart(data);
        streamingChanged(true);
      },
      delta: (data) => messages.onDelta(data),
      // Right before the `done` of the answer that ended a guided flow's phase.
      phase: (data) => flow.onPhase(data),
      done: (data) => {
        if (messages.onDone(data)) streamingChanged(false);
        announcer.textContent = [i18n.answer_ready, flow.takeAnnouncement()].join(" ").trim();
      },
      error: (data) => {
        if (messages.onError(data)) streamingChanged(false);
        announcer.textContent = data.detail;
      },
      "stream-reset": onReset,
      title: (data) => showTitle(data.title),
      // A document of the conversation: uploaded, read page by page, ready, failed, deleted.
      document: (data) => documents.onEvent(data),
      unauthorized: onUnauthorized,
      "stream-closed": onStreamClosed,
    },
    (state) => {
      if (state === "lost") connection.textContent = i18n.reconnecting;
      else connection.textContent = state === "resumed" ? i18n.resumed : "";
    }
  );
  stream.connect(lastEventId);
}

// The server cannot replay from our position: re-render from the stored state.
async function onReset() {
  stream.disconnect();
  const state = await getJson(conversation.detail_url);
  messages.replaceAll(state.messages);
  showConversation(state, phaseEnds(state.messages));
  streamingChanged(messages.streamingId !== null);
  documents.reload();
  stream.connect(state.last_event_id);
}

// The session was logged out, the account deactivated or the password changed: the
// server ended the stream for good (a reconnect would be refused). Stop listening and
// offer the login page. After a password change, this browser may be the one that made
// it and still be signed in: then it simply listens on from where it was.
async function onUnauthorized(data) {
  const from = stream.close();
  if (data.reason === "password_changed" && (await stillSignedIn())) {
    stream.connect(from);
    return;
  }
  messages.stopWaiting();
  setStreaming(null);
  const login = document.createElement("a");
  login.href = pageData.login_url + "?next=" + encodeURIComponent(window.location.pathname);
  login.textContent = i18n.sign_in_again;
  connection.replaceChildren(i18n.signed_out + " ", login);
}

async function stillSignedIn() {
  try {
    await getJson(conversation.detail_url);
    return true;
  } catch {
    return false;
  }
}

// This user opened more streams than the server keeps (other tabs), and this one was the
// oldest. Reconnecting by itself would close another tab's, so it only offers to.
function onStreamClosed(data) {
  const from = stream.close();
  const again = document.createElement("button");
  again.type = "button";
  again.className = "secondary";
  again.textContent = i18n.reconnect;
  again.addEventListener("click", () => {
    connection.textContent = "";
    stream.connect(from);
  });
  connection.replaceChildren(interpolate(i18n.too_many_streams, { limit: data.limit }) + " ", again);
}

function showTitle(title) {
  conversation.title = title;
  document.getElementById("conversation-title").textContent = title;
  document.title = title + " · Assistant";
  sidebar.retitle(conversation.id, title);
}

// A new chat became a conversation (its first question, or its first file): the page is
// the conversation's now, and listens to its stream from `lastEventId`.
function becameConversation(created, lastEventId) {
  conversation = created;
  showConversation(conversation, {});
  history.pushState({}, "", conversation.url);
  document.getElementById("chat-header").hidden = false;
  document.getElementById("conversation-title").textContent = conversation.title || i18n.untitled;
  document.getElementById("export-markdown").href = conversation.export_urls.markdown;
  document.getElementById("export-json").href = conversation.export_urls.json;
  setUpConversationActions();
  const hint = document.getElementById("empty-hint");
  if (hint) hint.remove();
  sidebar.add(conversation);
  messages.conversation = conversation;
  connect(lastEventId);
}

// Returns whether the question was taken (the composer then empties).
async function send(content, model) {
  try {
    if (!conversation && creating) await creating.catch(() => null); // its files go first
    if (conversation) {
      await postJson(conversation.messages_url, { content, model });
      // A conversation started by a file gets its provisional title from this question.
      if (!conversation.title) showTitle(content.slice(0, 60));
    } else {
      // A new chat: the conversation and its first question in one request, stored
      // together or not at all, with the assistant chosen in the gallery.
      const result = await postJson(pageData.create_url, { content, model, assistant: gallery.slug });
      result.title = result.title || content.slice(0, 60);
      becameConversation(result, result.assistant_message.last_event_id);
    }
    return true;
  } catch (error) {
    requestFailed(error);
    return false;
  }
}

// The conversation files go to; a new chat's is created first, empty, with the
// assistant chosen in the gallery, and its stream opened before any file is sent, so
// no event of its files is missed.
function conversationForDocuments() {
  if (conversation) return Promise.resolve(conversation);
  if (!creating) {
    creating = (async () => {
      const created = await postJson(pageData.create_url, {
        model: composer.modelChoice(),
        assistant: gallery.slug,
      });
      const state = await getJson(created.detail_url);
      becameConversation(created, state.last_event_id);
      return created;
    })();
    creating.catch(() => (creating = null)); // refused: the next file tries again
  }
  return creating;
}

async function stop() {
  if (messages.streamingId === null) return;
  try {
    await postJson(messageUrl("cancel", messages.streamingId));
  } catch (error) {
    showError(error.message);
  }
}

let retrying = false;

async function retry(id) {
  if (retrying) return; // a double click starts one answer
  retrying = true;
  showError("");
  try {
    await postJson(messageUrl("retry", id));
  } catch (error) {
    requestFailed(error);
  } finally {
    retrying = false;
  }
}

async function continueAnswer(id) {
  showError("");
  try {
    await postJson(messageUrl("continue", id));
  } catch (error) {
    requestFailed(error);
  }
}

// Another version of a message: the conversation's shown branch runs through it now.
async function showVersion(id) {
  showError("");
  try {
    const state = await postJson(messageUrl("show", id));
    const top = messages.list.scrollTop;
    messages.replaceAll(state.messages, { stay: true });
    // Another version of an answer that ended a phase may leave it open, or the reverse.
    showConversation(state, phaseEnds(state.messages));
    messages.list.scrollTop = top;
  } catch (error) {
    showError(error.status ? error.message : i18n.send_failed);
  }
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
    input.setAttribute("aria-label", rename.textContent.trim());
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
      if (event.key === "Escape") {
        event.stopPropagation();
        finish(false);
      }
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

// Escape stops a streaming answer (a dialog, the drawer or a form being edited take it
// first: they stop its propagation or hold the focus).
document.addEventListener("keydown", (event) => {
  if (event.key !== "Escape" || event.defaultPrevented || messages.streamingId === null) return;
  if (document.querySelector("dialog[open]")) return;
  event.preventDefault();
  stop();
});

// An example prompt of the empty new chat asks it (the chosen assistant's, once chosen).
const starters = document.getElementById("starters");
if (starters) {
  starters.addEventListener("click", (event) => {
    const button = event.target.closest(".starter");
    if (!button) return;
    composer.input.value = button.textContent;
    composer.submit();
  });
}

const language = document.getElementById("language-select");
if (language) language.addEventListener("change", () => language.form.submit());

if (conversation) showConversation(conversation, pageData.phase_summaries);
messages.adopt(conversation);
streamingChanged(messages.streamingId !== null);
setUpConversationActions();
if (conversation) connect(pageData.last_event_id);
composer.input.focus({ preventScroll: true });
