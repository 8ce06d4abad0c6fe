// The sidebar's search as you type: ranked results with their snippets (the matches
// marked, inserted as text), archived ones labelled; an empty box shows the list again.
// Enter still submits the form: the page's own search, with "show more".
import { getJson } from "./api.js";
import { i18n, interpolate, pageData } from "./page.js";

const DEBOUNCE_MS = 250;

export class SearchAsYouType {
  constructor(input, list) {
    this.input = input;
    this.list = list;
    this.listed = null; // the list as it was before the search, put back when it is cleared
    this.timer = null;
    this.asked = 0; // the latest request: an older answer arriving late is dropped
    input.addEventListener("input", () => {
      clearTimeout(this.timer);
      this.timer = setTimeout(() => this.search(input.value.trim()), DEBOUNCE_MS);
    });
  }

  async search(query) {
    const asked = ++this.asked;
    if (!query) {
      if (this.listed) this.list.replaceChildren(...this.listed);
      this.listed = null;
      return;
    }
    const sidebar = pageData.sidebar;
    const params = new URLSearchParams({ q: query, archived: sidebar.search.archived });
    let result;
    try {
      result = await getJson(sidebar.list_url + "?" + params);
    } catch {
      return; // the typed query stays; Enter searches through the page
    }
    if (asked !== this.asked) return;
    if (!this.listed) this.listed = [...this.list.childNodes];
    this.show(query, result);
  }

  show(query, result) {
    const note = document.createElement("p");
    note.className = "list-note";
    note.setAttribute("role", "status");
    note.textContent = result.conversations.length
      ? interpolate(i18n.results_for, { query })
      : i18n.nothing_found;
    const items = document.createElement("ul");
    items.className = "search-results";
    result.conversations.forEach((item) => {
      const entry = document.createElement("li");
      entry.appendChild(searchResult(item));
      items.appendChild(entry);
    });
    const nodes = [note, items];
    if (result.next) {
      const all = document.createElement("a");
      all.className = "list-note show-all";
      all.href = pageData.home_url + "?" + new URLSearchParams({ q: query });
      all.textContent = i18n.all_results;
      nodes.push(all);
    }
    this.list.replaceChildren(...nodes);
  }
}

// The label of a conversation an app, a script or the gateway started
// (templates/assistant/api_badge.html).
export function apiBadge() {
  const badge = document.createElement("span");
  badge.className = "badge";
  badge.title = i18n.from_api_title;
  badge.textContent = i18n.from_api;
  return badge;
}

// A result as templates/assistant/search_result.html draws it.
export function searchResult(item) {
  const link = document.createElement("a");
  link.href = item.url;
  link.className = "search-result";
  link.dataset.conversationId = item.id;
  const title = document.createElement("span");
  title.className = "result-title";
  title.textContent = item.title || i18n.untitled;
  link.appendChild(title);
  if (item.archived) {
    const badge = document.createElement("span");
    badge.className = "badge";
    badge.textContent = i18n.archived;
    link.append(" ", badge);
  }
  if (item.origin !== "page") link.append(" ", apiBadge());
  if (item.snippet && item.snippet.length) {
    const snippet = document.createElement("span");
    snippet.className = "snippet";
    item.snippet.forEach((part) => {
      if (part.match) {
        const mark = document.createElement("mark");
        mark.textContent = part.text;
        snippet.appendChild(mark);
      } else {
        snippet.append(part.text);
      }
    });
    link.appendChild(snippet);
  }
  return link;
}
