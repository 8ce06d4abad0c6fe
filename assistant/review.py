"""Review of other people's conversations: purposeful, time-limited and on the record.

A reviewer (a staff user with `assistant.review_conversation`, usually through the
"Reviewers" group) states a reason before a transcript opens; the reason is written to
the append-only AccessLog first, then the reviewer's session may show that one
transcript for `GRANT_SECONDS`. Exports work the same way (assistant.staff.export):
every exported conversation is logged before it is sent. Owners read the log of their
own conversations.

The access log's CSV is an async iterator: under ASGI Django buffers a synchronous
iterator whole before sending it, which for a long log is the wrong trade.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, MutableMapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from django.conf import settings
from django.contrib.auth.models import Group
from django.db import transaction
from django.db.models import Exists, OuterRef, QuerySet, Subquery
from django.utils import formats, timezone, translation
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _

from assistant import spreadsheet
from assistant.models import AccessLog, Conversation

REVIEW_PERMISSION = "assistant.review_conversation"
REVIEWERS_GROUP = "Reviewers"
# How long a stated reason opens a transcript in the reviewer's session.
GRANT_SECONDS = 30 * 60
SESSION_KEY = "assistant_review_grants"
# The content view of the admin's lists (titles, comments, search of text) in a session.
LIST_SESSION_KEY = "assistant_review_list_grant"
REASON_MIN_CHARS = 10
REASON_MAX_CHARS = 1000
LOG_BATCH = 500

PURPOSES = [
    ("support", _("User support request")),
    ("feedback", _("Quality review of negative feedback")),
    ("security", _("Security incident")),
    ("legal", _("Legal request")),
    ("other", _("Other")),
]


# --- the reviewer role ---------------------------------------------------------------------


def reviewer_grant(*, user) -> None:
    """Make `user` a reviewer: staff (to reach the admin) and a member of the Reviewers group."""
    group = Group.objects.get(name=REVIEWERS_GROUP)
    with transaction.atomic():
        if not user.is_staff:
            user.is_staff = True
            user.save(update_fields=["is_staff"])
        user.groups.add(group)


def reviewer_revoke(*, user) -> None:
    """Take the Reviewers group away; staff status stays (it may serve other duties)."""
    user.groups.remove(Group.objects.get(name=REVIEWERS_GROUP))


def can_review(user) -> bool:
    """May `user` open transcripts (after stating a reason)? Superusers may."""
    return bool(user.is_active and user.is_staff and user.has_perm(REVIEW_PERMISSION))


# --- stating a reason, opening a transcript ------------------------------------------------


def reason_compose(*, purpose: str, details: str) -> str:
    """The reason as recorded: the purpose's name (in the site language) and the free text."""
    labels = dict(PURPOSES)
    with translation.override(settings.LANGUAGE_CODE):
        label = str(labels[purpose])
    return f"{label}: {details.strip()}"


def access_record(*, reviewer, conversation: Conversation, reason: str) -> AccessLog:
    """Append one access to the log: who read whose conversation, and why."""
    entry = conversation_access_entry(conversation, reviewer=reviewer, reason=reason)
    entry.save()
    return entry


def access_entry(
    *, reviewer, reviewer_username: str, conversation_id, owner_id, owner_username: str, reason: str
) -> AccessLog:
    """One access, unsaved: who read whose conversation, and why. Every row of the log is
    built here (a transcript opened, a list shown, an export in the admin or the shell)."""
    return AccessLog(
        reviewer=reviewer,
        reviewer_username=reviewer_username[:150],
        owner_id=owner_id,
        owner_username=owner_username,
        conversation_id=conversation_id,
        reason=reason,
    )


def conversation_access_entry(
    conversation: Conversation, *, reviewer, reason: str, reviewer_username: str | None = None
) -> AccessLog:
    """`access_entry` for a read of `conversation` (its owner loaded). `reviewer_username`
    names a reader without an account (the shell's exports); else the reviewer's name."""
    return access_entry(
        reviewer=reviewer,
        reviewer_username=reviewer.get_username() if reviewer_username is None else reviewer_username,
        conversation_id=conversation.pk,
        owner_id=conversation.owner_id,
        owner_username=conversation.owner.get_username(),
        reason=reason,
    )


def transcript_open(
    *,
    reviewer,
    conversation: Conversation,
    reason: str,
    session: MutableMapping[str, Any],
    now: float | None = None,
) -> AccessLog:
    """Record the access, then let `session` show the transcript for GRANT_SECONDS.

    The log row comes first: if it cannot be written, nothing opens.
    """
    entry = access_record(reviewer=reviewer, conversation=conversation, reason=reason)
    now = time.time() if now is None else now
    grants = {key: expiry for key, expiry in session.get(SESSION_KEY, {}).items() if expiry > now}
    grants[str(conversation.pk)] = now + GRANT_SECONDS
    session[SESSION_KEY] = grants
    return entry


def transcript_granted(
    *, session: MutableMapping[str, Any], conversation_id: uuid.UUID | str, now: float | None = None
) -> float | None:
    """When this session's access to the transcript ends (a Unix time), or None if it has none."""
    expiry = session.get(SESSION_KEY, {}).get(str(conversation_id))
    now = time.time() if now is None else now
    return expiry if expiry is not None and expiry > now else None


def conversation_label(conversation: Conversation) -> str:
    """How the admin names a conversation before a reason was given: owner, start, short id.

    Never `str(conversation)`, which is its title (the first words of the first question).
    """
    started = formats.date_format(timezone.localtime(conversation.created_at), "Y-m-d H:i")
    return gettext("%(owner)s · %(started)s · %(short_id)s") % {
        "owner": conversation.owner.get_username(),
        "started": started,
        "short_id": str(conversation.pk)[:8],
    }


# --- the content view of the admin's lists ---------------------------------------------------


@dataclass(frozen=True)
class ListContentGrant:
    """A stated reason that shows titles and comments in the admin's lists for a while."""

    reason: str
    since: float  # Unix times
    expires: float


def list_content_open(
    *, session: MutableMapping[str, Any], reason: str, now: float | None = None
) -> ListContentGrant:
    """Let `session` see content in the lists for GRANT_SECONDS, each conversation logged as shown.

    Nothing is logged yet: no conversation was read. A new reason replaces the last one.
    """
    now = time.time() if now is None else now
    grant = ListContentGrant(reason=reason, since=now, expires=now + GRANT_SECONDS)
    session[LIST_SESSION_KEY] = {"reason": grant.reason, "since": grant.since, "expires": grant.expires}
    return grant


def list_content_granted(
    *, session: MutableMapping[str, Any], now: float | None = None
) -> ListContentGrant | None:
    """This session's content view of the lists, if it has one that has not ended."""
    stored = session.get(LIST_SESSION_KEY)
    now = time.time() if now is None else now
    if not isinstance(stored, dict) or not stored.get("expires", 0) > now:
        return None
    return ListContentGrant(reason=stored["reason"], since=stored["since"], expires=stored["expires"])


def list_content_record(
    *, reviewer, conversations: QuerySet[Conversation], reason: str, grant: ListContentGrant
) -> int:
    """Log a read of each of `conversations` by `reviewer`, once per grant and reason.

    Written in bulk before the page that shows them renders; a conversation already
    logged with the same reason since the grant began is not logged again (paging back
    and forth is one access). Returns the number of rows written.
    """
    since = datetime.fromtimestamp(grant.since, tz=UTC)
    logged = AccessLog.objects.filter(reviewer=reviewer, reason=reason, accessed_at__gte=since)
    unlogged = (
        Conversation.objects.filter(pk__in=conversations.values("pk"))
        .exclude(pk__in=logged.values("conversation_id"))
        .order_by()
        .values_list("pk", "owner_id", "owner__username")
    )
    reviewer_username = reviewer.get_username()
    entries = [
        access_entry(
            reviewer=reviewer,
            reviewer_username=reviewer_username,
            conversation_id=pk,
            owner_id=owner_id,
            owner_username=owner_username,
            reason=reason,
        )
        for pk, owner_id, owner_username in unlogged
    ]
    # One transaction, however many batches (bulk_create's own).
    AccessLog.objects.bulk_create(entries, batch_size=LOG_BATCH)
    return len(entries)


# --- the access log ------------------------------------------------------------------------


def access_log_for_owner(*, user) -> QuerySet[AccessLog]:
    """Accesses to `user`'s conversations, newest first, with the title if it still exists."""
    conversation = Conversation.objects.filter(pk=OuterRef("conversation_id"))
    return AccessLog.objects.filter(owner=user).annotate(
        conversation_exists=Exists(conversation),
        conversation_title=Subquery(conversation.values("title")[:1]),
    )


ACCESS_LOG_COLUMNS = [
    "accessed_at",
    "reviewer_username",
    "owner_username",
    "conversation_id",
    "reason",
]


class _Line:
    """A file for csv.writer that hands back each row instead of storing it."""

    def write(self, value: str) -> str:
        return value


async def access_log_csv(entries: QuerySet[AccessLog]) -> AsyncIterator[str]:
    """The entries as CSV, header first, one row per access (UTC ISO times). Every cell
    is made inert for spreadsheets (assistant.spreadsheet): reasons and names are free text."""
    writer = spreadsheet.writer(_Line())
    yield writer.writerow(ACCESS_LOG_COLUMNS)
    # values(), not values_list(): in Django 5.2 the latter's aiterator() runs its query
    # on the event loop and fails.
    rows = entries.values(*ACCESS_LOG_COLUMNS)
    async for row in rows.aiterator(chunk_size=2000):
        cells = [row["accessed_at"].isoformat()]
        cells += [row[column] for column in ACCESS_LOG_COLUMNS[1:]]
        yield writer.writerow(cells)
