"""The answers generating in this process, and the tasks that outlive a request."""

from __future__ import annotations

import asyncio
import contextvars
import logging
from dataclasses import dataclass

logger = logging.getLogger(__name__)


@dataclass
class Running:
    task: asyncio.Task
    cancel_requested: bool = False


# Answers generating in this process, by assistant message id.
answers: dict[int, Running] = {}
# Work that follows an answer (its title), held here so it is not garbage-collected.
follow_ups: set[asyncio.Task] = set()


def background_task(coro) -> asyncio.Task:
    """Run `coro` as a task outside the current request's context.

    A request's context carries its own one-thread executor for thread-sensitive ORM
    calls, alive until the request ends: a task that outlives the request must not
    use it, and ORM calls of a request that lasts (an event stream) should not create
    it, or each open stream pins an OS thread and its database connection. Outside,
    such calls share the process's one thread-sensitive thread.
    """
    return asyncio.get_running_loop().create_task(coro, context=contextvars.Context())


def cancel(message_id: int) -> bool:
    """Stop a generation running in this process; False if it does not run here."""
    running = answers.get(message_id)
    if running is None:
        return False
    running.cancel_requested = True
    running.task.cancel()
    return True


def follow_up(coro) -> None:
    """Run `coro` after an answer ended, on its own: a failure is logged, never raised."""
    task = background_task(coro)
    follow_ups.add(task)
    task.add_done_callback(_follow_up_done)


def _follow_up_done(task: asyncio.Task) -> None:
    follow_ups.discard(task)
    if not task.cancelled() and task.exception() is not None:
        logger.error("work after an answer failed", exc_info=task.exception())
