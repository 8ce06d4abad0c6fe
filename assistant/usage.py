"""The usage record: what answers cost, kept apart from the content that deleting removes.

One `UsageRecord` per answer, inserted in the transaction that creates the answer (so it
counts toward the per-minute limit at once) and given the answer's tokens when it ends.
The limits (`selectors.usage_get`, `limits.answers_allow`) and `usage_report` read it.
Deleting conversations or messages never touches it; erasing a person's data
(`usage_anonymise`) turns their rows into counted rows without user or message.
"""

from __future__ import annotations

import functools
from datetime import datetime, time
from typing import TYPE_CHECKING

from django.db import connection
from django.db.models import F, Sum
from django.db.models.functions import TruncDate
from django.utils import timezone

from assistant.models import Origin, UsageRecord, sql_names

if TYPE_CHECKING:
    from assistant.providers.values import Finish

INSERTED = (
    "user",
    "model",
    "assistant",
    "origin",
    "created_at",
    "answers",
    "prompt_tokens",
    "completion_tokens",
    "message_id",
)


@functools.cache
def _insert_sql() -> str:
    """Written out, like `selectors._usage_sql`: it runs with every answer a user asks for."""
    table, *columns = sql_names(UsageRecord, *INSERTED)
    return f"INSERT INTO {table} ({', '.join(columns)}) VALUES (%s, %s, %s, %s, %s, 1, 0, 0, %s)"  # noqa: S608


def usage_answer_add(
    *,
    user_id: int,
    model: str,
    assistant: str = "",
    origin: str = Origin.PAGE,
    message_id: int,
    created_at: datetime,
) -> None:
    """Count an answer as it starts; call in the transaction that stores the answer.
    `assistant` is the slug of the conversation's assistant, empty for the bare model;
    `origin` where the question came from."""
    with connection.cursor() as cursor:
        cursor.execute(
            _insert_sql(),
            [
                user_id,
                model,
                assistant,
                origin,
                connection.ops.adapt_datetimefield_value(created_at),
                message_id,
            ],
        )


@functools.cache
def _tokens_sql() -> str:
    table, message_id, prompt, completion = sql_names(
        UsageRecord, "message_id", "prompt_tokens", "completion_tokens"
    )
    return f"UPDATE {table} SET {prompt} = %s, {completion} = %s WHERE {message_id} = %s"  # noqa: S608


def usage_tokens_add(*, message_id: int, prompt_tokens: int, completion_tokens: int) -> None:
    """Add an ended answer's tokens to its row. Also when its message is gone (the
    conversation was deleted meanwhile): the tokens were spent. A row already anonymised
    has no message id and stays as it is. Written out, like `_insert_sql`: it runs at the
    end of every answer."""
    with connection.cursor() as cursor:
        cursor.execute(_tokens_sql(), [prompt_tokens, completion_tokens, message_id])


# Characters per token where the upstream reports no usage: about right for English and
# German text with the common tokenizers, and on the side of counting more rather than less.
CHARS_PER_TOKEN = 3


def usage_counted(finish: Finish | None, *, prompt_chars: int, completion_chars: int) -> dict[str, int]:
    """The tokens an ended answer counts: the upstream's figures, or, where it gave none
    (a stopped, failed or interrupted answer, an upstream that reports no usage), an
    estimate from the characters sent and received. Otherwise stopping every answer just
    before its end would escape the daily quota."""
    prompt = None if finish is None else finish.prompt_tokens
    completion = None if finish is None else finish.completion_tokens
    return {
        "prompt_tokens": _estimated(prompt_chars) if prompt is None else prompt,
        "completion_tokens": _estimated(completion_chars) if completion is None else completion,
    }


def _estimated(chars: int) -> int:
    return -(-chars // CHARS_PER_TOKEN)  # rounded up


def usage_oldest_since(*, user_id: int, since: datetime) -> datetime | None:
    """When the first of the user's answers after `since` started: the rate limit frees a
    place a minute after it."""
    return (
        UsageRecord.objects.filter(user=user_id, created_at__gt=since)
        .order_by("created_at")
        .values_list("created_at", flat=True)
        .first()
    )


def usage_anonymise(*, user) -> int:
    """Replace `user`'s rows with counted rows per local day, model, assistant and origin,
    without user or message.

    The counts of answers and the token sums stay, so reports and totals do not change.
    A day's anonymous row starts at the day's start (site time zone), which reveals no
    more than the day, and is shared by everyone erased so far: the person's answers are
    added to the day's row when there is one, so their rows are not told apart from
    other erased people's. Call inside the erasure's transaction. Returns the answers
    counted.
    """
    rows = UsageRecord.objects.filter(user=user)
    days = list(
        rows.annotate(day=TruncDate("created_at", tzinfo=timezone.get_current_timezone()))
        .values("day", "model", "assistant", "origin")
        .annotate(count=Sum("answers"), prompt=Sum("prompt_tokens"), completion=Sum("completion_tokens"))
        .order_by("day", "model", "assistant", "origin")
    )
    rows.delete()
    for day in days:
        start = timezone.make_aware(datetime.combine(day["day"], time.min))
        # One row only, should two erasures at once have made two.
        shared = (
            UsageRecord.objects.filter(
                user=None,
                message_id=None,
                model=day["model"],
                assistant=day["assistant"],
                origin=day["origin"],
                created_at=start,
            )
            .values_list("pk", flat=True)
            .first()
        )
        added = shared is not None and UsageRecord.objects.filter(pk=shared).update(
            answers=F("answers") + day["count"],
            prompt_tokens=F("prompt_tokens") + day["prompt"],
            completion_tokens=F("completion_tokens") + day["completion"],
        )
        if not added:
            UsageRecord.objects.create(
                model=day["model"],
                assistant=day["assistant"],
                origin=day["origin"],
                created_at=start,
                answers=day["count"],
                prompt_tokens=day["prompt"],
                completion_tokens=day["completion"],
            )
    return sum(day["count"] for day in days)
