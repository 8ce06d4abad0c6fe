"""Daphne entry point for the benchmark: the project's ASGI app, counting its SQL statements.

Why a wrapper: the benchmark reports database writes per answer without any switch in
production code. Django announces every new database connection (``connection_created``,
once per connection, in whatever thread opens it); each gets an execute wrapper that
counts statements, and is remembered, to count how many hold an open connection now.
``GET /__bench__/counters`` answers the counts as JSON, handled here before Django so
that reading them neither runs middleware nor touches the database.

Serve it with ``daphne tests.helpers.counting_asgi:application``; bench/run.py does.
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
import weakref
from collections import Counter
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.backends.signals import connection_created

from config.asgi import application as project_application

COUNTERS_PATH = "/__bench__/counters"

# "INSERT INTO "t"", "UPDATE "t"", "DELETE FROM "t"": the statement kind and its table.
_WRITE_RE = re.compile(r'\s*(INSERT\s+INTO|UPDATE|DELETE\s+FROM)\s+"?(\w+)', re.IGNORECASE)

_lock = threading.Lock()
_statements = 0
_connects = 0  # database connections opened
_writes: Counter[str] = Counter()  # "UPDATE assistant_message" -> count
# Every thread's connection wrapper, to count those holding an open database connection.
_wrappers: weakref.WeakSet[BaseDatabaseWrapper] = weakref.WeakSet()


def _count(execute: Callable[..., Any], sql: str, params: Any, many: bool, context: Any) -> Any:
    global _statements
    match = _WRITE_RE.match(sql)
    with _lock:
        _statements += 1
        if match:
            _writes[f"{match[1].split()[0].upper()} {match[2]}"] += 1
    return execute(sql, params, many, context)


def _install(sender: Any, connection: BaseDatabaseWrapper, **kwargs: Any) -> None:
    # The wrapper object outlives its connection: when it reconnects (DATABASE_CONN_MAX_AGE)
    # the signal fires again, so install only once.
    global _connects
    if _count not in connection.execute_wrappers:
        connection.execute_wrappers.append(_count)
    with _lock:
        _connects += 1
        _wrappers.add(connection)


connection_created.connect(_install, dispatch_uid="bench-count-statements")


def counters() -> dict[str, Any]:
    """The counts so far; called on the event loop, which `asyncio_tasks` counts the tasks of
    (tests/security/test_upstream_faults.py checks that faults leave none behind)."""
    with _lock:
        counts = {"statements": _statements, "writes": sum(_writes.values()), "by_kind": dict(_writes)}
        counts["db_connections"] = sum(wrapper.connection is not None for wrapper in _wrappers)
        counts["db_connects"] = _connects
    return {**counts, "asyncio_tasks": len(asyncio.all_tasks())}


Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


async def application(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "http" and scope["path"] == COUNTERS_PATH:
        body = json.dumps(counters()).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})
        return
    await project_application(scope, receive, send)
