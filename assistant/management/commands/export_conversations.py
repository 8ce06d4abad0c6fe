"""Export conversations with their messages, for archiving, audits or analysis.

Why it exists: the admin exports what a reviewer selected, one page at a time; staff also
need everything of one person, one model or one quarter, from a shell or cron, however
large. This streams with flat memory (a chunk of conversations at a time) and writes a
file that appears complete or not at all.
"""

from __future__ import annotations

import contextlib

from django.core.management.base import BaseCommand, CommandError, OutputWrapper

from assistant.staff import common, export
from assistant.staff.common import StaffError

# Progress on stderr for runs of more conversations than this (or with -v 2).
LONG_RUN = 1000
PROGRESS_EVERY = 500


class _Console:
    """A text file over a command's stdout, for writers that call write() with whole lines."""

    def __init__(self, wrapper: OutputWrapper) -> None:
        self.wrapper = wrapper

    def write(self, text: str) -> None:
        self.wrapper.write(text, ending="")


class Command(BaseCommand):
    help = (
        "Export conversations with their messages as JSON Lines (one conversation per line, "
        "with its messages; the format of the admin's export) or CSV (one row per message, "
        "with the conversation's columns; cells that look like spreadsheet formulas get a "
        "leading '). Filters combine. Like the admin's export it needs a --reason: each "
        "exported conversation goes on the access log, which its owner reads. Writes to "
        "stdout by default; --output PATH writes a file (readable by its owner only) that "
        "appears only when complete. A summary and, for long runs, progress go to stderr."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument(
            "--format", choices=export.EXPORT_FORMATS, default="jsonl", help="jsonl (default) or csv."
        )
        parser.add_argument(
            "--output", "-o", default="-", metavar="PATH", help="File to write; '-' (default) is stdout."
        )
        parser.add_argument("--user", metavar="USERNAME", help="Only this user's conversations.")
        parser.add_argument(
            "--since", metavar="YYYY-MM-DD", help="Only conversations started on or after this day."
        )
        parser.add_argument(
            "--until", metavar="YYYY-MM-DD", help="Only conversations started on or before this day."
        )
        parser.add_argument(
            "--model", help="Only conversations that used this model (current model or any answer)."
        )
        parser.add_argument(
            "--reason",
            required=True,
            help="Why (at least 10 characters): each exported conversation is written to the access "
            "log with it, as the admin's export does, and its owner can read it.",
        )
        parser.add_argument(
            "--actor", help="Who exports, for the access log (default: the operating system user)."
        )

    def handle(self, *args, **options) -> None:
        verbosity = options["verbosity"]
        actor = options["actor"] or common.shell_actor()
        to_stdout = options["output"] == "-"
        try:
            reason = export.export_reason_check(options["reason"])
            owner = common.user_get(options["user"]) if options["user"] else None
            period = common.period_parse(options["since"], options["until"])
            conversations = export.conversations_select(owner=owner, period=period, model=options["model"])
            output = (
                contextlib.nullcontext(_Console(self.stdout))
                if to_stdout
                else common.atomic_output(options["output"])
            )
            with output as out:
                total = conversations.count() if verbosity >= 1 else 0
                show_progress = verbosity >= 2 or total > LONG_RUN

                def progress(counts: export.ExportCounts) -> None:
                    if show_progress:
                        self.stderr.write(f"  {counts.conversations}/{total} conversations")

                counts = export.conversations_export(
                    conversations,
                    out,
                    actor=actor,
                    reason=reason,
                    format=options["format"],
                    progress=progress,
                    progress_every=PROGRESS_EVERY,
                )
        except StaffError as error:
            raise CommandError(error) from None
        if verbosity >= 1:
            self.stderr.write(
                f"Exported {counts.conversations} conversations ({counts.messages} messages) "
                f"as {options['format']} to {'stdout' if to_stdout else options['output']}."
            )
