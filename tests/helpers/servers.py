"""Servers the attack tests need besides the app: a recording "attacker" HTTP server, and
a browser-like session on a production daphne (behind a pretend TLS proxy), logged in
with a password that daphne can check."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Self

import httpx
from django.contrib.auth.hashers import PBKDF2PasswordHasher, make_password

from tests.helpers.live import LiveServer
from tests.helpers.production import HOST, PROXIED

ORIGIN = f"https://{HOST}"


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]  # names in lower case
    body: bytes


@dataclass
class Answer:
    status: int = 404
    content_type: str = "application/json"
    # The body, made from the request: an echo server quotes what it was sent.
    body: Callable[[Recorded], bytes] = field(
        default=lambda request: b'{"error": {"message": "nothing here"}}'
    )


class RecordingServer:
    """A real HTTP server that records every request it gets and answers `answer`.

    As the attacker's server it must receive nothing; as a hostile upstream it answers
    what a test tells it (say, a 401 that quotes the API key it was sent).
    """

    def __init__(self, answer: Answer | None = None) -> None:
        self.answer = answer or Answer()
        self.requests: list[Recorded] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                headers = {name.lower(): value for name, value in self.headers.items()}
                request = Recorded(self.command, self.path, headers, self.rfile.read(length))
                owner.requests.append(request)
                body = owner.answer.body(request)
                self.send_response(owner.answer.status)
                self.send_header("Content-Type", owner.answer.content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = do_HEAD = _handle

            def log_message(self, format: str, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.netloc = f"127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, name="recording-server", daemon=True)

    def __enter__(self) -> Self:
        self.thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


def set_cookies(response: httpx.Response) -> dict[str, str]:
    """The Set-Cookie lines of a response, by cookie name."""
    return {line.split("=", 1)[0]: line for line in response.headers.get_list("set-cookie")}


def cookie_value(line: str) -> str:
    return line.split(";", 1)[0].split("=", 1)[1]


@dataclass
class FormSession:
    """A user logged in through the login form, as a browser would be (by default one
    behind the production TLS proxy). Production cookies are Secure, and httpx sends
    Secure cookies only over https, so they travel in an explicit Cookie header."""

    client: httpx.Client
    cookies: dict[str, str]  # the Set-Cookie lines seen while logging in, by name
    csrf_token: str


def form_login(
    server: LiveServer, username: str, password: str, *, proxy: dict[str, str] = PROXIED, origin: str = ORIGIN
) -> FormSession:
    with httpx.Client(base_url=server.url, headers=proxy, timeout=10) as browser:
        form = browser.get("/accounts/login/")
        assert form.status_code == 200, form.text
        cookies = set_cookies(form)
        csrf = cookie_value(cookies["csrftoken"])
        login = browser.post(
            "/accounts/login/",
            data={"username": username, "password": password, "csrfmiddlewaretoken": csrf},
            headers={"Cookie": f"csrftoken={csrf}", "Referer": f"{origin}/accounts/login/", "Origin": origin},
        )
        assert login.status_code == 302, login.text
    cookies.update(set_cookies(login))
    csrf = cookie_value(cookies["csrftoken"])
    session = cookie_value(cookies["sessionid"])
    client = httpx.Client(
        base_url=server.url,
        headers={
            **proxy,
            "Cookie": f"sessionid={session}; csrftoken={csrf}",
            "X-CSRFToken": csrf,
            "Origin": origin,
            "Referer": f"{origin}/",
        },
        timeout=10,
    )
    return FormSession(client, cookies, csrf)


PASSWORD = "correct-horse-battery-7"


def with_password(user):
    """`user` with a password the server can check: the tests' fast MD5 hasher is unknown
    to a daphne, which runs with Django's default hashers."""
    user.password = make_password(PASSWORD, hasher=PBKDF2PasswordHasher())
    user.save(update_fields=["password"])
    return user
