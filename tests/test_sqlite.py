"""SQLite's writers in one process take turns on a lock (config/sqlite/base.py), not in
SQLite's busy handler: a writer goes on as soon as the one before it is done."""

from __future__ import annotations

import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest
from django.db import OperationalError, connection, transaction
from django.utils import timezone

from assistant.models import ServerProcess

pytestmark = [
    pytest.mark.django_db(transaction=True),  # each thread has its own connection
    pytest.mark.skipif(connection.vendor != "sqlite", reason="SQLite only"),
]

WAIT = 10  # seconds: a bound on waits that end at once when all is well


def _process(name: str) -> None:
    ServerProcess.objects.create(pk=name, heartbeat_at=timezone.now())


def _written() -> list[str]:
    """The rows these tests wrote: not the leases of server processes (host:pid:...), which
    the heartbeat of this process's in-process server, or of a live daphne an earlier test
    started on the same database, renews at any moment."""
    rows = ServerProcess.objects.exclude(pk__contains=":").order_by("pk")
    return list(rows.values_list("pk", flat=True))


class _Thread(threading.Thread):
    """`work` in a thread of its own (its own database connection), keeping its result
    or its exception."""

    def __init__(self, work: Callable[[], object]) -> None:
        super().__init__(daemon=True)
        self.work, self.result, self.error = work, None, None

    def run(self) -> None:
        try:
            self.result = self.work()
        except Exception as exc:
            self.error = exc
        finally:
            connection.close()

    def joined(self) -> _Thread:
        self.join(WAIT)
        assert not self.is_alive()
        return self

    def finished(self) -> _Thread:
        self.start()
        return self.joined()


@contextmanager
def _transaction_in_a_thread(name: str) -> Iterator[_Thread]:
    """A thread inside a transaction that wrote `name`, until the block ends (it commits)."""
    wrote, finish = threading.Event(), threading.Event()

    def work() -> None:
        with transaction.atomic():
            _process(name)
            wrote.set()
            finish.wait(WAIT)

    thread = _Thread(work)
    thread.start()
    assert wrote.wait(WAIT)
    try:
        yield thread
    finally:
        finish.set()
        assert thread.joined().error is None


def _waits_for_its_turn(thread: threading.Thread) -> bool:
    """Whether `thread` is blocked in WriteTurn.take, polled until it is (or WAIT)."""
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        frame = sys._current_frames().get(thread.ident)
        if frame is not None and any(
            summary.name == "take" and summary.filename.endswith("config/sqlite/base.py")
            for summary in traceback.extract_stack(frame)
        ):
            return True
        time.sleep(0.005)
    return False


def test_a_write_waits_for_its_turn_while_another_thread_holds_a_transaction():
    with _transaction_in_a_thread("first"):
        second = _Thread(lambda: _process("second"))
        second.start()
        assert _waits_for_its_turn(second)
        assert second.is_alive()
    assert second.joined().error is None
    assert _written() == ["first", "second"]


def test_a_transaction_waits_for_its_turn_too():
    def work() -> None:
        with transaction.atomic():
            _process("second")

    with _transaction_in_a_thread("first"):
        second = _Thread(work)
        second.start()
        assert _waits_for_its_turn(second)
    assert second.joined().error is None
    assert _written() == ["first", "second"]


def test_a_read_does_not_wait_and_sees_only_what_is_committed():
    _process("committed")
    with _transaction_in_a_thread("uncommitted"):
        reader = _Thread(_written)
        reader.start()
        assert reader.joined().result == ["committed"]


def test_a_rolled_back_transaction_gives_its_turn_back():
    def roll_back() -> None:
        with transaction.atomic():
            _process("rolled back")
            raise RuntimeError("undo")

    with pytest.raises(RuntimeError):
        roll_back()
    assert connection.turn.holder is None
    assert _Thread(lambda: _process("next")).finished().error is None
    assert _written() == ["next"]


def test_a_connection_closed_in_a_transaction_gives_its_turn_back():
    def work() -> None:
        transaction.atomic().__enter__()  # left open: the connection closes under it
        _process("never committed")

    assert _Thread(work).finished().error is None
    assert connection.turn.holder is None
    _process("next")
    assert _written() == ["next"]


def test_a_writer_waiting_longer_than_the_timeout_fails_as_sqlite_would_and_changes_nothing():
    def work() -> None:
        connection.ensure_connection()
        connection.turn_timeout = 0.05
        _process("too late")

    with _transaction_in_a_thread("first"):
        late = _Thread(work).finished()
    assert isinstance(late.error, OperationalError)
    assert str(late.error) == "database is locked"
    assert _written() == ["first"]


def test_the_connections_of_every_thread_share_one_turn():
    def turn():
        connection.ensure_connection()
        return connection.turn

    assert _Thread(turn).finished().result is turn()
