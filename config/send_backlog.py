"""A bound on what a response may leave in the server's memory for a client that does
not read it.

An ASGI server such as daphne takes every `http.response.body` message at once: what
the client does not read waits in the server's buffer, so an event stream whose client
stopped reading grew there without bound. Under daphne, config/fastpaths/daphne.py hands
the application the connection's backlog as the scope extension EXTENSION: `paused`
while the server's buffer is full (Twisted's producer API), `abort()` to cut the
connection. `bounded_send` counts what is sent while it is paused; past `limit` bytes
the connection is cut, and the application hears `http.disconnect` as when a client
leaves. A client of an event stream then reconnects with its Last-Event-ID and resumes
from the log. Under a server that waits in `send` instead (uvicorn), or without the
extension, `send` is returned unchanged.
"""

from __future__ import annotations

EXTENSION = "assistant.send_backlog"


def bounded_send(scope: dict, send, limit: int):
    """`send`, cutting the connection once more than `limit` bytes were sent while the
    server's buffer for it was full."""
    backlog = (scope.get("extensions") or {}).get(EXTENSION)
    if backlog is None:
        return send
    backlog.watch()
    held = 0

    async def send_bounded(message: dict) -> None:
        nonlocal held
        await send(message)
        if not backlog.paused:
            held = 0
            return
        held += len(message.get("body", b""))
        if held > limit:
            backlog.abort()

    return send_bounded
