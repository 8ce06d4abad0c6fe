"""Daphne's requests at the Twisted layer: bodies refused by their size before they are
read, and a slow reader's backlog made visible to the application.

Bodies. Twisted's Request receives a whole body (in memory, or a temporary file past
100 KB) before daphne's WebRequest.process runs, and process then puts all of it into
the application's queue before the application reads a byte: a 1 GB body cost 1 GB of
memory before any check in Django could run. `BoundedWebRequest` refuses it where Twisted
reports it, in two documented methods of twisted.web.http.Request: `gotLength` (the
declared length, before any byte of the body) and `handleContentChunk` (each piece as it
arrives, a chunked body's too). The refusal is the API's 413 (config/body_limits.py) with
Connection: close; the request never reaches the application. The rest of the body is
read and dropped, never kept, until the client closes or LINGER_SECONDS pass: closing at
once, with its bytes still unread, would reset the connection, and a client can lose an
answer that a reset overtakes.

Backlog. Daphne writes whatever the application sends into Twisted's buffer at once, so
a client that stops reading its event stream made that buffer grow without bound. The
public producer API of Twisted tells when the buffer is full: a push producer registered
on the request (`Request.registerProducer`) is paused when the transport holds more than
its buffer size (64 KB) and resumed when it is empty again. `SendBacklog` is that
producer; daphne hands it to the application as the ASGI scope extension
`assistant.send_backlog` (config/send_backlog.py uses it).

Private shapes used, checked by `install`: daphne's HTTPFactory.buildProtocol, which sets
the channel's request factory to daphne's WebRequest (ours is put in its place after
it); daphne's Server.create_application, wrapped to add the scope extension; the
channel's request line (`_command`, `_path`) read for the per-path limit before Twisted
hands it to the Request; and HTTPChannel.headerReceived, wrapped per channel so that a
Content-Length too long for `int()` (over 4,300 digits: Twisted dropped the connection
with no answer) is read as over the limit. This is a guard, not a fast path: the switch
ASSISTANT_FAST_PATHS leaves it on. With other daphne or Twisted versions or other shapes
(config/fastpaths) it installs nothing and logs that once: config/body_limits.py still
applies its limit in front of the application, after daphne has read the body, and slow
readers' backlogs are not bounded.
"""

from __future__ import annotations

import logging
from functools import wraps
from io import BytesIO
from urllib.parse import unquote

from daphne import http_protocol, server
from twisted.internet.interfaces import IPushProducer
from twisted.web import http
from zope.interface import implementer

from config import fastpaths
from config.body_limits import LENGTH_DIGITS_MAX, body_limit, declared_length, too_large_answer
from config.send_backlog import EXTENSION

logger = logging.getLogger(__name__)

# The release series whose shapes this module was written against.
WRITTEN_FOR = {"daphne": ("4.2",), "Twisted": ("26.10",)}
# How long a refused request's remaining body is read and dropped before the connection
# is cut.
LINGER_SECONDS = 5.0

_installed = False


@implementer(IPushProducer)
class SendBacklog:
    """Whether the client takes what the application sends: `paused` while Twisted's
    buffer for the connection is full. `watch()` starts watching (once, for a response
    that may be large); `abort()` cuts the connection and drops what is buffered."""

    def __init__(self, request: BoundedWebRequest) -> None:
        self.request = request
        self.paused = False
        self.watching = False

    def watch(self) -> None:
        request = self.request
        if self.watching or request.finished or request.channel is None or request.producer is not None:
            return
        self.watching = True
        request.registerProducer(self, True)

    def abort(self) -> None:
        transport = self.request.transport
        if transport is not None:
            transport.abortConnection()

    # IPushProducer, called by the transport through the channel.
    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        self.paused = False

    def stopProducing(self) -> None:
        self.paused = True


class BoundedWebRequest(http_protocol.WebRequest):
    """Daphne's request, with its body bounded and its send backlog observable."""

    _path = ""
    _body_limit = 0
    _body_received = 0
    _refused = False

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.send_backlog = SendBacklog(self)
        self._linger = None

    def gotLength(self, length: int | None) -> None:
        self._path = _request_path(self.channel)
        self._body_limit = body_limit(self._path)
        if length is not None and length > self._body_limit:
            self.content = BytesIO()
            self._refuse()
            return
        super().gotLength(length)

    def handleContentChunk(self, data: bytes) -> None:
        if self._refused:
            return
        self._body_received += len(data)
        if self._body_received > self._body_limit:
            self.content.close()
            self.content = BytesIO()
            self._refuse()
            return
        super().handleContentChunk(data)

    def requestReceived(self, command: bytes, path: bytes, version: bytes) -> None:
        if self._refused:
            return  # answered already; the application never sees it
        super().requestReceived(command, path, version)

    def finish(self) -> None:
        self._unwatch()
        super().finish()

    def connectionLost(self, reason) -> None:
        self._unwatch()
        if self._linger is not None and self._linger.active():
            self._linger.cancel()
        super().connectionLost(reason)

    def _unwatch(self) -> None:
        if self.producer is not None and self.producer is self.send_backlog:
            self.unregisterProducer()

    def _refuse(self) -> None:
        """Answer 413 and read the rest of the connection into nothing."""
        self._refused = True
        channel, transport = self.channel, self.channel.transport
        status, headers, body = too_large_answer(self._path)
        head = [b"HTTP/1.1 %d %s\r\n" % (status, http.RESPONSES[status])]
        head += [name + b": " + value + b"\r\n" for name, value in headers]
        head.append(b"Content-Length: %d\r\n\r\n" % len(body))
        transport.writeSequence([*head, body])
        # Everything the client still sends, from this read on, is dropped unparsed.
        channel.dataReceived = channel.lineReceived = channel.rawDataReceived = _drop
        if hasattr(transport, "loseWriteConnection"):
            from twisted.internet import reactor  # daphne's, installed by the time a request comes

            transport.loseWriteConnection()  # the answer, then end of file for the client
            self._linger = reactor.callLater(LINGER_SECONDS, transport.abortConnection)
        else:
            transport.loseConnection()


def _drop(data: bytes) -> None:
    pass


def _request_path(channel) -> str:
    """The path of the request being received (Twisted gives it to the Request later)."""
    target = getattr(channel, "_path", b"") or b""
    return unquote(target.split(b"?", 1)[0].decode("ascii", "replace"))


def _bounded_header(header_received):
    """HTTPChannel.headerReceived, with a Content-Length too long for a number read as
    a number over every limit (Twisted's `int()` raised, and the connection dropped)."""

    @wraps(header_received)
    def header(line: bytes) -> bool:
        name, colon, value = line.partition(b":")
        if colon and name.strip().lower() == b"content-length":
            value = value.strip(b" \t")
            if len(value) > LENGTH_DIGITS_MAX and declared_length(value) is not None:
                line = name + b": " + str(10**LENGTH_DIGITS_MAX).encode()
        return header_received(line)

    return header


def _shapes_match() -> bool:
    build = http_protocol.HTTPFactory.buildProtocol
    return (
        issubclass(http_protocol.WebRequest, http.Request)
        and "WebRequest" in build.__code__.co_names
        and callable(getattr(server.Server, "create_application", None))
        and callable(getattr(http.HTTPChannel, "headerReceived", None))
        and all(
            callable(getattr(http.Request, name, None))
            for name in ("gotLength", "handleContentChunk", "requestReceived", "registerProducer")
        )
    )


def install() -> bool:
    """Make daphne's channels use BoundedWebRequest and hand the backlog to the
    application. Returns whether it did (not with versions of other shapes)."""
    global _installed
    if _installed:
        return True
    if not fastpaths.fenced("daphne", WRITTEN_FOR):
        return False
    try:
        matches = _shapes_match()
    except AttributeError:
        matches = False
    if not matches:
        logger.warning(
            "fast path daphne is off: daphne's request classes are not shaped as "
            "config/fastpaths/daphne.py expects; request bodies are limited only after "
            "daphne has read them, and slow readers' backlogs are not bounded"
        )
        fastpaths.state["daphne"] = False
        return False
    build_protocol = http_protocol.HTTPFactory.buildProtocol
    create_application = server.Server.create_application

    @wraps(build_protocol)
    def buildProtocol(self, addr):
        protocol = build_protocol(self, addr)
        if protocol is not None and protocol.requestFactory is http_protocol.WebRequest:
            protocol.requestFactory = BoundedWebRequest
            channel = getattr(protocol, "_channel", protocol)
            if isinstance(channel, http.HTTPChannel):
                channel.headerReceived = _bounded_header(channel.headerReceived)
        return protocol

    @wraps(create_application)
    def create_app(self, protocol, scope):
        if isinstance(protocol, BoundedWebRequest):
            extensions = {**(scope.get("extensions") or {}), EXTENSION: protocol.send_backlog}
            scope = {**scope, "extensions": extensions}
        return create_application(self, protocol, scope)

    http_protocol.HTTPFactory.buildProtocol = buildProtocol
    server.Server.create_application = create_app
    _installed = True
    return True
