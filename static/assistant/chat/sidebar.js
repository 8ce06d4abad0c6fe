// The sidebar: the conversation list (titles, new entries, older pages) and, on a phone,
// the drawer it becomes.
import { getJson } from "./api.js";
import { i18n, pageData } from "./page.js";
import { SearchAsYouType, apiBadge, searchResult } from "./search.js";

export class Sidebar {
  constructor(showError) {
    this.showError = showError;
    this.list = document.getElementById("conversation-list");
    this.setUpShowMore();
    this.search = new SearchAsYouType(document.getElementById("search-input"), this.list);
    this.drawer = new Drawer(document.getElementById("sidebar"), document.getElementById("drawer-button"));
  }

  entry(item, current) {
    const entry = document.createElement("li");
    const link = document.createElement("a");
    link.href = item.url;
    link.dataset.conversationId = item.id;
    link.textContent = item.title || i18n.untitled;
    if (item.origin && item.origin !== "page") link.append(" ", apiBadge());
    if (current) link.setAttribute("aria-current", "page");
    entry.appendChild(link);
    return entry;
  }

  // A conversation just created goes on top, under "Today".
  add(item) {
    const empty = document.getElementById("list-empty");
    if (empty) empty.remove();
    let today = this.list.querySelector('ul[data-group="1"]');
    const firstLabel = this.list.querySelector(".group-label");
    if (!today || !firstLabel || firstLabel.textContent !== i18n.today) {
      const label = document.createElement("h2");
      label.className = "group-label";
      label.textContent = i18n.today;
      today = document.createElement("ul");
      today.dataset.group = "1";
      this.list.prepend(label, today);
    }
    today.prepend(this.entry(item, true));
  }

  retitle(id, title) {
    const link = this.list.querySelector('[data-conversation-id="' + id + '"]');
    if (!link) return;
    const badge = link.querySelector(".badge");
    link.textContent = title;
    if (badge) link.append(" ", badge);
  }

  // "Show more" appends the next page of the list API: a search's in ranked order, the
  // list's each in its recency section (the page's sections, continued).
  setUpShowMore() {
    const button = document.getElementById("show-more");
    if (!button) return;
    const sidebar = pageData.sidebar;
    const sectionOf = (item) => {
      const updated = new Date(item.updated_at);
      return sidebar.groups.find((group) => group.start === null || updated >= new Date(group.start)).label;
    };
    const section = (label) => {
      const labels = this.list.querySelectorAll(".group-label");
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
        archived: sidebar.search.ranked ? sidebar.search.archived : sidebar.archived ? "1" : "0",
        before: sidebar.next,
      });
      try {
        const result = await getJson(sidebar.list_url + "?" + query);
        let first = null;
        result.conversations.forEach((item) => {
          // One that moved up meanwhile (a new message elsewhere) is already listed.
          if (this.list.querySelector('[data-conversation-id="' + item.id + '"]')) return;
          let entry;
          if (sidebar.search.ranked) {
            entry = document.createElement("li");
            entry.appendChild(searchResult(item));
            this.list.querySelector(".search-results").appendChild(entry);
          } else {
            entry = this.entry(item, false);
            section(sectionOf(item)).appendChild(entry);
          }
          first = first || entry.firstChild;
        });
        sidebar.next = result.next;
        if (sidebar.next === null) {
          button.remove();
          if (first) first.focus();
        }
      } catch (error) {
        this.showError(error.message);
      } finally {
        button.disabled = false;
      }
    });
  }
}

// On a narrow screen the sidebar is a drawer: the button opens it, Escape or a tap
// outside closes it. While it is open the rest of the page is inert, and focus goes into
// it and back to the button.
class Drawer {
  constructor(panel, button) {
    this.panel = panel;
    this.button = button;
    this.narrow = window.matchMedia("(max-width: 40rem)");
    this.backdrop = document.createElement("div");
    this.backdrop.className = "drawer-backdrop";
    this.backdrop.hidden = true;
    panel.after(this.backdrop);
    button.addEventListener("click", () => (this.isOpen ? this.close() : this.open()));
    this.backdrop.addEventListener("click", () => this.close());
    panel.addEventListener("keydown", (event) => {
      if (event.key === "Escape" && this.isOpen) {
        event.stopPropagation();
        this.close();
      }
    });
    this.narrow.addEventListener("change", () => this.close({ focus: false }));
  }

  get isOpen() {
    return this.panel.classList.contains("open");
  }

  open() {
    this.panel.classList.add("open");
    this.backdrop.hidden = false;
    this.button.setAttribute("aria-expanded", "true");
    document.querySelector("main").inert = true;
    this.panel.querySelector("a, button, input").focus();
  }

  close({ focus = true } = {}) {
    if (!this.isOpen) return;
    this.panel.classList.remove("open");
    this.backdrop.hidden = true;
    this.button.setAttribute("aria-expanded", "false");
    document.querySelector("main").inert = false;
    if (focus) this.button.focus();
  }
}
