// The composer: the question's text, its length against the limit, sending and stopping.
import { i18n, interpolate, numbers, pageData, touch } from "./page.js";

// The counter appears when the text reaches this share of the limit.
const COUNTER_FROM = 0.8;

export class Composer {
  // `send(content, model)` returns a promise; `stop()` stops the answer streaming.
  constructor({ send, stop }) {
    this.form = document.getElementById("composer");
    this.input = document.getElementById("composer-input");
    this.model = document.getElementById("model-select");
    this.sendButton = document.getElementById("send-button");
    this.stopButton = document.getElementById("stop-button");
    this.error = document.getElementById("composer-error");
    this.counter = document.getElementById("composer-counter");
    this.note = document.getElementById("composer-note");
    this.limit = pageData.max_message_chars;
    this.sending = false;
    this.streaming = false;
    // The conversation cannot go on (its assistant was retired): the note says why.
    this.unavailable = this.input.disabled;
    this.send = send;
    this.form.addEventListener("submit", (event) => {
      event.preventDefault();
      this.submit();
    });
    this.input.addEventListener("keydown", (event) => {
      // On a touch screen Enter is a new line; the button sends.
      if (event.key === "Enter" && !event.shiftKey && !event.isComposing && !touch.matches) {
        event.preventDefault();
        if (!event.repeat) this.submit();
      }
    });
    this.input.addEventListener("input", () => this.count());
    this.stopButton.addEventListener("click", stop);
    const hints = () => (this.input.placeholder = touch.matches ? i18n.placeholder_touch : i18n.placeholder);
    touch.addEventListener("change", hints);
    hints();
    this.count();
  }

  showError(text) {
    this.error.textContent = text;
    this.error.hidden = !text;
  }

  // Characters left, shown near the limit; past it, sending is refused in words.
  count() {
    const length = this.input.value.length;
    const near = length >= this.limit * COUNTER_FROM;
    this.counter.hidden = !near;
    if (near) {
      this.counter.textContent = interpolate(i18n.characters_left, {
        left: numbers.format(this.limit - length),
      });
      this.counter.classList.toggle("over", length > this.limit);
    }
  }

  async submit() {
    const content = this.input.value;
    if (!content.trim() || this.sending || this.streaming || this.unavailable) return;
    if (content.length > this.limit) {
      this.showError(interpolate(i18n.too_long, { limit: numbers.format(this.limit) }));
      return;
    }
    if (!navigator.onLine) {
      this.showError(i18n.offline);
      return;
    }
    this.sending = true;
    this.update();
    this.showError("");
    try {
      if (await this.send(content, this.modelChoice())) {
        this.input.value = "";
        this.count();
      }
    } finally {
      this.sending = false;
      this.update();
    }
  }

  // The model chosen; a hidden choice is no choice: an assistant answers with its own.
  modelChoice() {
    return this.model.hidden ? "" : this.model.value;
  }

  setStreaming(streaming) {
    // The stop button disappears: keep the keyboard user's focus on the page.
    if (!streaming && document.activeElement === this.stopButton) this.input.focus();
    this.streaming = streaming;
    this.update();
  }

  setUnavailable(unavailable) {
    this.unavailable = unavailable;
    this.input.disabled = unavailable;
    this.note.hidden = !unavailable;
    this.update();
  }

  update() {
    this.stopButton.hidden = !this.streaming;
    this.sendButton.disabled = this.streaming || this.sending || this.unavailable;
  }
}
