"""Daphne's TCP writes, sent at the end of the event loop's turn without a trip through
the selector.

Twisted queues every write, registers the socket for writability (an epoll change),
and sends when the selector reports it writable on a later turn, then unregisters it
(another epoll change). An event stream pays that once per event. Here a write to a
plain TCP connection with nothing queued is queued the same way but sent by a callback
at the end of the loop's current turn: writes of one turn (a response's headers and
body) still go out in one `send`, and the selector is not involved. Whatever the socket
does not take, or everything when the send fails, goes back to Twisted's own path, which
then sends the rest when the socket is writable (pausing the producer as usual) or meets
the same error and reports it as it always does.

TLS connections, and connections Twisted is already writing for, take Twisted's path
unchanged. Private names used: tcp.Connection's `_tempDataBuffer`, `_tempDataLen` and
`_writeDisconnected` (Twisted 26.10; another version, or the switch off, leaves Twisted's
own writes in place). Its measured gain: docs/architecture.md, "Fast paths".
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

from twisted.internet import tcp

from config import fastpaths

WRITTEN_FOR = {"Twisted": ("26.10",)}

_queued_write = tcp.Connection.write
_queued_write_sequence = tcp.Connection.writeSequence


def _takes_writes(connection: tcp.Connection) -> bool:
    """Whether a write to `connection` may be sent by our callback: a plain TCP
    connection, open for writing, that Twisted is not already writing for."""
    return not (
        connection.TLS
        or not connection.connected
        or connection._writeDisconnected
        or connection.dataBuffer
        or (connection._tempDataBuffer and not getattr(connection, "_send_soon", False))
    )


def _queue(connection: tcp.Connection, data: list[bytes], loop: asyncio.AbstractEventLoop) -> None:
    connection._tempDataBuffer.extend(data)
    connection._tempDataLen += sum(map(len, data))
    if not getattr(connection, "_send_soon", False):
        connection._send_soon = True
        loop.call_soon(_send, connection)


def _send(connection: tcp.Connection) -> None:
    """Send what this turn queued; the rest is Twisted's to send."""
    connection._send_soon = False
    if connection.dataBuffer or not connection._tempDataBuffer:
        return  # Twisted took over (it writes what is queued) or nothing is left
    data = b"".join(connection._tempDataBuffer)
    connection._tempDataBuffer = []
    connection._tempDataLen = 0
    if not connection.connected or connection._writeDisconnected:
        return  # as Twisted: writes to a closed connection are dropped
    try:
        sent = connection.socket.send(data)
    except OSError:
        sent = 0  # Twisted's write meets the error again and reports it
    if sent < len(data):
        _queued_write(connection, data[sent:])


def _running_loop() -> asyncio.AbstractEventLoop | None:
    """Twisted's asyncio reactor's loop (daphne's), or None outside it."""
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def _write(self: tcp.Connection, data: bytes) -> None:
    loop = _running_loop()
    if loop is not None and data and isinstance(data, bytes) and _takes_writes(self):
        _queue(self, [data], loop)
    else:
        _queued_write(self, data)


def _write_sequence(self: tcp.Connection, iovec: Iterable[bytes]) -> None:
    iovec = list(iovec)
    loop = _running_loop()
    if loop is not None and iovec and all(isinstance(data, bytes) for data in iovec) and _takes_writes(self):
        _queue(self, iovec, loop)
    else:
        _queued_write_sequence(self, iovec)


def install() -> None:
    """Make every TCP connection of this process write this way (daphne's included),
    where the fast path is allowed."""
    if not fastpaths.allowed("twisted", WRITTEN_FOR):
        return
    tcp.Connection.write = _write
    tcp.Connection.writeSequence = _write_sequence
