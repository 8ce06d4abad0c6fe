// The message list follows a streaming answer only while the reader is at its end.
// Scrolling up stops following and shows "jump to latest"; reaching the end again, or
// the button, follows again.
import { i18n, iconButton } from "./page.js";

// Pixels from the end that still count as "at the end" (rounding, a last line's margin).
const AT_END_PX = 24;

export class ScrollFollow {
  constructor(list) {
    this.list = list;
    this.following = true;
    this.lastTop = 0; // where the list was scrolled to, by the reader or by following
    this.jump = iconButton("arrow-down", i18n.jump_to_latest, { className: "secondary jump-latest" });
    this.jump.hidden = true;
    this.jump.addEventListener("click", () => {
      this.toEnd();
      document.getElementById("composer-input").focus({ preventScroll: true });
    });
    list.after(this.jump);
    list.addEventListener("scroll", () => this.update(), { passive: true });
    new ResizeObserver(() => this.changed()).observe(list);
  }

  atEnd() {
    const list = this.list;
    return list.scrollHeight - list.scrollTop - list.clientHeight <= AT_END_PX;
  }

  // Only the reader scrolling up stops following: the scroll event of following itself
  // may arrive after the content grew again (an answer's text, a flow's divider).
  update() {
    const top = this.list.scrollTop;
    this.following = this.atEnd() || (this.following && top >= this.lastTop);
    this.lastTop = top;
    this.jump.hidden = this.following;
  }

  // The content changed: stay at the end if the reader was there.
  changed() {
    if (this.following) this.follow();
    else this.jump.hidden = this.atEnd();
  }

  toEnd() {
    this.following = true;
    this.jump.hidden = true;
    this.follow();
  }

  follow() {
    this.list.scrollTop = this.list.scrollHeight;
    this.lastTop = this.list.scrollTop;
  }
}
