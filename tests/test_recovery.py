"""Retry, and answers that outlive their server process: crash, restart, graceful stop."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import timedelta

import pytest
from django.utils import timezone

from assistant import processes
from assistant.models import Message, ServerProcess
from tests.helpers.chat import (
    create_conversation,
    fake,
    last_answer_request,
    read_until_text,
    send,
    stop_mid_answer,
    stream_answer,
    text_of,
    wait_for_final,
)
from tests.helpers.live import live_env, session_client, start_daphne, stop_daphne, wait_until
from tests.helpers.sse import answer_events, parse_sse, sse_lines

pytestmark = pytest.mark.live

SHORT_LEASE = {"ASSISTANT_LEASE_SECONDS": "1.5", "ASSISTANT_HEARTBEAT_SECONDS": "0.3"}


def test_retry_regenerates_a_failed_answer_and_keeps_the_old_one(alice_http, upstream):
    conversation = create_conversation(alice_http)
    # The upstream fails the first attempt only.
    question = fake(text="Jetzt klappt es.", status=503, status_times=1, tag="retry")
    failed = send(alice_http, conversation, question)
    assert stream_answer(alice_http, conversation, failed)[-1].event == "error"
    failed_id = failed["assistant_message"]["id"]

    response = alice_http.post(f"/api/messages/{failed_id}/retry/")

    assert response.status_code == 202
    retried = response.json()
    events = stream_answer(alice_http, conversation, retried)
    assert events[0].json()["replaces"] == failed_id
    assert events[0].json()["user_message"]["content"] == question
    assert text_of(events) == "Jetzt klappt es."
    old = Message.objects.get(pk=failed_id)
    assert old.superseded
    assert (old.status, old.error_code) == ("error", 503)
    assert Message.objects.get(pk=retried["assistant_message"]["id"]).content == "Jetzt klappt es."
    # The upstream saw the question once, without the failed answer.
    assert last_answer_request(upstream)["body"]["messages"] == [{"role": "user", "content": question}]


def test_retry_refuses_what_it_cannot_regenerate(alice_http, bob_http, upstream):
    conversation = create_conversation(alice_http)
    first = send(alice_http, conversation, fake(tokens=2))
    stream_answer(alice_http, conversation, first)
    second = send(alice_http, conversation, fake(tokens=50, tps=20))
    first_id, second_id = first["assistant_message"]["id"], second["assistant_message"]["id"]

    assert (
        alice_http.post(f"/api/messages/{second_id}/retry/").json()["error"]["code"] == "answer_in_progress"
    )
    alice_http.post(f"/api/messages/{second_id}/cancel/")
    wait_for_final(second_id)
    response = alice_http.post(f"/api/messages/{first_id}/retry/")
    assert (response.status_code, response.json()["error"]["code"]) == (409, "not_latest")
    assert bob_http.post(f"/api/messages/{second_id}/retry/").status_code == 404
    question_id = first["user_message"]["id"]
    assert alice_http.post(f"/api/messages/{question_id}/retry/").status_code == 404
    assert Message.objects.filter(conversation_id=conversation["id"]).count() == 4
    assert not Message.objects.filter(superseded=True).exists()


@pytest.fixture
def short_lease_server(django_db_setup, fake_upstream):
    """Starts daphnes of their own, with a short lease unless `lease` says otherwise."""
    servers = []

    def start(lease: dict[str, str] = SHORT_LEASE):
        server = start_daphne(live_env(fake_upstream, **lease), f"daphne-recovery-{len(servers)}")
        servers.append(server)
        return server

    yield start
    for server in servers:
        if server.process.poll() is None:
            stop_daphne(server)


def test_a_process_of_this_host_is_crashed_only_when_its_pid_is_gone():
    host, key = processes.PROCESS_ID.split(":")[0], processes.NAMESPACE_KEY
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()  # reaped: its pid names nothing now
    assert processes.crashed_here(f"{host}:{child.pid}:0a1b2c3d:{key}")
    assert not processes.crashed_here(processes.PROCESS_ID)  # this one
    assert not processes.crashed_here(f"{host}:{os.getppid()}:0a1b2c3d:{key}")  # alive
    # Another pid namespace or host, or a name from before namespace keys: the lease decides.
    assert not processes.crashed_here(f"{host}:{child.pid}:0a1b2c3d:ffffffff")
    assert not processes.crashed_here(f"other-host:{child.pid}:0a1b2c3d:{key}")
    assert not processes.crashed_here(f"{host}:{child.pid}:0a1b2c3d")


def test_a_restarted_process_marks_the_crashed_ones_answers_at_once_unasked(
    short_lease_server, transactional_db, alice, upstream
):
    # A lease of ten minutes: only the dead pid can end the answer within the wait below.
    long_lease = {"ASSISTANT_LEASE_SECONDS": "600", "ASSISTANT_HEARTBEAT_SECONDS": "0.3"}
    first = short_lease_server(long_lease)
    with session_client(first, alice) as client:
        conversation = create_conversation(client)
        sent = send(client, conversation, fake(never_end=True, tps=60))
        read_until_text(client, conversation, sent, 20)
    answer_id = sent["assistant_message"]["id"]
    first.process.send_signal(signal.SIGKILL)
    first.process.wait()
    assert Message.objects.get(pk=answer_id).status == "streaming"

    short_lease_server(long_lease)  # started, and asked nothing about conversations

    assert wait_until(lambda: Message.objects.get(pk=answer_id).status == "interrupted", timeout=20)
    assert Message.objects.get(pk=answer_id).error_type == "interrupted"


def test_crashed_process_leaves_answers_interrupted_and_clients_informed(
    short_lease_server, transactional_db, alice, upstream
):
    first = short_lease_server()
    with session_client(first, alice) as client:
        conversation = create_conversation(client)
        sent = send(client, conversation, fake(never_end=True, tps=60))
        answer_id = sent["assistant_message"]["id"]
        seen, last_id = read_until_text(client, conversation, sent, 120)
    time.sleep(0.7)  # at least one partial write
    first.process.send_signal(signal.SIGKILL)
    first.process.wait()
    stored = Message.objects.get(pk=answer_id)
    assert stored.status == "streaming"
    # What was stored and what the client saw are one text, each cut at its own point.
    shorter, longer = sorted((seen, stored.content), key=len)
    assert stored.content
    assert longer.startswith(shorter)

    second = short_lease_server()
    with session_client(second, alice) as client:
        # The old position means nothing to the new process: a reset, then the stored state.
        with client.stream("GET", conversation["events_url"], headers={"Last-Event-ID": last_id}) as response:
            kinds = []
            for event in parse_sse(sse_lines(response)):
                kinds.append(event.event)
                if event.event == "stream-reset":
                    break
        assert kinds == ["stream-open", "stream-reset"]
        state = client.get(conversation["detail_url"]).json()
        (shown,) = [m for m in state["messages"] if m["id"] == answer_id]
        if shown["status"] == "streaming":
            # Not yet swept: the client waits and hears the interruption live.
            with client.stream(
                "GET", conversation["events_url"], headers={"Last-Event-ID": state["last_event_id"]}
            ) as response:
                events = list(answer_events(response, answer_id))
            assert events[-1].event == "error"
            error = events[-1].json()
        else:
            # Swept before the client asked: the stored state says the same.
            error = shown["error"]
    assert (error["type"], error["code"], error["retryable"]) == ("interrupted", 503, True)
    message = Message.objects.get(pk=answer_id)
    assert message.status == "interrupted"
    assert message.error_type == "interrupted"
    assert message.content == stored.content
    assert len(message.content) > 0


def test_graceful_stop_stores_answers_as_interrupted(short_lease_server, transactional_db, alice, upstream):
    server = short_lease_server()
    with session_client(server, alice) as client:
        conversation = create_conversation(client)
        sent = send(client, conversation, fake(never_end=True, tps=60))
        seen, _ = read_until_text(client, conversation, sent, 60)
    server.process.send_signal(signal.SIGTERM)
    server.process.wait(15)
    message = Message.objects.get(pk=sent["assistant_message"]["id"])
    assert message.status == "interrupted"
    assert message.error_type == "interrupted"
    assert message.content.startswith(seen)
    # Its connections to the model service were closed, not dropped at exit.
    assert "Unclosed" not in server.log_text()


def test_stop_sent_to_another_process_stops_the_answer(live, short_lease_server, alice, upstream):
    # The live server's lease: with a shorter one, the other process would take the live
    # one (a heartbeat every 5 s) for gone whenever its last beat is over 1.5 s old, and
    # end the answer itself (the CI failure of 26311d2).
    other = short_lease_server(lease={})
    with session_client(live, alice) as client, session_client(other, alice) as other_client:
        conversation = create_conversation(client)
        sent = send(client, conversation, fake(never_end=True, tps=50))
        stop_mid_answer(client, other_client, conversation, sent)


def test_stop_of_an_answer_whose_process_is_gone_ends_it_at_once(alice_http, live, alice, upstream):
    conversation = create_conversation(alice_http)
    # A crashed process leaves its last heartbeat behind.
    ServerProcess.objects.create(pk="crashed-host:1:abcd", heartbeat_at=timezone.now() - timedelta(minutes=5))
    orphan = Message.objects.create(
        conversation_id=conversation["id"],
        role="assistant",
        status="streaming",
        content="Bis hierher",
        generated_by="crashed-host:1:abcd",
    )
    state = alice_http.get(conversation["detail_url"]).json()
    with alice_http.stream(
        "GET", conversation["events_url"], headers={"Last-Event-ID": state["last_event_id"]}
    ) as response:
        assert alice_http.post(f"/api/messages/{orphan.pk}/cancel/").status_code == 202
        events = list(answer_events(response, orphan.pk))
    assert events[-1].event in {"done", "error"}
    orphan.refresh_from_db()
    assert orphan.status in {"cancelled", "interrupted"}
    assert orphan.content == "Bis hierher"
