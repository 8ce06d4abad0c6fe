// One conversation's event stream: a native EventSource that resumes from the last event
// this page applied, with a watchdog for connections that die silently.
import { pageData } from "./page.js";

export class EventStream {
  // `handlers`: event name -> function(data, event); `status`: connection state changes
  // ("lost", "open", "resumed").
  constructor(eventsUrl, handlers, status) {
    this.eventsUrl = eventsUrl;
    this.handlers = handlers;
    this.status = status;
    this.source = null;
    this.position = null; // the position of the last event applied
    this.watchdog = null;
    this.dropped = false;
    window.addEventListener("online", () => this.reconnect());
  }

  get open() {
    return this.source !== null;
  }

  connect(lastEventId) {
    this.position = lastEventId;
    this.source = new EventSource(this.eventsUrl + "?lastEventId=" + encodeURIComponent(lastEventId));
    const source = this.source;
    source.addEventListener("open", () => {
      this.heard();
      this.status(this.dropped ? "resumed" : "open");
      this.dropped = false;
    });
    source.addEventListener("error", (event) => {
      if (event.data) return; // the server's `error` event, handled below
      if (source.readyState === EventSource.CONNECTING) this.lost();
    });
    ["stream-open", "keep-alive", ...Object.keys(this.handlers)].forEach((name) => {
      source.addEventListener(name, (event) => {
        if (name === "error" && !event.data) return;
        if (event.lastEventId) this.position = event.lastEventId;
        this.heard();
        const handler = this.handlers[name];
        if (handler) handler(event.data ? JSON.parse(event.data) : {}, event);
      });
    });
  }

  // The server ended the stream for good (signed out, too many tabs): no reconnect by
  // itself. Returns the position to resume from, should the user ask to.
  close() {
    const from = this.position;
    this.disconnect();
    this.position = null;
    return from;
  }

  lost() {
    this.dropped = true;
    this.status("lost");
  }

  // The server speaks at least every keep-alive interval, so silence means reconnect.
  heard() {
    clearTimeout(this.watchdog);
    this.watchdog = setTimeout(() => {
      this.lost();
      this.reconnect();
    }, pageData.keepalive_seconds * 2000 + 2000);
  }

  reconnect() {
    if (this.position === null) return;
    const from = this.position;
    this.disconnect();
    this.connect(from);
  }

  disconnect() {
    clearTimeout(this.watchdog);
    if (this.source) this.source.close();
    this.source = null;
  }
}
