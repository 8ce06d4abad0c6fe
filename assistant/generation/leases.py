"""Leases: heartbeat and restart recovery across any number of processes, stop
requests from any of them, and this process's shutdown."""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

from asgiref.sync import async_to_sync, sync_to_async
from django.conf import settings
from django.db.models import Q
from django.utils import timezone

from assistant.events.publish import apublish_or_defer, publish_or_defer, replay_log
from assistant.events.wire import channel_for
from assistant.generation import running
from assistant.generation.ending import error_payload, interrupted_error, usage_of
from assistant.models import Message, ServerProcess
from assistant.processes import PROCESS_ID, crashed_here
from assistant.providers.configured import provider_close

logger = logging.getLogger(__name__)

Status = Message.Status

_supervisor: asyncio.Task | None = None
_first_heartbeat: asyncio.Future | None = None


async def ensure_supervisor() -> None:
    """Start this process's heartbeat and orphan sweep once; return after the first beat.

    Called before this process creates or streams answers, so that its answers are
    never mistaken for orphans by another process.
    """
    global _supervisor, _first_heartbeat
    loop = asyncio.get_running_loop()
    if _supervisor is None or _supervisor.done() or _supervisor.get_loop() is not loop:
        _first_heartbeat = loop.create_future()
        _supervisor = running.background_task(_supervise(_first_heartbeat))
        running.background_task(_watch_cancel_requests())
    # With Redis: wake-ups of streams and stop requests from the other processes.
    replay_log.start_fanout(on_cancel=running.cancel)
    await asyncio.shield(_first_heartbeat)


def answer_loop() -> asyncio.AbstractEventLoop | None:
    """The running event loop of this process's supervisor, once it has beaten: the loop
    its answers run on. None before that, or without one."""
    if _supervisor is None or _supervisor.done() or _first_heartbeat is None or not _first_heartbeat.done():
        return None
    loop = _supervisor.get_loop()
    return loop if loop.is_running() else None


def supervise_from_thread() -> None:
    """`ensure_supervisor` for synchronous code in a thread of the process (a request's):
    nothing to do, and no trip to the event loop, once the supervisor runs. Not the
    first call in the process's shared thread (where the supervisor's database work
    runs): code there awaits `ensure_supervisor` on the loop first."""
    if answer_loop() is None:
        async_to_sync(ensure_supervisor)()


def cancel_anywhere(message_id: int) -> None:
    """Ask whichever process generates an answer to stop it.

    With Redis the request reaches that process at once; the flag on the row, which
    every process polls, is the fallback that needs nothing but the database. An answer
    whose process is gone is stopped here and now, its stored text kept.
    """
    answer = Message.objects.filter(pk=message_id, status=Status.STREAMING)
    if not answer.update(cancel_requested=True):
        return
    replay_log.request_cancel(message_id)
    if _orphans(answer).update(status=Status.CANCELLED, finish_reason="cancelled"):
        message = Message.objects.get(pk=message_id)
        publish_or_defer(
            channel_for(message.conversation_id),
            "done",
            {"message": message_id, "finish_reason": "cancelled", "usage": usage_of(message)},
        )


def _orphans(answers):
    """The answers among `answers` whose process is gone.

    Gone: its heartbeat is older than the lease. A process without a row at all is only
    taken for gone once the answer is older than the lease, since a row can vanish
    while its process lives (the day-old cleanup, a test's database flush) and comes
    back with the next heartbeat; a process always beats before it creates an answer.
    """
    cutoff = timezone.now() - timedelta(seconds=settings.ASSISTANT_LEASE_SECONDS)
    processes = ServerProcess.objects.values("pk")
    return answers.exclude(generated_by__in=processes.filter(heartbeat_at__gte=cutoff)).filter(
        Q(generated_by__in=processes) | Q(created_at__lt=cutoff)
    )


async def _watch_cancel_requests() -> None:
    """Stop answers of this process that a stop request reached in another process."""
    while True:
        await asyncio.sleep(settings.ASSISTANT_CANCEL_POLL_SECONDS)
        if not running.answers:
            continue
        try:
            # Not by id: a list of every running answer costs more to build and send than
            # reading this process's streaming rows through their partial index.
            requested = Message.objects.filter(
                status=Status.STREAMING, generated_by=PROCESS_ID, cancel_requested=True
            )
            async for message_id in requested.values_list("pk", flat=True):
                running.cancel(message_id)
        except Exception:
            logger.exception("polling stop requests failed")


async def _supervise(first_heartbeat: asyncio.Future) -> None:
    while True:
        try:
            orphans = await sync_to_async(heartbeat_and_recover)()
            for message_id, conversation_id in orphans:
                await apublish_or_defer(
                    channel_for(conversation_id),
                    [("error", error_payload(message_id, interrupted_error()))],
                )
            # Documents a gone process left unread: read again here (imported late: the
            # readers bring extraction libraries that nothing else here needs).
            from assistant.documents.worker import documents_recover

            await sync_to_async(documents_recover)()
        except Exception:
            logger.exception("heartbeat failed")
        if not first_heartbeat.done():
            first_heartbeat.set_result(None)
        await asyncio.sleep(settings.ASSISTANT_HEARTBEAT_SECONDS)


def heartbeat_and_recover(*, process_id: str = PROCESS_ID) -> list[tuple[int, str]]:
    """Renew this process's lease; mark answers of processes without one `interrupted`,
    and at once those of a process on this host whose pid is gone (processes.crashed_here).

    Returns the (message id, conversation id) of the answers it marked.
    """
    now = timezone.now()
    ServerProcess.objects.update_or_create(pk=process_id, defaults={"heartbeat_at": now})
    streaming = Message.objects.filter(status=Status.STREAMING)
    # A process beats before it creates an answer, so a crashed one has its row still.
    others = ServerProcess.objects.exclude(pk=process_id).values_list("pk", flat=True)
    crashed = [name for name in others if crashed_here(name)]
    gone = _orphans(streaming) | streaming.filter(generated_by__in=crashed)
    orphans = list(gone.values_list("pk", "conversation_id"))
    error = interrupted_error()
    marked = []
    for message_id, conversation_id in orphans:
        if Message.objects.filter(pk=message_id, status=Status.STREAMING).update(
            status=Status.INTERRUPTED,
            error_code=error.code,
            error_type=error.type,
            error_detail=error.detail,
        ):
            marked.append((message_id, str(conversation_id)))
    if marked:
        logger.warning("marked %d orphaned answers interrupted", len(marked))
    ServerProcess.objects.filter(Q(heartbeat_at__lt=now - timedelta(days=1)) | Q(pk__in=crashed)).delete()
    return marked


SHUTDOWN_GRACE_SECONDS = 5.0


async def shutdown() -> None:
    """Stop this process's answers, storing each as interrupted, give up the lease and
    close the connections to the model service."""
    tasks = [answer.task for answer in running.answers.values()]
    for task in tasks:
        task.cancel()
    if tasks:
        await asyncio.wait(tasks, timeout=SHUTDOWN_GRACE_SECONDS)
    # No heartbeat after this: one still running in the database thread finishes before
    # the delete, which queues behind it; a later one would take the lease back.
    if _supervisor is not None and _supervisor.get_loop() is asyncio.get_running_loop():
        _supervisor.cancel()
        await asyncio.wait([_supervisor])
    await ServerProcess.objects.filter(pk=PROCESS_ID).adelete()
    await provider_close()
