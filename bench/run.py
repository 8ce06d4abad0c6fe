"""The streaming benchmark: N concurrent answers through Assistant and through a classic
pass-through proxy side by side, checked token by token; then N idle event streams.

Three processes at a time, so that on a small machine each figure belongs to one of them:
the fake upstream (``tests.helpers.upstream``, pacing tokens and stamping each with its write
time), the server under test, and this process, an asyncio load generator with a minimal
HTTP client. The server is one daphne serving the app (``tests.helpers.counting_asgi``, which also
counts SQL writes) or one uvicorn serving the pass-through proxy (``bench.proxy``). For
each N each of them gets a fresh process (Assistant a fresh database too), answers one
short warm-up question, then N questions at the same seeded arrival times over a few
seconds; every answer's stream is read to its end. Last, a fresh daphne holds ``--idle``
event streams open on conversations that are not answering, and its threads, open files,
database connections and memory are compared with those before they opened.

Usage: ``make bench`` (N = 10, 50, 100, 150, 200; 1000 idle streams) or
``python -m bench.run --streams 10 50 --idle 1000 --tokens 300 --tps 30 --ttft 0.2 --spread 5``.
Exits non-zero when an Assistant stream did not complete or a token was lost, duplicated
or stored differently from what was streamed, or an idle stream did not open (the proxy's
failures are reported, not fatal). See bench/README.md for what each figure means.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import math
import os
import random
import re
import resource
import secrets
import select
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.client import HTTPError, Response, SSEEvent, request, request_json, sse_events
from bench.procstat import cpu_seconds, machine_busy_seconds, memory_mb, open_files, thread_count
from tests.helpers.counting_asgi import COUNTERS_PATH

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts"
HOST = "127.0.0.1"
MODEL = "fake-model"
API_KEY = "bench-upstream-key"
PROXY_PATH = "/chat"
START_TIMEOUT = 30.0  # seconds for a process to come up
BUSY_MACHINE_PERCENT = 10  # warn when other processes used this much of a core during a round
# A system "held" a round when every stream completed with no token lost or duplicated and
# its p99s stayed within these (issue 7's capacity target).
HELD_TOKEN_P99_MS = 150
HELD_TTFT_P99_MS = 300
# Idle streams open this many at a time: a thousand connects at once can overflow the
# server's listen backlog (Twisted's default is 50) and measure SYN retransmits instead.
IDLE_CONCURRENCY = 50
# One stamped token: "w<index>:<monotonic ns when the upstream wrote it>".
TOKEN_RE = re.compile(r"w(\d+):(\d+)")
# Server log lines worth reporting: log records at WARNING and above (daphne's format and
# uvicorn's), tracebacks, 5xx answers.
LOG_PROBLEM_RE = re.compile(r" (WARNING|ERROR|CRITICAL) |^(WARNING|ERROR|CRITICAL):|Traceback|\" 5\d\d ")


@dataclass(frozen=True)
class Workload:
    tokens: int
    tps: float
    ttft: float
    spread: float
    seed: int
    streams_per_user: int
    slack: float
    server_env: dict[str, str]
    # Assistant on PostgreSQL and Redis (their URLs) instead of SQLite and memory.
    scaleout: tuple[str, str] | None = None

    def question(self) -> str:
        behaviour = {"tokens": self.tokens, "tps": self.tps, "ttft": self.ttft, "stamp": True}
        return "Benchmark question FAKE" + json.dumps(behaviour)

    def arrivals(self, n: int) -> list[float]:
        """Start offsets of n streams: uniformly random over `spread`, the same every run.

        Not evenly spaced: 100 ms apart is exactly 3 token intervals at 30 tokens/s, which
        lines up every stream's token clock and measures bursts no real load produces.
        """
        rng = random.Random(self.seed)
        return sorted(rng.uniform(0, self.spread) for _ in range(n))

    def stream_timeout(self) -> float:
        """Seconds one stream may take from its arrival before it counts as failed."""
        return self.ttft + (self.tokens / self.tps if self.tps else 0) + self.slack


WARM_UP_QUESTION = 'Warm-up FAKE{"tokens": 5, "stamp": true}'


@dataclass(frozen=True)
class Login:
    cookie: str
    csrf: str
    token: str  # a personal API token (bench/gateway.py)

    @property
    def headers(self) -> dict[str, str]:
        return {"Cookie": self.cookie, "X-CSRFToken": self.csrf}


@dataclass(frozen=True)
class Server:
    host: str
    port: int
    pid: int


@dataclass
class StreamResult:
    """What one client saw; filled in as it goes, so a timeout keeps what had arrived."""

    outcome: str = "not started"
    message_id: int | None = None
    sent_ns: int = 0  # when the question was sent (Assistant: the message POST)
    final_event: str = ""  # "done" or "error" once the answer's last event arrived
    end_ns: int = 0  # when it arrived
    deltas: list[tuple[int, str]] = field(default_factory=list)  # (arrival ns, raw JSON)


@dataclass(frozen=True)
class Target:
    """One running system under test: where it listens and how to ask it one question."""

    name: str  # "assistant" or "proxy"
    server: Server
    process: subprocess.Popen
    ask: Callable[[int, str, StreamResult], Awaitable[None]]  # stream i asks a question
    probe: Callable[[], Awaitable[Any]]  # succeeds once the server answers
    counters: Callable[[], Awaitable[dict[str, Any]]] | None = None  # its SQL statements so far


# --------------------------------------------------------------------------- processes


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def raise_open_files_limit(needed: int) -> None:
    """Raise the soft limit of open files to the hard one, for this process and its children.

    Idle streams hold a socket each, on both ends; the usual soft limit (1024) ends a run of
    a thousand with "too many open files" instead of a figure.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if hard != resource.RLIM_INFINITY and hard < needed:
        raise SystemExit(f"{needed} open files needed, the hard limit (ulimit -Hn) is {hard}")


@contextlib.contextmanager
def fake_upstream(log: Path, *switches: str) -> Iterator[tuple[str, int]]:
    """The fake OpenAI-compatible upstream in its own process, with its command line's
    behaviour `switches` (e.g. "--tps", "50"): yields (base URL, pid)."""
    command = [sys.executable, "-m", "tests.helpers.upstream", "--host", HOST, "--port", "0", *switches]
    with log.open("w") as errors:
        process = subprocess.Popen(
            [*command, "--api-key", API_KEY], cwd=ROOT, stdout=subprocess.PIPE, stderr=errors, text=True
        )
    try:
        assert process.stdout is not None
        ready, _, _ = select.select([process.stdout], [], [], START_TIMEOUT)
        url = process.stdout.readline().strip() if ready else ""
        if not url.startswith("http://"):
            raise RuntimeError(f"the fake upstream did not start; see {log}")
        yield url, process.pid
    finally:
        _stop(process)


def _inherited_env() -> dict[str, str]:
    """This process's environment without any setting of the app or of the openai SDK."""
    return {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("OPENAI_", "ASSISTANT_", "DJANGO_", "DATABASE_"))
    }


@dataclass(frozen=True)
class Database:
    """A round's fresh database: a SQLite file, or (--scaleout) a PostgreSQL database of
    its own with a Redis key prefix of its own."""

    url: str
    folder: Path  # for static files
    file: Path | None  # the SQLite file, whose descriptors the idle step counts
    env: dict[str, str]

    def stored_answers(self) -> dict[int, tuple[str, str]]:
        """Status and content of every assistant message in the database, by id."""
        query = "SELECT id, status, content FROM assistant_message WHERE role = 'assistant'"
        if self.file is not None:
            with contextlib.closing(sqlite3.connect(f"file:{self.file}?mode=ro", uri=True)) as db:
                return {row[0]: (row[1], row[2]) for row in db.execute(query)}
        import psycopg

        with psycopg.connect(self.url) as db:
            return {row[0]: (row[1], row[2]) for row in db.execute(query)}


@contextlib.contextmanager
def fresh_database(workdir: Path, workload: Workload) -> Iterator[Database]:
    """A database nobody used; with --scaleout created on the server and dropped after."""
    folder = Path(tempfile.mkdtemp(dir=workdir))
    if workload.scaleout is None:
        file = folder / "bench.sqlite3"
        yield Database(f"sqlite:///{file}", folder, file, {})
        return
    import psycopg
    import redis

    server_url, redis_url = workload.scaleout
    name = f"bench_{secrets.token_hex(6)}"
    prefix = f"bench-{name}"
    with psycopg.connect(server_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        url = server_url.rsplit("/", 1)[0] + f"/{name}"
        yield Database(url, folder, None, {"REDIS_URL": redis_url, "ASSISTANT_REDIS_PREFIX": prefix})
    finally:
        with psycopg.connect(server_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        with contextlib.closing(redis.Redis.from_url(redis_url)) as client:
            for key in client.scan_iter(f"{prefix}:*"):
                client.delete(key)


def server_env(
    database: Database, upstream_url: str, secret_key: str, extra: dict[str, str]
) -> dict[str, str]:
    """Production settings (DEBUG off) against the fake upstream and a fresh database."""
    env = _inherited_env()
    env.update(
        DJANGO_SETTINGS_MODULE="config.settings",
        DJANGO_DEBUG="0",
        DJANGO_SECRET_KEY=secret_key,
        DJANGO_ALLOWED_HOSTS=HOST,
        # Plain HTTP on the loopback, no TLS proxy in front; bench.prepare collects static files.
        DJANGO_SECURE_SSL_REDIRECT="0",
        DJANGO_STATIC_ROOT=str(database.folder / "static"),
        DATABASE_URL=database.url,
        OPENAI_BASE_URL=upstream_url,
        OPENAI_API_KEY=API_KEY,
        OPENAI_MAX_RETRIES="0",  # a failing upstream shows as an error, not as hidden latency
        ASSISTANT_MODELS=MODEL,
        PYTHONUNBUFFERED="1",
    )
    env.update(database.env)
    env.update(extra)
    return env


def proxy_env(upstream_url: str) -> dict[str, str]:
    """The pass-through proxy's whole configuration: the openai SDK's own variables."""
    return {
        **_inherited_env(),
        "OPENAI_BASE_URL": upstream_url,
        "OPENAI_API_KEY": API_KEY,
        "PYTHONUNBUFFERED": "1",
    }


def prepare(env: dict[str, str], users: int) -> list[Login]:
    """Migrate the fresh database and log the users in (bench/prepare.py, in the server's env)."""
    done = subprocess.run(
        [sys.executable, "-m", "bench.prepare", str(users)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if done.returncode:
        raise RuntimeError(f"bench.prepare failed:\n{done.stderr}")
    return [Login(**login) for login in json.loads(done.stdout)]


@contextlib.contextmanager
def serve(
    command: Callable[[int], list[str]], env: dict[str, str], log: Path
) -> Iterator[tuple[Server, subprocess.Popen]]:
    """One server process, `command(port)`, on a free port of the loopback."""
    port = _free_port()
    with log.open("w") as output:
        process = subprocess.Popen(command(port), cwd=ROOT, env=env, stdout=output, stderr=subprocess.STDOUT)
    try:
        yield Server(HOST, port, process.pid), process
    finally:
        _stop(process)


def daphne_command(port: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "daphne",
        "-b",
        HOST,
        "-p",
        str(port),
        "tests.helpers.counting_asgi:application",
    ]


def uvicorn_command(port: int) -> list[str]:
    # uvicorn's defaults, as `uvicorn bench.proxy:app` would run it: one process, uvloop
    # and httptools (installed by requirements-bench.txt), access log on.
    return [sys.executable, "-m", "uvicorn", "--host", HOST, "--port", str(port), "bench.proxy:app"]


def assistant_target(server: Server, process: subprocess.Popen, logins: list[Login]) -> Target:
    async def ask(i: int, question: str, result: StreamResult) -> None:
        await run_stream(server, logins[i % len(logins)], question, result)

    async def read_counters() -> dict[str, Any]:
        return await request_json(server.host, server.port, "GET", COUNTERS_PATH, 200)

    return Target("assistant", server, process, ask, read_counters, read_counters)


def proxy_target(server: Server, process: subprocess.Popen) -> Target:
    async def ask(i: int, question: str, result: StreamResult) -> None:
        await run_proxy_stream(server, question, result)

    async def probe() -> Any:
        return await request_json(server.host, server.port, "GET", "/openapi.json", 200)

    return Target("proxy", server, process, ask, probe)


async def wait_until_ready(target: Target) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if target.process.poll() is not None:
            raise RuntimeError(f"the {target.name} server exited during start-up")
        with contextlib.suppress(OSError):
            await target.probe()
            return
        await asyncio.sleep(0.1)
    raise RuntimeError(f"the {target.name} server did not start")


# --------------------------------------------------------------------------- one stream


async def run_stream(server: Server, login: Login, question: str, result: StreamResult) -> None:
    """Ask in a new conversation as the page does (one POST: the conversation with its
    first question), and read its event stream up to the answer's end."""
    host, port, headers = server.host, server.port, login.headers
    # Named, so no automatic title request follows the answer: the rounds measure streams only.
    body = {"model": MODEL, "title": "bench", "content": question}
    result.sent_ns = time.monotonic_ns()
    conversation = await request_json(host, port, "POST", "/api/conversations/", 201, body, headers)
    answer = conversation["assistant_message"]
    result.message_id = answer["id"]
    response = await request(
        host, port, "GET", conversation["events_url"], {**headers, "Last-Event-ID": answer["last_event_id"]}
    )
    await read_answer(response, f"GET {conversation['events_url']}", result)


async def run_proxy_stream(server: Server, question: str, result: StreamResult) -> None:
    """Ask the pass-through proxy and read its answer's stream to the end."""
    body = json.dumps({"prompt": question}).encode()
    headers = {"Content-Type": "application/json", "Accept": "text/event-stream"}
    result.sent_ns = time.monotonic_ns()
    response = await request(server.host, server.port, "POST", PROXY_PATH, headers, body)
    await read_answer(response, f"POST {PROXY_PATH}", result)


async def read_answer(response: Response, what: str, result: StreamResult) -> None:
    """Read an answer's stream up to its `done` or `error` (of `result.message_id`, if any)."""
    try:
        if response.status != 200:
            raise HTTPError(f"{what}: {response.status}")
        result.outcome = "stream ended early"
        async for event in sse_events(response):
            if event.event == "delta":
                result.deltas.append((event.received_ns, event.data))
            elif event.event in ("done", "error"):
                if _final(event, result):
                    return
            elif event.event == "stream-reset":
                result.outcome = "stream-reset"
                return
    finally:
        response.close()


def _final(event: SSEEvent, result: StreamResult) -> bool:
    payload = json.loads(event.data)
    if payload.get("message") != result.message_id:  # the proxy's events name no message
        return False
    result.final_event, result.end_ns = event.event, event.received_ns
    if event.event == "error":
        result.outcome = f"error {payload['code']} {payload['type']}"
    elif payload["finish_reason"] != "stop":
        result.outcome = f"done ({payload['finish_reason']})"
    else:
        result.outcome = "done"
    return True


async def timed_stream(
    target: Target, i: int, question: str, delay: float, within: float, result: StreamResult
) -> None:
    await asyncio.sleep(delay)
    try:
        async with asyncio.timeout(within):
            await target.ask(i, question, result)
    except TimeoutError:
        result.outcome = "timeout"
    except Exception as exc:  # a benchmark reports every failure and carries on
        result.outcome = f"failed: {type(exc).__name__}: {exc}"


# --------------------------------------------------------------------------- one round


@dataclass
class Round:
    """Raw observations of one round of N streams."""

    results: list[StreamResult]
    before: dict[str, Any] | None  # SQL statement counters (Assistant only)
    after: dict[str, Any] | None
    cpu: dict[str, float]  # CPU seconds over the measured window, per process
    others_cpu: float  # CPU seconds of every other process on the machine, same window
    seconds: float  # length of the window
    rss_idle: float
    rss_peak: float


async def warm_up(target: Target) -> None:
    """Unmeasured: lazy imports, the URLconf, the first upstream connection."""
    await wait_until_ready(target)
    result = StreamResult()
    await timed_stream(target, 0, WARM_UP_QUESTION, 0, START_TIMEOUT, result)
    if result.outcome != "done":
        raise RuntimeError(f"{target.name}: warm-up answer failed: {result.outcome}")


async def measure(n: int, workload: Workload, target: Target, upstream_pid: int) -> Round:
    await warm_up(target)
    server_pid = target.server.pid
    pids = {"server": server_pid, "upstream": upstream_pid, "loadgen": os.getpid()}
    rss_idle = memory_mb(server_pid, "VmRSS")
    before = await target.counters() if target.counters else None
    cpu_before = {name: cpu_seconds(pid) for name, pid in pids.items()}
    machine_before, started = machine_busy_seconds(), time.monotonic()
    results = [StreamResult() for _ in range(n)]
    question, timeout = workload.question(), workload.stream_timeout()
    await asyncio.gather(
        *(
            timed_stream(target, i, question, delay, timeout, result)
            for i, (delay, result) in enumerate(zip(workload.arrivals(n), results, strict=True))
        )
    )
    cpu = {name: cpu_seconds(pid) - cpu_before[name] for name, pid in pids.items()}
    others_cpu = machine_busy_seconds() - machine_before - sum(cpu.values())
    seconds = time.monotonic() - started
    after = await target.counters() if target.counters else None
    rss_peak = memory_mb(server_pid, "VmHWM")
    return Round(results, before, after, cpu, others_cpu, seconds, rss_idle, rss_peak)


def percentiles(values: list[float]) -> dict[str, float | None]:
    """p50, p99 (nearest rank) and max."""
    if not values:
        return {"p50": None, "p99": None, "max": None}
    ordered = sorted(values)

    def rank(p: float) -> float:
        return round(ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)], 1)

    return {"p50": rank(50), "p99": rank(99), "max": round(ordered[-1], 1)}


def log_problems(log: Path) -> list[str]:
    """The server log's lines worth reporting (the first 20)."""
    lines = log.read_text(errors="replace").splitlines()
    return [line for line in lines if LOG_PROBLEM_RE.search(line)][:20]


def summarise(
    n: int, workload: Workload, run: Round, stored: dict[int, tuple[str, str]] | None, log: Path
) -> dict:
    """Check every answer token by token and reduce the round to its figures.

    `stored` (Assistant's database) is None for the proxy, which stores nothing.
    """
    lost = duplicated = malformed = out_of_order = db_mismatches = delivered = 0
    ttft_overhead: list[float] = []
    latencies: list[float] = []
    streaming_seconds = 0.0
    expected = set(range(workload.tokens))
    for result in run.results:
        parts = []
        for received_ns, data in result.deltas:
            text = json.loads(data)["text"]
            parts.append(text)
            latencies.extend((received_ns - int(m[2])) / 1e6 for m in TOKEN_RE.finditer(text))
        text = "".join(parts)
        indices = []
        for piece in text.split(" ") if text else ():
            match = TOKEN_RE.fullmatch(piece)
            if match and int(match[1]) in expected:
                indices.append(int(match[1]))
            else:
                malformed += 1
        unique = set(indices)
        delivered += len(unique)
        lost += len(expected - unique)
        duplicated += len(indices) - len(unique)
        out_of_order += indices != sorted(indices)
        if stored is not None and result.final_event:  # its stored row must say what was streamed
            status, content = stored.get(result.message_id, ("missing", None))
            db_mismatches += content != text or status != result.final_event
        if result.deltas:
            first_ns = result.deltas[0][0]
            ttft_overhead.append((first_ns - result.sent_ns) / 1e6 - workload.ttft * 1000)
            if result.end_ns:
                streaming_seconds += (result.end_ns - first_ns) / 1e9
    outcomes = Counter(result.outcome for result in run.results)
    completed = outcomes["done"]
    ok = completed == n and not (lost or duplicated or malformed or out_of_order or db_mismatches)
    token_latency, ttft = percentiles(latencies), percentiles(ttft_overhead)
    row = {
        "streams": n,
        "completed": completed,
        "outcomes": dict(outcomes),
        "tokens_delivered": delivered,
        "lost": lost,
        "duplicated": duplicated,
        "malformed": malformed,
        "out_of_order_streams": out_of_order,
        "db_mismatches": db_mismatches,
        "ttft_overhead_ms": ttft,
        "token_latency_ms": token_latency,
        "cpu_ms_per_1000_tokens": {
            name: round(seconds * 1e6 / delivered, 1) if delivered else None
            for name, seconds in run.cpu.items()
        },
        # Anything else busy on the machine during the round disturbs every figure above.
        "other_processes_cpu_percent": round(max(0.0, run.others_cpu) * 100 / run.seconds),
        "rss_mb": {"idle": round(run.rss_idle, 1), "peak": round(run.rss_peak, 1)},
        "server_log_problems": log_problems(log),
        "ok": ok,
        "held": ok
        and token_latency["p99"] is not None
        and token_latency["p99"] <= HELD_TOKEN_P99_MS
        and ttft["p99"] is not None
        and ttft["p99"] <= HELD_TTFT_P99_MS,
    }
    if run.before is not None and run.after is not None:
        writes = run.after["writes"] - run.before["writes"]
        row.update(
            db_writes_per_answer=round(writes / n, 1),
            db_writes_per_answer_per_second=round(writes / streaming_seconds, 2)
            if streaming_seconds
            else None,
            db_statements_per_answer=round((run.after["statements"] - run.before["statements"]) / n, 1),
            db_writes_by_kind=dict(
                sorted((Counter(run.after["by_kind"]) - Counter(run.before["by_kind"])).items())
            ),
        )
    return row


def assistant_round(
    n: int,
    workload: Workload,
    upstream: tuple[str, int],
    workdir: Path,
    target_of: Callable[[Server, subprocess.Popen, list[Login]], Target] | None = None,
) -> dict:
    """One round through Assistant, with a fresh database and a fresh daphne: through the
    page's path, or `target_of`'s (bench/gateway.py), whose stream names no stored answer."""
    with fresh_database(workdir, workload) as database:
        env = server_env(database, upstream[0], secrets.token_urlsafe(40), workload.server_env)
        logins = prepare(env, math.ceil(n / workload.streams_per_user))
        log = ARTIFACTS / f"bench-daphne-{'gateway-' if target_of else ''}{n}.log"
        with serve(daphne_command, env, log) as (server, process):
            target = (target_of or assistant_target)(server, process, logins)
            run = asyncio.run(measure(n, workload, target, upstream[1]))
        return summarise(n, workload, run, None if target_of else database.stored_answers(), log)


def proxy_round(n: int, workload: Workload, upstream: tuple[str, int]) -> dict:
    """The same round through the pass-through proxy, in a fresh uvicorn."""
    log = ARTIFACTS / f"bench-proxy-{n}.log"
    with serve(uvicorn_command, proxy_env(upstream[0]), log) as (server, process):
        run = asyncio.run(measure(n, workload, proxy_target(server, process), upstream[1]))
    return summarise(n, workload, run, None, log)


# --------------------------------------------------------------------------- idle streams


async def process_figures(target: Target, database: Database) -> dict[str, float]:
    """What a server process holds: OS threads, open files, database connections, memory.

    Database connections as Django sees them (tests/helpers/counting_asgi.py), and as the kernel
    does: descriptors open on the SQLite file. The second can be higher: SQLite defers
    closing a closed connection's descriptor while another connection of the process
    holds a lock on the file (POSIX locks belong to the process, not to a descriptor).
    """
    assert target.counters is not None
    files = open_files(target.server.pid)
    return {
        "threads": thread_count(target.server.pid),
        "open_files": len(files),
        "db_connections": (await target.counters())["db_connections"],
        "db_file_descriptors": files.count(str(database.file)),
        "rss_mb": round(memory_mb(target.server.pid, "VmRSS"), 1),
    }


async def open_idle_stream(server: Server, login: Login, events_url: str) -> Response:
    """Open a conversation's event stream and read its first event, `stream-open`."""
    response = await request(server.host, server.port, "GET", events_url, login.headers)
    try:
        if response.status != 200:
            raise HTTPError(f"GET {events_url}: {response.status}")
        events = sse_events(response)
        first = await anext(events)
        await events.aclose()
        if first.event != "stream-open":
            raise HTTPError(f"GET {events_url}: {first.event!r} before stream-open")
    except BaseException:
        response.close()
        raise
    return response


async def hold_idle_streams(n: int, target: Target, logins: list[Login], database: Database) -> dict:
    """Open n event streams on n conversations that are not answering, then measure."""
    await warm_up(target)  # the stream and its code paths are loaded before the baseline
    server, limit = target.server, asyncio.Semaphore(IDLE_CONCURRENCY)

    async def create(i: int) -> str:
        async with limit, asyncio.timeout(START_TIMEOUT):
            login = logins[i % len(logins)]
            payload = {"model": MODEL, "title": "idle"}
            conversation = await request_json(
                server.host, server.port, "POST", "/api/conversations/", 201, payload, login.headers
            )
            return conversation["events_url"]

    async def open_one(i: int, events_url: str) -> Response:
        async with limit, asyncio.timeout(START_TIMEOUT):
            return await open_idle_stream(server, logins[i % len(logins)], events_url)

    urls = await asyncio.gather(*(create(i) for i in range(n)))
    before = await process_figures(target, database)
    opened = await asyncio.gather(*(open_one(i, url) for i, url in enumerate(urls)), return_exceptions=True)
    streams = [item for item in opened if isinstance(item, Response)]
    failures = Counter(f"{type(item).__name__}: {item}" for item in opened if not isinstance(item, Response))
    try:
        # Let whatever each connection started on the server (session, permission check) end.
        await asyncio.sleep(1)
        held = await process_figures(target, database)
    finally:
        for response in streams:
            response.close()
    return {
        "streams": n,
        "opened": len(streams),
        "failures": dict(failures.most_common(5)),
        "before": before,
        "open": held,
        "extra": {name: round(held[name] - before[name], 1) for name in before},
        "extra_kb_per_stream": round((held["rss_mb"] - before["rss_mb"]) * 1024 / n, 1),
        "ok": len(streams) == n,
    }


def idle_round(n: int, workload: Workload, upstream: tuple[str, int], workdir: Path) -> dict:
    """n idle event streams on one fresh daphne, over users as in the rounds."""
    with fresh_database(workdir, workload) as database:
        env = server_env(database, upstream[0], secrets.token_urlsafe(40), workload.server_env)
        logins = prepare(env, math.ceil(n / workload.streams_per_user))
        log = ARTIFACTS / "bench-daphne-idle.log"
        with serve(daphne_command, env, log) as (server, process):
            target = assistant_target(server, process, logins)
            figures = asyncio.run(hold_idle_streams(n, target, logins, database))
    return {**figures, "server_log_problems": log_problems(log)}


# --------------------------------------------------------------------------- output

SYSTEMS = {
    "assistant": "Assistant (one daphne)",
    "public": "Assistant, fast paths off",
    "scaleout": "Assistant on PostgreSQL + Redis",
    "proxy": "pass-through proxy (one uvicorn)",
}
# The systems that are Assistant: their rows have the database column.
ASSISTANTS = ("assistant", "public", "scaleout")
# Assistant with every fast path off (config/fastpaths): the libraries' public paths.
FAST_PATHS_OFF = {"ASSISTANT_FAST_PATHS": "off"}
COLUMNS = ("held", "completed", "lost/dup", "TTFT+ p50/p99", "token p50/p99", "CPU/1k tok", "RSS idle/peak")
DB_COLUMN = "DB writes/answer (/s)"
LEGEND = f"""\
held: every stream completed, no token lost or duplicated, p99 token <= {HELD_TOKEN_P99_MS} ms, \
p99 TTFT+ <= {HELD_TTFT_P99_MS} ms.
TTFT+: ms to the first token over the upstream's own. token: ms from upstream write to client read.
CPU/1k tok: the server process's CPU ms per 1000 delivered tokens; CPU ratio: Assistant's / the proxy's \
(with its fast paths on / off).
RSS: server MB after the warm-up / at its peak. DB writes: INSERT/UPDATE/DELETE per answer (per second \
of streaming).
Rows without the proxy: capacity rounds, Assistant alone (both modes) at multiples of the proxy's \
largest held round."""


def _num(value: float | None, digits: int = 0) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    return round(numerator / denominator, 2) if numerator is not None and denominator else None


def _cpu_ratio(assistant: dict, proxy: dict) -> float | None:
    return _ratio(assistant["cpu_ms_per_1000_tokens"]["server"], proxy["cpu_ms_per_1000_tokens"]["server"])


def _cells(row: dict | None) -> list[str]:
    if row is None:  # not run: a capacity round of Assistant alone
        return ["-"] * len(COLUMNS)
    ttft, latency, rss = row["ttft_overhead_ms"], row["token_latency_ms"], row["rss_mb"]
    return [
        "yes" if row["held"] else "no",
        f"{row['completed']}/{row['streams']}",
        f"{row['lost']}/{row['duplicated']}",
        f"{_num(ttft['p50'])} / {_num(ttft['p99'])}",
        f"{_num(latency['p50'], 1)} / {_num(latency['p99'], 1)}",
        _num(row["cpu_ms_per_1000_tokens"]["server"]),
        f"{_num(rss['idle'])} / {_num(rss['peak'])}",
    ]


def _db_cell(row: dict) -> str:
    return f"{_num(row['db_writes_per_answer'], 1)} ({_num(row['db_writes_per_answer_per_second'], 2)})"


def systems_run(rounds: list[dict]) -> list[str]:
    """The systems with a row in any round (the scale-out profile only with --scaleout)."""
    return [system for system in SYSTEMS if any(entry.get(system) for entry in rounds)]


def table(rounds: list[dict]) -> str:
    """The rounds side by side: one group of columns per system, one row per round size."""
    systems = systems_run(rounds)
    scaleout = "scaleout" in systems
    head = [
        ["streams"],
        *([*COLUMNS, DB_COLUMN] if system in ASSISTANTS else list(COLUMNS) for system in systems),
        ["CPU ratio on/off", *(["scale-out/default"] if scaleout else [])],
    ]
    rows = [head] + [
        [
            [str(entry["streams"])],
            *(
                [*_cells(entry[system]), _db_cell(entry[system])]
                if system in ASSISTANTS
                else _cells(entry[system])
                for system in systems
            ),
            [
                f"{_num(entry['cpu_ratio'], 2)} / {_num(entry['public_cpu_ratio'], 2)}",
                *([_num(entry["scaleout_ratio"], 2)] if scaleout else []),
            ],
        ]
        for entry in rounds
    ]
    widths = [
        [max(len(row[g][c]) for row in rows) for c in range(len(group))] for g, group in enumerate(head)
    ]
    lines = [
        " | ".join(
            "  ".join(cell.rjust(width) for cell, width in zip(cells, group_widths, strict=True))
            for cells, group_widths in zip(row, widths, strict=True)
        )
        for row in rows
    ]
    spans = [sum(group_widths) + 2 * (len(group_widths) - 1) for group_widths in widths]
    titles = ["", *(SYSTEMS[system] for system in systems), ""]
    lines.insert(
        0,
        " | ".join(
            f" {title} ".center(span, "-") if title else " " * span
            for title, span in zip(titles, spans, strict=True)
        ),
    )
    lines.insert(2, "-" * len(lines[1]))
    return "\n".join(lines)


def summarise_comparison(rounds: list[dict]) -> dict:
    """The largest round each system held, their ratio, and the CPU ratio at 100 streams.

    A system that held the largest round it ran may hold more: its figure is then a lower
    bound, and so is the ratio (none when the proxy held its largest round, or no round).
    """
    largest, held = {}, {}
    systems = systems_run(rounds)
    for system in systems:
        ran = [entry for entry in rounds if entry.get(system) is not None]
        largest[system] = max(entry["streams"] for entry in ran)
        held[system] = max((entry["streams"] for entry in ran if entry[system]["held"]), default=None)
    at_100 = next((entry for entry in rounds if entry["streams"] == 100), None)
    proxy_capped = held["proxy"] == largest["proxy"]
    return {
        "held": held,
        "held_largest_round": {system: held[system] == largest[system] for system in systems},
        "capacity_ratio": None if proxy_capped else _ratio(held["assistant"], held["proxy"]),
        "public_capacity_ratio": None if proxy_capped else _ratio(held["public"], held["proxy"]),
        "cpu_ratio_at_100": at_100["cpu_ratio"] if at_100 else None,
        "public_cpu_ratio_at_100": at_100["public_cpu_ratio"] if at_100 else None,
        "scaleout_ratio": {
            entry["streams"]: entry["scaleout_ratio"] for entry in rounds if entry.get("scaleout_ratio")
        },
    }


def capacity_rounds(rounds: list[dict], multiples: list[float]) -> list[int]:
    """Round sizes for Assistant alone beyond the side-by-side rounds: the given multiples
    of the largest round the proxy held, where larger than every round run so far."""
    proxy_held = max((entry["streams"] for entry in rounds if entry["proxy"]["held"]), default=None)
    if proxy_held is None:
        return []
    largest = max(entry["streams"] for entry in rounds)
    return sorted({round(proxy_held * m) for m in multiples if round(proxy_held * m) > largest})


def summary_text(summary: dict) -> str:
    held, at_least = summary["held"], summary["held_largest_round"]

    def system_held(system: str) -> str:
        if held[system] is None:
            return "no round"
        return f"{held[system]} streams" + (" (the largest round)" if at_least[system] else "")

    def capacity(system: str, ratio: float | None) -> str:
        return "-" if ratio is None else f"{'at least ' if at_least[system] else ''}{ratio:g}"

    lines = [
        f"Held: Assistant {system_held('assistant')}, with fast paths off {system_held('public')}, "
        f"proxy {system_held('proxy')}; capacity ratio {capacity('assistant', summary['capacity_ratio'])}, "
        f"with fast paths off {capacity('public', summary['public_capacity_ratio'])}"
    ]
    if summary["cpu_ratio_at_100"] is not None:
        lines.append(
            f"Server CPU per token at 100 streams: Assistant's is {summary['cpu_ratio_at_100']:g} "
            f"of the proxy's, {_num(summary['public_cpu_ratio_at_100'], 2)} with its fast paths off"
        )
    if "scaleout" in held:
        ratios = ", ".join(f"{ratio:g}x at {n} streams" for n, ratio in summary["scaleout_ratio"].items())
        lines.append(
            f"On PostgreSQL + Redis: held {system_held('scaleout')}; server CPU per token against "
            f"the default profile's: {ratios or '-'}"
        )
    return "\n".join(lines)


def idle_text(idle: dict) -> str:
    before, held, extra = idle["before"], idle["open"], idle["extra"]

    def change(name: str, digits: int = 0) -> str:
        return f"{_num(before[name], digits)} -> {_num(held[name], digits)} ({extra[name]:+.{digits}f})"

    return "\n".join(
        [
            f"Idle: {idle['opened']}/{idle['streams']} event streams open on one daphne (each read its "
            "stream-open event), against the same process before they opened:",
            f"  OS threads {change('threads')}, open files {change('open_files')}, "
            f"DB connections {change('db_connections')} (descriptors on the SQLite file "
            f"{change('db_file_descriptors')}),",
            f"  RSS MB {change('rss_mb', 1)}: {idle['extra_kb_per_stream']:g} KB per stream",
        ]
    )


def _env_item(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    return name, value


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", type=int, nargs="+", default=[10, 50, 100, 150, 200], help="N per round")
    parser.add_argument("--idle", type=int, default=1000, help="idle event streams to hold open (0: none)")
    parser.add_argument(
        "--capacity",
        type=float,
        nargs="*",
        default=[2, 3],
        metavar="MULTIPLE",
        help="then Assistant alone at these multiples of the proxy's largest held round (none: skip)",
    )
    parser.add_argument("--tokens", type=int, default=300, help="tokens per answer")
    parser.add_argument("--tps", type=float, default=30, help="upstream tokens per second")
    parser.add_argument("--ttft", type=float, default=0.2, help="upstream time to first token, s")
    parser.add_argument("--spread", type=float, default=5, help="arrivals spread over this, s")
    parser.add_argument("--seed", type=int, default=1, help="seed of the random arrival times")
    parser.add_argument("--streams-per-user", type=int, default=10)
    parser.add_argument("--slack", type=float, default=30, help="s a stream may exceed its nominal time")
    parser.add_argument(
        "--server-env",
        action="append",
        type=_env_item,
        default=[],
        metavar="NAME=VALUE",
        help="extra environment for daphne, e.g. ASSISTANT_PERSIST_SECONDS=1 (repeatable)",
    )
    parser.add_argument(
        "--scaleout",
        nargs=2,
        metavar=("POSTGRES_URL", "REDIS_URL"),
        help="also Assistant on PostgreSQL and Redis (the scale-out profile) beside the default, e.g. "
        "postgres://postgres@127.0.0.1:5432/test redis://127.0.0.1:6379/5: each of its rounds gets a "
        "database of its own on that server (created and dropped) and a Redis key prefix of its own",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="runs of each round and system, in turn: figures of the median run, ratios the median ratio",
    )
    parser.add_argument("--json", type=Path, default=ARTIFACTS / "bench-latest.json", help="results file")
    args = parser.parse_args(argv)
    if args.scaleout:
        postgres, redis = args.scaleout
        if not postgres.startswith(("postgres://", "postgresql://")) or not redis.startswith("redis://"):
            parser.error("--scaleout takes a postgres:// URL, then a redis:// URL")
    if args.repeat < 1:
        parser.error("--repeat takes a count of at least 1")
    return args


def _median_run(runs: list[dict]) -> dict:
    """Of one system's repetitions of a round, the run with the median server CPU per token
    (the lower of the middle two for an even count), held only if every run held."""

    def cpu(run: dict) -> float:
        return run["cpu_ms_per_1000_tokens"]["server"] or 0.0

    return {
        **sorted(runs, key=cpu)[(len(runs) - 1) // 2],
        "ok": all(run["ok"] for run in runs),
        "held": all(run["held"] for run in runs),
        # Every run's CPU per 1000 tokens (server, upstream, load generator) and the rest
        # of the machine's: the spread, and whether the machine changed speed meanwhile.
        "runs": [
            {"cpu": run["cpu_ms_per_1000_tokens"], "others": run["other_processes_cpu_percent"]}
            for run in runs
        ],
    }


def _median_ratio(pairs: list[tuple[dict, dict]]) -> float | None:
    """The median of a ratio measured within each repetition (each pair ran minutes apart
    at most, on the same machine state)."""
    ratios = sorted(r for r in (_cpu_ratio(a, b) for a, b in pairs) if r is not None)
    return ratios[(len(ratios) - 1) // 2] if ratios else None


def _round(n: int, systems: dict[str, Callable[[int], dict]], repeat: int) -> dict:
    """Round size `n`: each system once per repetition, in turn, so that a machine
    getting slower or faster meanwhile touches every system alike."""
    runs: dict[str, list[dict]] = {system: [] for system in systems}
    for repetition in range(repeat):
        for system, run in systems.items():
            of = f" ({repetition + 1} of {repeat})" if repeat > 1 else ""
            print(f"{n} streams: {SYSTEMS[system]}{of} ...", file=sys.stderr, flush=True)
            runs[system].append(run(n))
    entry: dict[str, Any] = {"streams": n, **dict.fromkeys(SYSTEMS)}
    entry.update({system: _median_run(found) for system, found in runs.items()})

    def ratio(system: str, to: str) -> float | None:
        if system not in runs or to not in runs:
            return None
        return _median_ratio(list(zip(runs[system], runs[to], strict=True)))

    entry.update(
        cpu_ratio=ratio("assistant", "proxy"),
        public_cpu_ratio=ratio("public", "proxy"),
        scaleout_ratio=ratio("scaleout", "assistant"),
    )
    return entry


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    workload = Workload(
        tokens=args.tokens,
        tps=args.tps,
        ttft=args.ttft,
        spread=args.spread,
        seed=args.seed,
        streams_per_user=args.streams_per_user,
        slack=args.slack,
        server_env=dict(args.server_env),
    )
    public_workload = dataclasses.replace(workload, server_env={**workload.server_env, **FAST_PATHS_OFF})
    raise_open_files_limit(max(args.streams, default=0) + args.idle + 1024)
    ARTIFACTS.mkdir(exist_ok=True)
    rounds = []
    with (
        tempfile.TemporaryDirectory(prefix="bench-") as workdir,
        fake_upstream(ARTIFACTS / "bench-upstream.log") as upstream,
    ):

        def through(of: Workload) -> Callable[[int], dict]:
            return lambda n: assistant_round(n, of, upstream, Path(workdir))

        assistants = {"assistant": through(workload), "public": through(public_workload)}
        side_by_side = dict(assistants)
        if args.scaleout:
            side_by_side["scaleout"] = through(dataclasses.replace(workload, scaleout=tuple(args.scaleout)))
        side_by_side["proxy"] = lambda n: proxy_round(n, workload, upstream)
        rounds = [_round(n, side_by_side, args.repeat) for n in args.streams]
        for n in capacity_rounds(rounds, args.capacity) if rounds else ():
            rounds.append(_round(n, assistants, args.repeat))
        if args.idle:
            print(f"{args.idle} idle streams ...", file=sys.stderr, flush=True)
        idle = idle_round(args.idle, workload, upstream, Path(workdir)) if args.idle else None
    print(
        f"{workload.tokens} tokens at {workload.tps:g}/s per answer, upstream TTFT "
        f"{workload.ttft * 1000:.0f} ms, arrivals over {workload.spread:g} s; {os.cpu_count()} CPUs"
    )
    summary = summarise_comparison(rounds) if rounds else None
    if rounds:
        print(table(rounds))
        print(LEGEND)
        print(summary_text(summary))
    if idle:
        print(idle_text(idle))
    args.json.write_text(
        json.dumps(
            {"workload": dataclasses.asdict(workload), "rounds": rounds, "summary": summary, "idle": idle},
            indent=2,
        )
        + "\n"
    )
    for entry in rounds:
        for system in SYSTEMS:
            row, where = entry[system], f"{system}, {entry['streams']} streams"
            if row is None:
                continue
            if row["other_processes_cpu_percent"] >= BUSY_MACHINE_PERCENT:
                servers = " (PostgreSQL and Redis among them)" if system == "scaleout" else ""
                print(
                    f"{where}: other processes{servers} kept {row['other_processes_cpu_percent']} % "
                    "of a core busy during the round; its figures are disturbed"
                )
            if row["outcomes"] != {"done": row["streams"]}:
                print(f"{where}, outcomes: {row['outcomes']}")
            if not row["ok"]:
                print(
                    f"{where}: {row['lost']} tokens lost, {row['duplicated']} duplicated, "
                    f"{row['malformed']} malformed, {row['out_of_order_streams']} streams out of order, "
                    f"{row['db_mismatches']} stored answers differ from their stream"
                )
            for line in row["server_log_problems"]:
                print(f"{where}, server log: {line}")
    if idle:
        if idle["failures"]:
            print(f"idle streams that did not open: {idle['failures']}")
        for line in idle["server_log_problems"]:
            print(f"idle streams, server log: {line}")
    print(f"details: {args.json}")
    ok = all(entry["assistant"]["ok"] for entry in rounds) and (idle is None or idle["ok"])
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
