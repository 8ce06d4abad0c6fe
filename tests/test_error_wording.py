"""The error event's words, for a person who is not technical: what happened and what to do,
with the wait the model service asked for (docs/protocol.md, "Error types")."""

from __future__ import annotations

import pytest

from assistant.models import Message
from assistant.providers.errors import provider_error
from tests.helpers.chat import create_conversation, fake, send, stream_answer, text_of

pytestmark = pytest.mark.live


def error_event(client, behaviour: dict) -> tuple[dict, str, Message]:
    """The error event of an answer against the fake upstream with `behaviour`, the text
    before it, and the stored answer."""
    conversation = create_conversation(client)
    sent = send(client, conversation, fake(tokens=10, **behaviour))
    events = stream_answer(client, conversation, sent)
    assert events[-1].event == "error"
    return events[-1].json(), text_of(events), Message.objects.get(pk=sent["assistant_message"]["id"])


def test_rate_limit_says_how_many_seconds_to_wait(alice_http, upstream):
    payload, _text, stored = error_event(alice_http, {"status": 429, "retry_after": 7})

    assert (payload["type"], payload["code"], payload["retryable"]) == ("rate_limited", 429, True)
    assert payload["retry_after"] == 7
    assert payload["detail"] == (
        "The model service is receiving too many requests right now. Please wait 7 seconds and try again."
    )
    assert stored.error_detail == payload["detail"]


def test_rate_limit_without_retry_after_says_to_wait_a_minute(alice_http, upstream):
    payload, _text, _stored = error_event(alice_http, {"status": 429})

    assert "retry_after" not in payload
    assert "Please wait a minute and try again." in payload["detail"]


def test_connection_cut_mid_answer_is_named_as_such_and_keeps_the_text(alice_http, upstream):
    payload, text, stored = error_event(alice_http, {"reset_after": 3})

    assert (payload["type"], payload["code"], payload["retryable"]) == ("connection_lost", 502, True)
    assert payload["detail"].startswith("The connection to the model service broke off")
    assert "try again" in payload["detail"]
    assert "retry_after" not in payload
    assert text == "tok0 tok1 tok2" == stored.content
    assert stored.error_type == "connection_lost"


def test_refused_credentials_ask_for_the_administrator(alice_http, upstream):
    payload, _text, _stored = error_event(alice_http, {"status": 401})

    assert (payload["type"], payload["code"], payload["retryable"]) == ("auth_failed", 401, False)
    assert "ask your administrator" in payload["detail"]
    assert "Trying again will not help" in payload["detail"]


@pytest.mark.parametrize("type_", ["bad_request", "auth_failed", "model_not_found"])
def test_errors_a_retry_cannot_help_send_the_user_to_the_administrator(type_):
    error = provider_error(type_, 400)
    assert not error.retryable
    assert "administrator" in error.detail


@pytest.mark.parametrize(
    ("seconds", "wait"),
    [(1, "wait 1 second "), (0.2, "wait 1 second "), (119, "wait 119 seconds"), (120, "wait 2 minutes"),
     (3600, "wait 60 minutes")],
)  # fmt: skip
def test_the_wait_is_whole_seconds_then_minutes(seconds, wait):
    error = provider_error("rate_limited", 429, seconds)
    assert wait in error.detail
    assert isinstance(error.retry_after, int)


def test_an_unavailable_service_that_said_when_names_the_wait():
    error = provider_error("upstream_unavailable", 503, 30)
    assert (error.retry_after, error.retryable) == (30, True)
    assert "wait 30 seconds" in error.detail


def test_a_tool_the_model_misused_says_to_try_again_or_rephrase_without_a_retry_button():
    error = provider_error("tool_error", 502)
    assert (error.code, error.type, error.retryable) == (502, "tool_error", True)
    assert error.detail == (
        "The model used a tool in a way Assistant does not understand. Try again or rephrase."
    )


def test_a_call_of_a_tool_not_offered_is_an_error_event_that_keeps_the_text(alice_http, upstream):
    """No tools are offered to a plain chat: a model that calls one anyway ends its answer
    with the error, after the text it wrote."""
    payload, text, stored = error_event(alice_http, {"tool_calls": [{"name": "delete_everything"}]})

    assert (payload["type"], payload["code"], payload["retryable"]) == ("tool_error", 502, True)
    assert payload["detail"].startswith("The model used a tool")
    assert text == " ".join(f"tok{i}" for i in range(10)) == stored.content
    assert stored.error_type == "tool_error"
