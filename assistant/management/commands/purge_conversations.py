"""The retention policy: delete conversations nobody has touched for a given time.

Why it exists: transcripts are personal data and must not be kept longer than needed.
Run it daily from cron (`manage.py purge_conversations`, period from
ASSISTANT_RETENTION_DAYS) or by hand with `--older-than 90d`; `--dry-run` first shows
what would go. Every run that deletes leaves a DeletionRecord (counts, date range,
who ran it), never the content.
"""

from __future__ import annotations

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db.models import Count
from django.utils import timezone

from assistant.staff import common, retention
from assistant.staff.common import StaffError


def _day(moment) -> str:
    return timezone.localtime(moment).strftime("%Y-%m-%d %H:%M") if moment else "-"


class Command(BaseCommand):
    help = (
        "Delete conversations (with their messages) whose last activity is older than the "
        "retention period: --older-than (90d or 90), else ASSISTANT_RETENTION_DAYS; one of "
        "them is required. A conversation with an answer still streaming is kept. Deletes "
        "in batches, each in its own transaction, drops the conversations' events from this "
        "process's replay log, and records counts and date ranges (never content) in a "
        "deletion record. --dry-run only reports."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument(
            "--older-than",
            metavar="DAYS",
            help="Retention period in days, e.g. 90d or 90 (default: ASSISTANT_RETENTION_DAYS).",
        )
        parser.add_argument(
            "--dry-run", action="store_true", help="Show what would be deleted; change nothing."
        )
        parser.add_argument(
            "--batch-size",
            type=int,
            default=retention.RETENTION_BATCH,
            help=f"Conversations per transaction (default {retention.RETENTION_BATCH}).",
        )
        parser.add_argument(
            "--actor", help="Who runs this, for the deletion record (default: the operating system user)."
        )

    def handle(self, *args, **options) -> None:
        verbosity = options["verbosity"]
        try:
            if options["older_than"] is not None:
                days = retention.retention_days_parse(options["older_than"])
            else:
                days = retention.retention_days_parse(
                    settings.ASSISTANT_RETENTION_DAYS, source="ASSISTANT_RETENTION_DAYS"
                )
        except StaffError as error:
            raise CommandError(error) from None
        if options["batch_size"] < 1:
            raise CommandError("--batch-size must be at least 1.")
        cutoff = retention.retention_cutoff(days)
        if options["dry_run"]:
            self._preview(days, cutoff, verbosity)
            return
        actor = options["actor"] or common.shell_actor()

        def on_batch(summary: common.DeletionSummary) -> None:
            if verbosity >= 2:
                self.stdout.write(f"  deleted {summary.conversations} conversations so far")

        summary, record = retention.retention_purge(
            days=days, actor=actor, batch_size=options["batch_size"], on_batch=on_batch
        )
        if record is None:
            if verbosity >= 1:
                self.stdout.write(f"Nothing to delete: no conversation inactive since {_day(cutoff)}.")
            return
        if verbosity >= 1:
            self.stdout.write(
                f"Deleted {summary.conversations} conversations ({summary.messages} messages) "
                f"last active {_day(summary.oldest)} to {_day(summary.newest)} "
                f"(older than {days} days); deletion record #{record.pk}."
            )

    def _preview(self, days: int, cutoff, verbosity: int) -> None:
        summary = retention.retention_preview(days=days)
        if verbosity < 1:
            return
        if not summary.conversations:
            self.stdout.write(f"Dry run: nothing to delete; no conversation inactive since {_day(cutoff)}.")
            return
        self.stdout.write(
            f"Dry run: would delete {summary.conversations} conversations ({summary.messages} messages) "
            f"last active {_day(summary.oldest)} to {_day(summary.newest)} (older than {days} days)."
        )
        if verbosity >= 2:
            candidates = (
                retention.retention_candidates(cutoff=cutoff)
                .annotate(message_count=Count("messages"))
                .order_by("updated_at")
                .values_list("pk", "owner__username", "updated_at", "message_count")
            )
            for conversation_id, owner, updated_at, count in candidates.iterator():
                self.stdout.write(
                    f"  {conversation_id}  {owner}  last active {_day(updated_at)}  {count} messages"
                )
