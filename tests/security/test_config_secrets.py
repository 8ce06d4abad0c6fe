"""CONFIGURATION and SECRETS: the upstream's address and key come from settings only, and
no secret leaves the server.

SSRF: requests carry base URLs, keys and host tricks in every place a careless
implementation might read them; the fake upstream's request log shows what was sent
where, and an attacker's server must receive nothing. Secrets: production daphnes run
scenarios with failing upstreams and unreachable services whose URLs hold passwords;
every answer, event, admin page and log line is searched for the secret values.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field

import httpx
import pytest
from django.contrib.auth import get_user_model

from assistant.models import Conversation, Message
from tests.helpers.chat import create_conversation, fake, send, stream_answer, wait_for_final
from tests.helpers.live import LIVE_MODELS, LiveServer, free_port, start_daphne, stop_daphne
from tests.helpers.production import PROXIED, production_env
from tests.helpers.servers import PASSWORD, Answer, Recorded, RecordingServer, form_login, with_password

pytestmark = pytest.mark.live

UPSTREAM_KEY = "test-key-abc123"  # what live_env configures


def tricks(attacker: RecordingServer) -> tuple[dict, dict]:
    """Body fields and headers naming the attacker's server and key."""
    body = {
        "base_url": attacker.url,
        "api_base": attacker.url + "/v1",
        "openai_base_url": attacker.url,
        "url": attacker.url,
        "endpoint": attacker.url + "/v1/chat/completions",
        "api_key": "sk-attacker",
        "headers": {"Authorization": "Bearer sk-attacker"},
    }
    headers = {
        "Host": attacker.netloc,  # 127.0.0.1 with another port: an allowed host
        "X-Forwarded-Host": attacker.netloc,
        "Forwarded": f"host={attacker.netloc};proto=http",
        "X-Forwarded-Proto": "http",
        "X-OpenAI-Base-URL": attacker.url,
        "OpenAI-Base-URL": attacker.url,
        "X-Api-Key": "sk-attacker",
        # A Bearer header is a personal API token here, refused when it is none (below).
        "Authorization": "Basic c2stYXR0YWNrZXI6",
    }
    return body, headers


def test_requests_cannot_choose_the_upstream_or_its_key(live, alice_http, attacker, upstream):
    """Create, send, retry, edit, title and the readiness probe, each carrying the
    attacker's URL and key: every upstream request went to the configured server with
    the configured key and a configured model, and the attacker's server got nothing."""
    body, headers = tricks(attacker)
    alice_http.headers.update(headers)
    conversation = create_conversation(alice_http, model="other-model", **body)
    sent = send(alice_http, conversation, "Wie spät ist es?", **body)
    assert stream_answer(alice_http, conversation, sent)[-1].event == "done"
    answer = sent["assistant_message"]["id"]
    retried = alice_http.post(f"/api/messages/{answer}/retry/", json=body)
    assert retried.status_code == 202, retried.text
    wait_for_final(retried.json()["assistant_message"]["id"])
    question = retried.json()["user_message"]["id"]
    edited = alice_http.post(f"/api/messages/{question}/edit/", json={"content": "Und morgen?", **body})
    assert edited.status_code == 202, edited.text
    wait_for_final(edited.json()["assistant_message"]["id"])
    assert alice_http.get("/readyz", params={"llm": "1", **body}).status_code == 200

    refused = alice_http.post(
        f"/api/conversations/{conversation['id']}/messages/",
        json={"content": "Noch eine Frage", **body},
        headers={"Authorization": "Bearer sk-attacker"},
    )
    assert (refused.status_code, refused.json()["error"]["code"]) == (401, "invalid_token")

    assert attacker.requests == []
    assert len([r for r in upstream.requests if r["body"].get("stream")]) == 3
    for request in upstream.requests:
        assert request["path"] in ("/v1/chat/completions", "/chat/completions")
        assert request["headers"]["authorization"] == f"Bearer {UPSTREAM_KEY}"
        assert request["body"]["model"] in LIVE_MODELS.split(",")
        assert set(request["body"]) <= {"model", "messages", "stream", "stream_options", "max_tokens"}
        assert attacker.netloc not in json.dumps(request)
    assert {m.model for m in Message.objects.filter(role="assistant")} == {"other-model"}


@pytest.mark.parametrize(
    "model",
    [
        "gpt-4o",
        "FAKE-MODEL",
        "fake-model,other-model",
        "fake-model\r\nX-Injected: 1",
        "../models",
        "attacker",
    ],
)
def test_only_configured_models_are_accepted(live, alice_http, attacker, upstream, model):
    model = attacker.url + "/v1" if model == "attacker" else model
    conversation = create_conversation(alice_http)
    refused = [
        alice_http.post("/api/conversations/", json={"model": model}),
        alice_http.post(conversation["messages_url"], json={"content": "Hallo", "model": model}),
    ]
    for response in refused:
        assert response.status_code == 400, response.text
        assert response.json()["error"]["code"] == "unknown_model"
    assert Conversation.objects.count() == 1
    assert not Message.objects.exists()
    assert upstream.requests == []
    assert attacker.requests == []


# --- secrets ----------------------------------------------------------------------------------


def closed_port() -> int:
    return free_port()  # free a moment ago: nothing listens there


def quoting_key(request: Recorded) -> bytes:
    """A hostile upstream's 401 that quotes the key it was sent, as some servers do."""
    message = f"Incorrect API key provided: {request.headers.get('authorization')}. Check it."
    return json.dumps({"error": {"message": message, "type": "invalid_request_error"}}).encode()


@dataclass
class Scenario:
    name: str
    env: dict[str, str]
    secrets: dict[str, str]
    database_up: bool = True
    captured: list[str] = field(default_factory=list)

    def keep(self, response: httpx.Response) -> httpx.Response:
        self.captured.append(f"{response.status_code} {response.headers}\n{response.text}")
        return response


@pytest.fixture
def hostile_upstream() -> Iterator[RecordingServer]:
    with RecordingServer(Answer(status=401, body=quoting_key)) as server:
        yield server


def scenarios(hostile_upstream: RecordingServer) -> list[Scenario]:
    def made(name: str, database_up: bool = True, **urls: str) -> Scenario:
        """Fresh secrets; the word PASSWORD in a URL becomes one too."""
        found = {
            "DJANGO_SECRET_KEY": secrets.token_urlsafe(50),
            "OPENAI_API_KEY": "sk-" + secrets.token_hex(20),
        }
        for variable, url in urls.items():
            if "PASSWORD" in url:
                found[variable] = secrets.token_hex(12)
                urls[variable] = url.replace("PASSWORD", found[variable])
        env = {**found, **urls, "ASSISTANT_MODELS": "fake-model", "OPENAI_MAX_RETRIES": "0"}
        return Scenario(name, env, found, database_up)

    return [
        made("upstream 401 quoting the key", OPENAI_BASE_URL=hostile_upstream.url + "/v1"),
        made(
            "upstream refused, credentials in its URL",
            OPENAI_BASE_URL=f"http://assistant:PASSWORD@127.0.0.1:{closed_port()}/v1",
        ),
        made(
            "database and Redis unreachable, passwords in their URLs",
            database_up=False,
            OPENAI_BASE_URL=hostile_upstream.url + "/v1",
            DATABASE_URL=f"postgres://assistant:PASSWORD@127.0.0.1:{closed_port()}/assistant",
            REDIS_URL=f"redis://:PASSWORD@127.0.0.1:{closed_port()}/0",
        ),
    ]


@pytest.mark.parametrize(
    "index", [0, 1, 2], ids=["upstream-401-quoting-key", "upstream-refused", "services-down"]
)
def test_no_secret_reaches_a_page_answer_event_or_log_line(
    transactional_db, collected, hostile_upstream, alice, index
):
    scenario = scenarios(hostile_upstream)[index]
    root = get_user_model().objects.create_superuser("root", password="unused")
    with_password(alice), with_password(root)
    server = start_daphne(
        production_env(DJANGO_STATIC_ROOT=str(collected), **scenario.env), "daphne-security-secrets"
    )
    try:
        if scenario.database_up:
            walk_with_failing_upstream(server, scenario, alice, root)
        else:
            walk_with_services_down(server, scenario)
        log = server.log_text()
    finally:
        stop_daphne(server)
    stored = json.dumps(list(Message.objects.values()), default=str)
    everything = "\n".join([*scenario.captured, log, stored])
    for name, value in scenario.secrets.items():
        assert value not in everything, f"{scenario.name}: {name} leaked"
    # The scenario happened: the failures are in the log, and the hostile upstream had
    # the key to quote.
    assert "upstream failed" in log or "Internal Server Error" in log
    if index == 0:
        quoted = quoting_key(hostile_upstream.requests[0]).decode()
        assert f"Bearer {scenario.secrets['OPENAI_API_KEY']}" in quoted


def walk_with_failing_upstream(server: LiveServer, scenario: Scenario, alice, root) -> None:
    """Alice's answer fails upstream; she reads the error everywhere; root reviews it."""
    with form_login(server, alice.username, PASSWORD).client as client:
        conversation = create_conversation(client, model="fake-model")
        sent = send(client, conversation, fake(text="Hallo"))
        events = stream_answer(client, conversation, sent)
        scenario.captured.append("".join(f"{e.event} {e.data}\n" for e in events))
        assert events[-1].event == "error"
        assert events[-1].json()["type"] in ("auth_failed", "upstream_unavailable")
        for path in (
            conversation["url"],
            conversation["detail_url"],
            "/api/conversations/",
            "/",
            "/nowhere/",
        ):
            scenario.keep(client.get(path))
        scenario.keep(client.post(conversation["messages_url"], content=b"{broken"))
        scenario.keep(client.post(f"/api/messages/{sent['assistant_message']['id']}/retry/"))
        wait_for_final(scenario.keep(client.get(conversation["detail_url"])).json()["messages"][-1]["id"])
    with form_login(server, root.username, PASSWORD).client as admin:
        review = f"/admin/assistant/conversation/{conversation['id']}/review/"
        reason = {"purpose": "support", "details": "Ticket 4711: the answer failed"}
        assert admin.post(review, data=reason).status_code == 302
        for path in (
            "/admin/",
            f"/admin/assistant/conversation/{conversation['id']}/change/",
            "/admin/assistant/message/",
            "/admin/assistant/accesslog/",
        ):
            assert scenario.keep(admin.get(path)).status_code == 200, path
    with httpx.Client(base_url=server.url, headers=PROXIED, timeout=30) as anonymous:
        for path in ("/healthz", "/readyz", "/readyz?llm=1", "/accounts/login/"):
            scenario.keep(anonymous.get(path))
    assert '"llm": "error: ' in scenario.captured[-2]


def walk_with_services_down(server: LiveServer, scenario: Scenario) -> None:
    with httpx.Client(base_url=server.url, headers=PROXIED, timeout=30) as anonymous:
        for path in ("/healthz", "/readyz", "/readyz?llm=1", "/accounts/login/", "/", "/admin/", "/nowhere/"):
            scenario.keep(anonymous.get(path))
        scenario.keep(anonymous.post("/api/conversations/", json={}))
    readiness = json.loads(scenario.captured[1].split("\n", 1)[1])
    assert readiness["checks"]["database"].startswith("error")
    assert readiness["checks"]["events"].startswith("error")
