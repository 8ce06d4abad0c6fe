"""One answer while it streams: its coalescing window, its publication, its end."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field

from asgiref.sync import sync_to_async
from django.conf import settings

from assistant.documents.conversation_vectors import conversation_vectors_queue
from assistant.documents.embeddings import embeddings_enabled
from assistant.events.log import RETRY_MAX_SECONDS, RETRY_MIN_SECONDS, EventsUnavailable, Published
from assistant.events.publish import apublish_batch, apublish_or_defer, publish_batch, replay_log
from assistant.generation import partials, running
from assistant.generation.ending import (
    GONE,
    INTERRUPTED,
    end_as_error,
    error_payload,
    final_fields,
    interrupted_error,
    store_final,
)
from assistant.models import Message
from assistant.personas.flows import COMPLETE_PHASE, flow_state, phase_summary_from
from assistant.providers.errors import ProviderError, provider_error
from assistant.providers.values import Finish, ToolCall
from assistant.usage import usage_counted

logger = logging.getLogger(__name__)

Status = Message.Status

# Answers per step of the coalescing window (config/settings.py): with the base window of
# 30 ms, about a thousand delta events a second for the whole process, however many
# answers share them (until the window reaches its maximum).
COALESCE_STEP_ANSWERS = 30


def coalesce_seconds() -> float:
    """The coalescing window now: the base one, longer the more answers this process
    generates, so that its events (and their cost: above all a `send` each) stay about
    the same in number while its tokens grow."""
    steps = max(1.0, len(running.answers) / COALESCE_STEP_ANSWERS)
    return min(settings.ASSISTANT_COALESCE_MAX_SECONDS, settings.ASSISTANT_COALESCE_SECONDS * steps)


# A final write that failed is tried again after this long, doubling up to the maximum.
FAILED_END_RETRY_MIN_SECONDS = 0.1
FAILED_END_RETRY_MAX_SECONDS = 10.0


@dataclass(frozen=True)
class Continuation:
    """What an answer that goes on (docs/protocol.md, "continue") had before: its text,
    its tokens as the message showed them, and those its usage record counted."""

    text: str
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    counted: dict[str, int] = field(default_factory=dict)


def _tokens_sum(before: int | None, now: int | None) -> int | None:
    return now if before is None else before if now is None else before + now


@dataclass
class Answer:
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
    # Set when the answer goes on from a text it had (its first part): its tokens add up.
    continuation: Continuation | None = None
    # The end of its flow's phase, when the model called complete_phase (personas.flows),
    # and the `phase` event that announces it once stored.
    phase_summary: dict | None = None
    phase_event: dict | None = None

    def tool_called(self, call: ToolCall) -> None:
        """A tool the model called. complete_phase is the only one: a call of another, a
        second one, or one whose arguments are not the tool's ends the answer as a
        `tool_error`, its text kept (the provider refuses tools it was not offered)."""
        summary = phase_summary_from(call) if call.name == COMPLETE_PHASE else None
        if summary is None or self.phase_summary is not None:
            raise provider_error("tool_error", 502)
        self.phase_summary = summary

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
        partials.writer.add(self)

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
        partials.writer.add(self)

    def _stored(self) -> tuple[str, int]:
        """Text and position to store together: a client showing that text and connecting
        from that position ends up with exactly the answer."""
        if self.replay:
            # The wire owes a replay, which rebuilds the answer whatever a client shows.
            return "".join(self.parts), self.event_id
        return "".join(self.parts[: self.sent]), self.event_id

    def partial(self) -> tuple[str, int] | None:
        """Text and position to store, or None when they are stored (or on their way)."""
        return partials.unstored(self, *self._stored())

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
        `running.answers`) so the conversation takes the next message and a stop."""
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
        partials.writer.discard(self)
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
        fields = final_fields(
            status,
            content=self.content,
            finish=finish,
            error=error,
            time_to_first_token_ms=self._ms_since_start(self.first_token_at),
            duration_ms=self._ms_since_start(time.monotonic()),
        )
        fields["event_id"] = self.event_id
        if status == Status.DONE and self.phase_summary is not None:
            fields["phase_summary"] = self.phase_summary
        before = self.continuation
        new_chars = len(self.content) - (len(before.text) if before else 0)
        usage = usage_counted(finish, prompt_chars=self.prompt_chars, completion_chars=new_chars)
        if before is not None:
            # The answer's figures and its usage record cover every request it took.
            for key in ("prompt_tokens", "completion_tokens"):
                fields[key] = _tokens_sum(getattr(before, key), fields.get(key))
                usage[key] += before.counted.get(key, 0)
        ended = await sync_to_async(store_final)(self.message.pk, fields, usage)
        if ended == GONE:
            logger.info("answer %s was deleted or ended elsewhere; its end is not stored", self.message.pk)
            return None
        if ended == INTERRUPTED:
            # Marked interrupted by another process (its whole text kept): end the stream
            # for the clients following it here under that verdict.
            return "error", error_payload(self.message.pk, interrupted_error())
        if error is not None:
            return "error", error_payload(self.message.pk, error)
        if embeddings_enabled():
            # The conversation's vector for the search by meaning, computed in the background.
            await sync_to_async(conversation_vectors_queue)([self.message.conversation_id])
        if "phase_summary" in fields:
            state = await sync_to_async(flow_state)(self.message.conversation)
            self.phase_event = None if state is None else state.event(self.message.pk)
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
                return await end_as_error(self.message.pk, error, text)
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
        if self.phase_event is not None:
            batch.append(("phase", self.phase_event))
        batch.append((event_type, payload))
        await apublish_or_defer(self.channel, batch)
