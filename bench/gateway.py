"""The gateway benchmark: N concurrent streamed completions through the OpenAI-compatible
gateway (/v1/chat/completions, a personal token) beside N answers through the chat page's
path (a conversation, its event stream), on the same workload and a fresh daphne and
database each.

It answers what an operator asks before pointing the company's scripts and IDE plugins at
the gateway: how many completions one process streams, how late their tokens arrive, and
what a token costs there compared with the page. Every completion is checked token by
token as in ``bench.run`` (none lost, duplicated or out of order); the gateway stores
each exchange (ASSISTANT_GATEWAY_STORE on, the default).

Usage: ``make bench-gateway`` (N = 50, 100, 150) or
``python -m bench.gateway --streams 50 100 --tokens 300 --tps 30``.
Exits non-zero when a completion of either path did not complete or a token went wrong.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from bench.client import HTTPError, Response, request, sse_events
from bench.run import (
    ARTIFACTS,
    COLUMNS,
    MODEL,
    Login,
    Server,
    StreamResult,
    Target,
    Workload,
    _cells,
    _cpu_ratio,
    assistant_round,
    assistant_target,
    fake_upstream,
    raise_open_files_limit,
)

GATEWAY_PATH = "/v1/chat/completions"


async def run_completion(server: Server, login: Login, question: str, result: StreamResult) -> None:
    """Ask the gateway as the openai SDK does (stream: true) and read the chunks to [DONE];
    each chunk's text is recorded like a delta of the event stream."""
    body = {"model": MODEL, "messages": [{"role": "user", "content": question}], "stream": True}
    headers = {"Authorization": f"Bearer {login.token}", "Content-Type": "application/json"}
    result.sent_ns = time.monotonic_ns()
    response = await request(
        server.host, server.port, "POST", GATEWAY_PATH, headers, json.dumps(body).encode()
    )
    await read_chunks(response, result)


async def read_chunks(response: Response, result: StreamResult) -> None:
    try:
        if response.status != 200:
            raise HTTPError(f"POST {GATEWAY_PATH}: {response.status}")
        result.outcome = "stream ended early"
        async for event in sse_events(response):
            if event.data == "[DONE]":
                return
            chunk = json.loads(event.data)
            if "error" in chunk:
                result.outcome = f"error {chunk['error']['code']}"
                return
            choice = chunk["choices"][0]
            if choice["delta"].get("content"):
                result.deltas.append((event.received_ns, json.dumps({"text": choice["delta"]["content"]})))
            if choice["finish_reason"] is not None:
                result.final_event, result.end_ns = "done", event.received_ns
                result.outcome = (
                    "done" if choice["finish_reason"] == "stop" else f"done ({choice['finish_reason']})"
                )
    finally:
        response.close()


def gateway_target(server: Server, process, logins: list[Login]) -> Target:
    async def ask(i: int, question: str, result: StreamResult) -> None:
        await run_completion(server, logins[i % len(logins)], question, result)

    page = assistant_target(server, process, logins)
    return Target("gateway", server, process, ask, page.probe, page.counters)


def table(rounds: list[dict]) -> str:
    head = [
        "streams",
        *(f"{path} {column}" for path in ("page", "gateway") for column in COLUMNS),
        "CPU ratio",
    ]
    rows = [
        [str(entry["streams"]), *_cells(entry["page"]), *_cells(entry["gateway"]), str(entry["cpu_ratio"])]
        for entry in rounds
    ]
    widths = [max(len(row[c]) for row in [head, *rows]) for c in range(len(head))]
    return "\n".join(
        "  ".join(cell.rjust(width) for cell, width in zip(row, widths, strict=True)) for row in [head, *rows]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.gateway", description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", type=int, nargs="+", default=[50, 100, 150], help="N per round")
    parser.add_argument("--tokens", type=int, default=300, help="tokens per answer")
    parser.add_argument("--tps", type=float, default=30, help="upstream tokens per second")
    parser.add_argument("--ttft", type=float, default=0.2, help="upstream time to first token, s")
    parser.add_argument("--spread", type=float, default=5, help="arrivals spread over this, s")
    parser.add_argument("--json", type=Path, default=ARTIFACTS / "bench-gateway.json", help="results file")
    args = parser.parse_args(argv)
    workload = Workload(
        tokens=args.tokens,
        tps=args.tps,
        ttft=args.ttft,
        spread=args.spread,
        seed=1,
        streams_per_user=10,
        slack=30,
        server_env={},
    )
    raise_open_files_limit(max(args.streams) + 1024)
    ARTIFACTS.mkdir(exist_ok=True)
    rounds = []
    with (
        tempfile.TemporaryDirectory(prefix="bench-") as workdir,
        fake_upstream(ARTIFACTS / "bench-upstream.log") as upstream,
    ):
        for n in args.streams:
            entry = {"streams": n}
            for path in ("page", "gateway"):
                print(f"{n} streams: {path} ...", file=sys.stderr, flush=True)
                target_of = gateway_target if path == "gateway" else None
                entry[path] = assistant_round(n, workload, upstream, Path(workdir), target_of)
            entry["cpu_ratio"] = _cpu_ratio(entry["gateway"], entry["page"])
            rounds.append(entry)
    print(
        f"{workload.tokens} tokens at {workload.tps:g}/s per answer, "
        f"upstream TTFT {workload.ttft * 1000:.0f} ms"
    )
    print(table(rounds))
    print("CPU ratio: the gateway's server CPU per token / the page path's.")
    args.json.write_text(json.dumps({"rounds": rounds}, indent=2))
    return 0 if all(entry[path]["ok"] for entry in rounds for path in ("page", "gateway")) else 1


if __name__ == "__main__":
    raise SystemExit(main())
