"""The OpenAI-compatible gateway (/v1/) through the official openai SDK, against a real
daphne and the fake upstream: streamed and whole completions, the models, the token,
the limits, refusals, upstream failures and a client that leaves mid-stream.

What is stored with ASSISTANT_GATEWAY_STORE on and off is in test_gateway_store.py.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

import httpx
import openai
import pytest

from assistant.models import Message, Origin, UsageRecord
from assistant.tokens.service import token_revoke
from tests.helpers.chat import fake
from tests.helpers.live import LiveServer, live_env, session_client, start_daphne, stop_daphne, wait_until
from tests.helpers.tokens import bearer, leave_mid_stream, token_for
from tests.helpers.upstream import split_tokens

pytestmark = pytest.mark.live

ANSWER = "Grüße aus Köln: das Wetter ist heiter."


def gateway(server: LiveServer, api_key: str) -> openai.OpenAI:
    """The SDK as a user's script would set it up, without retries (the tests count requests)."""
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key=api_key, max_retries=0, timeout=20)


@pytest.fixture
def token(alice) -> str:
    return token_for(alice)


@pytest.fixture(params=["fast paths", "public paths"])
def server(request, transactional_db) -> LiveServer:
    """The session's daphne, and one with every fast path off: the completion's handoff
    holds under Django's own ASGI handler too (config/fastpaths/django.py)."""
    return request.getfixturevalue("live" if request.param == "fast paths" else "public_paths")


@pytest.fixture
def client(server, token) -> Iterator[openai.OpenAI]:
    with gateway(server, token) as sdk:
        yield sdk


def stored_answer() -> Message:
    return Message.objects.get(conversation__origin=Origin.GATEWAY, role=Message.Role.ASSISTANT)


def test_models_lists_the_allowlist(client):
    assert [model.id for model in client.models.list()] == ["fake-model", "other-model"]
    assert client.models.retrieve("other-model").id == "other-model"
    with pytest.raises(openai.NotFoundError) as caught:
        client.models.retrieve("gpt-9")
    assert caught.value.code == "model_not_found"


def test_a_streamed_completion_arrives_as_chunks_with_usage(client, upstream, alice):
    upstream.set(text=ANSWER)
    chunks = list(
        client.chat.completions.create(
            model="fake-model",
            messages=[
                {"role": "system", "content": "Antworte kurz."},
                {"role": "user", "content": "Wie ist das Wetter?"},
            ],
            stream=True,
            stream_options={"include_usage": True},
            temperature=0.2,
            max_tokens=50,
        )
    )
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == ANSWER
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert len({chunk.id for chunk in chunks}) == 1
    assert chunks[0].id.startswith("chatcmpl-")
    assert all(chunk.object == "chat.completion.chunk" and chunk.model == "fake-model" for chunk in chunks)
    # The usage comes last, in a chunk without choices, as the upstream counted it.
    assert chunks[-1].choices == []
    usage = chunks[-1].usage
    prompt = (len("Antworte kurz.") + len("Wie ist das Wetter?")) // 4  # as the fake counts
    assert (usage.prompt_tokens, usage.completion_tokens) == (prompt, len(split_tokens(ANSWER)))
    assert usage.total_tokens == prompt + len(split_tokens(ANSWER))
    assert all(chunk.usage is None for chunk in chunks[:-1])
    # Upstream: the messages as sent, with the options given.
    sent = upstream.requests[-1]["body"]
    assert sent["messages"] == [
        {"role": "system", "content": "Antworte kurz."},
        {"role": "user", "content": "Wie ist das Wetter?"},
    ]
    assert (sent["model"], sent["temperature"], sent["max_tokens"]) == ("fake-model", 0.2, 50)
    # The same usage record as the page's answers, marked as the gateway's.
    record = UsageRecord.objects.get()
    assert (record.user, record.origin, record.model) == (alice, Origin.GATEWAY, "fake-model")
    assert (record.prompt_tokens, record.completion_tokens) == (prompt, len(split_tokens(ANSWER)))


def test_a_stream_without_include_usage_has_no_usage_chunk(client, upstream):
    upstream.set(text=ANSWER)
    chunks = list(
        client.chat.completions.create(
            model="fake-model", messages=[{"role": "user", "content": "Hallo"}], stream=True
        )
    )
    assert all(chunk.choices and chunk.usage is None for chunk in chunks)
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == ANSWER


def test_a_completion_without_stream_is_one_object_with_usage(client, upstream):
    upstream.set(text=ANSWER, finish_reason="length")
    completion = client.chat.completions.create(
        model="other-model",
        messages=[
            {"role": "user", "content": "Erste Frage"},
            {"role": "assistant", "content": "Erste Antwort"},
            {
                "role": "user",
                "content": [{"type": "text", "text": "Zweite "}, {"type": "text", "text": "Frage"}],
            },
        ],
    )
    assert completion.object == "chat.completion"
    assert completion.model == "other-model"
    assert completion.choices[0].message.role == "assistant"
    assert completion.choices[0].message.content == ANSWER
    assert completion.choices[0].finish_reason == "length"
    assert completion.usage.completion_tokens == len(split_tokens(ANSWER))
    assert upstream.requests[-1]["body"]["messages"][-1] == {"role": "user", "content": "Zweite Frage"}
    assert UsageRecord.objects.get().origin == Origin.GATEWAY


def test_a_developer_message_goes_upstream_as_the_system_message(client, upstream):
    client.chat.completions.create(
        model="fake-model",
        messages=[{"role": "developer", "content": "Sei knapp."}, {"role": "user", "content": "Hallo"}],
    )
    assert upstream.requests[-1]["body"]["messages"][0] == {"role": "system", "content": "Sei knapp."}


def test_a_wrong_or_revoked_token_is_401_and_nothing_runs(live, alice, upstream):
    secret = token_for(alice)
    token_revoke(token=alice.api_tokens.get(), by="alice")
    for key in ("ast_" + "x" * 43, secret):
        with gateway(live, key) as sdk, pytest.raises(openai.AuthenticationError) as caught:
            sdk.chat.completions.create(model="fake-model", messages=[{"role": "user", "content": "Hallo"}])
        assert caught.value.code == "invalid_api_key"
        assert caught.value.body["type"] == "invalid_request_error"
    assert upstream.requests == []
    assert not UsageRecord.objects.exists()


@pytest.mark.parametrize("change", ["revoke", "deactivate"])
def test_revoking_the_token_ends_a_completion_that_streams(live, alice, upstream, change):
    """Changed in this test process, not the server's: its poll finds it within a second.
    The SDK gets the error as the stream's last event; the answer is kept, cancelled."""
    secret = token_for(alice)
    received = []

    def end_authorisation() -> None:
        if change == "revoke":
            token_revoke(token=alice.api_tokens.get(), by="staff")
        else:
            alice.is_active = False
            alice.save()

    def read(stream) -> None:
        ended = False
        for chunk in stream:
            received.append(chunk.choices[0].delta.content or "")
            if not ended and len(split_tokens("".join(received))) >= 3:
                end_authorisation()
                ended = True

    with gateway(live, secret) as sdk:
        stream = sdk.chat.completions.create(
            model="fake-model",
            messages=[{"role": "user", "content": fake(never_end=True, tps=50)}],
            stream=True,
        )
        with pytest.raises(openai.APIError) as caught:
            read(stream)

    assert caught.value.code == "invalid_api_key"
    assert wait_until(lambda: upstream.responses_in_progress == 0)
    answer = wait_until(lambda: Message.objects.filter(role="assistant", status="cancelled").first())
    assert answer.content.startswith("".join(received))


def test_a_session_cookie_does_not_authenticate_the_gateway(live, alice, upstream):
    with session_client(live, alice) as browser:
        body = {"model": "fake-model", "messages": [{"role": "user", "content": "Hallo"}]}
        completions = browser.post("/v1/chat/completions", json=body)
        listed = browser.get("/v1/models")
    for response in (completions, listed):
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "invalid_api_key"
        assert set(response.json()["error"]) == {"message", "type", "param", "code"}
    assert upstream.requests == []


def test_a_model_off_the_allowlist_is_404_and_nothing_runs(client, upstream):
    with pytest.raises(openai.NotFoundError) as caught:
        client.chat.completions.create(model="gpt-9", messages=[{"role": "user", "content": "Hallo"}])
    assert caught.value.code == "model_not_found"
    assert caught.value.body["param"] == "model"
    assert upstream.requests == []
    assert not UsageRecord.objects.exists()


IMAGE = {"type": "image_url", "image_url": {"url": "https://example.org/a.png"}}
UNSUPPORTED = [
    pytest.param(
        {"tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}]}, "tools", id="tools"
    ),
    pytest.param({"n": 2}, "n", id="n"),
    pytest.param({"stop": ["\n"]}, "stop", id="stop"),
    pytest.param({"response_format": {"type": "json_object"}}, "response_format", id="response_format"),
    pytest.param({"temperature": 3}, "temperature", id="temperature"),
    pytest.param({"max_tokens": 0}, "max_tokens", id="max_tokens"),
    pytest.param({"messages": []}, "messages", id="no-messages"),
    pytest.param({"messages": [{"role": "system", "content": "System"}]}, "messages", id="no-user-message"),
    pytest.param({"messages": [{"role": "tool", "content": "x"}]}, "messages[0].role", id="tool"),
    pytest.param({"messages": [{"role": "user", "content": [IMAGE]}]}, "messages[0].content", id="image"),
    pytest.param({"messages": [{"role": "user", "content": "a\x00b"}]}, "messages[0].content", id="nul"),
    pytest.param({"stream_options": {"include_usage": True}}, "stream_options", id="options-unstreamed"),
]


@pytest.mark.parametrize(("change", "param"), UNSUPPORTED)
def test_a_parameter_the_gateway_cannot_honour_is_a_400_naming_it(client, upstream, change, param):
    body = {"model": "fake-model", "messages": [{"role": "user", "content": "Hallo"}], **change}
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(**body)
    assert caught.value.body["param"] == param
    assert caught.value.body["type"] == "invalid_request_error"
    assert caught.value.body["message"]
    assert upstream.requests == []
    assert not UsageRecord.objects.exists()


def test_neutral_values_of_unsupported_parameters_are_taken(client, upstream):
    completion = client.chat.completions.create(
        model="fake-model",
        messages=[{"role": "user", "content": "Hallo"}],
        n=1,
        top_p=1,
        presence_penalty=0,
        frequency_penalty=0,
        user="script-42",
    )
    assert completion.choices[0].finish_reason == "stop"
    assert "top_p" not in upstream.requests[-1]["body"]


def test_a_body_that_is_not_json_is_a_400_in_openais_shape(live, token, upstream):
    response = httpx.post(
        f"{live.url}/v1/chat/completions",
        content=b"{not json",
        headers={**bearer(token), "Content-Type": "application/json"},
    )
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_request_error"
    assert response.json()["error"]["code"] == "invalid_json"


def test_a_long_conversation_is_taken_and_an_oversized_one_is_a_413_in_openais_shape(
    client, upstream, settings
):
    """A megabyte of files from an IDE plugin passes, four times Django's body limit for
    the rest of the API; past ASSISTANT_GATEWAY_MAX_BODY_BYTES (4 MiB) the server refuses
    before reading it, in the shape the SDK reads."""
    files = "def f():\n    return 'Grüße'\n" * 32_000  # about 1 MB
    assert len(files.encode()) > 2 * settings.DATA_UPLOAD_MAX_MEMORY_SIZE

    taken = client.chat.completions.create(
        model="fake-model",
        messages=[{"role": "system", "content": files}, {"role": "user", "content": "Erkläre"}],
    )
    with pytest.raises(openai.APIStatusError) as refused:
        client.chat.completions.create(model="fake-model", messages=[{"role": "user", "content": files * 5}])

    assert taken.choices[0].finish_reason == "stop"
    assert upstream.requests[-1]["body"]["messages"][0]["content"] == files
    assert refused.value.status_code == 413
    assert refused.value.code == "request_too_large"
    assert refused.value.body["type"] == "invalid_request_error"
    assert len(upstream.requests) == 1


def test_an_unknown_path_under_v1_is_404_in_openais_shape(live, token):
    response = httpx.post(f"{live.url}/v1/embeddings", json={}, headers=bearer(token))
    assert response.status_code == 404
    assert set(response.json()["error"]) == {"message", "type", "param", "code"}


def test_an_upstream_failure_before_the_answer_is_an_http_error(client, upstream):
    with pytest.raises(openai.InternalServerError) as caught:
        client.chat.completions.create(
            model="fake-model",
            messages=[{"role": "user", "content": fake(status=503, retry_after=7)}],
            stream=True,
        )
    assert caught.value.status_code == 503
    assert caught.value.code == "upstream_unavailable"
    assert caught.value.response.headers["Retry-After"] == "7"
    answer = stored_answer()
    assert (answer.status, answer.error_type, answer.content) == ("error", "upstream_unavailable", "")


def test_an_upstream_failure_mid_stream_ends_the_stream_with_an_error_event(client, upstream):
    question = fake(tokens=10, error_after=3)
    stream = client.chat.completions.create(
        model="fake-model", messages=[{"role": "user", "content": question}], stream=True
    )
    texts: list[str] = []

    def read_all() -> None:
        texts.extend(chunk.choices[0].delta.content or "" for chunk in stream)

    with pytest.raises(openai.APIError) as caught:
        read_all()
    assert caught.value.body["code"] == "upstream_error"
    assert caught.value.body["type"] == "server_error"
    assert "".join(texts) == "tok0 tok1 tok2"
    answer = stored_answer()
    assert (answer.status, answer.error_type, answer.content) == ("error", "upstream_error", "tok0 tok1 tok2")


def test_a_client_that_leaves_mid_stream_stops_the_upstream(client, upstream, alice):
    received = leave_mid_stream(client, 5)
    # The gateway closed its upstream response: the fake answers it until its client leaves.
    assert wait_until(lambda: upstream.responses_in_progress == 0)
    answer = wait_until(lambda: Message.objects.filter(status="cancelled").first())
    assert answer.content.startswith(received)
    assert answer.finish_reason == "cancelled"
    record = UsageRecord.objects.get(user=alice)
    # No usage from an upstream cut off: the text generated counts, estimated.
    assert record.completion_tokens >= len(received) // 3
    assert record.message_id == answer.pk


def test_a_limit_of_the_page_meets_the_gateway_too(limited, bob, upstream):
    """The per-minute limit counts the page's answers and the gateway's alike: 429 with
    Retry-After, which the SDK raises as RateLimitError."""
    UsageRecord.objects.create(user=bob, model="fake-model", origin=Origin.PAGE)
    with gateway(limited, token_for(bob)) as sdk:
        sdk.chat.completions.create(model="fake-model", messages=[{"role": "user", "content": "Eins"}])
        with pytest.raises(openai.RateLimitError) as caught:
            sdk.chat.completions.create(model="fake-model", messages=[{"role": "user", "content": "Zwei"}])
    assert caught.value.code == "rate_limit_exceeded"
    assert 0 < int(caught.value.response.headers["Retry-After"]) <= 61
    assert len(upstream.requests) == 1
    assert UsageRecord.objects.filter(origin=Origin.GATEWAY).count() == 1


def test_the_daily_quota_is_429_insufficient_quota(limited, bob, upstream):
    UsageRecord.objects.create(user=bob, model="fake-model", prompt_tokens=600, completion_tokens=400)
    question = [{"role": "user", "content": "Hallo"}]
    with gateway(limited, token_for(bob)) as sdk, pytest.raises(openai.RateLimitError) as caught:
        sdk.chat.completions.create(model="fake-model", messages=question, stream=True)
    assert caught.value.code == "insufficient_quota"
    assert caught.value.body["type"] == "insufficient_quota"
    assert int(caught.value.response.headers["Retry-After"]) > 0
    assert upstream.requests == []


def test_streamed_completions_hold_no_request_thread(two_lanes, alice, upstream):
    """With two request threads, three streams open at once and a request is served while
    they all still stream: a completion runs on the event loop, not in a request's thread."""
    secret = token_for(alice)
    first_text = threading.Barrier(4, timeout=30)
    results: list[str] = []

    def stream_one(index: int) -> None:
        with gateway(two_lanes, secret) as sdk:
            stream = sdk.chat.completions.create(
                model="fake-model",
                messages=[{"role": "user", "content": fake(f"Strom {index}", tokens=60, tps=20)}],
                stream=True,
            )
            parts: list[str] = []
            for chunk in stream:
                text = chunk.choices[0].delta.content or ""
                if text and not parts:
                    first_text.wait()
                if text:
                    parts.append(text)
            results.append("".join(parts))

    threads = [threading.Thread(target=stream_one, args=(index,)) for index in range(3)]
    for thread in threads:
        thread.start()
    first_text.wait()  # every stream has its first text: none waits for a thread
    with gateway(two_lanes, secret) as sdk:
        assert [model.id for model in sdk.models.list()] == ["fake-model", "other-model"]
    assert upstream.responses_in_progress == 3  # answered while all three still stream
    for thread in threads:
        thread.join()
    assert len(results) == 3
    assert all(len(split_tokens(text)) == 60 for text in results)


def _server(fake_upstream, name: str, **env: str) -> Iterator[LiveServer]:
    server = start_daphne(live_env(fake_upstream, **env), name)
    yield server
    stop_daphne(server)


@pytest.fixture(scope="module")
def limited_server(django_db_setup, django_db_blocker, fake_upstream) -> Iterator[LiveServer]:
    """A daphne with the answer limits on: 2 a minute, 1,000 tokens a day."""
    yield from _server(
        fake_upstream,
        "daphne-gateway-limited",
        ASSISTANT_RATE_LIMIT_PER_MINUTE="2",
        ASSISTANT_DAILY_TOKEN_QUOTA="1000",
    )


@pytest.fixture
def limited(limited_server, transactional_db, upstream) -> LiveServer:
    return limited_server


@pytest.fixture(scope="module")
def two_lanes_server(django_db_setup, django_db_blocker, fake_upstream) -> Iterator[LiveServer]:
    """A daphne with two request threads (ASSISTANT_REQUEST_THREADS)."""
    yield from _server(fake_upstream, "daphne-gateway-lanes", ASSISTANT_REQUEST_THREADS="2")


@pytest.fixture
def two_lanes(two_lanes_server, transactional_db, upstream) -> LiveServer:
    return two_lanes_server


@pytest.fixture(scope="module")
def public_paths_server(django_db_setup, django_db_blocker, fake_upstream) -> Iterator[LiveServer]:
    """A daphne with every fast path off (ASSISTANT_FAST_PATHS)."""
    yield from _server(fake_upstream, "daphne-gateway-public-paths", ASSISTANT_FAST_PATHS="off")


@pytest.fixture
def public_paths(public_paths_server, transactional_db, upstream) -> LiveServer:
    return public_paths_server
