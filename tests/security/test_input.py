"""INPUT: malformed, oversized and exotic request bodies against a live daphne, over real HTTP.

Every JSON endpoint gets bodies that are too large, not UTF-8, not JSON, nested 100,000
deep, not an object, or with fields of the wrong type; each is refused with a clear JSON
error (413 `too_large`, 400 `invalid_json`, 400 `invalid` or `unknown_model`) before
anything is stored or sent upstream. Text that is merely unusual (10,000 emoji, umlauts
composed and decomposed) comes back exactly, from every place it is shown.
The forms' rules one by one are tested in-process in tests/test_api.py and
tests/test_conversations.py; this module attacks the whole server with them.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Iterator
from html import escape

import httpx
import pytest
from django.conf import settings

from assistant.models import Message
from tests.helpers.chat import create_conversation, send, stream_answer, text_of, wait_for_final
from tests.helpers.routes import db_fingerprint

pytestmark = pytest.mark.live

LIMIT = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
MAX_CHARS = settings.ASSISTANT_MAX_MESSAGE_CHARS
DEPTH = 100_000


def over_limit_in_chunks() -> Iterator[bytes]:
    """A body over the limit without a Content-Length (chunked transfer encoding)."""
    yield b'{"content": "'
    for _ in range(LIMIT // 65536 + 2):
        yield b"x" * 65536
    yield b'"}'


# Bodies no JSON endpoint accepts, whatever it expects: (body, status, error code). A
# callable body is sent chunked, without a Content-Length.
MALFORMED: dict[str, tuple[bytes | Callable[[], Iterator[bytes]], int, str]] = {
    "over_the_limit": (b'{"content": "' + b"x" * LIMIT + b'"}', 413, "too_large"),
    "over_the_limit_chunked": (over_limit_in_chunks, 413, "too_large"),
    "over_the_limit_ten_times": (b'{"title": "' + b"\xc3\xa4" * (5 * LIMIT) + b'"}', 413, "too_large"),
    "invalid_utf8": (b'{"content": "\xff\xfe ung\xfcltig"}', 400, "invalid_json"),
    "overlong_utf8": (b'{"content": "\xc0\xaf"}', 400, "invalid_json"),
    "surrogate_as_utf8_bytes": (b'{"content": "\xed\xa0\x80"}', 400, "invalid_json"),
    "truncated_utf8": (b'{"content": "\xf0\x9f\x98"}', 400, "invalid_json"),
    "not_json": (b"{content: hallo}", 400, "invalid_json"),
    "truncated_json": (b'{"content": "hal', 400, "invalid_json"),
    "nested_arrays": (b"[" * DEPTH + b"]" * DEPTH, 400, "invalid_json"),
    "nested_objects": (b'{"a":' * 60_000 + b"1" + b"}" * 60_000, 400, "invalid_json"),
    "nested_inside_a_field": (
        b'{"content": "x", "model": ' + b"[" * DEPTH + b"]" * DEPTH + b"}",
        400,
        "invalid_json",
    ),
    "number_over_4300_digits": (b'{"content": "x", "n": ' + b"9" * 5000 + b"}", 400, "invalid_json"),
    "array": (b'["content", "x"]', 400, "invalid_json"),
    "number": (b"42", 400, "invalid_json"),
    "string": (b'"content"', 400, "invalid_json"),
    "null": (b"null", 400, "invalid_json"),
    "utf16": ('{"content": "x"}'.encode("utf-16"), 400, "invalid_json"),
}

# Well-formed JSON objects with wrong fields, per endpoint: (body, error code).
NUL, LONE_HIGH, LONE_LOW = "a\u0000b", "\ud800 x", "x \udfff"
MESSAGE_FIELDS = [
    *({"content": value} for value in (None, 123, 1.5, True, [], ["a"], {"text": "a"}, "", " \n\t ")),
    {"content": "x" * (MAX_CHARS + 1)},
    *({"content": value} for value in (NUL, LONE_HIGH, LONE_LOW)),
    {"model": "fake-model"},
    {"content": "hallo", "model": 5},
    {"content": "hallo", "model": ["fake-model"]},
    {"content": "hallo", "model": "x" * 101},
]
CASES: dict[str, list[dict]] = {
    "send": [*MESSAGE_FIELDS, {"content": "hallo", "model": "gpt-9"}],
    "edit": [*MESSAGE_FIELDS, {"content": "hallo", "model": "gpt-9"}],
    "create": [
        *({"title": value} for value in (5, [], {"a": 1}, True, "x" * 201, NUL, LONE_HIGH)),
        {"model": "gpt-9"},
        {"model": 5},
    ],
    "update": [
        *({"title": value} for value in (None, "", "   ", 5, [], "x" * 201, NUL, LONE_HIGH)),
        *({"archived": value} for value in (None, "yes", 1, "true", [])),
    ],
    "feedback": [
        {},
        {"comment": "nur ein Kommentar"},
        *({"rating": value} for value in ("meh", 1, True, [], {"up": True})),
        *({"rating": "down", "comment": value} for value in (5, [], "x" * 2001, NUL, LONE_HIGH)),
    ],
}
CODES = {"invalid", "unknown_model"}
JSON = {"Content-Type": "application/json"}


def endpoint(name: str, conversation: dict, question_id: int, answer_id: int) -> tuple[str, str]:
    return {
        "send": ("POST", conversation["messages_url"]),
        "edit": ("POST", f"/api/messages/{question_id}/edit/"),
        "create": ("POST", "/api/conversations/"),
        "update": ("PATCH", conversation["detail_url"]),
        "feedback": ("POST", f"/api/messages/{answer_id}/feedback/"),
    }[name]


@pytest.fixture
def exchange(alice_http, upstream) -> tuple[dict, dict]:
    """A conversation with one finished answer, and the fake upstream's request log emptied."""
    conversation = create_conversation(alice_http, title="Eingaben")
    sent = send(alice_http, conversation, "Frage FAKE" + json.dumps({"text": "Antwort."}))
    wait_for_final(sent["assistant_message"]["id"])
    upstream.requests.clear()
    return conversation, sent


def problem_with(response: httpx.Response, status: int, codes: set[str]) -> str | None:
    """What is wrong with a refusal: not the status, not a JSON error with a known code and a message."""
    try:
        error = response.json()["error"]
    except (ValueError, KeyError, TypeError):
        return f"{response.status_code} without a JSON error: {response.text[:200]!r}"
    if response.status_code != status or error.get("code") not in codes or not error.get("message"):
        return f"{response.status_code} {error}"
    return None


@pytest.mark.parametrize("name", CASES.keys())
def test_malformed_bodies_are_refused_before_anything_is_stored_or_sent(alice_http, upstream, exchange, name):
    conversation, sent = exchange
    method, url = endpoint(name, conversation, sent["user_message"]["id"], sent["assistant_message"]["id"])
    before = db_fingerprint()
    failures, cases = [], 0
    for case, (body, status, code) in MALFORMED.items():
        cases += 1
        content = body() if callable(body) else body
        response = alice_http.request(method, url, content=content, headers=JSON)
        if problem := problem_with(response, status, {code}):
            failures.append(f"{case}: {problem}")
    for body in CASES[name]:
        cases += 1
        # Escaped as ASCII: lone surrogates travel as \ud800, as any JSON encoder sends them.
        response = alice_http.request(method, url, content=json.dumps(body).encode(), headers=JSON)
        if problem := problem_with(response, 400, CODES):
            failures.append(f"{body!r:.80}: {problem}")
    assert failures == [], failures
    assert cases == len(MALFORMED) + len(CASES[name])
    assert db_fingerprint() == before
    assert upstream.requests == []
    # Still usable afterwards.
    assert alice_http.get(conversation["detail_url"]).status_code == 200


def test_a_body_over_the_limit_is_refused_without_reading_it_whole(live, alice_http, upstream, exchange):
    """Declared too large: refused from the Content-Length, so 50 MB cost no memory here."""
    conversation, _ = exchange
    before = db_fingerprint()
    body = b'{"content": "' + b"x" * 50_000_000 + b'"}'
    response = alice_http.post(conversation["messages_url"], content=body, timeout=60)
    assert problem_with(response, 413, {"too_large"}) is None
    assert db_fingerprint() == before
    assert upstream.requests == []


# 10,000 emoji of every build (skin tones, ZWJ sequences, flags, variation selectors) between
# German text, composed and decomposed (NFD: u + U+0308): stored and shown as sent, never
# normalised, escaped or cut.
EMOJI = ["😀", "👍🏽", "👩‍💻", "🇩🇪", "❤️", "🧑‍🤝‍🧑", "🐍", "🎉"]
UMLAUTS = "Grüße aus Köln: Straße, Maß, Öl, Ähre, Übermut, äöüß ÄÖÜẞ — und zerlegt: Gru\u0308ße"
TITLE = "Grüße, Maß & Öl: ÄÖÜẞ äöüß 🎉 Gru\u0308ße"


def emoji_text(count: int, offset: int) -> str:
    emoji = itertools.islice(itertools.cycle(EMOJI), offset, offset + count)
    return UMLAUTS + " " + "".join(emoji) + " " + UMLAUTS


def test_emoji_and_umlauts_round_trip_exactly_everywhere(alice_http, upstream):
    question, answer = emoji_text(10_000, 0), emoji_text(10_000, 3)
    assert len(question) <= MAX_CHARS
    upstream.set(text=answer)
    conversation = create_conversation(alice_http)
    renamed = alice_http.patch(conversation["detail_url"], json={"title": TITLE})
    assert renamed.json()["title"] == TITLE

    sent = send(alice_http, conversation, question)
    events = stream_answer(alice_http, conversation, sent)

    assert sent["user_message"]["content"] == question
    assert events[0].json()["user_message"]["content"] == question
    assert text_of(events) == answer
    assert upstream.requests[0]["body"]["messages"][-1] == {"role": "user", "content": question}
    stored = Message.objects.filter(conversation_id=conversation["id"]).order_by("pk")
    assert [m.content for m in stored] == [question, answer]
    detail = alice_http.get(conversation["detail_url"]).json()
    assert [m["content"] for m in detail["messages"]] == [question, answer]
    assert detail["title"] == TITLE
    page = alice_http.get(conversation["url"]).text
    assert escape(question, quote=False) in page
    assert f"<p>{escape(answer, quote=False)}</p>" in page
    assert escape(TITLE, quote=False) in page


# Content-Types a JSON body is refused under (with the body a JSON endpoint would accept).
NOT_JSON = [
    None,
    "text/plain",
    "text/plain; charset=utf-8",
    "application/x-www-form-urlencoded",
    "text/json",
    "application/json-patch+json",
    "application/json; charset=latin-1",
    "application/json; charset=utf-16",
]


@pytest.mark.parametrize("name", CASES.keys())
def test_json_under_another_content_type_is_refused_before_anything_is_stored(
    alice_http, upstream, exchange, name
):
    """A form or a text/plain POST (what a page of another site can send without a
    preflight) and JSON in other charsets: 415 `unsupported_media_type`, nothing stored
    or sent; `application/json; charset=UTF-8` is JSON."""
    conversation, sent = exchange
    method, url = endpoint(name, conversation, sent["user_message"]["id"], sent["assistant_message"]["id"])
    body = json.dumps({"content": "hallo", "title": "Neu", "rating": "up"}).encode()
    before = db_fingerprint()
    failures = []
    for content_type in NOT_JSON:
        headers = {} if content_type is None else {"Content-Type": content_type}
        response = alice_http.request(method, url, content=body, headers=headers)
        if problem := problem_with(response, 415, {"unsupported_media_type"}):
            failures.append(f"{content_type}: {problem}")
    assert failures == [], failures
    assert db_fingerprint() == before
    assert upstream.requests == []
    accepted = alice_http.request(
        method, url, content=body, headers={"Content-Type": "application/json; charset=UTF-8"}
    )
    assert accepted.status_code in (200, 201, 202), accepted.text
