"""HEAD answers end with their headers, whatever the application sends after them.

daphne 4.2 writes a response body through twisted's `Request.write` called unbound, so
twisted's guard for HEAD (which replaces the bound `write`) drops only the first body
message. Django sends a body over 64 KB, a streamed one and a file in several messages:
the rest went onto the kept-alive connection after the headers, where the client (or a
proxy reusing the connection for someone else's request) read it as the next answer.
"""

from __future__ import annotations


class HeadResponses:
    """An ASGI wrapper: a HEAD request's answer is its start message and an empty body."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope["method"] != "HEAD":
            await self.app(scope, receive, send)
            return

        async def headers_only(message) -> None:
            if message["type"] == "http.response.start":
                await send(message)
                await send({"type": "http.response.body", "body": b"", "more_body": False})
            # Body messages are dropped: the answer is complete.

        await self.app(scope, receive, headers_only)
