// Asks Assistant one question and reads the answer from its event stream with the
// `eventsource` package, as a script or a native app would: a personal token as the
// Bearer header, the position the send returned, the package's own reconnect (with
// Last-Event-ID) after a drop, a new connection once a 429's Retry-After has passed, and
// a watchdog for a connection that went silent.
// Prints what it sees as JSON lines; the last one is the answer.
//
//   ASSISTANT_URL=https://assistant.example.com ASSISTANT_TOKEN=ast_... node read_answer.mjs "Hello"
import { EventSource } from "eventsource";

const base = process.env.ASSISTANT_URL;
const auth = { Authorization: `Bearer ${process.env.ASSISTANT_TOKEN}` };
const print = (line) => console.log(JSON.stringify(line));

async function api(method, path, body) {
  const response = await fetch(new URL(path, base), {
    method,
    headers: body ? { ...auth, "Content-Type": "application/json" } : auth,
    body: body && JSON.stringify(body),
  });
  if (!response.ok) throw new Error(`${method} ${path}: ${response.status} ${await response.text()}`);
  return response.json();
}

const me = await api("GET", "/api/me/");
const created = await api("POST", "/api/conversations/", { content: process.argv[2] });
const answer = created.assistant_message;
print({ type: "sent", conversation: created.id, answer: answer.id, position: answer.last_event_id });

let position = answer.last_event_id;
let text = "";
let source;
let watchdog;
let retryAfter = null; // seconds, from a 429 refusing the stream

function connect() {
  const url = new URL(created.events_url, base);
  url.searchParams.set("lastEventId", position); // the first request; reconnects send the header
  source = new EventSource(url, {
    fetch: (input, init) => {
      const query = new URL(input).searchParams.get("lastEventId");
      print({ type: "connect", header: init.headers["Last-Event-ID"] ?? null, query });
      return fetch(input, { ...init, headers: { ...init.headers, ...auth } }).then((response) => {
        if (response.status === 429) retryAfter = Number(response.headers.get("Retry-After") ?? 2);
        return response;
      });
    },
  });
  heard();
  const on = (name, handle) =>
    source.addEventListener(name, (event) => {
      if (name === "error" && !(event instanceof MessageEvent)) {
        // The connection failed, not the answer: the package reconnects by itself
        // unless the server refused the stream (then it is closed for good).
        const closed = source.readyState === EventSource.CLOSED;
        print({ type: "connection-error", code: event.code ?? null, closed });
        if (closed && event.code === 429) {
          // Over a limit: connect again from the position once its Retry-After has passed.
          clearTimeout(watchdog);
          print({ type: "limited", wait: retryAfter });
          watchdog = setTimeout(connect, retryAfter * 1000);
        } else if (closed) stop(1);
        return;
      }
      heard();
      if (event.lastEventId) position = event.lastEventId;
      const data = event.data ? JSON.parse(event.data) : null;
      print({ type: "event", event: name, id: event.lastEventId || null, data });
      handle(data);
    });
  const ours = (data) => data.message === answer.id;
  on("stream-open", () => {});
  on("keep-alive", () => {});
  on("start", (data) => {
    if (ours(data)) text = ""; // (re)starts here: rebuild from the deltas that follow
  });
  on("delta", (data) => {
    if (ours(data)) text += data.text;
  });
  on("done", (data) => ours(data) && finish("done", data));
  on("error", (data) => ours(data) && finish("error", data));
  on("stream-reset", () => reset());
  on("unauthorized", () => stop(2)); // signed out or token revoked: never reconnect
  on("stream-closed", () => stop(2)); // too many streams: reconnect only if the user asks
}

// The server speaks at least every keep-alive interval: silence for two means the
// connection is dead without anyone having noticed. Reconnect from the last position.
function heard() {
  clearTimeout(watchdog);
  watchdog = setTimeout(() => {
    print({ type: "silent" });
    source.close();
    connect();
  }, me.events.keepalive_seconds * 2000 + 2000);
}

// The position cannot be resumed: take the stored answer, and follow it on if it streams.
async function reset() {
  clearTimeout(watchdog);
  source.close();
  const conversation = await api("GET", created.detail_url);
  const stored = conversation.messages.find((message) => message.id === answer.id);
  text = stored.content;
  if (stored.status !== "streaming") return finish(stored.status, stored);
  position = conversation.last_event_id;
  connect();
}

function finish(end, data) {
  print({ type: "answer", end, text, data });
  stop(0);
}

function stop(code) {
  clearTimeout(watchdog);
  source.close();
  process.exitCode = code;
}

connect();
