// A guided flow: its phases as steps with the current one marked, the "next phase"
// button, and a divider in the transcript after each answer that ended its phase.
//
// Where the flow stands follows the shown answers that ended a phase, kept by answer id
// in their order (as the server counts them, personas/flows.py): a `phase` event sets
// one, so it applies once however often it arrives (live, replayed after a reconnect,
// after this tab's own "next phase"); an answer replaced by a regeneration or an edit
// takes its end with it, and the phase is open again.
import { postJson } from "./api.js";
import { i18n, icon, interpolate, pageData } from "./page.js";

export class FlowProgress {
  // `list`: the messages' list; `actions`: showError(text), announce(text), focusComposer(),
  // changed() (the list's content changed: follow it if the reader is at its end).
  constructor(list, actions) {
    this.list = list;
    this.actions = actions;
    this.root = document.getElementById("flow");
    this.status = document.getElementById("flow-status");
    this.steps = document.getElementById("flow-steps");
    this.goal = document.getElementById("flow-goal");
    this.button = document.getElementById("next-phase");
    this.flow = null; // {phases: [{title, goal}], total}
    this.ends = new Map(); // answer id -> {by, summary, points}
    this.conversationId = null;
    this.unavailable = false;
    this.streaming = false;
    this.moving = false;
    this.announcement = "";
    this.button.addEventListener("click", () => this.next());
  }

  // A conversation as the server describes it (its "flow" and "assistant"), and how each of
  // its shown answers that ended a phase ended it ({answer id: {by, summary, points}}).
  setUp(conversation, ends) {
    this.conversationId = conversation ? conversation.id : null;
    this.flow = conversation && conversation.flow ? conversation.flow : null;
    this.unavailable = Boolean(conversation && conversation.assistant && conversation.assistant.retired);
    this.ends = new Map(Object.entries(ends || {}).map(([id, end]) => [Number(id), end]));
    this.draw();
  }

  // The phase ended by each answer, in the conversation's order.
  ended() {
    return [...this.ends.keys()].sort((a, b) => a - b);
  }

  get total() {
    return this.flow ? this.flow.phases.length : 0;
  }

  get finished() {
    return this.ends.size >= this.total;
  }

  // The current phase, from 1; the last one once the flow is finished.
  get phase() {
    return Math.min(this.ends.size + 1, this.total);
  }

  // --- the stream's events

  // The server's `phase` event: an answer ended its phase.
  onPhase(data) {
    if (!this.flow) return;
    const known = this.ends.has(data.message);
    this.ends.set(data.message, data.completed);
    this.draw();
    if (!known) this.announcement = this.describeMove(data.message);
  }

  // A new answer began; one it replaces is out of the shown branch, and so is its end.
  onStart(data) {
    if (data.replaces !== undefined && this.ends.delete(data.replaces)) this.draw();
  }

  setStreaming(streaming) {
    this.streaming = streaming;
    this.draw();
  }

  // What happened since it was last asked, for the page's live region ("" if nothing).
  takeAnnouncement() {
    const text = this.announcement;
    this.announcement = "";
    return text;
  }

  // "Phase 1 Situation completed. Now phase 2 of 4: Ziel." for the end of answer `id`.
  describeMove(id) {
    const number = this.ended().indexOf(id) + 1;
    const done = interpolate(i18n.phase_completed, {
      phase: number,
      title: this.flow.phases[number - 1].title,
    });
    if (this.finished) return done + ". " + i18n.flow_done_note;
    const now = interpolate(i18n.phase_now, {
      phase: this.phase,
      total: this.total,
      title: this.flow.phases[this.phase - 1].title,
    });
    return done + ". " + now;
  }

  // The latest shown message, if it is an answer that has not ended its phase: what the
  // server's "next phase" ends (personas/flows.py, phase_next).
  openAnswer() {
    const shown = this.list.querySelectorAll(":scope > .message");
    const last = shown[shown.length - 1];
    if (!last || !last.classList.contains("assistant")) return null;
    const id = Number(last.dataset.messageId);
    return this.ends.has(id) ? null : id;
  }

  // --- "next phase"

  async next() {
    const answer = this.openAnswer();
    if (this.moving || answer === null) return;
    this.moving = true;
    this.actions.showError("");
    this.draw();
    try {
      const result = await postJson(pageData.phase_next_url.replace("{id}", this.conversationId));
      // The server ended the phase on the latest answer; its `phase` event says the same.
      if (!this.ends.has(answer) && result.flow.completed.length > this.ends.size) {
        const completed = result.flow.completed[result.flow.completed.length - 1];
        this.ends.set(answer, completed);
        this.actions.announce(this.describeMove(answer));
      }
    } catch (error) {
      this.actions.showError(error.status ? error.message : i18n.request_failed);
    } finally {
      this.moving = false;
      this.draw();
    }
    // The button waits now for the new phase's first answer: the question is next.
    if (this.button.disabled || this.button.hidden) this.actions.focusComposer();
  }

  // --- drawing

  draw() {
    this.root.hidden = !this.flow;
    this.drawDividers();
    if (!this.flow) return;
    const phases = this.flow.phases;
    const finished = this.finished;
    const current = this.phase;
    this.status.textContent = interpolate(i18n.flow_position, {
      phase: current,
      total: this.total,
      title: finished ? i18n.flow_finished : phases[current - 1].title,
    });
    this.steps.replaceChildren(
      ...phases.map((phase, index) => {
        const number = index + 1;
        const done = number < current || finished;
        const step = document.createElement("li");
        step.className = "flow-step" + (done ? " done" : "");
        const mark = document.createElement("span");
        mark.className = "step-mark";
        if (done) mark.appendChild(icon("check"));
        else mark.textContent = String(number);
        const title = document.createElement("span");
        title.className = "step-title";
        title.textContent = phase.title;
        step.append(mark, title);
        if (done) {
          const note = document.createElement("span");
          note.className = "visually-hidden";
          note.textContent = " (" + i18n.completed + ")";
          step.appendChild(note);
        } else if (number === current) {
          step.setAttribute("aria-current", "step");
        }
        return step;
      })
    );
    this.goal.textContent = finished
      ? i18n.flow_done_note
      : interpolate(i18n.flow_goal, { goal: phases[current - 1].goal });
    this.button.hidden = finished || this.unavailable;
    this.button.disabled = this.streaming || this.moving || this.openAnswer() === null;
  }

  // A divider after each answer that ended its phase, and after no other.
  drawDividers() {
    const order = this.flow ? this.ended() : [];
    let added = false;
    this.list.querySelectorAll(":scope > .phase-divider").forEach((divider) => {
      const id = Number(divider.dataset.after);
      const answer = divider.previousElementSibling;
      if (!order.includes(id) || !answer || Number(answer.dataset.messageId) !== id) divider.remove();
    });
    order.forEach((id, index) => {
      const answer = this.list.querySelector(':scope > [data-message-id="' + String(id) + '"]');
      if (!answer) return;
      const next = answer.nextElementSibling;
      if (next && next.classList.contains("phase-divider") && Number(next.dataset.after) === id) return;
      answer.after(this.divider(id, index + 1, this.ends.get(id)));
      added = true;
    });
    if (added) this.actions.changed();
  }

  divider(id, number, end) {
    const divider = document.createElement("li");
    divider.className = "phase-divider";
    divider.dataset.after = String(id);
    const phase = this.flow.phases[number - 1];
    const heading = document.createElement("span");
    heading.className = "phase-divider-title";
    heading.append(
      icon("check"),
      " ",
      interpolate(i18n.phase_completed, { phase: number, title: phase ? phase.title : "" })
    );
    const points = (end && end.points) || [];
    if (!end || (!end.summary && points.length === 0)) {
      // Ended by the user's "next phase": nothing to unfold.
      const line = document.createElement("p");
      line.className = "phase-divider-line";
      const note = document.createElement("span");
      note.className = "phase-divider-note";
      note.textContent = end && end.by === "user" ? i18n.phase_completed_by_user : "";
      line.append(heading, " ", note);
      divider.appendChild(line);
      return divider;
    }
    const details = document.createElement("details");
    details.open = true;
    const summary = document.createElement("summary");
    summary.appendChild(heading);
    const body = document.createElement("div");
    body.className = "phase-summary";
    if (end.summary) {
      const text = document.createElement("p");
      text.textContent = end.summary;
      body.appendChild(text);
    }
    if (points.length) {
      const list = document.createElement("ul");
      points.forEach((point) => {
        const item = document.createElement("li");
        item.textContent = point;
        list.appendChild(item);
      });
      body.appendChild(list);
    }
    details.append(summary, body);
    divider.appendChild(details);
    return divider;
  }
}
