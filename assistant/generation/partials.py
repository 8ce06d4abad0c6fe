"""The partial writer: the text of every answer streaming in this process, stored
together with its stream position at a bounded rate."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import connection, transaction

from assistant.generation.running import background_task
from assistant.models import Message, sql_names

if TYPE_CHECKING:
    from assistant.generation.answer import Answer

logger = logging.getLogger(__name__)

Status = Message.Status


def unstored(answer: Answer | StoredText, content: str, event_id: int) -> tuple[str, int] | None:
    """`content` and `event_id` for the writer to store for `answer`, or None when they
    are stored (or on their way)."""
    if (len(content), event_id) == answer.persisted:
        return None
    answer.persisted = (len(content), event_id)
    return content, event_id


@dataclass
class StoredText:
    """An answer generated elsewhere than in an `Answer` (the gateway's completions),
    for the writer: its row, its text so far, and the position stored with it."""

    message: Message
    parts: list[str] = field(default_factory=list)
    finishing: bool = False
    persisted: tuple[int, int] = (-1, -1)

    def partial(self) -> tuple[str, int] | None:
        return unstored(self, "".join(self.parts), self.message.event_id)


class PartialWriter:
    """Stores the partial text of every answer streaming in this process, all of them in
    one database call (one transaction) every ASSISTANT_PERSIST_SECONDS.

    One call for all answers, not one per answer: a thread hop and a commit per answer
    and write cost the event loop more than the answers' tokens at a hundred streams.
    Each answer's row is still written at most once per interval, with a text and a
    position that belong together (`Answer._stored`).
    """

    def __init__(self) -> None:
        self._answers: dict[int, Answer | StoredText] = {}
        self._task: asyncio.Task | None = None
        self._writing = False

    def add(self, answer: Answer | StoredText) -> None:
        """Store `answer`'s partial state at the next write (its newest state by then)."""
        if answer.message.pk in self._answers:
            return  # the writer is running and takes the newest state
        self._answers[answer.message.pk] = answer
        loop = asyncio.get_running_loop()
        if self._task is None or self._task.done() or self._task.get_loop() is not loop:
            self._task = background_task(self._write_every_interval())

    def discard(self, answer: Answer | StoredText) -> None:
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

    async def _write(self, answers: dict[int, Answer | StoredText]) -> None:
        rows = [(pk, *state) for pk, answer in answers.items() if (state := answer.partial())]
        if not rows:
            return
        for pk in await sync_to_async(store_partials_or_each)(rows):
            answer = answers[pk]
            if not answer.finishing:
                # Its state at the next write, even if it has not changed by then.
                answer.persisted = (-1, -1)
                self._answers.setdefault(pk, answer)


def store_partials(rows: list[tuple[int, str, int]]) -> None:
    """Store (id, content, event_id) of answers still `streaming`, in one transaction.

    One prepared UPDATE for all rows (`executemany`): the ORM's `update()` costs about
    0.2 ms of CPU per row to build and compile, the statement under a fiftieth of that.
    """
    table, pk, content, event_id, status = sql_names(Message, "id", "content", "event_id", "status")
    sql = f"UPDATE {table} SET {content} = %s, {event_id} = %s WHERE {pk} = %s AND {status} = %s"  # noqa: S608
    streaming = Status.STREAMING.value
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.executemany(sql, [(text, position, id_, streaming) for id_, text, position in rows])


def store_partials_or_each(rows: list[tuple[int, str, int]]) -> list[int]:
    """`store_partials` of all rows; if that fails, of each row on its own, so that a row
    the database refuses costs only its own answer's partial text. Returns the ids of the
    rows not stored."""
    try:
        store_partials(rows)
        return []
    except Exception:
        if len(rows) == 1:
            logger.exception("storing the partial text of answer %s failed", rows[0][0])
            return [rows[0][0]]
        logger.exception("storing the partial text of %d answers failed; storing each alone", len(rows))
    failed = []
    for row in rows:
        try:
            store_partials([row])
        except Exception:
            failed.append(row[0])
    if failed:
        logger.warning("storing the partial text of answers %s failed", failed)
    return failed


writer = PartialWriter()
