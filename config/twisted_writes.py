"""Daphne's TCP writes, sent at once when the connection has nothing queued.

Twisted queues every write and sends it on a later turn of the reactor: it registers
the socket for writability (an epoll change), waits for the loop to call it back, sends,
and unregisters (another epoll change). An event stream pays that once per event.
Measured under daphne with 100 streams of 15 events a second: 97 µs of CPU per event
as Twisted does it, 69 µs with the send made at once.

Here `write` and `writeSequence` of a plain TCP connection with nothing queued try
`socket.send` first and hand Twisted only what the socket did not take, or everything
when the send fails (Twisted then meets the same error and reports it as it always
does). Order, back-pressure (the producer is paused only by what stays queued) and
every error path stay Twisted's. TLS connections, and connections with data queued,
take Twisted's path unchanged.
"""

from __future__ import annotations

from collections.abc import Iterable

from twisted.internet import tcp

_queued_write = tcp.Connection.write


def _unsent(connection: tcp.Connection, data: bytes) -> bytes:
    """What is left of `data` after trying to send it now, if nothing is queued."""
    if (
        connection.TLS
        or not connection.connected
        or connection._writeDisconnected
        or connection.dataBuffer
        or connection._tempDataBuffer
    ):
        return data
    try:
        sent = connection.socket.send(data)
    except OSError:
        return data
    return data[sent:]


def _write(self: tcp.Connection, data: bytes) -> None:
    rest = _unsent(self, data)
    if rest:
        _queued_write(self, rest)


def _write_sequence(self: tcp.Connection, iovec: Iterable[bytes]) -> None:
    _write(self, b"".join(iovec))


def install() -> None:
    """Make every TCP connection of this process write this way (daphne's included)."""
    tcp.Connection.write = _write
    tcp.Connection.writeSequence = _write_sequence
