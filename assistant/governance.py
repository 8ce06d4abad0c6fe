"""Governance for staff: exports, the retention policy, usage, one person's data, accounts.

The management commands in `assistant/management/commands/` are thin over these
functions: they parse options, call one of them and print. Everything here is sync
(commands run outside the event loop), except the model service check.

What these functions promise:

- Exports stream: one query per chunk of conversations (their messages prefetched with
  it), so memory stays flat however many conversations there are. Like the admin's
  export, each exported conversation goes on the access log first, with a reason.
- Deleting content always leaves a `DeletionRecord` with counts and date ranges, never
  the content, written in the same transaction as the deletion it describes.
- Bad input raises `GovernanceError` before anything changes.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import getpass
import json
import os
import socket
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from datetime import time as day_start
from decimal import Decimal
from itertools import islice
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import urlsplit

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.db import transaction
from django.db.models import Count, Max, Min, Prefetch, Q, QuerySet, Sum
from django.db.models.functions import TruncDate
from django.utils import timezone
from django.utils.translation import gettext_lazy

from assistant import events, generation, llm, spreadsheet
from assistant.models import AccessLog, Conversation, DeletionRecord, Message, UsageRecord
from assistant.review import (
    REASON_MAX_CHARS,
    REASON_MIN_CHARS,
    REVIEWERS_GROUP,
    access_entry,
    conversation_export_json,
    message_export_json,
)
from assistant.usage import usage_anonymise


class GovernanceError(Exception):
    """Input a governance function refuses; nothing was changed. The message says why."""


# --- periods -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Period:
    """Whole days in the site's time zone, both ends included; None is open-ended."""

    since: date | None = None
    until: date | None = None

    def bounds(self) -> tuple[datetime | None, datetime | None]:
        """The period as [start, end) instants."""
        zone = timezone.get_current_timezone()
        start = datetime.combine(self.since, day_start.min, zone) if self.since else None
        end = datetime.combine(self.until + timedelta(days=1), day_start.min, zone) if self.until else None
        return start, end

    def filter(self, queryset: QuerySet, field_name: str) -> QuerySet:
        start, end = self.bounds()
        if start is not None:
            queryset = queryset.filter(**{f"{field_name}__gte": start})
        if end is not None:
            queryset = queryset.filter(**{f"{field_name}__lt": end})
        return queryset

    def __str__(self) -> str:
        return f"{self.since or '…'} to {self.until or '…'}"


def date_parse(value: str, *, name: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise GovernanceError(f"{name} must be a date like 2025-01-31, got {value!r}.") from None


def period_parse(since: str | None, until: str | None) -> Period:
    """A period from two optional ISO dates; GovernanceError for junk or since after until."""
    period = Period(
        date_parse(since, name="--since") if since else None,
        date_parse(until, name="--until") if until else None,
    )
    if period.since and period.until and period.since > period.until:
        raise GovernanceError(f"--since ({period.since}) is after --until ({period.until}).")
    return period


def shell_actor() -> str:
    """Who runs a command, for deletion records and the access log: the OS user's name."""
    try:
        return getpass.getuser()
    except Exception:  # no passwd entry (containers) and no LOGNAME/USER
        return f"uid {os.getuid()}"


def user_get(username: str):
    """The account named `username`; GovernanceError when there is none."""
    try:
        return get_user_model().objects.get(username=username)
    except get_user_model().DoesNotExist:
        raise GovernanceError(f"No user named {username!r}.") from None


# --- writing files -------------------------------------------------------------------------


@contextlib.contextmanager
def atomic_output(path: str | Path) -> Iterator[TextIO]:
    """A text file that appears at `path` complete or not at all.

    The data goes to a temporary file next to `path`, renamed over it once written and
    flushed; on any exception the temporary file is removed and `path` is untouched.
    An unwritable place fails here, before the caller has done any work. The file is
    readable by its owner only: exports hold people's conversations.
    """
    target = Path(path)
    if target.is_dir():
        raise GovernanceError(f"Cannot write to {target}: it is a directory.")
    folder = target.parent
    if not folder.is_dir():
        raise GovernanceError(f"Cannot write to {target}: the folder {folder} does not exist.")
    try:
        handle = tempfile.NamedTemporaryFile(  # noqa: SIM115 - closed below, renamed or removed
            "w",
            encoding="utf-8",
            newline="",
            dir=folder,
            prefix=f".{target.name}.",
            suffix=".tmp",
            delete=False,
        )
    except OSError as exc:
        raise GovernanceError(f"Cannot write to {target}: {exc.strerror or exc}.") from None
    try:
        with handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(handle.name, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(handle.name)
        raise


# --- exporting conversations ---------------------------------------------------------------

EXPORT_FORMATS = ("jsonl", "csv")
EXPORT_CHUNK = 200

CSV_CONVERSATION_COLUMNS = [
    "conversation_id",
    "owner",
    "title",
    "conversation_model",
    "archived",
    "conversation_created_at",
    "conversation_updated_at",
]
CSV_MESSAGE_COLUMNS = [
    "message_id",
    "role",
    "status",
    "model",
    "created_at",
    "content",
    "finish_reason",
    "prompt_tokens",
    "completion_tokens",
    "superseded",
    "feedback",
    "feedback_comment",
    "error_type",
]


def conversations_select(
    *, owner=None, period: Period | None = None, model: str | None = None
) -> QuerySet[Conversation]:
    """Conversations of `owner`, started within `period`, that used `model` (any filter may be None).

    A conversation used a model when it is its current model or any answer came from it.
    """
    conversations = Conversation.objects.all()
    if owner is not None:
        conversations = conversations.filter(owner=owner)
    if period is not None:
        conversations = period.filter(conversations, "created_at")
    if model:
        answered = Message.objects.filter(model=model).values("conversation_id")
        conversations = conversations.filter(Q(model=model) | Q(pk__in=answered))
    return conversations


def conversations_stream(
    conversations: QuerySet[Conversation], *, chunk_size: int = EXPORT_CHUNK
) -> Iterator[Conversation]:
    """`conversations` oldest first with owner and messages: two queries per chunk, flat memory."""
    return (
        conversations.select_related("owner")
        .prefetch_related(Prefetch("messages", queryset=Message.objects.order_by("pk")))
        .order_by("created_at", "pk")
        .iterator(chunk_size=chunk_size)
    )


def _csv_rows(conversation: Conversation) -> Iterator[list[str]]:
    # Every cell is made inert by the writer (assistant.spreadsheet), not only these.
    head = [
        str(conversation.pk),
        conversation.owner.get_username(),
        conversation.title,
        conversation.model,
        "yes" if conversation.archived else "no",
        conversation.created_at.isoformat(),
        conversation.updated_at.isoformat(),
    ]
    messages = list(conversation.messages.all())
    if not messages:
        # Listed all the same: a conversation with no messages is still a conversation.
        yield [*head, *[""] * len(CSV_MESSAGE_COLUMNS)]
    for message in messages:
        yield [
            *head,
            str(message.pk),
            message.role,
            message.status,
            message.model,
            message.created_at.isoformat(),
            message.content,
            message.finish_reason,
            "" if message.prompt_tokens is None else str(message.prompt_tokens),
            "" if message.completion_tokens is None else str(message.completion_tokens),
            "yes" if message.superseded else "no",
            message.feedback_name or "",
            message.feedback_comment,
            message.error_type,
        ]


def export_reason_check(reason: str | None) -> str:
    """The stated reason for an export, stripped; GovernanceError when missing or too short."""
    reason = " ".join((reason or "").split())
    if len(reason) < REASON_MIN_CHARS:
        raise GovernanceError(
            f"State why with --reason (at least {REASON_MIN_CHARS} characters): every exported "
            "conversation is written to the access log, which its owner can read."
        )
    if len(reason) > REASON_MAX_CHARS:
        raise GovernanceError(f"The reason is longer than {REASON_MAX_CHARS} characters.")
    return reason


def _accesses_record(batch: list[Conversation], *, actor: str, reason: str) -> None:
    """Log reading `batch` in the access log, as the admin's export does (no reviewer account)."""
    AccessLog.objects.bulk_create(
        access_entry(
            reviewer=None,
            reviewer_username=actor,
            conversation_id=conversation.pk,
            owner_id=conversation.owner_id,
            owner_username=conversation.owner.get_username(),
            reason=f"export: {reason}",
        )
        for conversation in batch
    )


def _batches(items: Iterator[Conversation], size: int) -> Iterator[list[Conversation]]:
    while batch := list(islice(items, size)):
        yield batch


@dataclass
class ExportCounts:
    conversations: int = 0
    messages: int = 0


def conversations_export(
    conversations: QuerySet[Conversation],
    out: TextIO,
    *,
    actor: str,
    reason: str,
    format: str = "jsonl",
    progress: Callable[[ExportCounts], None] | None = None,
    progress_every: int = 500,
) -> ExportCounts:
    """Write `conversations` to `out`: JSON Lines (one conversation with its messages per
    line, the same objects as the reviewers' export) or CSV (one row per message, with
    the conversation's columns; every cell inert for spreadsheets: assistant.spreadsheet).
    Returns the counts.

    Like the admin's export, every conversation goes on the access log ("export:
    <reason>", by `actor`) before it is written, a chunk at a time. `progress` is called
    every `progress_every` conversations.
    """
    if format not in EXPORT_FORMATS:
        raise GovernanceError(f"Unknown format {format!r}: use one of {', '.join(EXPORT_FORMATS)}.")
    reason = export_reason_check(reason)
    counts = ExportCounts()
    writer = None
    if format == "csv":
        writer = spreadsheet.writer(out, lineterminator="\n")
        writer.writerow(CSV_CONVERSATION_COLUMNS + CSV_MESSAGE_COLUMNS)
    for batch in _batches(conversations_stream(conversations), EXPORT_CHUNK):
        _accesses_record(batch, actor=actor, reason=reason)
        for conversation in batch:
            if writer is None:
                out.write(json.dumps(conversation_export_json(conversation), ensure_ascii=False) + "\n")
            else:
                writer.writerows(_csv_rows(conversation))
            counts.conversations += 1
            counts.messages += len(conversation.messages.all())
            if progress is not None and counts.conversations % progress_every == 0:
                progress(counts)
    return counts


# --- the retention policy ------------------------------------------------------------------

RETENTION_BATCH = 500


def retention_days_parse(value: str | int | None, *, source: str = "--older-than") -> int:
    """Days from `90d`, `90` or 90: a whole number of at least one. `source` names it in errors."""
    if value is None:
        raise GovernanceError(
            "No retention period: give --older-than (e.g. 90d) or set ASSISTANT_RETENTION_DAYS."
        )
    text = str(value).strip().lower().removesuffix("d").strip()
    try:
        days = int(text)
    except ValueError:
        raise GovernanceError(f"{source} must be a number of days like 90d, got {value!r}.") from None
    if days < 1:
        raise GovernanceError(f"{source} must be at least one day, got {value!r}.")
    return days


def retention_candidates(*, cutoff: datetime) -> QuerySet[Conversation]:
    """Conversations with no activity since `cutoff` and no answer streaming."""
    streaming = Message.objects.filter(status=Message.Status.STREAMING).values("conversation_id")
    return Conversation.objects.filter(updated_at__lt=cutoff).exclude(pk__in=streaming)


@dataclass
class DeletionSummary:
    """What a deletion removed (or would remove): counts and the range of last activity."""

    conversations: int = 0
    messages: int = 0
    oldest: datetime | None = None
    newest: datetime | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def add(
        self, conversations: int, messages: int, oldest: datetime | None, newest: datetime | None
    ) -> None:
        self.conversations += conversations
        self.messages += messages
        if oldest is not None:
            self.oldest = min(self.oldest or oldest, oldest)
        if newest is not None:
            self.newest = max(self.newest or newest, newest)


def retention_cutoff(days: int, *, now: datetime | None = None) -> datetime:
    return (now or timezone.now()) - timedelta(days=days)


def _summary_of(conversations: QuerySet[Conversation]) -> DeletionSummary:
    ranges = conversations.aggregate(count=Count("pk"), oldest=Min("updated_at"), newest=Max("updated_at"))
    messages = Message.objects.filter(conversation__in=conversations.values("pk")).count()
    return DeletionSummary(ranges["count"], messages, ranges["oldest"], ranges["newest"])


def retention_preview(*, days: int, now: datetime | None = None) -> DeletionSummary:
    """What `retention_purge` would delete now; changes nothing."""
    return _summary_of(retention_candidates(cutoff=retention_cutoff(days, now=now)))


def retention_purge(
    *,
    days: int,
    actor: str,
    batch_size: int = RETENTION_BATCH,
    now: datetime | None = None,
    on_batch: Callable[[DeletionSummary], None] | None = None,
) -> tuple[DeletionSummary, DeletionRecord | None]:
    """Delete conversations (with their messages) inactive for more than `days` days.

    In batches of `batch_size` conversations, each in its own transaction together with
    the `DeletionRecord` it adds to, so the record always matches what is gone even if
    a later batch fails. A conversation with an answer streaming is kept. The deleted
    conversations' events leave this process's replay log too. No record when nothing
    was deleted.
    """
    cutoff = retention_cutoff(days, now=now)
    summary = DeletionSummary()
    record: DeletionRecord | None = None
    while True:
        with transaction.atomic():
            candidates = retention_candidates(cutoff=cutoff)
            ids = list(
                candidates.select_for_update()
                .order_by("updated_at")
                .values_list("pk", flat=True)[:batch_size]
            )
            if not ids:
                break
            batch = retention_candidates(cutoff=cutoff).filter(pk__in=ids)
            ranges = batch.aggregate(oldest=Min("updated_at"), newest=Max("updated_at"))
            _total, deleted = batch.delete()
            conversations = deleted.get(Conversation._meta.label, 0)
            messages = deleted.get(Message._meta.label, 0)
            if not conversations:
                break  # cannot happen under the lock; never loop on it
            summary.add(conversations, messages, ranges["oldest"], ranges["newest"])
            if record is None:
                record = DeletionRecord(
                    kind=DeletionRecord.Kind.RETENTION,
                    actor=actor[:150],
                    parameters={"older_than_days": days, "cutoff": cutoff.isoformat()},
                )
            record.conversations, record.messages = summary.conversations, summary.messages
            record.oldest, record.newest = summary.oldest, summary.newest
            record.save()
        for conversation_id in ids:
            events.replay_log.forget(events.channel_for(conversation_id))
        if on_batch is not None:
            on_batch(summary)
    return summary, record


# --- usage ---------------------------------------------------------------------------------

USAGE_KEYS = ("user", "model", "day")
# The one group of usage_report for answers whose account was erased or deleted.
DELETED_USERS = gettext_lazy("(deleted users)")


@dataclass
class UsageRow:
    key: tuple[str, ...]
    answers: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: Decimal | None = None


@dataclass
class UsageReport:
    by: tuple[str, ...]
    rows: list[UsageRow]
    total: UsageRow
    priced: bool
    unpriced_models: list[str]


def usage_by_parse(values: Iterable[str]) -> tuple[str, ...]:
    """`--by user --by model,day` as ("user", "model", "day"): known keys, each once, in order given."""
    keys: list[str] = []
    for value in values:
        for key in (part.strip() for part in value.split(",")):
            if key not in USAGE_KEYS:
                raise GovernanceError(f"Unknown --by {key!r}: use {', '.join(USAGE_KEYS)}.")
            if key not in keys:
                keys.append(key)
    return tuple(keys)


def _price(costs: dict[str, Sequence[float]], model: str, prompt: int, completion: int) -> Decimal | None:
    if model not in costs:
        return None
    per_prompt, per_completion = (Decimal(str(value)) for value in costs[model])
    return (prompt * per_prompt + completion * per_completion) / Decimal(1_000_000)


def usage_report(
    *, period: Period, by: Sequence[str], costs: dict[str, Sequence[float]] | None = None
) -> UsageReport:
    """Answers and tokens of the answers started within `period`, grouped by `by`.

    Read from the usage record, so answers of deleted conversations still count. Every
    answer counts, also superseded, failed and cancelled ones (they cost tokens too).
    Answers of erased or deleted accounts are one group, `DELETED_USERS`. With `costs`
    (USD per million prompt and completion tokens, per model) rows get a cost; models
    without a price are listed in `unpriced_models` and add nothing.
    """
    costs = settings.ASSISTANT_MODEL_COSTS if costs is None else costs
    answers = period.filter(UsageRecord.objects.all(), "created_at")
    fields: dict[str, Any] = {"owner": "user__username", "model": "model"}
    if "day" in by:
        answers = answers.annotate(day=TruncDate("created_at", tzinfo=timezone.get_current_timezone()))
        fields["day"] = "day"
    grouped = (
        answers.values(*fields.values())
        .annotate(
            answers=Sum("answers"),
            prompt=Sum("prompt_tokens"),
            completion=Sum("completion_tokens"),
        )
        .order_by()
    )
    rows: dict[tuple[str, ...], UsageRow] = {}
    total = UsageRow(key=())
    unpriced: set[str] = set()
    for item in grouped:
        user = item[fields["owner"]] or str(DELETED_USERS)
        values = {"user": user, "model": item["model"] or "-", "day": str(item.get("day"))}
        key = tuple(values[name] for name in by)
        row = rows.setdefault(key, UsageRow(key=key))
        cost = _price(costs, item["model"], item["prompt"], item["completion"])
        if costs and cost is None and (item["prompt"] or item["completion"]):
            unpriced.add(values["model"])
        for target in (row, total):
            target.answers += item["answers"]
            target.prompt_tokens += item["prompt"]
            target.completion_tokens += item["completion"]
            if cost is not None:
                target.cost = (target.cost or Decimal(0)) + cost
    return UsageReport(
        by=tuple(by),
        rows=[rows[key] for key in sorted(rows)],
        total=total,
        priced=bool(costs),
        unpriced_models=sorted(unpriced),
    )


def quota_reached(*, period: Period, quota: int | None = None) -> list[tuple[str, str, int]]:
    """(username, day, tokens) for every user and local day whose tokens reached the daily quota."""
    quota = settings.ASSISTANT_DAILY_TOKEN_QUOTA if quota is None else quota
    if not quota:
        return []
    answers = period.filter(UsageRecord.objects.filter(user__isnull=False), "created_at")
    days = (
        answers.annotate(day=TruncDate("created_at", tzinfo=timezone.get_current_timezone()))
        .values("user__username", "day")
        .annotate(tokens=Sum("prompt_tokens") + Sum("completion_tokens"))
        .filter(tokens__gte=quota)
        .order_by("day", "user__username")
    )
    return [(row["user__username"], str(row["day"]), row["tokens"]) for row in days]


# --- one person's data (GDPR Art. 15 and 17) ----------------------------------------------


def _deleted_name(user) -> str:
    return f"deleted user #{user.pk}"


def _when(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def _access_json(entry: AccessLog) -> dict[str, Any]:
    return {
        "accessed_at": entry.accessed_at.isoformat(),
        "reviewer": entry.reviewer_username,
        "owner": entry.owner_username,
        "conversation_id": str(entry.conversation_id),
        "reason": entry.reason,
    }


USER_DATA_EXPORT_REASON = "the user's own data, at their request (GDPR Art. 15)"


def user_data_export(*, user, actor: str) -> dict[str, Any]:
    """Everything stored about `user`: the account (no password hash), their conversations
    with every message, the feedback they gave, and the access log entries about them
    (their transcripts opened by reviewers) and by them (transcripts they opened).

    Reading their conversations for this goes on the access log first, by `actor`.
    """
    conversations = list(conversations_stream(conversations_select(owner=user)))
    _accesses_record(conversations, actor=actor, reason=USER_DATA_EXPORT_REASON)
    feedback = Message.objects.filter(conversation__owner=user, feedback__isnull=False).order_by("pk")
    return {
        "exported_at": timezone.now().isoformat(),
        "account": {
            "id": user.pk,
            "username": user.get_username(),
            "email": user.email,
            "first_name": user.first_name,
            "last_name": user.last_name,
            "is_active": user.is_active,
            "is_staff": user.is_staff,
            "is_superuser": user.is_superuser,
            "date_joined": _when(user.date_joined),
            "last_login": _when(user.last_login),
            "groups": sorted(user.groups.values_list("name", flat=True)),
        },
        "conversations": [conversation_export_json(c) for c in conversations],
        "feedback": [
            {"conversation_id": str(m.conversation_id), **message_export_json(m)}
            for m in feedback.iterator(chunk_size=EXPORT_CHUNK)
        ],
        "access_log": {
            "about_them": [
                _access_json(e) for e in AccessLog.objects.filter(owner=user).order_by("accessed_at")
            ],
            "by_them": [
                _access_json(e) for e in AccessLog.objects.filter(reviewer=user).order_by("accessed_at")
            ],
        },
    }


def _user_summary(user) -> DeletionSummary:
    summary = _summary_of(conversations_select(owner=user))
    summary.extra = {
        "feedback": Message.objects.filter(conversation__owner=user, feedback__isnull=False).count(),
        "streaming_answers": Message.objects.filter(
            conversation__owner=user, status=Message.Status.STREAMING
        ).count(),
        "access_log_about_them": AccessLog.objects.filter(owner=user).count(),
        "access_log_by_them": AccessLog.objects.filter(reviewer=user).count(),
        "usage_answers": UsageRecord.objects.filter(user=user).aggregate(n=Sum("answers"))["n"] or 0,
    }
    return summary


def user_data_preview(*, user) -> DeletionSummary:
    """What `user_data_delete` would remove or anonymise; changes nothing."""
    return _user_summary(user)


def user_data_delete(
    *, user, actor: str, keep_account: bool = False
) -> tuple[DeletionSummary, DeletionRecord]:
    """Erase `user`'s conversations and messages, anonymise the access log and the usage
    record, delete the account.

    Streaming answers are stopped first (wherever they generate; that process finds the
    row gone and ends quietly). Access log rows stay, as the reviewers' accountability
    record, with the person named "deleted user #<id>" and unlinked. Their usage rows
    become counted rows per day and model without user or message (`usage_anonymise`),
    so usage totals do not change. With `keep_account`
    the account stays as it is (only its data goes). The `DeletionRecord` holds counts,
    the range of last activity and the user's id, never names or content.
    """
    streaming = Message.objects.filter(conversation__owner=user, status=Message.Status.STREAMING)
    for message_id in streaming.values_list("pk", flat=True):
        generation.cancel_anywhere(message_id)
    with transaction.atomic():
        summary = _user_summary(user)
        conversation_ids = list(conversations_select(owner=user).values_list("pk", flat=True))
        conversations_select(owner=user).delete()
        name = _deleted_name(user)
        AccessLog.objects.filter(owner=user).update(owner=None, owner_username=name)
        AccessLog.objects.filter(reviewer=user).update(reviewer=None, reviewer_username=name)
        summary.extra["usage_answers"] = usage_anonymise(user=user)
        record = DeletionRecord.objects.create(
            kind=DeletionRecord.Kind.USER_DATA,
            actor=actor[:150],
            conversations=summary.conversations,
            messages=summary.messages,
            oldest=summary.oldest,
            newest=summary.newest,
            parameters={
                "user_id": user.pk,
                "account": "kept" if keep_account else "deleted",
                "access_log_anonymised": summary.extra["access_log_about_them"]
                + summary.extra["access_log_by_them"],
                "usage_answers_anonymised": summary.extra["usage_answers"],
            },
        )
        if not keep_account:
            user.delete()
    for conversation_id in conversation_ids:
        events.replay_log.forget(events.channel_for(conversation_id))
    return summary, record


# --- employee accounts from a CSV ----------------------------------------------------------

ACCOUNT_COLUMNS = ("username", "email", "first_name", "last_name", "active", "staff", "reviewer")
ACCOUNT_FLAGS = {"active": "is_active", "staff": "is_staff"}
YES = frozenset({"yes", "y", "true", "1"})
NO = frozenset({"no", "n", "false", "0"})
MAX_REPORTED_PROBLEMS = 20


@dataclass(frozen=True)
class AccountRow:
    """One line of the accounts file; None: the column is absent or empty (leave as is)."""

    line: int
    username: str
    email: str | None = None
    first_name: str | None = None
    last_name: str | None = None
    active: bool | None = None
    staff: bool | None = None
    reviewer: bool | None = None


def _yes_no(value: str) -> bool | None:
    value = value.strip().lower()
    if not value:
        return None
    if value in YES:
        return True
    if value in NO:
        return False
    raise ValueError(value)


def accounts_parse(lines: Iterable[str]) -> list[AccountRow]:
    """Rows of an accounts CSV (header first); GovernanceError listing every problem found.

    `username` is required; the other columns of ACCOUNT_COLUMNS may be left out, and an
    empty cell leaves that attribute as it is. Yes/no cells take yes/no, y/n, true/false, 1/0.
    """
    reader = csv.DictReader(lines)
    header = [name.strip().lower() for name in reader.fieldnames or []]
    if "username" not in header:
        raise GovernanceError(
            f"The file needs a header line with a 'username' column (columns: {', '.join(ACCOUNT_COLUMNS)})."
        )
    unknown = [name for name in header if name not in ACCOUNT_COLUMNS]
    if unknown:
        raise GovernanceError(
            f"Unknown column(s) {', '.join(unknown)}: the columns are {', '.join(ACCOUNT_COLUMNS)}."
        )
    reader.fieldnames = header
    validate_username = get_user_model().username_validator
    rows: list[AccountRow] = []
    problems: list[str] = []
    seen: dict[str, int] = {}
    for record in reader:
        line = reader.line_num
        if None in record:
            problems.append(f"line {line}: more cells than columns")
            continue
        cells = {name: (value or "").strip() for name, value in record.items()}
        username = cells["username"]
        if not username:
            problems.append(f"line {line}: no username")
            continue
        try:
            validate_username(username)
        except ValidationError:
            problems.append(f"line {line}: {username!r} is not a valid username")
            continue
        if username in seen:
            problems.append(f"line {line}: {username!r} already on line {seen[username]}")
            continue
        seen[username] = line
        if cells.get("email"):
            try:
                validate_email(cells["email"])
            except ValidationError:
                problems.append(f"line {line}: {cells['email']!r} is not an email address")
        flags: dict[str, bool | None] = {}
        for name in ("active", "staff", "reviewer"):
            try:
                flags[name] = _yes_no(cells.get(name, ""))
            except ValueError:
                problems.append(f"line {line}: {name} must be yes or no, got {cells[name]!r}")
        if flags.get("reviewer") and flags.get("staff") is False:
            problems.append(f"line {line}: a reviewer must be staff (staff=no, reviewer=yes)")
        rows.append(
            AccountRow(
                line=line,
                username=username,
                email=cells.get("email") or None,
                first_name=cells.get("first_name") or None,
                last_name=cells.get("last_name") or None,
                **flags,
            )
        )
    if problems:
        shown = problems[:MAX_REPORTED_PROBLEMS]
        more = len(problems) - len(shown)
        raise GovernanceError(
            "The accounts file has problems; nothing was changed:\n  "
            + "\n  ".join(shown)
            + (f"\n  … and {more} more" if more else "")
        )
    return rows


@dataclass
class AccountChange:
    username: str
    action: str  # "create", "update" or "unchanged"
    changes: list[str] = field(default_factory=list)
    deactivated: bool = False
    stopped_answers: int = 0


def _account_apply(user, row: AccountRow, reviewers: Group | None) -> list[str]:
    """Set `row`'s values on `user` (unsaved); the names of what changed."""
    changes: list[str] = []
    for name in ("email", "first_name", "last_name"):
        value = getattr(row, name)
        if value is not None and getattr(user, name) != value:
            setattr(user, name, value)
            changes.append(name)
    staff = True if row.reviewer and row.staff is None else row.staff
    for name, wanted in (("is_active", row.active), ("is_staff", staff)):
        if wanted is not None and getattr(user, name) != wanted:
            setattr(user, name, wanted)
            changes.append(f"{name}={'yes' if wanted else 'no'}")
    if reviewers is not None and row.reviewer is not None:
        member = user.pk is not None and user.groups.filter(pk=reviewers.pk).exists()
        if member != row.reviewer:
            changes.append(f"reviewer={'yes' if row.reviewer else 'no'}")
    return changes


def accounts_import(rows: Sequence[AccountRow], *, dry_run: bool = False) -> tuple[list[AccountChange], bool]:
    """Create missing accounts and update existing ones from `rows`, in one transaction.

    New accounts get an unusable password: people sign in through single sign-on or set
    a password through a reset. Accounts not in `rows` are left alone. Deactivating an
    account stops its streaming answers (after the commit); its sessions end with it,
    since Django treats an inactive user as logged out. Returns the changes and whether
    the reviewers group exists (without it the `reviewer` column is ignored).
    """
    User = get_user_model()
    reviewers = Group.objects.filter(name=REVIEWERS_GROUP).first()
    results: list[AccountChange] = []
    with transaction.atomic():
        existing = {
            u.username: u
            for u in User.objects.select_for_update().filter(username__in=[r.username for r in rows])
        }
        for row in rows:
            user = existing.get(row.username)
            was_active = user.is_active if user is not None else None
            if user is None:
                user = User(username=row.username, is_active=True)
                user.set_unusable_password()
            changes = _account_apply(user, row, reviewers)
            action = "create" if user.pk is None else ("update" if changes else "unchanged")
            result = AccountChange(
                row.username, action, changes, deactivated=bool(was_active and not user.is_active)
            )
            results.append(result)
            if dry_run or action == "unchanged":
                continue
            user.save()
            if reviewers is not None and row.reviewer is not None:
                (user.groups.add if row.reviewer else user.groups.remove)(reviewers)
    if not dry_run:
        for result in results:
            if result.deactivated:
                result.stopped_answers = user_streams_end(user=existing[result.username])
    return results, reviewers is not None


def user_streams_end(*, user) -> int:
    """Stop `user`'s streaming answers, wherever they generate; how many were stopped."""
    streaming = Message.objects.filter(conversation__owner=user, status=Message.Status.STREAMING)
    ids = list(streaming.values_list("pk", flat=True))
    for message_id in ids:
        generation.cancel_anywhere(message_id)
    return len(ids)


# --- the model service ---------------------------------------------------------------------

CHECK_PROMPT = [{"role": "user", "content": "Reply with the single word OK."}]
CHECK_MAX_TOKENS = 5


@dataclass
class ModelCheck:
    model: str
    ok: bool
    complete_ms: int | None = None
    first_token_ms: int | None = None
    stream_ms: int | None = None
    error: llm.ProviderError | None = None
    diagnosis: str = ""


def base_url_shown() -> str:
    """OPENAI_BASE_URL without any user:password in it (or the SDK's default)."""
    url = settings.OPENAI_BASE_URL or "https://api.openai.com/v1"
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return parts._replace(netloc=host).geturl()


def _reachable(url: str, timeout: float) -> str | None:
    """None when a TCP connection to `url`'s host opens; else why not."""
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        with socket.create_connection((parts.hostname or "", port), timeout=timeout):
            return None
    except socket.gaierror:
        return f"the host name {parts.hostname!r} does not resolve"
    except TimeoutError:
        return f"no answer from {parts.hostname}:{port} within {timeout:g} s"
    except OSError as exc:
        return f"{parts.hostname}:{port}: {exc.strerror or exc}"


def diagnose(error: llm.ProviderError, *, model: str) -> str:
    """What a failed check means, in the terms of the settings to look at. Never the key."""
    url = base_url_shown()
    if error.type == "auth_failed":
        return f"the API key was refused (HTTP {error.code}): check OPENAI_API_KEY for {url}"
    if error.type == "model_not_found":
        return (
            f"the server does not know model {model!r} (HTTP 404): check ASSISTANT_MODELS "
            "(when every model fails so, check that OPENAI_BASE_URL has the API's path, e.g. /v1)"
        )
    if error.type == "timeout":
        return (
            f"no answer in time from {url} (connect {settings.OPENAI_CONNECT_TIMEOUT:g} s, "
            f"read {settings.OPENAI_TIMEOUT:g} s): check OPENAI_BASE_URL, the network, or the timeouts"
        )
    if error.type == "rate_limited":
        return "the server is rate-limiting this key (HTTP 429): try again later or raise the limit"
    if error.type == "upstream_unavailable":
        unreachable = _reachable(settings.OPENAI_BASE_URL or url, settings.OPENAI_CONNECT_TIMEOUT)
        if unreachable:
            return f"cannot reach OPENAI_BASE_URL {url}: {unreachable}"
        return f"{url} is reachable but answered HTTP {error.code} (unavailable or overloaded)"
    if error.type == "bad_request":
        return f"the server rejected the request (HTTP {error.code}): is {url} an OpenAI-compatible API?"
    return f"{error.type} (HTTP {error.code}): {error.detail}"


def _ms_since(started: float) -> int:
    return int((time.monotonic() - started) * 1000)


async def model_check(provider, *, model: str) -> ModelCheck:
    """One tiny non-streamed request and one tiny streamed one to `model`, timed."""
    check = ModelCheck(model=model, ok=False)
    try:
        started = time.monotonic()
        await provider.complete(model=model, messages=CHECK_PROMPT, max_tokens=CHECK_MAX_TOKENS)
        check.complete_ms = _ms_since(started)
        started = time.monotonic()
        stream = provider.stream(model=model, messages=CHECK_PROMPT)
        try:
            async for item in stream:
                if check.first_token_ms is None and not isinstance(item, llm.Finish):
                    check.first_token_ms = _ms_since(started)
        finally:
            await stream.aclose()
        check.stream_ms = _ms_since(started)
    except Exception as exc:
        check.error = llm.error_from_exception(exc)
        check.diagnosis = await asyncio.to_thread(diagnose, check.error, model=model)
        return check
    check.ok = True
    return check
