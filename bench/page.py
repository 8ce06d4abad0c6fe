"""The chat page's own benchmark (issue 20, item 7), not a test.

1. A conversation of 500 messages: the server time of opening it (GET of its page), cold
   and warm.
2. A 10,000-token Markdown answer streaming at 50 tokens/s into real Chromium: the main
   thread's busy share (Chrome's TaskDuration) and its longest task (the Performance
   API's long-task entries, 50 ms and more) in the answer's first and last 20 s.
   Target: at most 20 % busy and no task over 50 ms, at the end as at the start.

    python -m bench.page [--tokens 10000] [--tps 50] [--messages 500]

Results go to test-artifacts/bench-page.json and to stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.client import request
from bench.run import (
    ARTIFACTS,
    ROOT,
    Workload,
    assistant_target,
    daphne_command,
    fake_upstream,
    fresh_database,
    prepare,
    serve,
    server_env,
    wait_until_ready,
)

# An answer's Markdown, repeated to the length asked: paragraphs, a list, a table, code.
SECTION = """## Part {n}

This part explains one more aspect of the question in plain words, with enough text
to read as a real answer would, sentence after sentence.

- a first point about part {n}
- a second point, **with emphasis**
- a third point with `inline code`

| Option | Cost | Effort |
|--------|-----:|-------:|
| A | {n}0 € | low |
| B | {n}5 € | high |

```python
def part_{n}(values):
    return sum(v * {n} for v in values)
```

"""

WINDOW_SECONDS = 20

ANSWER_TEXT = "() => document.querySelector('.message.assistant .text').textContent.length"
LONGEST_SINCE = "(since) => Math.max(0, ...window.__longTasks.filter(([s]) => s >= since).map(([, d]) => d))"

PROBE = """
window.__longTasks = [];
new PerformanceObserver((list) => {
  for (const entry of list.getEntries()) window.__longTasks.push([entry.startTime, entry.duration]);
}).observe({ type: "longtask", buffered: true });
"""


def markdown_answer(tokens: int) -> str:
    words, n = [], 0
    while len(words) < tokens:
        words.extend(SECTION.format(n=n).split(" "))
        n += 1
    return " ".join(words[:tokens])


def _workload() -> Workload:
    return Workload(tokens=0, tps=0, ttft=0, spread=0, seed=1, streams_per_user=1, slack=0, server_env={})


async def page_times(server, login, path: str, repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        response = await request(server.host, server.port, "GET", path, login.headers)
        body = await response.body()
        times.append((time.perf_counter() - started) * 1000)
        assert response.status == 200, (response.status, body[:200])
    return times


def stream_in_chromium(server, login, tokens: int, tps: float) -> dict:
    from playwright.sync_api import sync_playwright

    from tests.helpers.browser import CHROMIUM, LAUNCH_ARGS

    cookies = [
        {"name": name, "value": value, "url": f"http://{server.host}:{server.port}"}
        for name, value in (part.split("=", 1) for part in login.cookie.split("; "))
    ]
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS)
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        context.add_cookies(cookies)
        context.add_init_script(PROBE)
        page = context.new_page()
        page.goto(f"http://{server.host}:{server.port}/")
        cdp = context.new_cdp_session(page)
        cdp.send("Performance.enable")

        def task_seconds() -> float:
            metrics = {m["name"]: m["value"] for m in cdp.send("Performance.getMetrics")["metrics"]}
            return metrics["TaskDuration"]

        page.fill("#composer-input", "A long answer, please.")
        page.press("#composer-input", "Enter")
        page.locator('.message.assistant[data-status="streaming"]').wait_for()
        page.wait_for_function(
            "() => document.querySelector('.message.assistant .text').textContent.length > 0"
        )
        duration = tokens / tps
        windows = {}
        started = time.monotonic()
        for name, at in (("start", 0.0), ("end", duration - WINDOW_SECONDS - 2)):
            page.wait_for_timeout(max(0.0, at - (time.monotonic() - started)) * 1000)
            since = page.evaluate("performance.now()")
            busy_before, wall_before = task_seconds(), time.monotonic()
            page.wait_for_timeout(WINDOW_SECONDS * 1000)
            busy = task_seconds() - busy_before
            wall = time.monotonic() - wall_before
            longest = page.evaluate(
                "(since) => Math.max(0, ...window.__longTasks.filter(([s]) => s >= since).map(([, d]) => d))",
                since,
            )
            chars = page.evaluate(
                "() => document.querySelector('.message.assistant .text').textContent.length"
            )
            windows[name] = {
                "busy_percent": round(100 * busy / wall, 1),
                "longest_task_ms": round(longest, 1),
                "answer_chars_at_window_end": chars,
            }
        page.locator('.message.assistant[data-status="done"]').wait_for(timeout=(duration + 60) * 1000)
        whole = page.evaluate("() => window.__longTasks.length")
        browser.close()
    return {"windows": windows, "long_tasks_in_all": whole}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokens", type=int, default=10_000)
    parser.add_argument("--tps", type=float, default=50)
    parser.add_argument("--messages", type=int, default=500)
    args = parser.parse_args(argv)
    ARTIFACTS.mkdir(exist_ok=True)
    answer = markdown_answer(args.tokens)
    switches = ("--text", json.dumps(answer), "--tps", str(args.tps))
    with (
        tempfile.TemporaryDirectory(prefix="bench-page-") as workdir,
        fake_upstream(ARTIFACTS / "bench-page-upstream.log", *switches) as upstream,
        fresh_database(Path(workdir), _workload()) as database,
    ):
        env = server_env(
            database, upstream[0], secrets.token_urlsafe(40), {"ASSISTANT_MAX_ANSWER_SECONDS": "900"}
        )
        (login,) = prepare(env, 1)
        seeded = subprocess.run(
            [sys.executable, "-m", "bench.seed", "bench0", str(args.messages // 2)],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            check=True,
            timeout=120,
        )
        conversation = seeded.stdout.strip()
        with serve(daphne_command, env, ARTIFACTS / "bench-page-daphne.log") as (server, process):
            asyncio.run(wait_until_ready(assistant_target(server, process, [login])))
            times = asyncio.run(page_times(server, login, f"/c/{conversation}/", 6))
            opening = {
                "cold_ms": round(times[0], 1),
                "warm_median_ms": round(statistics.median(times[1:]), 1),
            }
            print(
                f"{args.messages} messages: opened in {opening['cold_ms']} ms cold, "
                f"{opening['warm_median_ms']} ms warm (median of 5)",
                flush=True,
            )
            streaming = stream_in_chromium(server, login, args.tokens, args.tps)
    for name, window in streaming["windows"].items():
        print(
            f"{args.tokens} tokens at {args.tps:g}/s, {name} ({WINDOW_SECONDS} s): main thread "
            f"{window['busy_percent']} % busy, longest task {window['longest_task_ms']} ms "
            f"({window['answer_chars_at_window_end']} characters rendered)"
        )
    result = {
        "tokens": args.tokens,
        "tps": args.tps,
        "messages": args.messages,
        "opening": opening,
        **streaming,
    }
    (ARTIFACTS / "bench-page.json").write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
