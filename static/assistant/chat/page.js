// What the server put on the page: its data, the translated texts, number and date formats.
export const pageData = JSON.parse(document.getElementById("page-data").textContent);
export const i18n = JSON.parse(document.getElementById("i18n").textContent);

const language = document.documentElement.lang;
export const numbers = new Intl.NumberFormat(language);
export const decimals = new Intl.NumberFormat(language, { maximumFractionDigits: 1 });
export const dates = new Intl.DateTimeFormat(language, { dateStyle: "medium", timeStyle: "short" });

// "%(name)s" in a translated text, filled in.
export function interpolate(template, values) {
  return template.replace(/%\((\w+)\)s/g, (_, key) => values[key]);
}

// An icon from the page's sprite (templates/assistant/icons.html). Icons are decoration:
// the button or text beside it carries the words.
export function icon(name) {
  const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  svg.setAttribute("class", "icon");
  svg.setAttribute("aria-hidden", "true");
  svg.setAttribute("focusable", "false");
  const use = document.createElementNS("http://www.w3.org/2000/svg", "use");
  use.setAttribute("href", "#icon-" + name);
  svg.appendChild(use);
  return svg;
}

// A button with an icon and its words (shown, or for screen readers only when `compact`).
export function iconButton(name, label, { compact = false, className = "link" } = {}) {
  const button = document.createElement("button");
  button.type = "button";
  button.className = className + " icon-button";
  const text = document.createElement("span");
  text.textContent = label;
  if (compact) {
    text.className = "visually-hidden";
    button.title = label;
  }
  button.append(icon(name), text);
  return button;
}

// The phone and tablet case: no physical keyboard to speak of, so no keyboard hints.
export const touch = window.matchMedia("(hover: none) and (pointer: coarse)");
