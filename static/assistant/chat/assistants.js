// The company assistants on the page: the new chat's gallery (which assistant its first
// message starts the conversation with, and that assistant's example prompts) and, in a
// conversation, which assistant it runs with.
import { icon, pageData } from "./page.js";

export class AssistantGallery {
  // `root`: the gallery's list (absent when the user may use no assistant).
  constructor(root) {
    this.root = root;
    this.starters = document.getElementById("starters");
    this.model = document.getElementById("model-select");
    this.entries = new Map((pageData.assistants || []).map((entry) => [entry.slug, entry]));
    this.selected = pageData.assistant || "";
    if (!root) return;
    root.querySelectorAll(".assistant-card").forEach((card) => {
      card.addEventListener("click", () => this.choose(card.dataset.assistant));
    });
  }

  // The chosen assistant's slug ("" for the model as it is).
  get slug() {
    return this.root ? this.selected : "";
  }

  choose(slug) {
    if (!this.root || (slug && !this.entries.has(slug))) return;
    this.selected = slug;
    this.root.querySelectorAll(".assistant-card").forEach((card) => {
      card.setAttribute("aria-pressed", String(card.dataset.assistant === slug));
    });
    const entry = this.entries.get(slug);
    this.showStarters(entry ? entry.starters : pageData.starter_prompts || []);
    // An assistant answers with the model its administrators chose for it.
    this.model.hidden = Boolean(entry);
    // The address keeps the choice: a reload, or a link shared, opens the chat with it.
    const url = new URL(window.location.href);
    if (slug) url.searchParams.set("assistant", slug);
    else url.searchParams.delete("assistant");
    history.replaceState(history.state, "", url);
  }

  showStarters(prompts) {
    if (!this.starters) return;
    this.starters.replaceChildren(
      ...prompts.map((prompt) => {
        const item = document.createElement("li");
        const button = document.createElement("button");
        button.type = "button";
        button.className = "starter";
        button.textContent = prompt;
        item.appendChild(button);
        return item;
      })
    );
    this.starters.hidden = prompts.length === 0;
  }
}

// Which assistant `conversation` runs with (nothing for the model as it is), and whether
// it was retired since: the conversation stays readable, but cannot go on.
export function showAssistant(conversation) {
  const context = document.getElementById("conversation-context");
  const assistant = conversation && conversation.assistant;
  context.hidden = !assistant;
  if (!assistant) return;
  const badge = document.querySelector("#conversation-assistant .assistant-icon");
  badge.replaceChildren(icon(assistant.icon));
  document.getElementById("assistant-name").textContent = assistant.name;
  document.getElementById("assistant-retired").hidden = !assistant.retired;
  document.getElementById("model-select").hidden = true;
}
