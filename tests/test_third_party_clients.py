"""Third-party SSE clients against the real server: Node's `eventsource` package, Python's
httpx-sse and curl, each with a personal token as its Bearer header, over a live daphne
and the fake upstream.

The Node and Python clients are the scripts in tests/clients (docs/clients.md shows
them): each asks a question, reads the answer from the position the send returned and
prints what it sees as JSON lines. The test reads those lines as they come and cuts the
connection mid-answer (a proxy that resets it, tests/helpers/browser.py); the client
resumes with Last-Event-ID, the Node package by its own reconnect. Checked: every event
of the conversation arrived exactly once and in order (the ids count up by one from the
send's position), and the text assembled equals the answer as stored, read back through
the API with the same token.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import httpx
import pytest

from assistant.models import ApiToken
from assistant.tokens.service import token_revoke
from tests.helpers.browser import DroppingProxy
from tests.helpers.chat import create_conversation, fake, send, wait_for_final
from tests.helpers.live import ROOT, LiveServer
from tests.helpers.resume import ANSWER_EVENTS, SEED, number_of, rebuilt, seeded, words
from tests.helpers.sse import SSEEvent, parse_sse
from tests.helpers.tokens import bearer, token_for

pytestmark = pytest.mark.live

CLIENTS = ROOT / "tests" / "clients"
GUIDE = ROOT / "docs" / "clients.md"
# A client that neither ends nor prints for this long is stuck: it is killed, and fails.
STUCK_SECONDS = 60


@pytest.fixture(scope="session")
def node_client() -> list[str]:
    """The command that runs the Node client, with the npm packages of tests/clients
    installed as its lock file pins them (again whenever the lock file changes)."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.skip("Node.js and npm are not installed: the eventsource client cannot run")
    installed = CLIENTS / "node_modules" / ".installed"
    lock = CLIENTS / "package-lock.json"
    if not installed.exists() or installed.stat().st_mtime < lock.stat().st_mtime:
        result = subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"],
            cwd=CLIENTS,
            capture_output=True,
            text=True,
            check=False,
        )
        assert result.returncode == 0, f"npm ci in tests/clients failed:\n{result.stderr}"
        installed.touch()
    return [node, str(CLIENTS / "read_answer.mjs")]


@pytest.fixture(scope="session")
def python_client() -> list[str]:
    return [sys.executable, str(CLIENTS / "read_answer.py")]


@pytest.fixture(params=["node-eventsource", "python-httpx-sse"])
def client(request) -> list[str]:
    """Each client script in turn: the command that runs it."""
    return request.getfixturevalue("node_client" if request.param == "node-eventsource" else "python_client")


class SilencingProxy(DroppingProxy):
    """DroppingProxy that can also silence the connections open now: what either end
    sends is swallowed, and neither hears a close or a reset (a mobile network or a NAT
    that lost the path quietly). New connections go through."""

    def __init__(self, live_url: str) -> None:
        self.silenced: set[socket.socket] = set()
        super().__init__(live_url)

    def silence(self) -> None:
        with self.lock:
            self.silenced.update(sock for client, server, _ in self.connections for sock in (client, server))

    def _pump(self, source: socket.socket, target: socket.socket) -> None:
        super()._pump(source, _Gated(target, self.silenced))


class _Gated:
    """A socket as a pump writes to it: writes vanish once it is silenced."""

    def __init__(self, sock: socket.socket, silenced: set[socket.socket]) -> None:
        self.sock = sock
        self.silenced = silenced

    def sendall(self, data: bytes) -> None:
        if self.sock not in self.silenced:
            self.sock.sendall(data)

    def shutdown(self, how: int) -> None:
        if self.sock not in self.silenced:
            self.sock.shutdown(how)


@pytest.fixture
def proxy(live: LiveServer) -> Iterator[SilencingProxy]:
    proxy = SilencingProxy(live.url)
    yield proxy
    proxy.close()


@pytest.fixture
def secret(alice) -> str:
    return token_for(alice)


@dataclass
class Run:
    """What a client script printed, and how it ended."""

    lines: list[dict]
    returncode: int
    stderr: str

    def of(self, kind: str) -> list[dict]:
        return [line for line in self.lines if line["type"] == kind]

    @property
    def sent(self) -> dict:
        (sent,) = self.of("sent")
        return sent

    def events(self) -> list[SSEEvent]:
        """The events it received that carry an id (the conversation's, not the connection's)."""
        return [
            SSEEvent(line["event"], json.dumps(line["data"]), line["id"])
            for line in self.of("event")
            if line["event"] in ANSWER_EVENTS | {"title", "stream-reset"}
        ]


@contextmanager
def running(command: list[str], **kwargs) -> Iterator[subprocess.Popen]:
    """A process whose output the block reads as it comes; killed if it gets stuck, so
    the read fails rather than waiting forever. Ended when the block is left."""
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True, encoding="utf-8", **kwargs) as process:
        stuck = threading.Timer(STUCK_SECONDS, process.kill)
        stuck.start()
        try:
            yield process
        finally:
            stuck.cancel()
            process.terminate()
    assert process.returncode != -signal.SIGKILL, (
        f"{command[:2]} was stuck and killed after {STUCK_SECONDS} s"
    )


def run_client(
    command: list[str],
    url: str,
    secret: str,
    question: str,
    during: Callable[[dict], None] = lambda line: None,
) -> Run:
    """Run a client script against `url`; `during` sees each line as it is printed."""
    env = {**os.environ, "ASSISTANT_URL": url, "ASSISTANT_TOKEN": secret}
    with running([*command, question], cwd=CLIENTS, env=env, stderr=subprocess.PIPE) as process:
        lines = []
        for raw in process.stdout:
            lines.append(json.loads(raw))
            during(lines[-1])
        stderr = process.stderr.read()
        returncode = process.wait()
    return Run(lines, returncode, stderr)


# A limit's refusal, as the API answers it (docs/protocol.md, "A client's duties").
TOO_MANY = (
    b"HTTP/1.1 429 Too Many Requests\r\nContent-Type: application/json\r\nRetry-After: 1\r\n"
    b"Content-Length: 68\r\nConnection: close\r\n\r\n"
    b'{"error": {"code": "rate_limited", "message": "Too many requests."}}'
)


class CutAfter:
    """`during` for run_client: once the client printed `deltas` deltas its connection
    is cut ("reset": as when the network goes; "silence": it hangs without a word, found
    only by the client's watchdog; "limited": reset, and its reconnect refused with a 429
    and Retry-After: 1); new connections go through at once."""

    def __init__(self, proxy: SilencingProxy, how: str, deltas: int) -> None:
        self.proxy = proxy
        self.how = how
        self.deltas = deltas

    def __call__(self, line: dict) -> None:
        if line["type"] == "event" and line["event"] == "delta":
            self.deltas -= 1
            if self.deltas == 0 and self.how in ("reset", "limited"):
                if self.how == "limited":
                    self.proxy.answer_next(TOO_MANY)
                self.proxy.drop()
                self.proxy.restore()
            elif self.deltas == 0:
                self.proxy.silence()


def stored(live: LiveServer, secret: str, conversation_id: str, answer_id: int) -> dict:
    """The answer as the API has it, read with the token."""
    response = httpx.get(
        f"{live.url}/api/conversations/{conversation_id}/", headers=bearer(secret), timeout=10
    )
    assert response.status_code == 200, response.text
    (answer,) = [message for message in response.json()["messages"] if message["id"] == answer_id]
    return answer


def assert_every_event_once_in_order(run: Run) -> None:
    """From the answer's start, after the send's position, the ids count up by one: no
    event lost, none twice. (A new conversation's log starts above the clock, so its
    first id may be further on than the position after the one the send gave.)"""
    events = run.events()
    ids = [number_of(event.id) for event in events]
    assert events[0].event == "start"
    assert ids[0] > number_of(run.sent["position"])
    assert ids == list(range(ids[0], ids[0] + len(ids))), ids


@pytest.mark.parametrize("how", ["reset", "silence", "limited"])
def test_client_resumes_after_a_cut_without_loss_or_duplicate(live, alice, secret, proxy, client, how):
    expected = words(seeded(SEED + 23), 120)

    run = run_client(client, proxy.url, secret, fake(text=expected, tps=30), during=CutAfter(proxy, how, 10))

    assert run.returncode == 0, run.stderr
    connects = [index for index, line in enumerate(run.lines) if line["type"] == "connect"]
    # One cut, one reconnect; after a 429 one more, once its Retry-After has passed.
    assert len(connects) == (3 if how == "limited" else 2), run.lines
    assert [line["wait"] for line in run.of("limited")] == ([1] if how == "limited" else [])
    first, *_, again = connects
    # It resumed from the last event it had: after a reset with the Last-Event-ID header
    # (Node: the package's own reconnect); the Node watchdog opens a new EventSource,
    # whose first request passes the position as the query parameter.
    before = [line["id"] for line in run.lines[first:again] if line["type"] == "event" and line["id"]]
    resumed = run.lines[again]
    assert (resumed["header"] or resumed["query"]) == before[-1]
    if how == "reset":
        assert resumed["header"] == before[-1]
    # The cut was mid-answer: text came after the reconnect, and the end.
    after = [line["event"] for line in run.lines[again:] if line["type"] == "event"]
    assert "delta" in after
    assert after[-1] == "done"
    assert_every_event_once_in_order(run)
    (answer,) = run.of("answer")
    saved = stored(live, secret, run.sent["conversation"], run.sent["answer"])
    assert (answer["end"], saved["status"]) == ("done", "done")
    assert answer["text"] == rebuilt("", run.events()) == saved["content"] == expected


def test_client_stops_for_good_when_its_token_is_revoked(live, alice, secret, client):
    token = ApiToken.objects.get(user=alice)
    revoked = []

    def revoke_mid_answer(line: dict) -> None:
        if line["type"] == "event" and line["event"] == "delta" and not revoked:
            revoked.append(line)
            token_revoke(token=token, by="test")

    run = run_client(client, live.url, secret, fake(tokens=200, tps=20), during=revoke_mid_answer)

    assert run.returncode == 2, run.stderr
    events = [line for line in run.of("event") if line["event"] not in {"keep-alive"}]
    assert events[-1]["event"] == "unauthorized"
    assert events[-1]["data"] == {"reason": "token_revoked"}
    assert run.lines[-1] == events[-1]  # nothing after it: no reconnect
    assert len(run.of("connect")) == 1
    # The answer itself goes on: revoking a token ends its streams, not its user's answers.
    assert wait_for_final(run.sent["answer"], timeout=30).status == "done"


def test_curl_reads_a_stream_with_the_token(live, alice, secret):
    """The guide's curl example: `curl -N` with the Bearer header and the send's position."""
    curl = shutil.which("curl")
    if curl is None:
        pytest.skip("curl is not installed")
    expected = words(seeded(SEED + 24), 40)
    with httpx.Client(base_url=live.url, headers=bearer(secret), timeout=10) as api:
        conversation = create_conversation(api)
        sent = send(api, conversation, fake(text=expected, tps=50))
    answer = sent["assistant_message"]
    command = [
        curl,
        "-sS",
        "-N",
        "-H",
        f"Authorization: Bearer {secret}",
        "-H",
        f"Last-Event-ID: {answer['last_event_id']}",
        live.url + conversation["events_url"],
    ]
    seen = []
    with running(command) as curl_output:
        for event in parse_sse(line.removesuffix("\n") for line in curl_output.stdout):
            seen.append(event)
            if event.event == "done":
                break
    assert seen[0].event == "stream-open"
    assert [event.event for event in seen[1:]][:1] == ["start"]
    assert rebuilt("", seen) == wait_for_final(answer["id"]).content == expected


def test_the_guide_shows_the_scripts_the_tests_run():
    guide = GUIDE.read_text(encoding="utf-8")
    for script in ("read_answer.mjs", "read_answer.py"):
        assert (CLIENTS / script).read_text(encoding="utf-8") in guide, (
            f"docs/clients.md lacks {script} as it is"
        )
