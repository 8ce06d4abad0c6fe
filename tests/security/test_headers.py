"""HEADERS: every answer of every route, over real HTTP, carries the security headers.

A strict Content-Security-Policy (no unsafe-inline, no unsafe-eval, frame-ancestors
'none'), X-Content-Type-Options nosniff, Referrer-Policy, X-Frame-Options DENY, on pages,
the admin, JSON, redirects, errors and the event stream; HSTS in production.
`check --deploy` is tests/test_production.py::test_check_deploy_is_clean_with_the_documented_environment;
chromium runs every page under the policy without a violation in tests/browser/test_security_headers.py.
"""

from __future__ import annotations

import re

import httpx
import pytest
from django.contrib.auth import get_user_model

from tests.helpers.http import assert_security_headers
from tests.helpers.live import session_client
from tests.helpers.routes import every_route, hit, route_values

pytestmark = pytest.mark.live


def test_every_route_answers_with_the_security_headers(live, alice_http, anonymous_http, victim):
    """GET and POST of every route as anonymous, as alice and as a superuser: whatever the
    status (page, JSON, redirect, 401, 403, 404, 405, event stream)."""
    root = get_user_model().objects.create_superuser("root", password="root-password-1")
    failures, cases = [], 0
    with session_client(live, root) as root_http:
        for route in every_route():
            path = route.path(route_values(route, conversation=victim.done, message=victim.answer))
            for client in (anonymous_http, alice_http, root_http):
                for method in ("GET", "POST"):
                    if method == "POST" and route.name in ("logout", "admin:logout"):
                        continue
                    cases += 1
                    response = hit(client, method, path)
                    try:
                        assert_security_headers(response.headers)
                    except AssertionError as error:
                        failures.append(f"{method} {path} ({response.status}): {error}")
    assert failures == [], failures
    assert cases > 300


def test_event_stream_carries_the_security_headers(alice_http, victim):
    with alice_http.stream("GET", f"/api/conversations/{victim.done.pk}/events/") as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        assert_security_headers(stream.headers)


def test_production_adds_hsts_and_keeps_the_policy(alice_production, production):
    """Behind the TLS proxy: pages, JSON, the stream and the hashed static files."""
    client = alice_production.client
    conversation = client.post("/api/conversations/", json={}).json()
    page = client.get("/")
    script = re.search(r'src="(/static/assistant/chat/chat\.[0-9a-f]{12}\.js)"', page.text)
    assert script, page.text
    responses = [
        page,
        client.get(conversation["url"]),
        client.get("/api/conversations/"),
        client.get("/no-such-page/"),
        httpx.get(production.url + "/accounts/login/", headers=client.headers),
    ]
    with client.stream("GET", conversation["events_url"]) as stream:
        responses.append(stream)
    for response in responses:
        assert_security_headers(response.headers)
        assert response.headers["strict-transport-security"] == "max-age=31536000; includeSubDomains; preload"
    static = client.get(script[1])
    assert static.status_code == 200
    assert static.headers["x-content-type-options"] == "nosniff"
    assert static.headers["content-type"].startswith("text/javascript")
