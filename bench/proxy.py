"""The classic pass-through proxy the benchmark compares Assistant with.

What the issue measures Assistant against: FastAPI + sse-starlette + the openai SDK, one
endpoint that forwards a question upstream with ``stream=True`` and relays every chunk's
delta as a server-sent event. No login, no storage, no resume: a stream lives exactly as
long as its answer. Written the way the libraries' documentation shows it, neither tuned
nor hobbled; the only setting is ``max_retries=0``, as for Assistant in the benchmark.

Benchmark-only (requirements-bench.txt). bench/run.py serves it with one uvicorn process
(``uvicorn bench.proxy:app``), which reads ``OPENAI_BASE_URL`` and ``OPENAI_API_KEY``.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import openai
from fastapi import FastAPI
from pydantic import BaseModel
from sse_starlette import EventSourceResponse

MODEL = "gpt-4o-mini"

app = FastAPI()
client = openai.AsyncOpenAI(max_retries=0)


class ChatRequest(BaseModel):
    prompt: str


async def relay(request: ChatRequest) -> AsyncIterator[dict[str, str]]:
    try:
        stream = await client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": request.prompt}], stream=True
        )
        async for chunk in stream:
            if not chunk.choices:
                continue
            choice = chunk.choices[0]
            if choice.delta.content:
                yield {"event": "delta", "data": json.dumps({"text": choice.delta.content})}
            if choice.finish_reason:
                yield {"event": "done", "data": json.dumps({"finish_reason": choice.finish_reason})}
    except openai.APIError as exc:
        error = {"code": getattr(exc, "status_code", None) or 502, "type": type(exc).__name__}
        yield {"event": "error", "data": json.dumps(error)}


@app.post("/chat")
async def chat(request: ChatRequest) -> EventSourceResponse:
    return EventSourceResponse(relay(request))
