"""Health checks: /healthz (alive, nothing else) and /readyz (database, events, upstream)."""

from __future__ import annotations

import asyncio
import json
import socket

import pytest
from django.db import OperationalError
from django.test import Client

from assistant import health


@pytest.fixture
def configured(settings, upstream):
    settings.ASSISTANT_DEMO_MODE = False
    settings.OPENAI_BASE_URL = upstream.url
    settings.OPENAI_API_KEY = "test-key-abc123"
    settings.OPENAI_MAX_RETRIES = 0
    settings.OPENAI_TIMEOUT = 2
    settings.ASSISTANT_MODELS = ["fake-model"]
    return settings


def assert_nothing_secret(response, *secrets: str) -> None:
    text = response.content.decode()
    for secret in ("http://", "127.0.0.1", "test-key", *secrets):
        assert secret not in text


def test_healthz_is_ok_without_the_database():
    # No database fixture: touching the database here would fail the test.
    response = Client().get("/healthz")

    assert response.status_code == 200
    assert response.json() == {"status": "ok"}
    assert response["Cache-Control"] == "no-store"


def test_readyz_checks_database_and_events(db):
    response = Client().get("/readyz")

    assert response.status_code == 200
    assert response.json() == {
        "status": "ok",
        "checks": {"database": "ok", "events": "ok", "llm": "skipped"},
    }


def test_readyz_is_503_when_the_database_fails(db, monkeypatch):
    def unreachable() -> None:
        raise OperationalError("could not connect to db.internal:5432 as assistant password=hunter2")

    monkeypatch.setattr(health, "_database_ping", unreachable)

    response = Client().get("/readyz")

    assert response.status_code == 503
    assert response.json()["status"] == "error"
    assert response.json()["checks"]["database"] == "error: OperationalError"
    assert_nothing_secret(response, "hunter2", "db.internal")


def test_readyz_checks_redis_when_configured(db, settings):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed once the block ends: nothing listens
    settings.REDIS_URL = f"redis://:hunter2@127.0.0.1:{port}/0"

    response = Client().get("/readyz")

    assert response.status_code == 503
    assert response.json()["checks"]["events"].startswith("error: ")
    assert_nothing_secret(response, "hunter2", str(port))


def test_readyz_checks_the_upstream_on_request(db, configured, upstream):
    response = Client().get("/readyz?llm=1")

    assert response.status_code == 200
    assert response.json()["checks"]["llm"] == "ok"
    (request,) = upstream.requests
    assert request["body"]["max_tokens"] == 1
    assert request["body"]["model"] == "fake-model"


@pytest.mark.parametrize(
    ("setting", "behaviour", "error"),
    [
        ({"OPENAI_API_KEY": "wrong-key"}, {}, "error: auth_failed"),
        ({}, {"status": 503}, "error: upstream_unavailable"),
    ],
)
def test_readyz_is_503_when_the_upstream_fails(db, configured, upstream, setting, behaviour, error):
    for name, value in setting.items():
        setattr(configured, name, value)
    upstream.set(**behaviour)

    response = Client().get("/readyz?llm=1")

    assert response.status_code == 503
    assert response.json()["checks"] == {"database": "ok", "events": "ok", "llm": error}
    assert_nothing_secret(response, "wrong-key")


def test_readyz_upstream_checks_share_one_request(configured, upstream):
    async def three_probes() -> list[str]:
        together = await asyncio.gather(health.llm_status(), health.llm_status())
        return [*together, await health.llm_status()]

    assert asyncio.run(three_probes()) == ["ok", "ok", "ok"]
    assert len(upstream.requests) == 1


def test_health_checks_need_no_login_and_no_https(db, settings):
    settings.SECURE_SSL_REDIRECT = True
    client = Client()

    assert client.get("/").status_code == 301  # everything else goes to https first
    assert client.get("/healthz").status_code == 200
    assert client.get("/readyz").status_code == 200


def test_health_checks_answer_only_get(db):
    assert Client().post("/healthz").status_code == 405
    assert Client().post("/readyz").status_code == 405


def test_readyz_answer_is_json_with_fixed_keys(db):
    body = json.loads(Client().get("/readyz?llm=0").content)

    assert set(body) == {"status", "checks"}
    assert set(body["checks"]) == {"database", "events", "llm"}
