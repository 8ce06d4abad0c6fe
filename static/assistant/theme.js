// The colour theme: the system's (default), light or dark, kept in this browser. Loaded in
// the head, before the page paints, so a chosen theme never flashes the other one.
"use strict";

(function () {
  const KEY = "assistant-theme";
  const root = document.documentElement;

  function apply(theme) {
    if (theme === "light" || theme === "dark") root.dataset.theme = theme;
    else delete root.dataset.theme;
    // Code highlighting has a sheet per scheme; the chosen theme picks one.
    document.querySelectorAll("link[data-scheme]").forEach((link) => {
      const scheme = link.dataset.scheme;
      link.media = root.dataset.theme
        ? root.dataset.theme === scheme ? "all" : "not all"
        : scheme === "dark" ? "(prefers-color-scheme: dark)" : "not all and (prefers-color-scheme: dark)";
    });
  }

  let stored = null;
  try {
    stored = localStorage.getItem(KEY);
  } catch {
    // Storage can be off (a private window's policy): the system's theme it is.
  }
  apply(stored);

  document.addEventListener("DOMContentLoaded", () => {
    apply(stored);
    const select = document.getElementById("theme-select");
    if (!select) return;
    select.value = stored === "light" || stored === "dark" ? stored : "system";
    select.addEventListener("change", () => {
      try {
        if (select.value === "system") localStorage.removeItem(KEY);
        else localStorage.setItem(KEY, select.value);
      } catch {
        // Not kept beyond this page, but applied.
      }
      stored = select.value;
      apply(select.value);
    });
  });
})();
