"""check_llm against the fake upstream: OK with latency, or a diagnosis that names the setting."""

from __future__ import annotations

import io
import socket

import pytest
from django.core.management import CommandError, call_command

from tests.helpers.commands import run


@pytest.fixture
def configured(settings, upstream):
    settings.ASSISTANT_DEMO_MODE = False
    settings.OPENAI_BASE_URL = upstream.url
    settings.OPENAI_API_KEY = "test-key-abc123"
    settings.OPENAI_MAX_RETRIES = 0
    settings.OPENAI_TIMEOUT = 2
    settings.OPENAI_CONNECT_TIMEOUT = 0.5
    settings.ASSISTANT_MODELS = ["fake-model", "other-model"]
    return settings


def check(*args: str) -> str:
    """check_llm's output when it succeeds."""
    return run("check_llm", *args)[0]


def check_failing(*args: str) -> tuple[str, CommandError]:
    """check_llm's output and the CommandError it ends with."""
    out = io.StringIO()
    with pytest.raises(CommandError) as raised:
        call_command("check_llm", *args, stdout=out, stderr=io.StringIO())
    return out.getvalue(), raised.value


def test_check_llm_reports_latency_per_model(configured, upstream):
    out = check()

    assert f"Model service {upstream.url} (API key set)" in out
    for model in ("fake-model", "other-model"):
        assert f"  {model}: OK  complete " in out
    assert " ms, stream " in out
    assert "first token " in out
    bodies = [request["body"] for request in upstream.requests]
    assert [(body["model"], body["stream"]) for body in bodies] == [
        ("fake-model", False),
        ("fake-model", True),
        ("other-model", False),
        ("other-model", True),
    ]
    assert bodies[0]["max_tokens"] == 5


def test_check_llm_names_a_refused_key_without_printing_it(configured):
    configured.OPENAI_API_KEY = "sk-wrong-secret-123"
    out, error = check_failing()
    assert "fake-model: FAILED  the API key was refused (HTTP 401): check OPENAI_API_KEY" in out
    assert "2 of 2 models failed" in str(error)
    assert "sk-wrong" not in out + str(error)


def test_check_llm_names_an_unknown_model(configured, upstream):
    upstream.set(models=["fake-model"])
    out, error = check_failing()
    assert "fake-model: OK" in out
    assert "other-model: FAILED  the server does not know model 'other-model' (HTTP 404)" in out
    assert "1 of 2 models failed" in str(error)


def test_check_llm_checks_a_model_given_on_the_command_line(configured, upstream):
    upstream.set(models=["fake-model", "new-model"])
    out = check("--model", "new-model")
    assert "new-model (not in ASSISTANT_MODELS): OK" in out
    assert "fake-model" not in out


def test_check_llm_names_an_unreachable_base_url(configured):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    configured.OPENAI_BASE_URL = f"http://user:pw-secret@127.0.0.1:{port}/v1"

    out, error = check_failing("--model", "fake-model")

    assert f"fake-model: FAILED  cannot reach OPENAI_BASE_URL http://127.0.0.1:{port}/v1" in out
    assert "refused" in out
    assert "pw-secret" not in out  # credentials in the URL are not printed either
    assert "1 of 1 models failed" in str(error)


def test_check_llm_tells_a_failing_server_from_an_unreachable_one(configured, upstream):
    upstream.set(status=503)
    out, _error = check_failing("--model", "fake-model")
    assert f"{upstream.url} is reachable but answered HTTP 503" in out


def test_check_llm_names_a_timeout(configured, upstream):
    upstream.set(ttft=3)
    configured.OPENAI_TIMEOUT = 0.3
    out, _error = check_failing("--model", "fake-model")
    assert "fake-model: FAILED  no answer in time" in out


def test_check_llm_in_demo_mode_has_nothing_to_check(settings, upstream):
    settings.ASSISTANT_DEMO_MODE = True
    out = check()
    assert "Demo mode" in out
    assert upstream.requests == []
