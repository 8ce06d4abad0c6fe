"""CSRF, GET, CORS and COOKIES: what a malicious web page in the same browser can do.

It can make the browser send requests with alice's cookies but cannot read her CSRF
token, set headers a form cannot set without a CORS preflight, or read an answer unless
the app grants its origin. Every route is attacked (found by walking the URL resolver)
on the live daphne, and over HTTPS settings on a production daphne.
"""

from __future__ import annotations

import httpx
import pytest
from django.contrib.auth import get_user_model
from django.test import Client

from assistant.models import Conversation, Message
from tests.helpers.live import CSRF_TOKEN, session_client
from tests.helpers.production import PROXIED
from tests.helpers.routes import LOGOUT, UNSAFE_METHODS, Route, db_fingerprint, every_route, hit, route_values
from tests.helpers.servers import ORIGIN, PASSWORD, form_login, with_password

pytestmark = pytest.mark.live

EVIL = "https://evil.example"


def app_routes(victim) -> list[tuple[Route, str]]:
    """Every route a session cookie signs in to: all but the gateway's (/v1/), which takes
    a personal token only and answers a cookie 401 (tests/test_gateway.py)."""
    return [
        (route, route.path(route_values(route, conversation=victim.done, message=victim.answer)))
        for route in every_route()
        if not route.route.removeprefix("^").startswith("v1/")
    ]


@pytest.mark.parametrize(
    ("cookie", "header"),
    [
        (None, None),  # a cross-site form: no token at all
        (CSRF_TOKEN, None),  # the cookie rides along, the page cannot read it into a header
        (CSRF_TOKEN, "u" * 32),  # a guessed token
        ("u" * 32, CSRF_TOKEN),  # a planted cookie (say, from a sibling domain) not matching
    ],
    ids=["no token", "cookie only", "wrong header", "wrong cookie"],
)
def test_unsafe_methods_without_the_csrf_token_are_refused_everywhere(
    live, alice, victim, upstream, cookie, header
):
    """POST, PUT, PATCH and DELETE on every route with alice's session but no valid CSRF
    token: 403 and nothing changes. The same session with the token can rename (control)."""
    session = dict(live_session_cookie(live, alice))
    if cookie:
        session["csrftoken"] = cookie
    before = db_fingerprint()
    failures, cases = [], 0
    with httpx.Client(
        base_url=live.url, cookies=session, headers={"X-CSRFToken": header} if header else {}, timeout=10
    ) as browser:
        for _route, path in app_routes(victim):
            for method in UNSAFE_METHODS:
                cases += 1
                response = hit(browser, method, path)
                if response.status != 403:
                    failures.append(f"{method} {path}: {response.status}")
        assert failures == [], failures
        assert db_fingerprint() == before
        assert upstream.requests == []
        browser.cookies.set("csrftoken", CSRF_TOKEN)
        control = browser.patch(
            f"/api/conversations/{victim.done.pk}/",
            json={"title": "renamed"},
            headers={"X-CSRFToken": CSRF_TOKEN},
        )
    assert control.status_code == 200, control.text
    assert cases > 200


def live_session_cookie(live, user) -> dict[str, str]:
    """The user's session cookie only (session_client adds a CSRF cookie and header)."""
    client = Client()
    client.force_login(user)
    return {"sessionid": client.cookies["sessionid"].value}


@pytest.mark.parametrize(
    "origin",
    [
        {"Origin": EVIL, "Referer": f"{EVIL}/attack.html"},
        {"Origin": "null"},  # a sandboxed iframe or a data: URL
        {"Origin": f"http://{PROXIED['Host']}"},  # the same host over plain HTTP (a MITM)
        {"Origin": f"{ORIGIN}.evil.example"},
        {"Referer": f"{EVIL}/attack.html"},  # no Origin: Django checks the Referer over HTTPS
        {},  # neither: refused over HTTPS
    ],
    ids=["foreign origin", "null origin", "http origin", "suffix origin", "foreign referer", "no referer"],
)
def test_production_refuses_unsafe_requests_from_other_origins_even_with_the_token(
    alice_production, victim, upstream, origin
):
    """With the right cookie and token but the request made from another origin (a page
    that somehow learnt the token): refused over HTTPS on every app route and method."""
    own = alice_production.client
    headers = {name: value for name, value in own.headers.items() if name not in ("origin", "referer")}
    before = db_fingerprint()
    failures = []
    with httpx.Client(base_url=own.base_url, headers={**headers, **origin}, timeout=10) as foreign:
        for route, path in app_routes(victim):
            methods = UNSAFE_METHODS if route.owned_object or route.name == "api_conversations" else ("POST",)
            for method in methods:
                response = foreign.request(method, path, json={"title": "x", "content": "x"})
                if response.status_code != 403:
                    failures.append(f"{method} {path}: {response.status_code}")
    assert failures == [], failures
    assert db_fingerprint() == before
    assert upstream.requests == []
    # Control: the same session from our own origin goes through.
    renamed = own.patch(f"/api/conversations/{victim.done.pk}/", json={"title": "renamed"})
    assert renamed.status_code == 200, renamed.text


def test_get_and_head_never_change_state(live, alice_http, victim, rita_http, upstream):
    """GET and HEAD on every route, as the owner of the conversations and as a reviewer in
    the admin (whose GETs open no transcript and log nothing): every row stays the same."""
    root = get_user_model().objects.create_superuser("root", password="root-password-1")
    cases = 0
    with session_client(live, root) as root_http:
        before = db_fingerprint()
        for client in (alice_http, rita_http, root_http):
            for _route, path in app_routes(victim):
                for method in ("GET", "HEAD", "OPTIONS"):
                    cases += 1
                    hit(client, method, path)
        assert db_fingerprint() == before
    assert upstream.requests == []
    assert cases > 400


def cors_headers(headers: httpx.Headers) -> list[str]:
    return [name for name in headers if name.lower().startswith("access-control-")]


def test_no_route_grants_another_origin(live, alice_http, victim):
    """A preflight and a simple request from a foreign origin on every route: no
    Access-Control-Allow-* header, so the browser keeps the answers from the page."""
    failures = []
    for route, path in app_routes(victim):
        if route.name in LOGOUT:
            continue
        preflight = alice_http.options(
            path,
            headers={
                "Origin": EVIL,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "content-type, x-csrftoken",
            },
        )
        simple = hit(alice_http, "GET", path, headers={"Origin": EVIL})
        for response in (preflight.headers, simple.headers):
            if cors_headers(response):
                failures.append(f"{path}: {cors_headers(response)}")
    assert failures == [], failures


def test_production_cookies_are_secure_httponly_and_same_site(alice_production):
    session = alice_production.cookies["sessionid"]
    csrf = alice_production.cookies["csrftoken"]
    for attribute in ("HttpOnly", "SameSite=Lax", "Secure", "Path=/"):
        assert attribute in session.split("; "), session
    for attribute in ("SameSite=Lax", "Secure"):
        assert attribute in csrf.split("; "), csrf


def test_development_cookies_are_httponly_and_same_site_over_plain_http(live, alice):
    login = form_login(live, with_password(alice).username, PASSWORD, proxy={}, origin=live.url)
    login.client.close()
    session = login.cookies["sessionid"].split("; ")
    assert "HttpOnly" in session
    assert "SameSite=Lax" in session
    assert "Secure" not in session  # plain HTTP in development: a Secure cookie would never come back


def test_head_answers_end_with_their_headers(live, alice, rita):
    """A HEAD answer has headers only. daphne wrote every body message after the first
    onto the connection (bodies over 64 KB, streamed ones), so the next answer on a
    kept-alive connection was read from the middle of that body: behind a proxy that
    reuses connections, some other client's answer. Each HEAD here is followed by a GET
    on the same connection."""
    long = Conversation.objects.create(owner=alice, title="lang")
    Message.objects.create(conversation=long, role="user", content="Lies vor. " * 10_000)
    transcript = f"/admin/assistant/conversation/{long.pk}/change/"
    cases = [
        (alice, "/static/vendor/highlightjs/highlight.min.js"),  # a file of 126 KB
        (rita, transcript),  # a page of 100 KB
        (rita, "/admin/assistant/accesslog/export/"),  # a streamed CSV
    ]
    for user, path in cases:
        with session_client(live, user, limits=httpx.Limits(max_connections=1)) as one_connection:
            if path == transcript:  # the reason first (the access log then has a row to export)
                reason = {"purpose": "support", "details": "Ticket 4711: alice asked for help"}
                assert (
                    one_connection.post(path.replace("/change/", "/review/"), data=reason).status_code == 302
                )
            head = one_connection.head(path)
            assert head.status_code == 200, path
            assert head.content == b""
            after = one_connection.get("/healthz")
            assert after.json() == {"status": "ok"}, path
