// The settings pages: under each text area, how many of its characters are used; the
// copy button of a new API token.
"use strict";

(function () {
  const i18n = document.getElementById("settings-i18n");
  const template = i18n ? JSON.parse(i18n.textContent) : "";

  document.querySelectorAll("textarea[data-counter]").forEach((area) => {
    const counter = document.getElementById(area.dataset.counter);
    const count = () => {
      // As the server counts: a line break is one character, whatever the browser sends.
      const length = area.value.replace(/\r\n?/g, "\n").length;
      counter.textContent = template
        .replace("%(count)s", String(length))
        .replace("%(limit)s", String(area.maxLength));
      counter.classList.toggle("near", length >= area.maxLength * 0.9);
    };
    area.addEventListener("input", count);
    count();
  });

  document.querySelectorAll("button[data-copy]").forEach((button) => {
    const field = document.getElementById(button.dataset.copy);
    const label = button.querySelector("span");
    field.addEventListener("focus", () => field.select());
    button.addEventListener("click", async () => {
      field.select();
      try {
        await navigator.clipboard.writeText(field.value);
        label.textContent = button.dataset.copied;
      } catch {
        // No clipboard (an insecure context): the text is selected for the keyboard.
      }
    });
  });
})();
