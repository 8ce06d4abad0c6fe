"""The API's description (assistant/api_schema/openapi.yaml) held to the server.

Real answers of every route, through Django's test client and over a live daphne against
the fake upstream, are looked up in the document by path, method and status, and their
bodies validated with jsonschema (Draft 2020-12, the dialect of OpenAPI 3.1). An answer
the document does not describe, or describes otherwise, fails; so do a route under /api/
without a description (or a description without a route), an event of the stream whose
data does not match its schema, and a document that is not valid OpenAPI 3.1. Objects in
the document are exact, so a field added to an answer must be added there too.
"""

from __future__ import annotations

import contextlib
import functools
import json
import re
import uuid
from dataclasses import dataclass

import httpx
import pytest
from django.test import Client
from django.urls import resolve, reverse
from jsonschema import Draft202012Validator
from jsonschema.exceptions import best_match
from openapi_spec_validator import validate as validate_openapi
from referencing import Registry
from referencing.jsonschema import DRAFT202012

from assistant import open_streams
from assistant.api_schema import document
from assistant.documents.models import Document
from assistant.models import ICONS, Assistant, Conversation, Message, Origin
from assistant.personas.versions import version_save
from assistant.providers.values import FINISH_REASONS, OTHER_FINISH_REASON
from assistant.tokens.service import token_create, token_revoke
from tests.helpers.chat import create_conversation, fake, stream_answer, wait_for_final
from tests.helpers.live import logged_in, session_client, wait_until
from tests.helpers.routes import every_route
from tests.helpers.sse import SSEEvent, parse_sse, sse_lines
from tests.helpers.streams import open_then
from tests.helpers.tokens import bearer, token_for

DOC = document()
URI = "urn:assistant:openapi"
REGISTRY = Registry().with_resource(URI, DRAFT202012.create_resource(DOC))
METHODS = ("get", "post", "put", "patch", "delete")
EVENTS_PATH = "/api/conversations/{conversation_id}/events/"
EVENTS = DOC["paths"][EVENTS_PATH]["get"]["x-events"]


def pointer(*keys: str) -> str:
    return "".join("/" + key.replace("~", "~0").replace("/", "~1") for key in keys)


@functools.cache
def validator(at: str) -> Draft202012Validator:
    """A validator of the schema at JSON pointer `at` in the document, its `$ref`s resolved."""
    return Draft202012Validator(
        {"$ref": f"{URI}#{at}"}, registry=REGISTRY, format_checker=Draft202012Validator.FORMAT_CHECKER
    )


def valid(at: str, instance: object) -> None:
    error = best_match(validator(at).iter_errors(instance))
    assert error is None, f"{at}: {error.message} at {list(error.absolute_path)} in {instance!r:.2000}"


def openapi_path(route: str) -> str:
    """A Django route (`api/messages/<id:message_id>/retry/`) as OpenAPI writes its path."""
    return "/" + re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", route)


def operations(prefix: str = "/api/") -> dict[str, set[str]]:
    """The described methods of every path under `prefix`, upper case."""
    return {
        path: {method.upper() for method in item if method in METHODS}
        for path, item in DOC["paths"].items()
        if path.startswith(prefix)
    }


@dataclass
class Answer:
    method: str
    path: str
    status: int
    headers: httpx.Headers
    body: bytes

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "").split(";")[0].strip()


def answer_of(response) -> Answer:
    """An httpx response (an event stream's body left unread) or one of Django's test client."""
    if isinstance(response, httpx.Response):
        streaming = response.headers.get("content-type", "").startswith("text/event-stream")
        body = b"" if streaming else response.read()
        return Answer(
            response.request.method, response.request.url.path, response.status_code, response.headers, body
        )
    request = response.wsgi_request
    headers = httpx.Headers(dict(response.headers))
    return Answer(request.method, request.path_info, response.status_code, headers, response.content)


class Described:
    """Checks answers against the document; keeps each (path, method, status) it checked."""

    def __init__(self) -> None:
        self.seen: set[tuple[str, str, int]] = set()

    def __call__(self, response) -> object:
        """The answer's JSON (None without one), once it is as the document says."""
        answer = answer_of(response)
        path = openapi_path(resolve(answer.path).route)
        operation = DOC["paths"].get(path, {}).get(answer.method.lower())
        assert operation is not None, f"{answer.method} {path} is not described"
        where = ["paths", path, answer.method.lower(), "responses"]
        key = str(answer.status) if str(answer.status) in operation["responses"] else "default"
        assert key in operation["responses"], f"{answer.method} {path}: {answer.status} is not described"
        self.seen.add((path, answer.method, answer.status))
        return self.check(answer, [*where, key])

    def check(self, answer: Answer, where: list[str]) -> object:
        described = functools.reduce(lambda node, key: node[key], where, DOC)
        if "$ref" in described:
            where = described["$ref"].removeprefix("#/").split("/")
            described = functools.reduce(lambda node, key: node[key], where, DOC)
        for name, header in described.get("headers", {}).items():
            assert not header.get("required") or name in answer.headers, f"{answer.path}: no {name} header"
        content = described.get("content", {})
        if not content:
            assert answer.body == b"", f"{answer.method} {answer.path} {answer.status}: a body"
            return None
        assert answer.content_type in content, f"{answer.method} {answer.path}: {answer.content_type}"
        if answer.content_type != "application/json" or answer.method == "HEAD":
            return None
        data = json.loads(answer.body)
        valid(pointer(*where, "content", "application/json", "schema"), data)
        return data

    def component(self, response, name: str) -> object:
        """An answer outside every operation (a path that names nothing), checked against
        the response component `name`."""
        return self.check(answer_of(response), ["components", "responses", name])


def event_checked(event: SSEEvent) -> None:
    described = EVENTS.get(event.event)
    assert described is not None, f"the event {event.event} is not described"
    assert (event.id is not None) == described.get("id", False), event
    if "data" in described:
        valid(pointer("paths", EVENTS_PATH, "get", "x-events", event.event, "data"), event.json())
    else:
        assert event.data == "", event


def coaching() -> Assistant:
    """A guided flow of three phases, open to everyone."""
    assistant = Assistant.objects.create(slug="coaching", everyone=True)
    phases = [
        {"title": title, "goal": f"{title} ist klar.", "instructions": f"Frag nach {title}."}
        for title in ("Situation", "Ziel", "Schritte")
    ]
    version_save(assistant, {"name": "Coaching", "instructions": "Du coachst.", "phases": phases}, by="admin")
    return assistant


def sample_path(path: str) -> str:
    """A concrete path of a described one, naming objects that do not exist."""
    values = {"conversation_id": uuid.uuid4(), "document_id": uuid.uuid4(), "message_id": 2**62, "model": "x"}
    return re.sub(r"\{(\w+)\}", lambda m: str(values[m[1]]), path)


# --- the document ------------------------------------------------------------------------------


def test_the_document_is_valid_openapi_3_1():
    validate_openapi(DOC)
    assert DOC["openapi"].startswith("3.1.")
    for name in EVENTS:
        if "data" in EVENTS[name]:
            validator(pointer("paths", EVENTS_PATH, "get", "x-events", name, "data")).check_schema(
                EVENTS[name]["data"]
            )


def test_no_key_lost_its_value_to_a_comma_in_a_flow_mapping():
    """`{ description: Yes, and more }` in YAML is a key "and more" without a value: the
    validator above accepts it inside schemas, the page would show half a sentence."""

    def empty_keys(node, where: str = "") -> list[str]:
        if isinstance(node, dict):
            return [f"{where}/{k}" for k, v in node.items() if v is None] + [
                found for k, v in node.items() for found in empty_keys(v, f"{where}/{k}")
            ]
        if isinstance(node, list):
            return [found for i, v in enumerate(node) for found in empty_keys(v, f"{where}/{i}")]
        return []

    assert empty_keys(DOC) == []


def test_every_route_under_api_is_described_with_the_methods_its_view_takes():
    """A new route under /api/ (or a method added to one) fails here until it is described."""
    routes = {}
    for route in every_route():
        if route.route.startswith("api/"):
            path = openapi_path(route.route)
            view = resolve(sample_path(path)).func
            routes[path] = set(getattr(view, "allowed_methods", ()))
    assert routes == operations()


def test_the_enums_of_the_document_are_the_codes():
    schemas = DOC["components"]["schemas"]
    assert schemas["MessageStatus"]["enum"] == Message.Status.values
    assert schemas["DocumentKind"]["enum"] == Document.Kind.values
    assert schemas["DocumentStatus"]["enum"] == Document.Status.values
    assert schemas["Icon"]["enum"] == [name for name, _label in ICONS]
    assert schemas["ConversationListItem"]["properties"]["origin"]["enum"] == Origin.values
    assert set(schemas["FinishReason"]["enum"]) == {*FINISH_REASONS, OTHER_FINISH_REASON, "cancelled"}
    reasons = schemas["UnauthorizedEvent"]["properties"]["reason"]["enum"]
    assert set(reasons) == {
        open_streams.LOGGED_OUT,
        open_streams.ACCOUNT_DISABLED,
        open_streams.PASSWORD_CHANGED,
        open_streams.TOKEN_REVOKED,
    }
    closed = schemas["StreamClosedEvent"]["properties"]["reason"]["const"]
    assert closed == open_streams.TOO_MANY_STREAMS


def test_the_schema_is_served_as_json_and_as_a_page_without_scripts(alice_client):
    described = Described()
    assert described(alice_client.get("/api/schema/")) == json.loads(json.dumps(DOC))

    page = alice_client.get("/api/docs/")
    described(page)
    html = page.content.decode()
    for path, methods in operations("/").items():
        assert f"<code>{path}</code>" in html
        for method in methods:
            assert f'<span class="api-method">{method}</span> <code>{path}</code>' in html
    for name in EVENTS:
        assert f"<td><code>{name}</code></td>" in html
    for name in DOC["components"]["schemas"]:
        assert f'id="schema-{name}"' in html
    links = set(re.findall(r'href="#schema-([^"]+)"', html))
    assert links <= set(DOC["components"]["schemas"])
    assert "<script" not in html.replace('<script src="/static/assistant/theme.js"></script>', "")
    assert not re.search(r'(?:src|href)="(?:https?:)?//', html)
    assert "Content-Security-Policy" in page.headers


def test_the_schema_and_the_page_are_for_signed_in_users(db):
    described = Described()
    anonymous = Client()
    assert described(anonymous.get("/api/schema/"))["error"]["code"] == "not_authenticated"
    page = anonymous.get("/api/docs/")
    described(page)
    assert page["Location"].startswith(reverse("login"))


# --- refusals, in-process ---------------------------------------------------------------------


def test_anonymous_clients_get_401_and_other_methods_405_everywhere(db):
    """Every described operation of /api/ refuses anonymous clients as described, and every
    method it does not take is 405 `method_not_allowed` with the Allow header."""
    described, anonymous = Described(), Client()
    for path, methods in operations().items():
        concrete = sample_path(path)
        for method in (m.upper() for m in METHODS):
            if method == "GET" and path == EVENTS_PATH:
                continue  # served by the stream endpoint, not Django's test client (the live test)
            response = anonymous.generic(method, concrete)
            if method in methods:
                described(response)
                assert response.status_code in (401, 302), (method, path)
            else:
                error = described.component(response, "MethodNotAllowed")
                assert (response.status_code, error["error"]["code"]) == (405, "method_not_allowed")
                assert set(response["Allow"].split(", ")) == methods


def test_objects_that_do_not_exist_are_404_as_described(alice_client):
    described = Described()
    body = json.dumps({"content": "Frage", "title": "Titel", "rating": "up"})
    cases = 0
    for path, methods in operations().items():
        if "{" not in path or path == EVENTS_PATH:
            continue
        for method in methods:
            response = alice_client.generic(method, sample_path(path), body, content_type="application/json")
            assert described(response)["error"]["code"] == "not_found", (method, path)
            cases += 1
    assert cases >= 16  # every operation on a conversation, message or document


def test_paths_that_name_nothing_are_404_in_the_api_shape(alice_client):
    described = Described()
    for path in ("/api/nothing/", "/api/messages/99999999999999999999/cancel/", "/api/conversations/x/"):
        response = alice_client.get(path)
        assert described.component(response, "NotFound")["error"]["code"] == "not_found"
    # Outside /api/ Django's page, as before.
    assert alice_client.get("/nothing/")["Content-Type"].startswith("text/html")


def test_a_missing_csrf_token_is_403_on_every_unsafe_operation(alice):
    described, client = Described(), Client(enforce_csrf_checks=True)
    client.force_login(alice)
    for path, methods in operations().items():
        for method in methods - {"GET"}:
            response = client.generic(method, sample_path(path), "{}", content_type="application/json")
            assert described(response)["error"]["code"] == "csrf_failed", (method, path)


def test_bad_bodies_limits_and_conflicts_are_described(alice_client, alice, settings):
    described = Described()
    create = "/api/conversations/"
    assert described(alice_client.post(create, {"model": "gpt-9"}, "application/json"))["error"]["code"] == (
        "unknown_model"
    )
    assert (
        described(alice_client.post(create, "x", "text/plain"))["error"]["code"] == "unsupported_media_type"
    )
    conversation = Conversation.objects.create(owner=alice, model="demo")
    Message.objects.create(conversation=conversation, role="user", content="Frage")
    Message.objects.create(conversation=conversation, role="assistant", status=Message.Status.STREAMING)
    busy = alice_client.post(
        f"/api/conversations/{conversation.pk}/messages/", {"content": "Noch was"}, "application/json"
    )
    assert described(busy)["error"]["code"] == "answer_in_progress"

    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    large = alice_client.post(create, {"title": "x" * 2000}, "application/json")
    assert described(large)["error"]["code"] == "too_large"


def test_a_limit_is_429_with_retry_after_as_described(alice_client, settings):
    described = Described()
    settings.ASSISTANT_CONVERSATIONS_PER_MINUTE = 1
    assert described(alice_client.post("/api/conversations/", {}, "application/json"))["title"] == ""
    limited = alice_client.post("/api/conversations/", {}, "application/json")
    assert described(limited)["error"]["code"] == "rate_limited"
    assert int(limited["Retry-After"]) > 0


def test_a_host_not_served_and_a_fault_answer_in_the_api_shape(alice):
    refused = Client(headers={"Host": "evil.example"}).get("/api/me/")
    assert refused.status_code == 400
    valid(pointer("components", "schemas", "Error"), refused.json())
    assert refused.json()["error"]["code"] == "bad_request"

    # The events URL through Django (not the stream endpoint) is a setup that cannot stream.
    conversation = Conversation.objects.create(owner=alice, model="demo")
    client = logged_in(alice)
    client.raise_request_exception = False
    fault = client.get(f"/api/conversations/{conversation.pk}/events/")
    assert fault.status_code == 500
    valid(pointer("components", "schemas", "Error"), fault.json())
    assert fault.json()["error"]["code"] == "internal"


def test_an_unusable_token_is_401_as_described(alice):
    described = Described()
    token, secret = token_create(user=alice, name="Skript", days=30)
    token_revoke(token=token, by="alice")
    response = Client(headers=bearer(secret)).get("/api/me/")
    assert described(response)["error"]["code"] == "invalid_token"


# --- /api/me ----------------------------------------------------------------------------------


def test_me_says_who_the_user_is_and_what_applies_to_them(alice, settings):
    settings.ASSISTANT_MODELS = ["fake-model", "other-model"]
    settings.ASSISTANT_DAILY_TOKEN_QUOTA = 5000
    settings.ASSISTANT_RATE_LIMIT_PER_MINUTE = 0
    alice.first_name, alice.last_name, alice.email = "Alice", "Adler", "alice@example.com"
    alice.save()
    coaching()
    described = Described()

    me = described(logged_in(alice).get("/api/me/", headers={"Accept-Language": "de"}))

    assert me["user"] == {
        "id": alice.pk,
        "username": "alice",
        "display_name": "Alice Adler",
        "email": "alice@example.com",
        "language": "de",
        "staff": False,
    }
    assert me["models"] == {"available": ["fake-model", "other-model"], "default": "fake-model"}
    assert [a["slug"] for a in me["assistants"]] == ["coaching"]
    assert me["limits"]["answers_per_minute"] is None
    assert (me["limits"]["daily_token_quota"], me["limits"]["quota_left_today"]) == (5000, 5000)
    assert me["events"]["keepalive_seconds"] == settings.ASSISTANT_KEEPALIVE_SECONDS
    assert "timeout" in me["retryable_error_types"]
    assert "auth_failed" not in me["retryable_error_types"]
    assert (me["token"], me["gateway"]) == (None, {"store": settings.ASSISTANT_GATEWAY_STORE})

    secret = token_for(alice, name="Handy-App")
    with_token = described(Client(headers=bearer(secret)).get("/api/me/"))
    assert with_token["token"]["name"] == "Handy-App"
    assert secret.startswith(with_token["token"]["prefix"])
    assert with_token["token"]["expires_at"] is not None


# --- over a live daphne: every operation, the event stream, the gateway ------------------------


def upload(client: httpx.Client, conversation: dict, name: str, text: str) -> httpx.Response:
    files = {"file": (name, text.encode(), "text/plain")}
    return client.post(f"/api/conversations/{conversation['id']}/documents/", files=files)


def answered(client: httpx.Client, conversation: dict, sent: dict) -> list[SSEEvent]:
    """The answer's events to its end (so the next request finds no answer streaming)."""
    events = stream_answer(client, conversation, sent)
    wait_for_final(sent["assistant_message"]["id"])
    return events


def replayed(
    client: httpx.Client, conversation_id: str, position: str, described: Described
) -> list[SSEEvent]:
    """Every event of the conversation after `position`, up to the first keep-alive."""
    events = []
    with client.stream(
        "GET", f"/api/conversations/{conversation_id}/events/", headers={"Last-Event-ID": position}
    ) as response:
        described(response)
        for event in parse_sse(sse_lines(response)):
            events.append(event)
            if event.event == "keep-alive":
                return events
    raise AssertionError("the stream ended")


@pytest.mark.live
def test_every_operation_and_event_of_a_guided_conversation_is_as_described(
    live, alice, alice_http, upstream
):
    """One user's day with the API: a guided flow with a document, sources, continue,
    retry, versions, an edit, feedback, a failure and a stop; every answer is validated,
    then every event of the conversation, replayed from its start."""
    described = Described()
    coaching()
    described(alice_http.get("/api/me/"))
    described(alice_http.get("/api/schema/"))
    described(alice_http.get("/api/docs/"))
    assert [a["slug"] for a in described(alice_http.get("/api/assistants/"))["assistants"]] == ["coaching"]

    created = alice_http.post("/api/conversations/", json={"assistant": "coaching"})
    conversation = described(created)
    start = described(alice_http.get(conversation["detail_url"]))["last_event_id"]
    messages = conversation["messages_url"]

    def sent(response: httpx.Response) -> dict:
        exchange = described(response)
        answered(alice_http, conversation, exchange)
        return exchange

    phase_ends = [{"name": "complete_phase", "arguments": {"summary": "Die Lage ist klar."}}]
    sent(alice_http.post(messages, json={"content": fake(text="Gut.", tool_calls=phase_ends)}))
    sent(alice_http.post(messages, json={"content": fake(text="Was ist das Ziel?")}))
    flow = described(alice_http.post(f"/api/conversations/{conversation['id']}/next-phase/"))["flow"]
    assert flow["phase"] == 3

    document = described(
        upload(alice_http, conversation, "Vertrag.txt", "Die Kündigungsfrist beträgt drei Monate.")
    )
    ready = wait_until(
        lambda: described(alice_http.get(f"/api/documents/{document['id']}/"))["status"] == "ready"
    )
    assert ready
    assert (
        len(described(alice_http.get(f"/api/conversations/{conversation['id']}/documents/"))["documents"])
        == 1
    )

    cut = sent(
        alice_http.post(messages, json={"content": fake(text="Drei Monate [1], und", finish_reason="length")})
    )
    answer_id = cut["assistant_message"]["id"]
    sources = described(alice_http.get(f"/api/messages/{answer_id}/sources/"))["sources"]
    assert [s["name"] for s in sources] == ["Vertrag.txt"]
    continued = sent(alice_http.post(f"/api/messages/{answer_id}/continue/"))
    assert continued["assistant_message"]["continues"] is True
    retried = sent(alice_http.post(f"/api/messages/{answer_id}/retry/"))
    shown = described(alice_http.post(f"/api/messages/{answer_id}/show/"))
    assert shown["messages"][-1]["id"] == answer_id
    edited = sent(
        alice_http.post(
            f"/api/messages/{cut['user_message']['id']}/edit/", json={"content": fake(text="Neu")}
        )
    )
    assert retried["assistant_message"]["id"] != edited["assistant_message"]["id"]
    rated = alice_http.post(
        f"/api/messages/{edited['assistant_message']['id']}/feedback/",
        json={"rating": "down", "comment": "Zu kurz"},
    )
    assert described(rated)["feedback"] == "down"

    sent(alice_http.post(messages, json={"content": fake(error_after=2)}))
    stopping = described(alice_http.post(messages, json={"content": fake(never_end=True, tps=20)}))
    stopped = alice_http.post(f"/api/messages/{stopping['assistant_message']['id']}/cancel/")
    assert described(stopped)["id"] == stopping["assistant_message"]["id"]
    answered(alice_http, conversation, stopping)

    renamed = alice_http.patch(conversation["detail_url"], json={"title": "Coaching mit Vertrag"})
    assert described(renamed)["title"] == "Coaching mit Vertrag"
    detail = described(alice_http.get(conversation["detail_url"]))
    assert {m["status"] for m in detail["messages"]} >= {"done", "error", "cancelled"}
    described(alice_http.delete(f"/api/documents/{document['id']}/"))
    listed = described(alice_http.get("/api/conversations/"))
    assert [c["id"] for c in listed["conversations"]] == [conversation["id"]]
    found = described(alice_http.get("/api/conversations/", params={"q": "Ziel", "archived": "all"}))
    assert found["conversations"][0]["snippet"]

    first = alice_http.post("/api/conversations/", json={"content": fake(text="Hallo")})
    other = described(first)
    answered(alice_http, other, other)
    described(alice_http.delete(other["detail_url"]))

    events = replayed(alice_http, conversation["id"], start, described)
    for event in events:
        event_checked(event)
    kinds = {event.event for event in events}
    assert {
        "stream-open",
        "start",
        "delta",
        "done",
        "error",
        "phase",
        "document",
        "title",
        "keep-alive",
    } <= kinds
    starts = [event.json() for event in events if event.event == "start"]
    assert any("sources" in s for s in starts)
    assert any(s.get("continues") for s in starts)
    assert any("replaces_question" in s for s in starts)
    statuses = {event.json()["status"] for event in events if event.event == "document"}
    assert {"queued", "ready", "deleted"} <= statuses

    # Every operation of /api/ answered successfully, and as described.
    succeeded = {(path, method) for path, method, status in described.seen if status < 300}
    assert succeeded == {(path, method) for path, methods in operations().items() for method in methods}


@pytest.mark.live
def test_the_last_events_of_a_stream_and_its_refusals_are_as_described(live, alice, bob_http, alice_http):
    described = Described()
    conversation = create_conversation(alice_http)
    url = conversation["events_url"]
    with httpx.Client(base_url=live.url, timeout=10) as anonymous:
        assert described(anonymous.get(url))["error"]["code"] == "not_authenticated"
    assert described(bob_http.get(url))["error"]["code"] == "not_found"
    refused = alice_http.post(url)
    assert described.component(refused, "MethodNotAllowed")["error"]["code"] == "method_not_allowed"
    assert refused.headers["Allow"] == "GET"

    # A position the log cannot resume.
    with alice_http.stream(
        "GET", url, headers={"Last-Event-ID": f"conversation-{conversation['id']}:1"}
    ) as response:
        reset = parse_sse(sse_lines(response))
        opened, resetting = next(reset), next(reset)
    assert [opened.event, resetting.event] == ["stream-open", "stream-reset"]

    # One stream too many: the oldest ends.
    limit = described(alice_http.get("/api/me/"))["limits"]["max_open_streams"]
    with contextlib.ExitStack() as streams:
        oldest = streams.enter_context(alice_http.stream("GET", url))
        oldest_events = parse_sse(sse_lines(oldest))
        assert next(oldest_events).event == "stream-open"
        for _ in range(limit):
            assert streams.enter_context(alice_http.stream("GET", url)).status_code == 200
        closing = next(e for e in oldest_events if e.event != "keep-alive")

    # Signed out: the session's stream ends.
    with session_client(live, alice) as client:
        ended = open_then(client, url, lambda: client.post("/accounts/logout/"))
    unauthorized = [e for e in ended if e.event != "keep-alive"]

    for event in (opened, resetting, closing, *unauthorized):
        event_checked(event)
    assert closing.event == "stream-closed"
    assert [e.event for e in unauthorized] == ["unauthorized"]


@pytest.mark.live
def test_a_client_with_a_token_alone_is_described(live, alice, upstream):
    described = Described()
    secret = token_for(alice, name="Skript")
    with httpx.Client(base_url=live.url, headers=bearer(secret), timeout=30) as client:
        me = described(client.get("/api/me/"))
        assert secret.startswith(me["token"]["prefix"])
        conversation = described(
            client.post("/api/conversations/", json={"content": fake(text="Hallo Welt")})
        )
        events = answered(client, conversation, conversation)
    for event in events:
        event_checked(event)
    assert [e.event for e in events][-1] == "done"


@pytest.mark.live
def test_the_gateway_answers_in_openais_shapes_as_described(live, alice, upstream):
    described = Described()
    with httpx.Client(base_url=live.url, timeout=30) as anonymous:
        assert described(anonymous.get("/v1/models"))["error"]["code"] == "invalid_api_key"
    with httpx.Client(base_url=live.url, headers=bearer(token_for(alice)), timeout=30) as client:
        models = described(client.get("/v1/models"))
        assert [m["id"] for m in models["data"]] == ["fake-model", "other-model"]
        assert described(client.get("/v1/models/fake-model"))["id"] == "fake-model"
        described(client.get("/v1/models/gpt-9"))
        completion = client.post(
            "/v1/chat/completions",
            json={"model": "fake-model", "messages": [{"role": "user", "content": fake(text="Guten Tag")}]},
        )
        assert described(completion)["choices"][0]["message"]["content"] == "Guten Tag"
    assert {status for _path, _method, status in described.seen} == {200, 401, 404}
