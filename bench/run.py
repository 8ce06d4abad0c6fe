"""The streaming benchmark: N concurrent answers through daphne, checked token by token.

Three processes, so that on a small machine each figure belongs to one of them: the fake
upstream (``tests.fake_upstream``, pacing tokens and stamping each with its write time),
one daphne serving the app (``bench.counting_asgi``, which also counts SQL writes), and
this process, an asyncio load generator with a minimal HTTP client. For each N it starts a
fresh database and daphne, warms the server up with one short answer, then starts N
conversations spread over a few seconds and reads every answer's event stream to its end.

Usage: ``make bench`` (N = 10, 50, 100) or
``python -m bench.run --streams 10 50 100 --tokens 300 --tps 30 --ttft 0.2 --spread 5``.
Exits non-zero when a stream did not complete or a token was lost, duplicated or stored
differently from what was streamed. See bench/README.md for what each figure means.
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
import secrets
import select
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.client import HTTPError, SSEEvent, request, request_json, sse_events
from bench.counting_asgi import COUNTERS_PATH
from bench.procstat import cpu_seconds, machine_busy_seconds, memory_mb

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts"
HOST = "127.0.0.1"
MODEL = "fake-model"
API_KEY = "bench-upstream-key"
START_TIMEOUT = 30.0  # seconds for a process to come up
BUSY_MACHINE_PERCENT = 10  # warn when other processes used this much of a core during a round
# One stamped token: "w<index>:<monotonic ns when the upstream wrote it>".
TOKEN_RE = re.compile(r"w(\d+):(\d+)")
# Server log lines worth reporting: log records at WARNING and above, tracebacks, 5xx answers.
LOG_PROBLEM_RE = re.compile(r" (WARNING|ERROR|CRITICAL) |Traceback|\" 5\d\d ")


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
    sent_ns: int = 0  # when the message POST was sent
    final_event: str = ""  # "done" or "error" once the answer's last event arrived
    end_ns: int = 0  # when it arrived
    deltas: list[tuple[int, str]] = field(default_factory=list)  # (arrival ns, raw JSON)


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


@contextlib.contextmanager
def fake_upstream(log: Path) -> Iterator[tuple[str, int]]:
    """The fake OpenAI-compatible upstream in its own process: yields (base URL, pid)."""
    command = [sys.executable, "-m", "tests.fake_upstream", "--host", HOST, "--port", "0"]
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


def server_env(database: Path, upstream_url: str, secret_key: str, extra: dict[str, str]) -> dict[str, str]:
    """Production settings (DEBUG off) against the fake upstream and a fresh SQLite file."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("OPENAI_", "ASSISTANT_", "DJANGO_", "DATABASE_"))
    }
    env.update(
        DJANGO_SETTINGS_MODULE="config.settings",
        DJANGO_DEBUG="0",
        DJANGO_SECRET_KEY=secret_key,
        DJANGO_ALLOWED_HOSTS=HOST,
        # Plain HTTP on the loopback, no TLS proxy in front; bench.prepare collects static files.
        DJANGO_SECURE_SSL_REDIRECT="0",
        DJANGO_STATIC_ROOT=str(database.parent / "static"),
        DATABASE_URL=f"sqlite:///{database}",
        OPENAI_BASE_URL=upstream_url,
        OPENAI_API_KEY=API_KEY,
        OPENAI_MAX_RETRIES="0",  # a failing upstream shows as an error, not as hidden latency
        ASSISTANT_MODELS=MODEL,
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


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
def daphne(env: dict[str, str], log: Path) -> Iterator[tuple[Server, subprocess.Popen]]:
    port = _free_port()
    command = [sys.executable, "-m", "daphne", "-b", HOST, "-p", str(port), "bench.counting_asgi:application"]
    with log.open("w") as output:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=output, stderr=subprocess.STDOUT)
    try:
        yield Server(HOST, port, process.pid), process
    finally:
        _stop(process)


async def wait_until_ready(server: Server, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError("daphne exited during start-up")
        with contextlib.suppress(OSError):
            await counters(server)
            return
        await asyncio.sleep(0.1)
    raise RuntimeError("daphne did not start")


async def counters(server: Server) -> dict[str, Any]:
    return await request_json(server.host, server.port, "GET", COUNTERS_PATH, 200)


# --------------------------------------------------------------------------- one stream


async def run_stream(server: Server, login: Login, question: str, result: StreamResult) -> None:
    """Create a conversation, ask, and read its event stream up to the answer's end."""
    host, port, headers = server.host, server.port, login.headers
    # Named, so no automatic title request follows the answer: the rounds measure streams only.
    conversation = await request_json(
        host, port, "POST", "/api/conversations/", 201, {"model": MODEL, "title": "bench"}, headers
    )
    result.sent_ns = time.monotonic_ns()
    sent = await request_json(
        host, port, "POST", conversation["messages_url"], 202, {"content": question}, headers
    )
    answer = sent["assistant_message"]
    result.message_id = answer["id"]
    response = await request(
        host, port, "GET", conversation["events_url"], {**headers, "Last-Event-ID": answer["last_event_id"]}
    )
    try:
        if response.status != 200:
            raise HTTPError(f"GET {conversation['events_url']}: {response.status}")
        result.outcome = "stream ended early"
        async for event in sse_events(response):
            if event.event == "delta":
                result.deltas.append((event.received_ns, event.data))
            elif event.event in ("done", "error"):
                if _final(event, answer["id"], result):
                    return
            elif event.event == "stream-reset":
                result.outcome = "stream-reset"
                return
    finally:
        response.close()


def _final(event: SSEEvent, message_id: int, result: StreamResult) -> bool:
    payload = json.loads(event.data)
    if payload["message"] != message_id:
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
    server: Server, login: Login, question: str, delay: float, within: float, result: StreamResult
) -> None:
    await asyncio.sleep(delay)
    try:
        async with asyncio.timeout(within):
            await run_stream(server, login, question, result)
    except TimeoutError:
        result.outcome = "timeout"
    except Exception as exc:  # a benchmark reports every failure and carries on
        result.outcome = f"failed: {type(exc).__name__}: {exc}"


# --------------------------------------------------------------------------- one round


@dataclass
class Round:
    """Raw observations of one round of N streams."""

    results: list[StreamResult]
    before: dict[str, Any]
    after: dict[str, Any]
    cpu: dict[str, float]  # CPU seconds over the measured window, per process
    others_cpu: float  # CPU seconds of every other process on the machine, same window
    seconds: float  # length of the window
    rss_idle: float
    rss_peak: float


async def measure(
    n: int,
    workload: Workload,
    logins: list[Login],
    server: Server,
    daphne_process: subprocess.Popen,
    upstream_pid: int,
) -> Round:
    await wait_until_ready(server, daphne_process)
    # Unmeasured warm-up: lazy imports, the URLconf, the first upstream connection.
    warm_up = StreamResult()
    await timed_stream(server, logins[0], WARM_UP_QUESTION, 0, START_TIMEOUT, warm_up)
    if warm_up.outcome != "done":
        raise RuntimeError(f"warm-up answer failed: {warm_up.outcome}")

    pids = {"server": server.pid, "upstream": upstream_pid, "loadgen": os.getpid()}
    rss_idle = memory_mb(server.pid, "VmRSS")
    before = await counters(server)
    cpu_before = {name: cpu_seconds(pid) for name, pid in pids.items()}
    machine_before, started = machine_busy_seconds(), time.monotonic()
    results = [StreamResult() for _ in range(n)]
    question, timeout = workload.question(), workload.stream_timeout()
    await asyncio.gather(
        *(
            timed_stream(server, logins[i % len(logins)], question, delay, timeout, result)
            for i, (delay, result) in enumerate(zip(workload.arrivals(n), results, strict=True))
        )
    )
    cpu = {name: cpu_seconds(pid) - cpu_before[name] for name, pid in pids.items()}
    others_cpu = machine_busy_seconds() - machine_before - sum(cpu.values())
    seconds = time.monotonic() - started
    after = await counters(server)
    return Round(results, before, after, cpu, others_cpu, seconds, rss_idle, memory_mb(server.pid, "VmHWM"))


def stored_answers(database: Path) -> dict[int, tuple[str, str]]:
    """Status and content of every assistant message in the database, by id."""
    with contextlib.closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True)) as db:
        rows = db.execute("SELECT id, status, content FROM assistant_message WHERE role = 'assistant'")
        return {row[0]: (row[1], row[2]) for row in rows}


def percentiles(values: list[float]) -> dict[str, float | None]:
    """p50, p99 (nearest rank) and max."""
    if not values:
        return {"p50": None, "p99": None, "max": None}
    ordered = sorted(values)

    def rank(p: float) -> float:
        return round(ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)], 1)

    return {"p50": rank(50), "p99": rank(99), "max": round(ordered[-1], 1)}


def summarise(n: int, workload: Workload, run: Round, stored: dict[int, tuple[str, str]], log: Path) -> dict:
    """Check every answer token by token and reduce the round to its figures."""
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
        if result.final_event:  # the answer ended: its stored row must say what the stream said
            status, content = stored.get(result.message_id, ("missing", None))
            db_mismatches += content != text or status != result.final_event
        if result.deltas:
            first_ns = result.deltas[0][0]
            ttft_overhead.append((first_ns - result.sent_ns) / 1e6 - workload.ttft * 1000)
            if result.end_ns:
                streaming_seconds += (result.end_ns - first_ns) / 1e9
    outcomes = Counter(result.outcome for result in run.results)
    writes = run.after["writes"] - run.before["writes"]
    by_kind = Counter(run.after["by_kind"]) - Counter(run.before["by_kind"])
    problems = [line for line in log.read_text(errors="replace").splitlines() if LOG_PROBLEM_RE.search(line)]
    completed = outcomes["done"]
    return {
        "streams": n,
        "completed": completed,
        "outcomes": dict(outcomes),
        "tokens_delivered": delivered,
        "lost": lost,
        "duplicated": duplicated,
        "malformed": malformed,
        "out_of_order_streams": out_of_order,
        "db_mismatches": db_mismatches,
        "ttft_overhead_ms": percentiles(ttft_overhead),
        "token_latency_ms": percentiles(latencies),
        "cpu_ms_per_1000_tokens": {
            name: round(seconds * 1e6 / delivered, 1) if delivered else None
            for name, seconds in run.cpu.items()
        },
        # Anything else busy on the machine during the round disturbs every figure above.
        "other_processes_cpu_percent": round(max(0.0, run.others_cpu) * 100 / run.seconds),
        "rss_mb": {"idle": round(run.rss_idle, 1), "peak": round(run.rss_peak, 1)},
        "db_writes_per_answer": round(writes / n, 1),
        "db_writes_per_answer_per_second": round(writes / streaming_seconds, 2)
        if streaming_seconds
        else None,
        "db_statements_per_answer": round((run.after["statements"] - run.before["statements"]) / n, 1),
        "db_writes_by_kind": dict(sorted(by_kind.items())),
        "server_log_problems": problems[:20],
        "ok": completed == n and not (lost or duplicated or malformed or out_of_order or db_mismatches),
    }


def bench_round(n: int, workload: Workload, upstream: tuple[str, int], workdir: Path) -> dict:
    """One round with a fresh database and a fresh daphne."""
    database = Path(tempfile.mkdtemp(dir=workdir)) / "bench.sqlite3"
    env = server_env(database, upstream[0], secrets.token_urlsafe(40), workload.server_env)
    logins = prepare(env, math.ceil(n / workload.streams_per_user))
    log = ARTIFACTS / f"bench-daphne-{n}.log"
    with daphne(env, log) as (server, process):
        run = asyncio.run(measure(n, workload, logins, server, process, upstream[1]))
    return summarise(n, workload, run, stored_answers(database), log)


# --------------------------------------------------------------------------- output


def _num(value: float | None, digits: int = 0) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


HEADERS = (
    "streams",
    "completed",
    "lost",
    "dup",
    "TTFT+ ms p50/p99",
    "token ms p50/p99 (max)",
    "server CPU ms/1k tok",
    "upstream/loadgen",
    "server RSS MB idle/peak",
    "DB writes/answer (/s)",
)
LEGEND = (
    "TTFT+: time to first token over the upstream's own. token: upstream write to client read.\n"
    "CPU: ms per 1000 delivered tokens (upstream/loadgen: the other two processes, for context).\n"
    "DB writes: INSERT/UPDATE/DELETE statements per answer (per second of streaming)."
)


def _cells(row: dict) -> list[str]:
    ttft, latency, cpu, rss = (
        row["ttft_overhead_ms"],
        row["token_latency_ms"],
        row["cpu_ms_per_1000_tokens"],
        row["rss_mb"],
    )
    return [
        str(row["streams"]),
        f"{row['completed']}/{row['streams']}",
        str(row["lost"]),
        str(row["duplicated"]),
        f"{_num(ttft['p50'])} / {_num(ttft['p99'])}",
        f"{_num(latency['p50'], 1)} / {_num(latency['p99'], 1)} ({_num(latency['max'])})",
        _num(cpu["server"]),
        f"{_num(cpu['upstream'])} / {_num(cpu['loadgen'])}",
        f"{_num(rss['idle'])} / {_num(rss['peak'])}",
        f"{_num(row['db_writes_per_answer'], 1)} ({_num(row['db_writes_per_answer_per_second'], 2)})",
    ]


def table(rows: list[dict]) -> str:
    lines = [list(HEADERS)] + [_cells(row) for row in rows]
    widths = [max(len(line[i]) for line in lines) for i in range(len(HEADERS))]
    text = ["  ".join(cell.rjust(width) for cell, width in zip(line, widths, strict=True)) for line in lines]
    text.insert(1, "-" * len(text[0]))
    return "\n".join(text)


def _env_item(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    return name, value


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", type=int, nargs="+", default=[10, 50, 100], help="N per round")
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
    parser.add_argument("--json", type=Path, default=ARTIFACTS / "bench-latest.json", help="results file")
    return parser.parse_args(argv)


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
    ARTIFACTS.mkdir(exist_ok=True)
    rows = []
    with (
        tempfile.TemporaryDirectory(prefix="bench-") as workdir,
        fake_upstream(ARTIFACTS / "bench-upstream.log") as upstream,
    ):
        for n in args.streams:
            print(f"{n} streams ...", file=sys.stderr, flush=True)
            rows.append(bench_round(n, workload, upstream, Path(workdir)))
    print(
        f"{workload.tokens} tokens at {workload.tps:g}/s per answer, upstream TTFT "
        f"{workload.ttft * 1000:.0f} ms, arrivals over {workload.spread:g} s; {os.cpu_count()} CPUs"
    )
    print(table(rows))
    print(LEGEND)
    args.json.write_text(
        json.dumps({"workload": dataclasses.asdict(workload), "rounds": rows}, indent=2) + "\n"
    )
    for row in rows:
        if row["other_processes_cpu_percent"] >= BUSY_MACHINE_PERCENT:
            print(
                f"{row['streams']} streams: other processes kept {row['other_processes_cpu_percent']} % "
                "of a core busy during the round; its figures are disturbed"
            )
        if row["outcomes"] != {"done": row["streams"]}:
            print(f"{row['streams']} streams, outcomes: {row['outcomes']}")
        for line in row["server_log_problems"]:
            print(f"{row['streams']} streams, server log: {line}")
    print(f"details: {args.json}")
    return 0 if all(row["ok"] for row in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
