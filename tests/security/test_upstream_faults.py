"""UPSTREAM FAULTS under concurrency: 20 answers at once per kind of failure, on a daphne of
its own with a fake upstream of its own, so what it holds open can be counted.

Each answer ends in a stored final state and exactly one final event that agrees with it,
the text that arrived before the failure kept. Afterwards the server holds no more file
descriptors, threads, asyncio tasks or upstream connections than after a warm-up of the
same size, and no upstream response is left open. Single answers per failure (every
status, the error mapping) are in
tests/test_streaming.py; the maximum answer time is ASSISTANT_MAX_ANSWER_SECONDS.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import httpx
import pytest
from django.contrib.auth import get_user_model

from assistant.models import Message
from tests.helpers.chat import create_conversation, fake, send, stream_answer, text_of
from tests.helpers.counting_asgi import COUNTERS_PATH
from tests.helpers.live import LiveServer, live_env, session_client, start_daphne, stop_daphne
from tests.helpers.sse import SSEEvent
from tests.helpers.upstream import FakeUpstream

pytestmark = pytest.mark.live

CONCURRENT = 20
MAX_ANSWER_SECONDS = 3
READ_TIMEOUT_SECONDS = 1


@dataclass(frozen=True)
class Fault:
    behaviour: dict
    event: str  # the final event
    code: int | None = None
    type: str | None = None
    partial: str = ""  # the text that arrives before the failure


FIRST_THREE = "tok0 tok1 tok2"
FAULTS = {
    "429_storm": Fault({"status": 429, "retry_after": 3}, "error", 429, "rate_limited"),
    "500": Fault({"status": 500}, "error", 500, "upstream_unavailable"),
    "502": Fault({"status": 502}, "error", 502, "upstream_unavailable"),
    "503": Fault({"status": 503}, "error", 503, "upstream_unavailable"),
    "no_headers": Fault({"header_delay": 3}, "error", 504, "timeout"),
    "stall_mid_stream": Fault({"stall_after": 3}, "error", 504, "timeout", FIRST_THREE),
    "reset_mid_stream": Fault({"reset_after": 3}, "error", 502, "connection_lost", FIRST_THREE),
    "malformed_chunk": Fault({"malformed_after": 3}, "error", 502, "upstream_error", FIRST_THREE),
    "in_stream_error": Fault({"error_after": 3}, "error", 502, "upstream_error", FIRST_THREE),
    "slow_drip": Fault(
        {"tokens": 8, "tps": 4, "ttft": 0.5},
        "done",
        partial="tok0" + "".join(f" tok{i}" for i in range(1, 8)),
    ),
    # Drips forever: the maximum answer time ends it.
    "never_ends": Fault({"never_end": True, "tps": 20}, "error", 504, "timeout"),
}


@dataclass
class Server:
    live: LiveServer
    upstream: FakeUpstream
    counters: httpx.Client
    baseline: dict[str, int]


def established_to(pid: int, port: int) -> int:
    """TCP connections of process `pid` in state ESTABLISHED to `port` on this host."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue  # closed meanwhile
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    count = 0
    with open(f"/proc/{pid}/net/tcp") as table:
        next(table)
        for row in table:
            fields = row.split()
            remote_port, state, inode = int(fields[2].split(":")[1], 16), fields[3], fields[9]
            count += remote_port == port and state == "01" and inode in inodes
    return count


def resources(live: LiveServer, upstream: FakeUpstream, counters: httpx.Client) -> dict[str, int]:
    """What the daphne process holds: counted from /proc and, for tasks, by its event loop
    (asked over `counters`, one kept-alive connection that is part of every count)."""
    pid = live.process.pid
    return {
        "asyncio_tasks": counters.get(COUNTERS_PATH).json()["asyncio_tasks"],
        "fds": len(os.listdir(f"/proc/{pid}/fd")),
        "threads": len(os.listdir(f"/proc/{pid}/task")),
        "tcp_to_upstream": established_to(pid, upstream.port),
        "upstream_connections": upstream.active_connections,
        # Idle keep-alive connections are the pool's; an answer left open is a leak.
        "upstream_responses_in_progress": upstream.responses_in_progress,
    }


def settled(server: Server, timeout: float = 30) -> dict[str, int]:
    """The counts once they are back at the baseline, or as they are after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        counts = resources(server.live, server.upstream, server.counters)
        if all(counts[key] <= server.baseline[key] for key in counts) or time.monotonic() > deadline:
            return counts
        time.sleep(0.2)


def concurrent_answers(live: LiveServer, user, behaviour: dict) -> list[tuple[list[SSEEvent], int]]:
    """CONCURRENT answers sent at the same moment, each followed to its end: (events, answer id)."""
    barrier = threading.Barrier(CONCURRENT)

    def one(client: httpx.Client) -> tuple[list[SSEEvent], int]:
        conversation = create_conversation(client, title="fault")  # named: no title request
        barrier.wait(30)
        sent = send(client, conversation, fake(**behaviour))
        return stream_answer(client, conversation, sent), sent["assistant_message"]["id"]

    with session_client(live, user) as login:
        clients = [
            httpx.Client(base_url=live.url, cookies=login.cookies, headers=login.headers, timeout=30)
            for _ in range(CONCURRENT)
        ]
    try:
        with ThreadPoolExecutor(CONCURRENT) as pool:
            return list(pool.map(one, clients))
    finally:
        for client in clients:
            client.close()


@pytest.fixture(scope="module")
def server(django_db_setup, django_db_blocker) -> Iterator[Server]:
    """The daphne under attack, warmed up by CONCURRENT ordinary answers: its baseline then
    includes the keep-alive connections those leave in the upstream client's pool."""
    with FakeUpstream(api_key="test-key-abc123") as upstream:
        env = live_env(
            upstream,
            OPENAI_TIMEOUT=str(READ_TIMEOUT_SECONDS),
            ASSISTANT_MAX_ANSWER_SECONDS=str(MAX_ANSWER_SECONDS),
        )
        live = start_daphne(
            env, "daphne-security-faults", application="tests.helpers.counting_asgi:application"
        )
        try:
            with django_db_blocker.unblock():
                user = get_user_model().objects.create_user("warm-up")
                concurrent_answers(live, user, {"tokens": 30, "tps": 50})
                user.delete()
            time.sleep(0.5)  # the answers' last tasks end after their final event
            with httpx.Client(base_url=live.url) as counters:
                yield Server(live, upstream, counters, resources(live, upstream, counters))
        finally:
            stop_daphne(live)


@pytest.mark.parametrize("kind", FAULTS.keys())
def test_concurrent_upstream_faults_end_stored_and_announced_and_leak_nothing(
    server, transactional_db, alice, kind
):
    fault = FAULTS[kind]

    answers = concurrent_answers(server.live, alice, fault.behaviour)

    failures = []
    for events, answer_id in answers:
        final = events[-1]
        message = Message.objects.get(pk=answer_id)
        text = text_of(events)
        got = (final.event, final.json().get("code"), final.json().get("type"), message.status)
        expected = (fault.event, fault.code, fault.type, "done" if fault.event == "done" else "error")
        if got != expected:
            failures.append(f"{answer_id}: {got} instead of {expected}")
        if [e.event for e in events].count(final.event) != 1 or events[0].event != "start":
            failures.append(f"{answer_id}: events {[e.event for e in events]}")
        if message.content != text:
            failures.append(f"{answer_id}: stored {message.content!r}, streamed {text!r}")
        if kind == "never_ends":
            if not text.startswith("tok0 tok1 tok2") or final.json()["retryable"] is not True:
                failures.append(f"{answer_id}: never-ending answer ended with {text!r}, {final.data}")
        elif text != fault.partial:
            failures.append(f"{answer_id}: text {text!r}")
        if fault.event == "error" and (message.error_code, message.error_type) != (fault.code, fault.type):
            failures.append(f"{answer_id}: stored error {message.error_code} {message.error_type}")
    assert failures == [], failures
    assert len(answers) == CONCURRENT
    assert not Message.objects.filter(status=Message.Status.STREAMING).exists()
    counts = settled(server)
    assert all(counts[key] <= server.baseline[key] for key in counts), (counts, server.baseline)
