"""The browser's Markdown renderer (static/assistant/markdown.js) in chromium.

It must give the same HTML as the server's (assistant/rendering.py) for the same text, so
an answer looks the same while streaming and after a reload; hostile text must stay inert
in the DOM; and it must be fast enough to re-render a long answer every frame.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

import pytest

from assistant.rendering import render_markdown, sanitize_html
from tests.helpers.markup import HOSTILE, RAW_HTML, WELL_FORMED, assert_inert, structure

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parent.parent.parent
SCRIPTS = [
    "static/vendor/markdown-it/markdown-it.min.js",
    "static/vendor/dompurify/purify.min.js",
    "static/vendor/highlightjs/highlight.min.js",
    "static/assistant/markdown.js",
]
CORPUS = {**HOSTILE, **WELL_FORMED}

# A typical answer, rendered at every length it passes through while streaming.
STREAMED_ANSWER = """## Übersicht

Hier ist eine **kurze** Antwort mit `Code`, einem [Link](https://docs.example/a?b=1&c=2) und
einer Liste:

1. erstens
2. zweitens
   - verschachtelt

| Spalte | Wert |
|:-------|-----:|
| Ä      | 1,5  |

```python
def hallo(name):
    return f"Hallo {name}!"  # <b>kein HTML</b>
```

> Zitat mit ~~Streichung~~ und ![Bild](https://evil.example/x.png?d=1).

Fertig. 😀
"""


class BlankPage:
    def __init__(self, page) -> None:
        self.page = page
        self.dialogs: list[str] = []
        self.requests: list[str] = []
        self.errors: list[str] = []

    def render(self, texts: list[str]) -> list[str]:
        return self.page.evaluate("texts => texts.map((text) => AssistantMarkdown.render(text))", texts)


@pytest.fixture(scope="module")
def blank(browser):
    context = browser.new_context()
    page = context.new_page()
    blank = BlankPage(page)

    def on_dialog(dialog) -> None:
        blank.dialogs.append(f"{dialog.type}: {dialog.message}")
        dialog.dismiss()

    page.on("dialog", on_dialog)
    page.on("request", lambda request: blank.requests.append(request.url))
    page.on("pageerror", lambda error: blank.errors.append(str(error)))
    page.set_content('<!DOCTYPE html><html><head></head><body><div id="out"></div></body></html>')
    for script in SCRIPTS:
        page.add_script_tag(path=str(ROOT / script))
    yield blank
    context.close()


def outside_requests(urls: list[str]) -> list[str]:
    return [url for url in urls if urlsplit(url).hostname not in {None, "", "127.0.0.1", "localhost"}]


@pytest.mark.parametrize("text", CORPUS.values(), ids=CORPUS.keys())
def test_markdown_js_renders_like_the_server(blank, text):
    [html] = blank.render([text])
    assert html == str(render_markdown(text))


def test_markdown_js_renders_every_streamed_prefix_like_the_server(blank):
    prefixes = [STREAMED_ANSWER[:end] for end in range(len(STREAMED_ANSWER) + 1)]
    rendered = blank.render(prefixes)
    mismatches = [
        (prefix, html)
        for prefix, html in zip(prefixes, rendered, strict=True)
        if html != render_markdown(prefix)
    ]
    assert not mismatches, mismatches[:3]
    assert not blank.errors


def test_markdown_js_hostile_text_is_inert_in_the_dom(blank):
    """Rendered into the page (live and from the server alike): no script runs, nothing loads."""
    blank.dialogs.clear()
    blank.requests.clear()
    texts = list(HOSTILE.values())
    result = blank.page.evaluate(
        """([texts, serverHtml]) => {
          const out = document.getElementById("out");
          out.replaceChildren();
          for (const html of texts.map((text) => AssistantMarkdown.render(text)).concat(serverHtml)) {
            const item = document.createElement("div");
            item.innerHTML = html;
            out.appendChild(item);
          }
          AssistantMarkdown.highlight(out);
          AssistantMarkdown.addCopyButtons(out, "Copy", "Copied");
          const all = [...out.querySelectorAll("*")];
          return {
            forbidden: out.querySelectorAll(
              "script, img, svg, iframe, object, embed, style, form, input, math, link, meta, base"
            ).length,
            handlers: all.flatMap(
              (el) => [...el.attributes].map((a) => a.name).filter((name) => name.startsWith("on"))
            ),
            styles: all.filter((el) => el.hasAttribute("style")).length,
            hrefs: [...out.querySelectorAll("[href]")].map((el) => el.getAttribute("href")),
          };
        }""",
        [texts, [str(render_markdown(text)) for text in texts]],
    )
    blank.page.wait_for_timeout(300)  # time for an image to fail or a handler to fire
    assert result["forbidden"] == 0
    assert result["handlers"] == []
    assert result["styles"] == 0
    assert all(href.lower().startswith(("http://", "https://", "mailto:")) for href in result["hrefs"])
    assert blank.dialogs == []
    assert outside_requests(blank.requests) == []
    assert blank.errors == []


@pytest.mark.parametrize("html", RAW_HTML.values(), ids=RAW_HTML.keys())
def test_markdown_js_sanitizer_alone_matches_the_server(blank, html):
    """Defence in depth: raw HTML given straight to the allowlist comes out the same, inert."""
    cleaned = blank.page.evaluate("html => AssistantMarkdown.sanitize(html)", html)
    # nh3 may reorder the attributes it keeps when it drops others; the Markdown path never
    # gives it any to drop, and its output is compared as it is above.
    assert structure(cleaned) == structure(sanitize_html(html))
    assert_inert(cleaned)


@pytest.mark.parametrize("html", HOSTILE.values(), ids=HOSTILE.keys())
def test_markdown_js_sanitizer_alone_makes_raw_hostile_html_inert(blank, html):
    assert_inert(blank.page.evaluate("html => AssistantMarkdown.sanitize(html)", html))


def test_markdown_js_unclosed_fence_renders_without_throwing(blank):
    html = blank.render(["Code:\n\n```python\ndef f(x):\n    return x", "```", "~~~\n", "```js\n"])
    assert (
        html[0] == '<p>Code:</p>\n<pre><code class="language-python">def f(x):\n    return x</code></pre>\n'
    )
    assert html[1] == "<pre><code></code></pre>\n"
    assert blank.errors == []


def test_markdown_js_highlights_known_languages_once(blank):
    result = blank.page.evaluate(
        """() => {
          const out = document.getElementById("out");
          out.innerHTML = AssistantMarkdown.render(
            "```python\\nimport os\\n```\\n\\n```nosuchlang\\nx\\n```\\n\\n```\\nplain\\n```"
          );
          AssistantMarkdown.highlight(out);
          const first = out.innerHTML;
          AssistantMarkdown.highlight(out);
          const codes = [...out.querySelectorAll("pre > code")];
          return {
            again: out.innerHTML === first,
            classes: codes.map((code) => code.className),
            keywords: out.querySelectorAll(".hljs-keyword").length,
            texts: codes.map((code) => code.textContent),
          };
        }"""
    )
    assert result["again"]
    assert result["classes"] == ["language-python hljs", "language-nosuchlang hljs", "hljs"]
    assert result["keywords"] == 1
    assert result["texts"] == ["import os\n", "x\n", "plain\n"]


def test_markdown_js_copy_button_copies_the_code_once_per_block(blank):
    result = blank.page.evaluate(
        """async () => {
          const out = document.getElementById("out");
          out.innerHTML = AssistantMarkdown.render(
            "```js\\nconst a = '<b>';\\n```\\n\\ntext\\n\\n    indented"
          );
          AssistantMarkdown.highlight(out);
          AssistantMarkdown.addCopyButtons(out, "Kopieren", "Kopiert");
          AssistantMarkdown.addCopyButtons(out, "Kopieren", "Kopiert");
          let copied = null;
          Object.defineProperty(navigator, "clipboard", {
            configurable: true,
            value: { writeText: async (text) => { copied = text; } },
          });
          Object.defineProperty(window, "isSecureContext", { configurable: true, value: true });
          const buttons = [...out.querySelectorAll("pre > button.copy-button")];
          buttons[0].click();
          await new Promise((resolve) => setTimeout(resolve, 50));
          return {
            count: buttons.length,
            types: buttons.map((b) => b.type),
            copied,
            label: buttons[0].textContent,
            copiedClass: buttons[0].classList.contains("copied"),
            otherLabel: buttons[1].textContent,
          };
        }"""
    )
    assert result["count"] == 2
    assert result["types"] == ["button", "button"]
    assert result["copied"] == "const a = '<b>';\n"
    assert result["label"] == "Kopiert"
    assert result["copiedClass"]
    assert result["otherLabel"] == "Kopieren"


def test_markdown_js_render_time_grows_with_the_text_not_its_square(blank):
    """A sanity check, not a benchmark: a long answer is re-rendered on every frame, so a
    render of 20 KB takes about four times one of 5 KB, not sixteen. Medians of renders
    taken turn about, fresh and as frames of a growing answer: a busy machine slows both
    sizes alike, and the ratio stays."""
    timings = blank.page.evaluate(
        """(answer) => {
          let text = "";
          while (text.length < 20000) text += answer;
          const quarter = text.slice(0, 5000);
          const median = (values) => values.sort((a, b) => a - b)[Math.floor(values.length / 2)];
          const time = (source) => {
            const start = performance.now();
            AssistantMarkdown.render(source);
            return performance.now() - start;
          };
          AssistantMarkdown.render("warm-up\\n\\n" + text);
          const first = { long: [], short: [] };
          for (let i = 0; i < 9; i++) {
            first.long.push(time(i + " fresh text, nothing cached\\n\\n" + text));
            first.short.push(time(i + " fresh text, nothing cached\\n\\n" + quarter));
          }
          const frames = { long: [], short: [] };
          for (let i = 0; i < 30; i++) {
            frames.long.push(time(text + "more words ".repeat(i)));
            frames.short.push(time(quarter + "more words ".repeat(i)));
          }
          return {
            first: median(first.long) / median(first.short),
            frame: median(frames.long) / median(frames.short),
          };
        }""",
        STREAMED_ANSWER,
    )
    assert timings["first"] < 10, timings
    assert timings["frame"] < 10, timings
