"""The generation task: provider -> coalesce -> publish -> persist.

Each answer is an asyncio task owned by the server process, not by any HTTP
connection, so closing the tab does not stop it. Deltas are published in short
windows (one event per window, not per token) and the partial text reaches the
database at a bounded rate together with its stream position. Every answer ends in
exactly one of `done`, `error` or `cancelled`, stored before it is announced.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import logging
import sys
import time
from dataclasses import dataclass, field
from datetime import timedelta

from asgiref.sync import async_to_sync, sync_to_async
from django.conf import settings
from django.db import connection, transaction
from django.db.models import Q
from django.utils import timezone, translation

from assistant import titles
from assistant.events.log import RETRY_MAX_SECONDS, RETRY_MIN_SECONDS, EventsUnavailable, Published
from assistant.events.publish import (
    apublish_batch,
    apublish_or_defer,
    publish_batch,
    publish_or_defer,
    replay_log,
)
from assistant.events.wire import channel_for
from assistant.llm import (
    RETRYABLE_TYPES,
    Finish,
    ProviderError,
    get_provider,
    provider_close,
    provider_error,
)
from assistant.models import Message, ServerProcess, sql_names
from assistant.processes import PROCESS_ID, crashed_here
from assistant.usage import usage_counted, usage_tokens_add

logger = logging.getLogger(__name__)

Status = Message.Status


@dataclass
class _Running:
    task: asyncio.Task
    cancel_requested: bool = False


# Answers generating in this process, by assistant message id.
_running: dict[int, _Running] = {}
# Answers per step of the coalescing window (config/settings.py): with the base window of
# 30 ms, about a thousand delta events a second for the whole process, however many
# answers share them (until the window reaches its maximum).
COALESCE_STEP_ANSWERS = 30


def coalesce_seconds() -> float:
    """The coalescing window now: the base one, longer the more answers this process
    generates, so that its events (and their cost: above all a `send` each) stay about
    the same in number while its tokens grow."""
    steps = max(1.0, len(_running) / COALESCE_STEP_ANSWERS)
    return min(settings.ASSISTANT_COALESCE_MAX_SECONDS, settings.ASSISTANT_COALESCE_SECONDS * steps)


# Work that follows an answer (its title), held here so it is not garbage-collected.
_follow_ups: set[asyncio.Task] = set()


def background_task(coro) -> asyncio.Task:
    """Run `coro` as a task outside the current request's context.

    A request's context carries its own one-thread executor for thread-sensitive ORM
    calls, alive until the request ends: a task that outlives the request must not
    use it, and ORM calls of a request that lasts (an event stream) should not create
    it, or each open stream pins an OS thread and its database connection. Outside,
    such calls share the process's one thread-sensitive thread.
    """
    return asyncio.get_running_loop().create_task(coro, context=contextvars.Context())


def start(
    *,
    message: Message,
    history: list[dict[str, str]],
    language: str,
    start_event: dict,
    start_id: int | None = None,
) -> None:
    """Start generating an assistant message on the running event loop.

    `message` comes with its conversation, `history` is `history_before(message)`: both
    read by the request, so the task's first step is the upstream call. `start_event` is
    the answer's `start` payload, `start_id` its id on the wire (None: it could not be
    published, so the answer publishes it with its first text).
    """
    message_id = message.pk
    task = background_task(_generate(message, history, language, start_event, start_id))
    _running[message_id] = _Running(task)
    task.add_done_callback(lambda _: _running.pop(message_id, None))


def start_from_thread(**kwargs) -> None:
    """`start` for synchronous code in a thread of the process (a request's): the answer's
    task starts on the event loop this process's answers run on (see supervise_from_thread)."""
    loop = _answer_loop()
    if loop is None:
        # No event loop of this process runs answers (a synchronous caller such as the
        # test client): the answer starts on the loop of this call.
        async_to_sync(_start_supervised)(**kwargs)
    else:
        loop.call_soon_threadsafe(functools.partial(start, **kwargs))


async def _start_supervised(**kwargs) -> None:
    await ensure_supervisor()
    start(**kwargs)


def cancel(message_id: int) -> bool:
    """Stop a generation running in this process; False if it does not run here."""
    running = _running.get(message_id)
    if running is None:
        return False
    running.cancel_requested = True
    running.task.cancel()
    return True


STOP_WAIT_SECONDS = 5.0


async def stop(message_id: int) -> None:
    """Stop an answer wherever it runs; one running here has stored its end on return.

    For deleting: the task of an answer generating here is done writing before the row
    goes. One in another process stops within a poll and finds its row gone.
    """
    running = _running.get(message_id)
    if running is None:
        await sync_to_async(cancel_anywhere)(message_id)
        return
    cancel(message_id)
    await asyncio.wait([running.task], timeout=STOP_WAIT_SECONDS)


def _follow_up(coro) -> None:
    """Run `coro` after an answer ended, on its own: a failure is logged, never raised."""
    task = background_task(coro)
    _follow_ups.add(task)
    task.add_done_callback(_follow_up_done)


def _follow_up_done(task: asyncio.Task) -> None:
    _follow_ups.discard(task)
    if not task.cancelled() and task.exception() is not None:
        logger.error("work after an answer failed", exc_info=task.exception())


@dataclass
class _Answer:
    """The state of one answer while it streams.

    Text moves from `pending` (the current coalescing window) to `parts` (the answer so
    far) when a window closes; a sender task then puts what is not yet on the wire into
    one `delta` event, one publication at a time, in order. If a publication fails (Redis
    unavailable) or the log lost earlier events (Redis restarted empty), the answer owes
    the wire a replay: its `start` again, then one `delta` with all its text, which
    clients take as "rebuild this answer" (docs/protocol.md). Meanwhile generating and
    storing go on; the database never waits for Redis.
    """

    message: Message
    channel: str
    start_event: dict
    started: float = field(default_factory=time.monotonic)
    parts: list[str] = field(default_factory=list)
    pending: list[str] = field(default_factory=list)
    # How many of `parts` are on the wire, and the id of the answer's last event there.
    sent: int = 0
    event_id: int = 0
    replay: bool = False
    sending: asyncio.Task | None = None
    finishing: bool = False
    ending: asyncio.Task | None = None
    first_token_at: float | None = None
    last_flush: float = 0.0
    flush_handle: asyncio.TimerHandle | None = None
    flush_due: float = 0.0  # when flush_handle fires
    # (text length, event id) of the partial state last handed to the partial writer.
    persisted: tuple[int, int] = (0, 0)
    # Characters of the history sent upstream: what the prompt cost, when the upstream
    # does not say (usage.usage_counted).
    prompt_chars: int = 0

    def add(self, text: str) -> None:
        now = time.monotonic()
        if self.first_token_at is None:
            self.first_token_at = now
        self.pending.append(text)
        if self.flush_handle is not None:
            return
        wait = self.last_flush + coalesce_seconds() - now
        if wait <= 0:
            self.flush()
        else:
            self.flush_due = now + wait
            self.flush_handle = asyncio.get_running_loop().call_later(wait, self.flush)

    def pace(self) -> float:
        """Seconds before the upstream is read again: none before the first text, which
        goes out as soon as it comes, then a coalescing window from the flush that closes
        the current one (scheduled, or done).

        From that flush, not from now: a read whose text found its window still open (the
        window grew with the answers meanwhile) waits for it, and the next read a window
        after that read would find the next window open too, and so on, every text
        waiting, tens of ms at 100 streams after the windows grew with the arrivals.
        """
        if self.first_token_at is None:
            return 0.0
        closed = self.last_flush if self.flush_handle is None else self.flush_due
        return closed + coalesce_seconds() - time.monotonic()

    def flush(self) -> None:
        """Close the coalescing window: its text goes out as one delta event."""
        if self.flush_handle is not None:
            self.flush_handle.cancel()
            self.flush_handle = None
        if self.pending:
            self.parts.append("".join(self.pending))
            self.pending.clear()
            self.last_flush = time.monotonic()
        if self.sending is None and (self.replay or self.sent < len(self.parts)):
            if replay_log.shared:
                self.sending = asyncio.get_running_loop().create_task(self._send())
            else:
                # The in-process log publishes without waiting: no task and no extra turn
                # of the loop per event.
                upto, replay, batch = self._batch()
                try:
                    published = publish_batch(self.channel, batch)
                except Exception:
                    self._unpublished()
                else:
                    self._published(upto, replay, published)
        _partials.add(self)

    def _unpublished(self) -> None:
        """A publication failed (call in its `except`): the answer goes on, and its next
        publication replays it whole."""
        if not self.replay:
            logger.exception("publishing answer %s failed; it goes on and is replayed", self.message.pk)
        self.replay = True

    def _batch(self) -> tuple[int, bool, list[tuple[str, dict]]]:
        """What is not on the wire yet, as events: (parts it covers, replay?, events)."""
        upto = len(self.parts)
        if self.replay:
            batch = [("start", self.start_event)]
            text = "".join(self.parts[:upto])
        else:
            batch = []
            text = "".join(self.parts[self.sent : upto])
        if text:
            batch.append(("delta", {"message": self.message.pk, "text": text}))
        return upto, self.replay, batch

    def _published(self, upto: int, replay: bool, published: Published) -> None:
        # Events of this answer before this one are gone from the log: replay it.
        lost = published.floor > self.event_id
        self.sent, self.event_id = upto, published.ids[-1]
        self.replay = lost and not replay
        if self.replay:
            logger.warning("the event log lost part of answer %s; replaying it", self.message.pk)

    async def _send(self) -> None:
        """Publish what is not on the wire yet, one event (or replay) at a time."""
        delay = RETRY_MIN_SECONDS
        try:
            while self.replay or self.sent < len(self.parts):
                upto, replay, batch = self._batch()
                try:
                    published = await apublish_batch(self.channel, batch)
                except EventsUnavailable as exc:
                    if not self.replay:
                        logger.warning(
                            "Redis unavailable (%s): answer %s goes on and is replayed when it is back",
                            exc,
                            self.message.pk,
                        )
                    self.replay = True
                except Exception:
                    self._unpublished()
                else:
                    delay = RETRY_MIN_SECONDS
                    self._published(upto, replay, published)
                    continue
                if self.finishing:
                    return  # the final publication carries the replay
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX_SECONDS)
        finally:
            self.sending = None
        _partials.add(self)

    def _stored(self) -> tuple[str, int]:
        """Text and position to store together: a client showing that text and connecting
        from that position ends up with exactly the answer."""
        if self.replay:
            # The wire owes a replay, which rebuilds the answer whatever a client shows.
            return "".join(self.parts), self.event_id
        return "".join(self.parts[: self.sent]), self.event_id

    def partial(self) -> tuple[str, int] | None:
        """Text and position to store, or None when they are stored (or on their way)."""
        content, event_id = self._stored()
        if (len(content), event_id) == self.persisted:
            return None
        self.persisted = (len(content), event_id)
        return content, event_id

    @property
    def content(self) -> str:
        return "".join(self.parts)

    def _ms_since_start(self, moment: float | None) -> int | None:
        return None if moment is None else int((moment - self.started) * 1000)

    async def finish(
        self, status: str, *, finish: Finish | None = None, error: ProviderError | None = None
    ) -> None:
        """Store the final state, then tell the subscribers: exactly once per answer.

        The first call decides the end and runs to completion, even if the task is
        cancelled meanwhile: a stop arriving while the answer stores or announces its own
        end would otherwise leave the row `done` and no final event on the wire. A later
        call (the cancellation's) waits for the first.
        """
        if self.ending is None:
            ending = self._end(status, finish=finish, error=error)
            self.ending = asyncio.get_running_loop().create_task(ending)
        while not self.ending.done():
            try:
                await asyncio.shield(self.ending)
            except asyncio.CancelledError:
                if self.ending.cancelled():
                    raise  # the event loop itself is closing
        self.ending.result()

    async def _end(
        self, status: str, *, finish: Finish | None = None, error: ProviderError | None = None
    ) -> None:
        """Store the end, then announce it. Whatever fails on the way, the answer ends: a
        failed publication of its last text is replayed by the final one, a failed final
        write becomes a minimal one (`_store_failed_end`), a failed announcement leaves
        the stored end for a reloading page, and the task ends (its answer leaves
        `_running`) so the conversation takes the next message and a stop."""
        self.finishing = True
        try:
            if self.sending is not None and self.replay:
                # Retrying while Redis is unavailable: the final publication carries the replay.
                self.sending.cancel()
            self.flush()
            while self.sending is not None:
                # The last delta, one attempt: if it fails, the final publication replays.
                await asyncio.wait([self.sending])
        except Exception:
            logger.exception("publishing the last text of answer %s failed", self.message.pk)
            self.replay = True
        # A partial write still on its way changes nothing after this one: it only
        # updates a row that is `streaming`.
        _partials.discard(self)
        try:
            end = await self._store_end(status, finish=finish, error=error)
        except Exception:
            logger.exception(
                "storing the end of answer %s failed; it ends as an internal error", self.message.pk
            )
            end = await self._store_failed_end()
        if end is None:
            return
        try:
            await self._publish_end(*end)
        except Exception:
            logger.exception("announcing the end of answer %s failed; the end is stored", self.message.pk)

    async def _store_end(
        self, status: str, *, finish: Finish | None, error: ProviderError | None
    ) -> tuple[str, dict] | None:
        """Store the answer's end; returns the final event that announces it, or None."""
        fields = {
            "status": status,
            "content": self.content,
            "event_id": self.event_id,
            "time_to_first_token_ms": self._ms_since_start(self.first_token_at),
            "duration_ms": self._ms_since_start(time.monotonic()),
        }
        if finish is not None:
            fields.update(
                finish_reason=finish.finish_reason,
                prompt_tokens=finish.prompt_tokens,
                completion_tokens=finish.completion_tokens,
            )
        if status == Status.CANCELLED:
            fields["finish_reason"] = "cancelled"
        if error is not None:
            fields.update(error_code=error.code, error_type=error.type, error_detail=error.detail)
        usage = usage_counted(finish, prompt_chars=self.prompt_chars, completion_chars=len(self.content))
        updated = await sync_to_async(_store_final)(self.message.pk, fields, usage)
        if not updated:
            # Another process found this one's lease lapsed and marked the answer
            # interrupted: keep the whole text under that verdict, and end the stream for
            # the clients following it here.
            if not await Message.objects.filter(pk=self.message.pk, status=Status.INTERRUPTED).aupdate(
                content=self.content, event_id=self.event_id
            ):
                # Deleted with its conversation (or ended elsewhere): nothing to store.
                logger.info(
                    "answer %s was deleted or ended elsewhere; its end is not stored", self.message.pk
                )
                return None
            return "error", error_payload(self.message.pk, interrupted_error())
        if error is not None:
            return "error", error_payload(self.message.pk, error)
        usage = {key: fields.get(key) for key in ("prompt_tokens", "completion_tokens")}
        return "done", {
            "message": self.message.pk,
            "finish_reason": fields["finish_reason"],
            "usage": usage,
            "duration_ms": fields["duration_ms"],
        }

    async def _store_failed_end(self) -> tuple[str, dict] | None:
        """The end of an answer whose final write failed: an internal error, stored with
        the whole text if the database takes it, else over the partial text stored so
        far. Tried again until it is stored: no other process ends an answer of a live
        one, so a row left `streaming` would lock its conversation until a restart. An
        answer whose row has ended meanwhile (the write went through, a later step
        failed) ends as stored; one deleted, with no event."""
        error = provider_error("internal", 500)
        text = {"content": self.content, "event_id": self.event_id}
        delay = FAILED_END_RETRY_MIN_SECONDS
        while True:
            try:
                return await _end_as_error(self.message.pk, error, text)
            except Exception:
                logger.exception("storing answer %s as an internal error failed", self.message.pk)
            if not text:
                await asyncio.sleep(delay)
                delay = min(delay * 2, FAILED_END_RETRY_MAX_SECONDS)
            text = {}

    async def _publish_end(self, event_type: str, payload: dict) -> None:
        """The final event, after the replay the wire may owe; later if Redis is down."""
        batch = []
        if self.replay or self.sent < len(self.parts):
            batch.append(("start", self.start_event))
            if self.content:
                batch.append(("delta", {"message": self.message.pk, "text": self.content}))
        batch.append((event_type, payload))
        await apublish_or_defer(self.channel, batch)


class _PartialWriter:
    """Stores the partial text of every answer streaming in this process, all of them in
    one database call (one transaction) every ASSISTANT_PERSIST_SECONDS.

    One call for all answers, not one per answer: a thread hop and a commit per answer
    and write cost the event loop more than the answers' tokens at a hundred streams.
    Each answer's row is still written at most once per interval, with a text and a
    position that belong together (`_Answer._stored`).
    """

    def __init__(self) -> None:
        self._answers: dict[int, _Answer] = {}
        self._task: asyncio.Task | None = None
        self._writing = False

    def add(self, answer: _Answer) -> None:
        """Store `answer`'s partial state at the next write (its newest state by then)."""
        if answer.message.pk in self._answers:
            return  # the writer is running and takes the newest state
        self._answers[answer.message.pk] = answer
        loop = asyncio.get_running_loop()
        if self._task is None or self._task.done() or self._task.get_loop() is not loop:
            self._task = background_task(self._write_every_interval())

    def discard(self, answer: _Answer) -> None:
        self._answers.pop(answer.message.pk, None)
        if not self._answers and self._task is not None and not self._writing:
            # Nothing left to write: the next answer starts a full interval of its own,
            # not the rest of one begun for answers that have ended.
            self._task.cancel()
            self._task = None

    async def _write_every_interval(self) -> None:
        while self._answers:
            await asyncio.sleep(settings.ASSISTANT_PERSIST_SECONDS)
            answers, self._answers = self._answers, {}
            self._writing = True
            try:
                await self._write(answers)
            except Exception:
                # The writer goes on for every answer: the final write stores everything,
                # and a failed partial write only costs a reloading page some replay.
                logger.exception("storing the partial text of %d answers failed", len(answers))
            finally:
                self._writing = False

    async def _write(self, answers: dict[int, _Answer]) -> None:
        rows = [(pk, *state) for pk, answer in answers.items() if (state := answer.partial())]
        if not rows:
            return
        for pk in await sync_to_async(_store_partials_or_each)(rows):
            answer = answers[pk]
            if not answer.finishing:
                # Its state at the next write, even if it has not changed by then.
                answer.persisted = (-1, -1)
                self._answers.setdefault(pk, answer)


def _store_final(message_id: int, fields: dict, usage: dict[str, int]) -> int:
    """An ended answer's tokens, then its final row (if it still streams), in one trip to
    the database thread. The usage record first, in a statement of its own, whatever
    becomes of the row (deleted, ended elsewhere, refused): the tokens were spent, and
    they are counted before the answer reads as ended. Returns the rows updated."""
    usage_tokens_add(message_id=message_id, **usage)
    return Message.objects.filter(pk=message_id, status=Status.STREAMING).update(**fields)


def _store_partials(rows: list[tuple[int, str, int]]) -> None:
    """Store (id, content, event_id) of answers still `streaming`, in one transaction.

    One prepared UPDATE for all rows (`executemany`): the ORM's `update()` costs about
    0.2 ms of CPU per row to build and compile, the statement under a fiftieth of that.
    """
    table, pk, content, event_id, status = sql_names(Message, "id", "content", "event_id", "status")
    sql = f"UPDATE {table} SET {content} = %s, {event_id} = %s WHERE {pk} = %s AND {status} = %s"  # noqa: S608
    streaming = Status.STREAMING.value
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.executemany(sql, [(text, position, id_, streaming) for id_, text, position in rows])


def _store_partials_or_each(rows: list[tuple[int, str, int]]) -> list[int]:
    """`_store_partials` of all rows; if that fails, of each row on its own, so that a row
    the database refuses costs only its own answer's partial text. Returns the ids of the
    rows not stored."""
    try:
        _store_partials(rows)
        return []
    except Exception:
        if len(rows) == 1:
            logger.exception("storing the partial text of answer %s failed", rows[0][0])
            return [rows[0][0]]
        logger.exception("storing the partial text of %d answers failed; storing each alone", len(rows))
    failed = []
    for row in rows:
        try:
            _store_partials([row])
        except Exception:
            failed.append(row[0])
    if failed:
        logger.warning("storing the partial text of answers %s failed", failed)
    return failed


_partials = _PartialWriter()


def error_payload(message_id: int, error: ProviderError) -> dict:
    """The `error` event of an answer (docs/protocol.md)."""
    payload = {
        "message": message_id,
        "code": error.code,
        "type": error.type,
        "detail": error.detail,
        "retryable": error.retryable,
    }
    if error.retry_after is not None:
        payload["retry_after"] = error.retry_after
    return payload


# A final write that failed is tried again after this long, doubling up to the maximum.
FAILED_END_RETRY_MIN_SECONDS = 0.1
FAILED_END_RETRY_MAX_SECONDS = 10.0


async def _end_as_error(message_id: int, error: ProviderError, text: dict) -> tuple[str, dict] | None:
    """End an answer still `streaming` with `error` (and `text`: its content and event_id,
    if given); returns the final event for its row: this error, the end it had already,
    or None when it is gone."""
    answer = Message.objects.filter(pk=message_id)
    if await answer.filter(status=Status.STREAMING).aupdate(
        status=Status.ERROR,
        finish_reason="",
        error_code=error.code,
        error_type=error.type,
        error_detail=error.detail,
        **text,
    ):
        return "error", error_payload(message_id, error)
    message = await answer.afirst()
    return None if message is None else _stored_end(message)


def _stored_end(message: Message) -> tuple[str, dict] | None:
    """The final event that agrees with an ended answer's row; None while it streams."""
    if message.status in (Status.ERROR, Status.INTERRUPTED):
        error = ProviderError(
            message.error_code or 500,
            message.error_type or "internal",
            message.error_detail,
            message.error_type in RETRYABLE_TYPES,
        )
        return "error", error_payload(message.pk, error)
    if message.status in (Status.DONE, Status.CANCELLED):
        return "done", {
            "message": message.pk,
            "finish_reason": message.finish_reason,
            "usage": _usage(message),
            "duration_ms": message.duration_ms,
        }
    return None


def history_before(message: Message) -> list[dict[str, str]]:
    """The conversation up to the answer `message`, as the provider wants it."""
    earlier = Message.objects.filter(
        conversation_id=message.conversation_id, pk__lt=message.pk, superseded=False
    )
    return [
        {"role": m.role, "content": m.content}
        for m in earlier.only("role", "content").order_by("pk")
        if m.role == Message.Role.USER or m.content
    ]


async def _generate(
    message: Message, history: list[dict[str, str]], language: str, start_event: dict, start_id: int | None
) -> None:
    answer = _Answer(
        message=message,
        channel=channel_for(message.conversation_id),
        start_event=start_event,
        event_id=message.event_id if start_id is None else start_id,
        replay=start_id is None,
        prompt_chars=sum(len(item["content"]) for item in history),
    )
    with translation.override(language):
        try:
            if answer.replay:
                answer.flush()  # publishes the start as soon as Redis answers
            finish = None
            async with asyncio.timeout(settings.ASSISTANT_MAX_ANSWER_SECONDS):
                stream = get_provider().stream(model=message.model, messages=history, pace=answer.pace)
                try:
                    async for item in stream:
                        if isinstance(item, Finish):
                            finish = item
                        else:
                            answer.add(item)
                finally:
                    # Closes the upstream response, also when cancelled.
                    await stream.aclose()
            if finish is None:
                raise provider_error("upstream_error", 502)
            await answer.finish(Status.DONE, finish=finish)
            questions = [m["content"] for m in history if m["role"] == Message.Role.USER]
            if len(questions) == 1 and not message.conversation.title_chosen:
                _follow_up(
                    titles.conversation_title(
                        answer_id=message.pk,
                        conversation_id=message.conversation_id,
                        model=message.model,
                        question=questions[0],
                        answer=answer.content,
                    )
                )
        except asyncio.CancelledError:
            running = _running.get(message.pk)
            if running is not None and running.cancel_requested:
                await answer.finish(Status.CANCELLED)
            else:
                # The server is shutting down: keep the text, say why it stopped.
                await answer.finish(Status.INTERRUPTED, error=interrupted_error())
        except TimeoutError:
            await answer.finish(Status.ERROR, error=provider_error("timeout", 504))
        except Exception as exc:
            # The provider raises ProviderError alone: anything else is Assistant's own fault.
            error = exc if isinstance(exc, ProviderError) else provider_error("internal", 500)
            if not isinstance(exc, ProviderError):
                logger.exception("generating answer %s failed", message.pk)
            await answer.finish(Status.ERROR, error=error)


# --- leases: restart recovery across any number of processes -------------------------------


_supervisor: asyncio.Task | None = None
_first_heartbeat: asyncio.Future | None = None


def interrupted_error() -> ProviderError:
    return provider_error("interrupted", 503)


async def ensure_supervisor() -> None:
    """Start this process's heartbeat and orphan sweep once; return after the first beat.

    Called before this process creates or streams answers, so that its answers are
    never mistaken for orphans by another process.
    """
    global _supervisor, _first_heartbeat
    loop = asyncio.get_running_loop()
    if _supervisor is None or _supervisor.done() or _supervisor.get_loop() is not loop:
        _first_heartbeat = loop.create_future()
        _supervisor = background_task(_supervise(_first_heartbeat))
        background_task(_watch_cancel_requests())
        _on_server_shutdown(shutdown)
    # With Redis: wake-ups of streams and stop requests from the other processes.
    replay_log.start_fanout(on_cancel=cancel)
    await asyncio.shield(_first_heartbeat)


def supervise_when_serving() -> None:
    """Start the supervisor as soon as daphne's reactor runs: the recovery of the answers
    a crashed process left behind must not wait for this process's first chat request
    (a restarted process that got none recovered nothing). Outside daphne, nothing."""
    if "twisted.internet.reactor" not in sys.modules:
        return
    from twisted.internet import reactor

    reactor.callWhenRunning(lambda: _follow_up(ensure_supervisor()))


def _answer_loop() -> asyncio.AbstractEventLoop | None:
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
    if _answer_loop() is None:
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
            {"message": message_id, "finish_reason": "cancelled", "usage": _usage(message)},
        )


def _usage(message: Message) -> dict:
    return {"prompt_tokens": message.prompt_tokens, "completion_tokens": message.completion_tokens}


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
        if not _running:
            continue
        try:
            # Not by id: a list of every running answer costs more to build and send than
            # reading this process's streaming rows through their partial index.
            requested = Message.objects.filter(
                status=Status.STREAMING, generated_by=PROCESS_ID, cancel_requested=True
            )
            async for message_id in requested.values_list("pk", flat=True):
                cancel(message_id)
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
    tasks = [running.task for running in _running.values()]
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


def _on_server_shutdown(callback) -> None:
    """Run `callback()` before daphne stops its event loop (daphne cancels what runs)."""
    if "twisted.internet.reactor" not in sys.modules:
        return
    from twisted.internet import defer, reactor

    reactor.addSystemEventTrigger(
        "before", "shutdown", lambda: defer.Deferred.fromFuture(asyncio.ensure_future(callback()))
    )
