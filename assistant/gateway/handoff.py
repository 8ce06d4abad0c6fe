"""How a completion leaves Django's request thread: the view hands it over, the ASGI
layer runs it.

A Django request holds its thread (config/fastpaths/django.py: one of at most
ASSISTANT_REQUEST_THREADS lanes) until its response is sent, a streamed body included,
and a completion lasts as long as the model writes: a few streamed completions would
hold every lane. So requests under /v1/ pass through `handoff_app` (config/asgi.py,
`route`) on their way into Django's ASGI app. It puts a `Handoff` into the request's
scope; the chat completions view, in Django's chain like any view (the Bearer token,
hosts, language, security headers: every middleware applies), checks the request, the
limits and the usage row, then hands its `Completion` over and returns an empty
response. Its `http.response.start` (the headers the chain gave it) is held and its
body dropped; once Django's handler has returned, and with it the thread, the
completion runs here, on the event loop, and sends the real response with those
headers. Its database work (the end) is one call into the process's shared thread.

Every other request under /v1/ (the models list, errors) goes through untouched.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.urls import URLPattern, re_path

from assistant.gateway.completion import Completion

SCOPE_KEY = "assistant.gateway"


@dataclass
class Handoff:
    """Set by the view: the completion to run once Django has answered."""

    completion: Completion | None = None


def handoff_app(django):
    """The ASGI app for /v1/: Django's, and then the completion the view handed over."""

    async def app(scope, receive, send) -> None:
        if scope["type"] != "http":
            await django(scope, receive, send)
            return
        handoff = scope[SCOPE_KEY] = Handoff()
        held: dict | None = None

        async def send_unless_handed_over(message: dict) -> None:
            nonlocal held
            if handoff.completion is None:
                await send(message)
            elif message["type"] == "http.response.start":
                held = message  # sent by the completion, with its own status and type

        await django(scope, receive, send_unless_handed_over)
        # None: Django sent nothing (the client left before the response); the usage row
        # counts the completion without tokens, and nothing went upstream.
        if handoff.completion is not None and held is not None:
            await handoff.completion.respond(scope, held["headers"], receive, send)

    return app


def route(django) -> URLPattern:
    """The route of channels' URLRouter (config/asgi.py) for every path under /v1/."""
    return re_path(r"^v1/", handoff_app(django))
