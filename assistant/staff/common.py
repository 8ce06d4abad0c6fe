"""What the staff tools share: their error, periods, who acts, output files, deletion summaries."""

from __future__ import annotations

import contextlib
import getpass
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from datetime import time as day_start
from pathlib import Path
from typing import Any, TextIO

from django.contrib.auth import get_user_model
from django.db.models import Count, Max, Min, Q, QuerySet
from django.utils import timezone

from assistant.generation import leases
from assistant.models import Chunk, Conversation, Document, Message


class StaffError(Exception):
    """Input a staff tool refuses; nothing was changed. The message says why."""


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
        raise StaffError(f"{name} must be a date like 2025-01-31, got {value!r}.") from None


def period_parse(since: str | None, until: str | None) -> Period:
    """A period from two optional ISO dates; StaffError for junk or since after until."""
    period = Period(
        date_parse(since, name="--since") if since else None,
        date_parse(until, name="--until") if until else None,
    )
    if period.since and period.until and period.since > period.until:
        raise StaffError(f"--since ({period.since}) is after --until ({period.until}).")
    return period


def shell_actor() -> str:
    """Who runs a command, for deletion records and the access log: the OS user's name."""
    try:
        return getpass.getuser()
    except Exception:  # no passwd entry (containers) and no LOGNAME/USER
        return f"uid {os.getuid()}"


def user_get(username: str):
    """The account named `username`; StaffError when there is none."""
    try:
        return get_user_model().objects.get(username=username)
    except get_user_model().DoesNotExist:
        raise StaffError(f"No user named {username!r}.") from None


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
        raise StaffError(f"Cannot write to {target}: it is a directory.")
    folder = target.parent
    if not folder.is_dir():
        raise StaffError(f"Cannot write to {target}: the folder {folder} does not exist.")
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
        raise StaffError(f"Cannot write to {target}: {exc.strerror or exc}.") from None
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


# --- deleting --------------------------------------------------------------------------------


@dataclass
class DocumentCounts:
    """The documents of some conversations: files, passages (chunks) and their vectors."""

    documents: int = 0
    chunks: int = 0
    vectors: int = 0

    def __add__(self, other: DocumentCounts) -> DocumentCounts:
        return DocumentCounts(
            self.documents + other.documents, self.chunks + other.chunks, self.vectors + other.vectors
        )

    def parameters(self, suffix: str = "") -> dict[str, int]:
        """For a DeletionRecord's parameters (`documents`, `chunks`, `vectors` + suffix)."""
        return {
            f"documents{suffix}": self.documents,
            f"chunks{suffix}": self.chunks,
            f"vectors{suffix}": self.vectors,
        }


def documents_of(conversations: QuerySet[Conversation]) -> QuerySet[Document]:
    """The documents uploaded into `conversations`."""
    return Document.objects.filter(conversation__in=conversations.values("pk"))


def document_counts(documents: QuerySet[Document]) -> DocumentCounts:
    """`documents` (each one file), their chunks and vectors, counted now in two queries."""
    chunks = Chunk.objects.filter(document__in=documents.values("pk")).aggregate(
        chunks=Count("pk"), vectors=Count("pk", filter=~Q(embedding=b""))
    )
    return DocumentCounts(documents.count(), chunks["chunks"], chunks["vectors"])


@dataclass
class DeletionSummary:
    """What a deletion removed (or would remove): counts and the range of last activity."""

    conversations: int = 0
    messages: int = 0
    oldest: datetime | None = None
    newest: datetime | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    # The conversations' documents (uploaded files) with their chunks and vectors.
    documents: DocumentCounts = field(default_factory=DocumentCounts)

    def add(
        self,
        conversations: int,
        messages: int,
        oldest: datetime | None,
        newest: datetime | None,
        documents: DocumentCounts | None = None,
    ) -> None:
        self.conversations += conversations
        self.messages += messages
        if oldest is not None:
            self.oldest = min(self.oldest or oldest, oldest)
        if newest is not None:
            self.newest = max(self.newest or newest, newest)
        if documents is not None:
            self.documents += documents


def deletion_summary(conversations: QuerySet[Conversation]) -> DeletionSummary:
    """What deleting `conversations` removes, counted now; changes nothing."""
    ranges = conversations.aggregate(count=Count("pk"), oldest=Min("updated_at"), newest=Max("updated_at"))
    messages = Message.objects.filter(conversation__in=conversations.values("pk")).count()
    return DeletionSummary(
        ranges["count"],
        messages,
        ranges["oldest"],
        ranges["newest"],
        documents=document_counts(documents_of(conversations)),
    )


def user_streams_end(*, user) -> int:
    """Stop `user`'s streaming answers, wherever they generate; how many were stopped."""
    streaming = Message.objects.filter(conversation__owner=user, status=Message.Status.STREAMING)
    ids = list(streaming.values_list("pk", flat=True))
    for message_id in ids:
        leases.cancel_anywhere(message_id)
    return len(ids)
