"""Django's SQLite backend, with the writers of one process taking turns.

SQLite lets one writer at a time into a database file. Another writer that finds it
taken waits in SQLite's busy handler, which sleeps and tries again, a little longer
each time (1, 2, 5, 10, 15, 20, 25, ... 100 ms): it goes on only when it wakes, however
early the file was free. Under load the writer holding the file also waits for the GIL
between its statements, so the others sleep through several of those steps. Here the
writers of one process wait for each other on a lock, and the next goes on as soon as
the one before commits or rolls back: at 300 streams, the slowest statement of one
conversation POST in a hundred took 38-180 ms before, 6-11 ms with the turns
(bench/README.md).

A writer is a transaction (settings.py has every transaction take the file at its
BEGIN) or, outside one, any statement but a SELECT; reads outside a transaction do not
wait (WAL). Writers in other processes (a management command, a second server) still
meet SQLite's busy handler, as before, and a writer waits for its turn no longer than
the connection's `timeout` option before it fails as SQLite would: "database is locked".
"""

from __future__ import annotations

import sqlite3
import threading

from django.db.backends.sqlite3 import base

# sqlite3.connect's own default.
DEFAULT_TIMEOUT = 5.0


class WriteTurn:
    """The writers of one database file in this process, one at a time."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # The raw connection whose turn it is.
        self.holder: sqlite3.Connection | None = None

    def take(self, connection: sqlite3.Connection, timeout: float) -> None:
        if not self._lock.acquire(timeout=timeout):
            raise sqlite3.OperationalError("database is locked")
        self.holder = connection

    def give_back(self, connection: sqlite3.Connection | None) -> None:
        if connection is not None and self.holder is connection:
            self.holder = None
            self._lock.release()


_turns: dict[str, WriteTurn] = {}
_turns_lock = threading.Lock()


def write_turn(name: str) -> WriteTurn:
    """The turn of the database file `name`, shared by every connection to it."""
    with _turns_lock:
        return _turns.setdefault(str(name), WriteTurn())


class TurnCursor(base.SQLiteCursorWrapper):
    """Runs a write outside a transaction in its turn."""

    turn: WriteTurn
    timeout: float

    def execute(self, query, params=None):
        return self._in_turn(super().execute, query, params)

    def executemany(self, query, param_list):
        return self._in_turn(super().executemany, query, param_list)

    def _in_turn(self, run, query, arguments):
        if not self._needs_turn(query):
            return run(query, arguments)
        self.turn.take(self.connection, self.timeout)
        try:
            return run(query, arguments)
        finally:
            self.turn.give_back(self.connection)

    def _needs_turn(self, query: str) -> bool:
        connection = self.connection
        return not (
            self.turn.holder is connection
            or connection.in_transaction  # begun without a turn: SQLite's busy handler
            or query.lstrip()[:6].upper() == "SELECT"
        )


class DatabaseWrapper(base.DatabaseWrapper):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.turn = write_turn(self.settings_dict["NAME"])
        self.turn_timeout = float(self.settings_dict["OPTIONS"].get("timeout", DEFAULT_TIMEOUT))

    def get_new_connection(self, conn_params):
        # The file's turn as it connects: the test runner renames the database after
        # the wrapper is made.
        self.turn = write_turn(conn_params["database"])
        return super().get_new_connection(conn_params)

    def create_cursor(self, name=None):
        cursor = self.connection.cursor(factory=TurnCursor)
        cursor.turn, cursor.timeout = self.turn, self.turn_timeout
        return cursor

    def _start_transaction_under_autocommit(self) -> None:
        self.turn.take(self.connection, self.turn_timeout)
        try:
            super()._start_transaction_under_autocommit()
        except BaseException:
            self.turn.give_back(self.connection)
            raise

    def _commit(self):
        try:
            return super()._commit()
        finally:
            # A failed COMMIT leaves the transaction open: its rollback gives the turn back.
            if self.connection is not None and not self.connection.in_transaction:
                self.turn.give_back(self.connection)

    def _rollback(self):
        try:
            return super()._rollback()
        finally:
            self.turn.give_back(self.connection)

    def _close(self):
        connection = self.connection
        try:
            return super()._close()
        finally:
            self.turn.give_back(connection)
