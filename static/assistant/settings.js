// The settings page: under each text area, how many of its characters are used.
"use strict";

(function () {
  const template = JSON.parse(document.getElementById("settings-i18n").textContent);

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
})();
