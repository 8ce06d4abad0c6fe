// Markdown of untrusted model output to safe HTML, for live answers; the same policy as
// assistant/rendering.py (which renders stored answers on the server), so an answer looks
// the same while streaming and after a reload. A change here needs the same change there.
// Needs, loaded before this file: vendor/markdown-it, vendor/dompurify, vendor/highlightjs.
"use strict";

(function () {
  const LINK_REL = "noopener noreferrer nofollow";
  const ALLOWED_LINK = /^(?:https?:\/\/|mailto:)/i;
  // The first word of a fence's info string, if it is a plain language name.
  const CODE_LANGUAGE = /^[ \t]*([A-Za-z0-9+#-]{1,32})(?:[ \t]|$)/;
  const ALIGNMENTS = {
    "text-align:left": "align-left",
    "text-align:center": "align-center",
    "text-align:right": "align-right",
  };
  const ALLOWED_TAGS = [
    "a", "blockquote", "br", "code", "del", "em", "h1", "h2", "h3", "h4", "h5", "h6", "hr",
    "li", "ol", "p", "pre", "s", "strong", "table", "tbody", "td", "th", "thead", "tr", "ul",
  ];
  // rel and target are set by the hook below, whatever the input says.
  const ALLOWED_ATTRIBUTES = {
    A: ["href", "class"], CODE: ["class"], OL: ["start"], TD: ["class"], TH: ["class"],
  };
  const ALLOWED_CLASSES = {
    A: /^image-link$/,
    CODE: /^language-[a-z0-9+#-]{1,32}$/,
    TD: /^align-(?:left|center|right)$/,
    TH: /^align-(?:left|center|right)$/,
  };

  const md = window.markdownit("commonmark", {
    html: false,
    linkify: false,
    typographer: false,
    breaks: true,
  }).enable(["table", "strikethrough"]);

  // markdown-it passes the normalised (percent-encoded) URL: "java\tscript:" arrives as
  // "java%09script:" and fails here like every other scheme.
  md.validateLink = (url) => ALLOWED_LINK.test(url);

  // markdown-it's own code span rule loses a valid span after an unclosed "[" on the same
  // line (markdown-it issue 1201: "[foo `bar` baz`" shows no code). This is
  // markdown-it-py's corrected rule, ported, so both sides parse code spans alike.
  function lastBacktickRuns(src) {
    const last = {};
    let pos = 0;
    let start;
    while ((start = src.indexOf("`", pos)) !== -1) {
      pos = start + 1;
      while (pos < src.length && src.charCodeAt(pos) === 0x60) pos++;
      last[pos - start] = start;
    }
    return last;
  }

  md.inline.ruler.at("backticks", (state, silent) => {
    const src = state.src;
    const start = state.pos;
    if (src.charCodeAt(start) !== 0x60) return false;
    const max = state.posMax;
    let pos = start + 1;
    while (pos < max && src.charCodeAt(pos) === 0x60) pos++;
    const marker = src.slice(start, pos);
    if (!state.backticksScanned) {
      // Lookaheads visit runs out of order: the cache covers the whole source.
      state.backticks = lastBacktickRuns(src);
      state.backticksScanned = true;
    }
    const lastRun = state.backticks[marker.length];
    if (lastRun !== undefined && lastRun >= pos) {
      let matchEnd = pos;
      let matchStart;
      while ((matchStart = src.indexOf("`", matchEnd)) !== -1 && matchStart < max) {
        matchEnd = matchStart + 1;
        while (matchEnd < src.length && src.charCodeAt(matchEnd) === 0x60) matchEnd++;
        if (matchEnd > max) break; // a run crossing posMax closes nothing here
        if (matchEnd - matchStart === marker.length) {
          if (!silent) {
            const token = state.push("code_inline", "code", 0);
            token.markup = marker;
            let content = src.slice(pos, matchStart).replace(/\n/g, " ");
            if (content.startsWith(" ") && content.endsWith(" ") && /[^ ]/.test(content)) {
              content = content.slice(1, -1);
            }
            token.content = content;
          }
          state.pos = matchEnd;
          return true;
        }
      }
    }
    if (!silent) state.pending += marker;
    state.pos = pos;
    return true;
  });

  md.core.ruler.push("assistant_policy", (state) => {
    for (const token of state.tokens) {
      if (token.type === "fence") {
        const match = CODE_LANGUAGE.exec(token.info);
        token.info = match ? match[1].toLowerCase() : "";
      } else if (token.type === "th_open" || token.type === "td_open") {
        const style = token.attrGet("style");
        if (style !== null) {
          token.attrs = token.attrs.filter((attr) => attr[0] !== "style");
          if (token.attrs.length === 0) token.attrs = null;
          if (Object.prototype.hasOwnProperty.call(ALIGNMENTS, style)) {
            token.attrJoin("class", ALIGNMENTS[style]);
          }
        }
      } else if (token.type === "inline") {
        hideEmptyLinks(token.children || []);
      }
    }
  });

  // markdown-it keeps "[x]()" as a link to "" (the only destination validateLink does not
  // see): its text stays, the link goes.
  function hideEmptyLinks(children) {
    const opened = [];
    for (const token of children) {
      if (token.type === "link_open") {
        token.hidden = !ALLOWED_LINK.test(token.attrGet("href") || "");
        opened.push(token);
      } else if (token.type === "link_close" && opened.length) {
        token.hidden = opened.pop().hidden;
      }
    }
  }

  md.renderer.rules.link_open = (tokens, idx, options, env, self) => {
    const token = tokens[idx];
    if (token.hidden) return "";
    if (token.attrs) token.attrs = token.attrs.filter((attr) => attr[0] !== "title");
    token.attrSet("target", "_blank");
    token.attrSet("rel", LINK_REL);
    return self.renderToken(tokens, idx, options);
  };

  function insideLink(tokens, idx) {
    let depth = 0;
    for (let i = 0; i < idx; i++) {
      if (tokens[i].hidden) continue;
      if (tokens[i].type === "link_open") depth++;
      else if (tokens[i].type === "link_close") depth--;
    }
    return depth > 0;
  }

  // An image's description as text (markdown-it's renderInlineAsText differs by port).
  function plainText(tokens) {
    let text = "";
    for (const token of tokens || []) {
      if (token.type === "text" || token.type === "text_special" || token.type === "code_inline") {
        text += token.content;
      } else if (token.type === "image") {
        text += plainText(token.children);
      } else if (token.type === "softbreak" || token.type === "hardbreak") {
        text += "\n";
      }
    }
    return text;
  }

  // Never an image: a prompt-injected image URL must not load by itself.
  md.renderer.rules.image = (tokens, idx) => {
    const src = tokens[idx].attrGet("src") || "";
    const text = md.utils.escapeHtml(plainText(tokens[idx].children) || src);
    // No empty link, no link inside a link.
    if (!ALLOWED_LINK.test(src) || insideLink(tokens, idx)) return text;
    return (
      '<a href="' + md.utils.escapeHtml(src) + '" class="image-link" target="_blank" rel="' +
      LINK_REL + '">' + text + "</a>"
    );
  };

  // Our own instance: hooks on the global DOMPurify would apply to every other user of it.
  const purifier = window.DOMPurify(window);
  purifier.addHook("uponSanitizeAttribute", (node, data) => {
    const allowed = ALLOWED_ATTRIBUTES[node.nodeName] || [];
    if (!allowed.includes(data.attrName)) {
      data.keepAttr = false;
    } else if (data.attrName === "class") {
      const pattern = ALLOWED_CLASSES[node.nodeName];
      data.keepAttr = Boolean(pattern && pattern.test(data.attrValue));
    }
  });
  purifier.addHook("afterSanitizeAttributes", (node) => {
    if (node.nodeName !== "A") return;
    const href = node.getAttribute("href");
    if (href !== null && !ALLOWED_LINK.test(href)) node.removeAttribute("href");
    node.setAttribute("target", "_blank");
    node.setAttribute("rel", LINK_REL);
  });
  const PURIFY_CONFIG = {
    ALLOWED_TAGS: ALLOWED_TAGS,
    ALLOWED_ATTR: ["href", "class", "start"], // narrowed per element by the hook above
    ALLOWED_URI_REGEXP: ALLOWED_LINK,
    // DOMPurify checks the value of any attribute it does not know as URI-safe against
    // ALLOWED_URI_REGEXP; a list's start number is not a URI.
    ADD_URI_SAFE_ATTR: ["start"],
    ALLOW_DATA_ATTR: false,
    ALLOW_ARIA_ATTR: false,
  };

  // Sanitizing is most of the cost (about 1 ms per KB of HTML, parsing a tenth of that),
  // and a streaming answer is re-rendered every frame with only its last block changed:
  // each top-level block is sanitized on its own, and finished blocks are remembered.
  // (The blocks are whole elements, so this gives the same HTML as one sanitize call.)
  const sanitizedBlocks = new Map();
  const SANITIZED_BLOCKS_MAX = 1000;

  function sanitizeBlock(html, remember) {
    let clean = sanitizedBlocks.get(html);
    if (clean !== undefined) return clean;
    clean = purifier.sanitize(html, PURIFY_CONFIG);
    if (remember) {
      if (sanitizedBlocks.size >= SANITIZED_BLOCKS_MAX) sanitizedBlocks.clear();
      sanitizedBlocks.set(html, clean);
    }
    return clean;
  }

  // Sanitized HTML for Markdown `text`; safe for incomplete text (an open code fence
  // renders as a code block to the end).
  function render(text) {
    const env = {};
    const tokens = md.parse(String(text || ""), env);
    let html = "";
    let start = 0;
    for (let i = 0; i < tokens.length; i++) {
      // A top-level block ends with a closing token or is a single one (fence, hr).
      if (tokens[i].level === 0 && tokens[i].nesting !== 1) {
        const block = md.renderer.render(tokens.slice(start, i + 1), md.options, env);
        html += sanitizeBlock(block, i < tokens.length - 1);
        start = i + 1;
      }
    }
    return html;
  }

  // Highlights the code blocks under `root` that are not highlighted yet. Blocks with no
  // language, or one highlight.js does not know, are shown plain: guessing would recolour
  // a streaming block on every frame.
  function highlight(root) {
    const hljs = window.hljs;
    root.querySelectorAll("pre > code:not([data-highlighted])").forEach((code) => {
      const match = /(?:^|\s)language-([a-z0-9+#-]+)/.exec(code.className);
      if (hljs && match && hljs.getLanguage(match[1])) {
        hljs.highlightElement(code);
      } else {
        code.classList.add("hljs");
        code.dataset.highlighted = "yes";
      }
    });
  }

  // The clipboard API needs a secure context; plain HTTP on the intranet gets the old way.
  async function copyText(text) {
    if (navigator.clipboard && window.isSecureContext) {
      try {
        await navigator.clipboard.writeText(text);
        return true;
      } catch {
        // Denied or unavailable: try the old way below.
      }
    }
    const area = document.createElement("textarea");
    area.value = text;
    area.setAttribute("readonly", "");
    area.className = "visually-hidden";
    document.body.appendChild(area);
    area.select();
    let copied = false;
    try {
      copied = document.execCommand("copy");
    } catch {
      // Refused: nothing was copied.
    }
    area.remove();
    return copied;
  }

  // Adds one copy button to each code block under `root` (again after a re-render, never
  // twice to the same block).
  function addCopyButtons(root, label, copiedLabel) {
    root.querySelectorAll("pre").forEach((pre) => {
      const code = pre.querySelector(":scope > code");
      if (!code || pre.querySelector(":scope > .copy-button")) return;
      const button = document.createElement("button");
      button.type = "button";
      button.className = "copy-button";
      button.textContent = label;
      let timer = null;
      button.addEventListener("click", async () => {
        const copied = await copyText(code.textContent);
        if (!copied) return;
        button.textContent = copiedLabel;
        button.classList.add("copied");
        clearTimeout(timer);
        timer = setTimeout(() => {
          button.textContent = label;
          button.classList.remove("copied");
        }, 2000);
      });
      pre.appendChild(button);
    });
  }

  // The allowlist alone, for HTML from anywhere else (the page needs only render()).
  function sanitize(html) {
    return purifier.sanitize(String(html || ""), PURIFY_CONFIG);
  }

  window.AssistantMarkdown = Object.freeze({ render, sanitize, highlight, addCopyButtons, copyText });
})();
