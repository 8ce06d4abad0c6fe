"""Single sign-on from a trusted proxy header: off by default, believed only from the proxy.

The sync tests go through Django's test Client; the async ones through Django's ASGI
handler with a hand-made scope (the only way to choose the peer address, or none as on
a Unix socket), and one through a real daphne process.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import httpx
import pytest
from django.contrib.auth import SESSION_KEY as USER_SESSION_KEY
from django.contrib.auth import get_user_model
from django.contrib.sessions.backends.db import SessionStore
from django.core.handlers.asgi import ASGIHandler
from django.test import Client

from assistant import sso
from assistant.models import Conversation
from tests.helpers.http import asgi_get_scope
from tests.helpers.live import LiveServer, clean_env, live_env, start_daphne, stop_daphne
from tests.helpers.production import run_python
from tests.helpers.tokens import bearer, token_for

User = get_user_model()


@pytest.fixture
def sso_on(settings, db):
    settings.ASSISTANT_SSO_HEADER = "X-Forwarded-User"
    settings.ASSISTANT_SSO_EMAIL_HEADER = "X-Forwarded-Email"
    settings.ASSISTANT_SSO_TRUSTED_PROXIES = ["127.0.0.1", "10.1.0.0/16"]
    settings.ASSISTANT_SSO_CREATE_USERS = True
    return settings


def proxy_client(user: str | None = None, *, peer: str = "10.1.2.3", **headers: str) -> Client:
    if user is not None:
        headers["X-Forwarded-User"] = user
    return Client(REMOTE_ADDR=peer, headers=headers)


def logged_in_as(response) -> str | None:
    user = response.wsgi_request.user
    return user.get_username() if user.is_authenticated else None


# --- sync ------------------------------------------------------------------------------


def test_sso_is_off_by_default(db):
    response = proxy_client("carol", peer="127.0.0.1").get("/")

    assert response.status_code == 302  # to the login page
    assert not User.objects.filter(username="carol").exists()


def test_sso_trusted_proxy_logs_in_a_new_user(sso_on):
    response = proxy_client("carol", **{"X-Forwarded-Email": "carol@example.com"}).get("/")

    assert response.status_code == 200
    assert logged_in_as(response) == "carol"
    carol = User.objects.get(username="carol")
    assert carol.email == "carol@example.com"
    assert not carol.has_usable_password()
    assert response.wsgi_request.session[sso.SESSION_KEY] == "carol"


def test_sso_trusted_proxy_logs_in_an_existing_user_once(sso_on, alice):
    client = proxy_client("alice")
    first = client.get("/")
    session_key = client.cookies["sessionid"].value
    second = client.get("/")

    assert logged_in_as(first) == logged_in_as(second) == "alice"
    assert client.cookies["sessionid"].value == session_key  # no new login per request
    assert User.objects.count() == 1


def test_sso_header_from_an_untrusted_peer_is_ignored(sso_on):
    response = proxy_client("carol", peer="192.0.2.7").get("/")

    assert response.status_code == 302
    assert logged_in_as(response) is None
    assert not User.objects.filter(username="carol").exists()


def test_sso_header_from_an_untrusted_peer_leaves_a_password_session_alone(sso_on, alice):
    client = proxy_client("bob", peer="192.0.2.7")
    client.force_login(alice)

    assert logged_in_as(client.get("/")) == "alice"


def test_sso_header_change_switches_the_user(sso_on, alice, bob):
    client = proxy_client("alice")
    assert logged_in_as(client.get("/")) == "alice"
    alice_session = client.cookies["sessionid"].value

    client.defaults["HTTP_X_FORWARDED_USER"] = "bob"
    response = client.get("/")

    assert logged_in_as(response) == "bob"
    assert client.cookies["sessionid"].value != alice_session
    assert not SessionStore().exists(alice_session)  # alice's session is gone, not reused


def test_sso_header_replaces_a_password_login(sso_on, alice, bob):
    client = proxy_client("bob")
    client.force_login(alice)

    assert logged_in_as(client.get("/")) == "bob"


def test_sso_inactive_user_is_refused_and_logged_out(sso_on, alice):
    client = proxy_client("alice")
    assert logged_in_as(client.get("/")) == "alice"
    User.objects.filter(pk=alice.pk).update(is_active=False)

    response = client.get("/")

    assert response.status_code == 403
    assert "deactivated" in response.text
    assert logged_in_as(client.get("/", headers={"X-Forwarded-User": ""})) is None


def test_sso_unknown_user_is_refused_when_creation_is_off(sso_on):
    sso_on.ASSISTANT_SSO_CREATE_USERS = False

    response = proxy_client("carol").get("/")

    assert response.status_code == 403
    assert response["Content-Type"] == "text/plain; charset=utf-8"
    assert not User.objects.filter(username="carol").exists()


@pytest.mark.parametrize("name", ["carol smith", "alice,bob", "x" * 151, "<script>"])
def test_sso_unusable_user_name_is_refused(sso_on, alice, name):
    response = proxy_client(name).get("/")

    assert response.status_code == 403
    assert name not in response.text
    assert User.objects.count() == 1


def test_sso_header_name_is_configurable(sso_on):
    sso_on.ASSISTANT_SSO_HEADER = "Remote-User"

    ignored = proxy_client("carol").get("/")
    honoured = proxy_client(**{"Remote-User": "dave"}).get("/")

    assert logged_in_as(ignored) is None
    assert logged_in_as(honoured) == "dave"


def test_sso_session_ends_when_the_proxy_stops_sending_the_header(sso_on):
    client = proxy_client("carol")
    assert logged_in_as(client.get("/")) == "carol"

    del client.defaults["HTTP_X_FORWARDED_USER"]

    assert logged_in_as(client.get("/")) is None


def test_sso_proxy_without_header_leaves_a_password_session_alone(sso_on, alice):
    client = proxy_client()
    client.force_login(alice)

    assert logged_in_as(client.get("/")) == "alice"


@pytest.mark.parametrize(
    ("trusted", "peer", "believed"),
    [
        (["10.1.0.0/16"], "10.1.255.1", True),
        (["10.1.0.0/16"], "10.2.0.1", False),
        (["::1"], "::1", True),
        (["127.0.0.1"], "::ffff:127.0.0.1", True),
        (["fd00::/8"], "fd12::5", True),
        (["unix"], "127.0.0.1", False),
    ],
)
def test_sso_trusted_proxies_are_addresses_and_networks(sso_on, trusted, peer, believed):
    sso_on.ASSISTANT_SSO_TRUSTED_PROXIES = trusted

    response = proxy_client("carol", peer=peer).get("/")

    assert (logged_in_as(response) == "carol") is believed


def test_sso_middleware_is_not_loaded_when_off(settings):
    settings.ASSISTANT_SSO_HEADER = ""
    from django.core.exceptions import MiddlewareNotUsed

    with pytest.raises(MiddlewareNotUsed):
        sso.ProxyHeaderLoginMiddleware(lambda request: None)


# --- async, through Django's ASGI handler ------------------------------------------------


async def asgi_get(
    path: str, *, peer: tuple[str, int] | None, headers: dict[str, str], cookie: str = ""
) -> tuple[int, str | None]:
    """One GET through a fresh ASGIHandler: the status and the session cookie it set."""
    raw_headers = [(b"host", b"testserver")]
    raw_headers += [(name.lower().encode(), value.encode()) for name, value in headers.items()]
    if cookie:
        raw_headers.append((b"cookie", f"sessionid={cookie}".encode()))
    scope = asgi_get_scope(path, raw_headers, peer)
    sent_body = False

    async def receive():
        nonlocal sent_body
        if not sent_body:
            sent_body = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await asyncio.Event().wait()  # the client stays connected
        return {"type": "http.disconnect"}

    messages = []

    async def send(message):
        messages.append(message)

    await ASGIHandler()(scope, receive, send)
    start = messages[0]
    session = None
    for name, value in start["headers"]:
        if name.lower() == b"set-cookie" and value.startswith(b"sessionid="):
            session = value.decode().split("=", 1)[1].split(";", 1)[0]
    return start["status"], session


def session_user(session_key: str | None) -> str | None:
    user_id = SessionStore(session_key=session_key).load().get(USER_SESSION_KEY) if session_key else None
    return User.objects.get(pk=user_id).get_username() if user_id else None


def test_sso_async_trusted_proxy_logs_in(sso_on, transactional_db):
    status, session = asyncio.run(
        asgi_get("/api/conversations/", peer=("10.1.0.9", 5000), headers={"X-Forwarded-User": "carol"})
    )

    assert status == 200
    assert session_user(session) == "carol"


def test_sso_async_untrusted_peer_is_ignored(sso_on, transactional_db):
    status, session = asyncio.run(
        asgi_get("/api/conversations/", peer=("192.0.2.7", 5000), headers={"X-Forwarded-User": "carol"})
    )

    assert status == 401
    assert session is None
    assert not User.objects.filter(username="carol").exists()


def test_sso_async_header_change_switches_the_user(sso_on, transactional_db):
    async def scenario():
        _, first = await asgi_get("/", peer=("127.0.0.1", 1), headers={"X-Forwarded-User": "carol"})
        status, second = await asgi_get(
            "/api/conversations/", peer=("127.0.0.1", 1), headers={"X-Forwarded-User": "dave"}, cookie=first
        )
        return first, status, second

    first, status, second = asyncio.run(scenario())

    assert status == 200
    assert first is not None
    assert User.objects.filter(username="carol").exists()
    assert session_user(first) is None  # carol's session was flushed
    assert session_user(second) == "dave"


def test_sso_async_inactive_user_is_refused(sso_on, transactional_db):
    User.objects.create_user("carol", is_active=False)

    status, _ = asyncio.run(
        asgi_get("/api/conversations/", peer=("127.0.0.1", 1), headers={"X-Forwarded-User": "carol"})
    )

    assert status == 403


@pytest.mark.parametrize(("trusted", "believed"), [(["unix"], True), (["127.0.0.1"], False)])
def test_sso_async_unix_socket_peer_is_trusted_only_when_listed(sso_on, transactional_db, trusted, believed):
    sso_on.ASSISTANT_SSO_TRUSTED_PROXIES = trusted

    status, _ = asyncio.run(asgi_get("/api/conversations/", peer=None, headers={"X-Forwarded-User": "carol"}))

    assert (status == 200) is believed


# --- a real daphne ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def sso_server(django_db_setup, django_db_blocker, fake_upstream) -> Iterator[LiveServer]:
    env = live_env(
        fake_upstream,
        ASSISTANT_SSO_HEADER="X-Forwarded-User",
        ASSISTANT_SSO_TRUSTED_PROXIES="127.0.0.1",
    )
    server = start_daphne(env, "daphne-sso")
    yield server
    stop_daphne(server)


@pytest.mark.live
def test_sso_through_daphne(sso_server, transactional_db):
    with httpx.Client(base_url=sso_server.url, timeout=10) as client:
        page = client.get("/", headers={"X-Forwarded-User": "carol"})
        assert page.status_code == 200
        assert "carol" in page.text
        conversations = client.get("/api/conversations/", headers={"X-Forwarded-User": "carol"})
        assert conversations.status_code == 200

    # Django drops headers spelt with underscores: no way around a proxy that sets the real one.
    spoofed = httpx.get(sso_server.url + "/", headers={"X-Forwarded_User": "carol"}, timeout=10)
    assert spoofed.status_code == 302
    twice = httpx.get(
        sso_server.url + "/",
        headers=[("X-Forwarded-User", "carol"), ("X-Forwarded-User", "alice")],
        timeout=10,
    )
    assert twice.status_code == 403


@pytest.mark.live
def test_sso_event_stream_through_daphne(sso_server, transactional_db):
    """The event stream is served before Django's middleware chain; the proxy's word counts there too."""
    carol = User.objects.create_user("carol")
    User.objects.create_user("erin", is_active=False)
    conversation = Conversation.objects.create(owner=carol, model="fake-model")
    url = f"{sso_server.url}/api/conversations/{conversation.pk}/events/"

    with httpx.Client(timeout=10) as client:
        with client.stream("GET", url, headers={"X-Forwarded-User": "carol"}) as response:
            opening = next(response.iter_text())
        assert response.status_code == 200
        assert "stream-open" in opening
        assert session_user(response.cookies["sessionid"]) == "carol"  # the new session was saved
        # The same session, another name from the proxy: that user, who does not own it.
        assert client.get(url, headers={"X-Forwarded-User": "dave"}).status_code == 404
    assert httpx.get(url, headers={"X-Forwarded-User": "erin"}, timeout=10).status_code == 403
    assert httpx.get(url, timeout=10).status_code == 401


@pytest.mark.live
def test_sso_lets_apps_in_with_a_token_the_proxy_passed(sso_server, transactional_db):
    """Through the trusted proxy without its header (nginx lets Bearer requests past the
    sign-on): the token decides, on the API and the stream; no session is made or ended."""
    carol = User.objects.create_user("carol")
    conversation = Conversation.objects.create(owner=carol, model="fake-model", title="Notizen")
    secret = token_for(carol)
    url = f"{sso_server.url}/api/conversations/{conversation.pk}/events/"

    with httpx.Client(base_url=sso_server.url, headers=bearer(secret), timeout=10) as app:
        listed = app.get("/api/conversations/")
        # The proxy's header naming someone else does not outrank the token.
        named = app.get("/api/conversations/", headers={"X-Forwarded-User": "dave"})
        with app.stream("GET", url) as response:
            opening = next(response.iter_text())

    assert [c["title"] for c in listed.json()["conversations"]] == ["Notizen"]
    assert [c["title"] for c in named.json()["conversations"]] == ["Notizen"]
    assert "sessionid" not in listed.cookies
    assert not User.objects.filter(username="dave").exists()
    assert response.status_code == 200
    assert "stream-open" in opening
    assert httpx.get(url, headers=bearer("ast_" + "x" * 43), timeout=10).status_code == 401


# --- settings --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"ASSISTANT_SSO_HEADER": "X-Forwarded-User"}, "ASSISTANT_SSO_TRUSTED_PROXIES must list"),
        (
            {"ASSISTANT_SSO_HEADER": "X-Forwarded-User", "ASSISTANT_SSO_TRUSTED_PROXIES": "proxy.local"},
            "ASSISTANT_SSO_TRUSTED_PROXIES takes IPs, CIDRs or `unix`, got 'proxy.local'",
        ),
    ],
)
def test_sso_misconfiguration_fails_at_start(env, message):
    result = run_python("import django; django.setup()", clean_env(**env))

    assert result.returncode != 0
    assert message in result.stderr
