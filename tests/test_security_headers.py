"""Security headers: a strict CSP on every response, sync and async, streams left alone."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from asgiref.sync import iscoroutinefunction
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.test import AsyncClient, Client, RequestFactory
from django.urls import reverse

from assistant.middleware import SecurityHeadersMiddleware
from tests.helpers.http import CSP, assert_security_headers


def test_security_headers_on_pages(alice):
    client = Client()
    assert_security_headers(client.get(reverse("login")))
    client.force_login(alice)
    assert_security_headers(client.get(reverse("chat")))


def test_security_headers_on_json_and_errors(alice):
    client = Client()
    client.force_login(alice)
    assert_security_headers(client.get(reverse("api_conversations")))
    assert_security_headers(client.get("/no-such-page/"))


def test_security_headers_through_the_async_handler():
    response = asyncio.run(AsyncClient().get("/no-such-page/"))
    assert response.status_code == 404
    assert_security_headers(response)


def test_security_headers_middleware_is_a_coroutine_in_an_async_chain():
    async def get_response(request: HttpRequest) -> HttpResponse:
        return HttpResponse("x")

    def get_response_sync(request: HttpRequest) -> HttpResponse:
        return HttpResponse("x")

    assert iscoroutinefunction(SecurityHeadersMiddleware(get_response))
    assert not iscoroutinefunction(SecurityHeadersMiddleware(get_response_sync))


def test_security_headers_leave_a_streamed_body_as_it_is():
    async def events() -> AsyncIterator[bytes]:
        yield b"event: delta\ndata: {}\n\n"
        yield b"event: done\ndata: {}\n\n"

    async def get_response(request: HttpRequest) -> StreamingHttpResponse:
        return StreamingHttpResponse(events(), content_type="text/event-stream")

    async def run() -> tuple[StreamingHttpResponse, list[bytes]]:
        response = await SecurityHeadersMiddleware(get_response)(RequestFactory().get("/"))
        return response, [chunk async for chunk in response.streaming_content]

    response, chunks = asyncio.run(run())
    assert response["Content-Security-Policy"] == CSP
    assert response.streaming
    assert chunks == [
        b"event: delta\ndata: {}\n\n",
        b"event: done\ndata: {}\n\n",
    ]


def test_security_headers_keep_a_policy_the_view_set_itself():
    def get_response(request: HttpRequest) -> HttpResponse:
        response = HttpResponse("x")
        response["Content-Security-Policy"] = "default-src 'none'"
        return response

    response = SecurityHeadersMiddleware(get_response)(RequestFactory().get("/"))
    assert response["Content-Security-Policy"] == "default-src 'none'"
    assert response["Permissions-Policy"] == "camera=(), microphone=(), geolocation=()"
