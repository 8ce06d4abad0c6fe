"""Debian's chromium driven by playwright: launching it, logged-in pages that fail on JS
errors or dialogs, the page's chat as a user sees it, a network that can be cut."""

from __future__ import annotations

import contextlib
import shutil
import socket
import struct
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from django.conf import settings

from assistant.models import Conversation
from tests.helpers.live import ARTIFACTS, session_cookie

# How long a test waits for a short answer to finish (the fake answers in well under a second).
ANSWER_TIMEOUT_MS = 15_000
# A phone: the context options of a small touch screen.
PHONE = {"viewport": {"width": 390, "height": 844}, "is_mobile": True, "has_touch": True}


def login_context(browser, live, user, **context_options):
    """A browser context with `user`'s session cookie for the live server."""
    context = browser.new_context(**context_options)
    context.add_cookies(
        [{"name": settings.SESSION_COOKIE_NAME, "value": session_cookie(user), "url": live.url}]
    )
    return context


@dataclass
class OpenPage:
    context: object
    page: object
    errors: list[str] = field(default_factory=list)
    dialogs: list[str] = field(default_factory=list)


class Pages:
    """Opens browser contexts for a test and, on close, fails on JS errors or dialogs in any."""

    def __init__(self, browser, live) -> None:
        self.browser = browser
        self.live = live
        self.opened: list[OpenPage] = []

    def open(self, user=None, path: str = "/", **context_options) -> OpenPage:
        context_options.setdefault("viewport", {"width": 1100, "height": 800})
        if user is None:
            context = self.browser.new_context(**context_options)
        else:
            context = login_context(self.browser, self.live, user, **context_options)
        page = context.new_page()
        opened = OpenPage(context, page)

        def on_dialog(dialog) -> None:
            opened.dialogs.append(f"{dialog.type}: {dialog.message}")
            dialog.dismiss()

        page.on("pageerror", lambda error: opened.errors.append(str(error)))
        page.on("dialog", on_dialog)
        self.opened.append(opened)
        if path is not None:
            page.goto(self.live.url + path)
        return opened

    def close(self) -> None:
        problems = []
        for opened in self.opened:
            problems += [f"JS error: {e}" for e in opened.errors]
            problems += [f"dialog: {d}" for d in opened.dialogs]
            opened.context.close()
        assert not problems, problems


def last_assistant(page):
    return page.locator(".message.assistant").last


def text_of(locator) -> str:
    """The shown text of a message (its `.text`), as the user reads it."""
    return locator.locator(".text").text_content()


def wait_status(page, status: str, timeout: float = ANSWER_TIMEOUT_MS):
    """The newest assistant message once it has `status`, as a locator pinned to its id."""
    newest = last_assistant(page)
    newest.and_(page.locator(f'[data-status="{status}"]')).wait_for(timeout=timeout)
    return page.locator(f'[data-message-id="{newest.get_attribute("data-message-id")}"]')


def message_id(locator) -> int:
    return int(locator.get_attribute("data-message-id"))


def only_conversation(user) -> Conversation:
    conversations = list(Conversation.objects.filter(owner=user))
    assert len(conversations) == 1, conversations
    return conversations[0]


# Installed before an answer starts: records every distinct text of the newest assistant
# message as the DOM changes, and every text of the connection indicator.
RECORDER = """
() => {
  window.__texts = [];
  window.__connection = [];
  const messages = document.getElementById("messages");
  const connection = document.getElementById("connection");
  const record = () => {
    const all = messages.querySelectorAll(".message.assistant .text");
    const text = all.length ? all[all.length - 1].textContent : null;
    if (text !== null && window.__texts[window.__texts.length - 1] !== text) window.__texts.push(text);
    const state = connection.textContent.trim();
    if (window.__connection[window.__connection.length - 1] !== state) window.__connection.push(state);
  };
  new MutationObserver(record).observe(document.body, {
    subtree: true, childList: true, characterData: true, attributes: true,
  });
}
"""


class DroppingProxy:
    """A TCP proxy in front of the live server whose "network" the test can cut.

    `drop()` resets every open connection (the browser sees its streams break mid-answer, as
    when Wi-Fi goes) and resets new ones until `restore()`. Chromium's offline emulation
    (`context.set_offline`) is no substitute: it blocks new requests but leaves an open
    EventSource stream flowing. `answer_next(response)` answers the next new connection
    itself, with those bytes, and closes it (a refusal the server did not send).
    """

    def __init__(self, live_url: str) -> None:
        self.target = ("127.0.0.1", int(live_url.rsplit(":", 1)[1]))
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.down = threading.Event()
        self.lock = threading.Lock()
        self.connections: list[tuple[socket.socket, socket.socket, list[threading.Thread]]] = []
        self.answers: list[bytes] = []
        threading.Thread(target=self._accept, name="dropping-proxy", daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            with self.lock:
                if self.down.is_set():
                    _reset(client)
                    continue
                if self.answers:
                    with contextlib.suppress(OSError):
                        client.recv(65536)  # the request, unread beyond its first bytes
                        client.sendall(self.answers.pop(0))
                    client.close()
                    continue
                try:
                    server = socket.create_connection(self.target)
                except OSError:
                    _reset(client)
                    continue
                pumps = [
                    threading.Thread(target=self._pump, args=(source, target), daemon=True)
                    for source, target in ((client, server), (server, client))
                ]
                self.connections.append((client, server, pumps))
            for pump in pumps:
                pump.start()

    def _pump(self, source: socket.socket, target: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                target.sendall(data)
            if not self.down.is_set():
                target.shutdown(socket.SHUT_WR)  # the ordinary end of a response

    def drop(self) -> None:
        with self.lock:
            self.down.set()
            connections, self.connections = self.connections, []
        sockets = [sock for client, server, _ in connections for sock in (client, server)]
        # Wake every pump without sending anything; only then close (a socket closed while
        # another thread blocks in recv() on it stays open in the kernel).
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RD)
        for _, _, pumps in connections:
            for pump in pumps:
                pump.join(timeout=2)
        for sock in sockets:
            _reset(sock)

    def restore(self) -> None:
        self.down.clear()

    def answer_next(self, response: bytes) -> None:
        with self.lock:
            self.answers.append(response)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept()
        self.listener.close()
        self.drop()


def _reset(sock: socket.socket) -> None:
    """Close with a TCP reset, as a broken network path looks to the other end."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        sock.close()


# An init script (context.add_init_script): records every event the page's EventSources
# receive, as {type, data, id} in window.__events, so a test sees the stream as the page does.
EVENT_LOG = """
(() => {
  window.__events = [];
  const Native = window.EventSource;
  window.EventSource = class extends Native {
    constructor(...args) {
      super(...args);
      for (const type of ["start", "delta", "done", "error", "title", "stream-reset"]) {
        this.addEventListener(type, (event) => {
          window.__events.push({ type, data: event.data ?? null, id: event.lastEventId });
        });
      }
    }
  };
})();
"""


def send(page, content: str) -> None:
    page.fill("#composer-input", content)
    page.press("#composer-input", "Enter")


def wait_for_text(page, fragment: str, timeout: float = 10_000) -> None:
    """Until the newest assistant message shows `fragment`."""
    page.wait_for_function(
        """(fragment) => {
            const all = document.querySelectorAll("#messages .message.assistant .text");
            return all.length > 0 && all[all.length - 1].textContent.includes(fragment);
        }""",
        arg=fragment,
        timeout=timeout,
    )


CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
SCREENSHOTS = ARTIFACTS / "screenshots"
LAUNCH_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def screenshot(page, name: str) -> None:
    """Keep a picture of a state as a test artifact (not in git)."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"))


@contextlib.contextmanager
def chromium() -> Iterator:
    """Chromium driven by playwright, closed at the end of the block.

    Playwright's sync API keeps an asyncio loop running in this thread, so Django takes
    every ORM call here for one from async code (SynchronousOnlyOperation). The tests'
    ORM calls are synchronous all the same: allowed while the browser lives. The daphne
    under test never sees the variable (its environment drops DJANGO_*).
    """
    if not Path(CHROMIUM).exists():
        pytest.skip("chromium is not installed (apt-get install chromium); .ci/run installs it")
    from playwright.sync_api import sync_playwright

    with pytest.MonkeyPatch.context() as patch, sync_playwright() as playwright:
        patch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS)
        yield browser
        browser.close()


def serious_accessibility_violations(page) -> list[str]:
    """axe-core's serious and critical findings on the page as it is now, one line each."""
    from axe_playwright_python.sync_playwright import Axe

    results = Axe().run(page)
    return [
        f"{violation['id']} ({violation['impact']}): "
        + "; ".join(
            node["target"][0] if isinstance(node["target"][0], str) else str(node["target"])
            for node in violation["nodes"][:5]
        )
        for violation in results.response["violations"]
        if violation["impact"] in ("serious", "critical")
    ]


def scroll_gap(page) -> float:
    """Pixels between the message list's visible end and its content's end."""
    return page.evaluate(
        "(() => { const l = document.getElementById('messages');"
        " return l.scrollHeight - l.scrollTop - l.clientHeight; })()"
    )
