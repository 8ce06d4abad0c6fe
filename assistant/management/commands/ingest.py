"""Keep a knowledge collection in step with a folder of files.

Why it exists: a company's handbook, policies and manuals live in folders (a file share,
a repository). Administrators point this command at one, from cron or by hand, and the
collection then holds exactly its files: changed files are read again (by content hash),
new ones added, deleted ones removed, unchanged ones left alone, so a second run changes
nothing. `--dry-run` shows what a run would do. The logic is in assistant/staff/collections.py.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from assistant.staff import collections, common
from assistant.staff.common import StaffError

BAR_WIDTH = 24


class Command(BaseCommand):
    help = (
        "Read a folder (recursively) or one file into a knowledge collection. Each supported "
        "file (PDF, DOCX, ODT, PPTX, XLSX, CSV, TXT, Markdown, HTML) becomes a document under "
        "its path relative to PATH: unchanged files (same SHA-256) are skipped, changed ones "
        "read again (the old document stays until the new one is ready), new ones added, and "
        "documents whose file is gone removed (not when PATH is one file). Documents uploaded "
        "in the admin are left alone. Hidden files and folders are skipped; links that lead "
        "outside PATH are not followed. A missing collection is created with --name (readable "
        "by nobody until it has groups). --dry-run shows what would change. Exits with status "
        "1 if any file failed, each named with its reason."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("path", metavar="PATH", help="The folder (or one file) to read.")
        parser.add_argument(
            "--collection", required=True, metavar="SLUG", help="The collection's identifier, e.g. handbook."
        )
        parser.add_argument(
            "--name", help="The collection's name: creates it when it does not exist yet (else ignored)."
        )
        parser.add_argument("--dry-run", action="store_true", help="Show what would change; change nothing.")
        parser.add_argument(
            "--actor",
            help="Who runs this, named in the log line of a run that changes the collection "
            "(default: the operating system user).",
        )

    def handle(self, *args, **options) -> None:
        verbosity = options["verbosity"]
        dry_run = options["dry_run"]
        try:
            collection, created = collections.collection_resolve(
                slug=options["collection"], name=options["name"], dry_run=dry_run
            )
            if (
                not created
                and options["name"]
                and options["name"].strip() != collection.name
                and verbosity >= 1
            ):
                self.stderr.write(
                    f"Collection {collection.slug!r} exists as {collection.name!r}: --name is ignored "
                    "(rename it in the admin)."
                )
            bar = self._progress_bar() if verbosity >= 1 and self.stderr.isatty() else None
            try:
                report = collections.collection_sync(
                    collection=collection,
                    created=created,
                    root=Path(options["path"]),
                    dry_run=dry_run,
                    progress=bar,
                    actor=options["actor"] or common.shell_actor(),
                )
            finally:
                if bar is not None:  # also when the run stops midway
                    self.stderr.write("\r\033[K", style_func=_plain, ending="")
        except StaffError as error:
            raise CommandError(error) from None
        if verbosity >= 1:
            for line in collections.sync_lines(report, verbosity=verbosity):
                self.stdout.write(line)
        failed = len(report.failed)
        if failed:
            raise CommandError(
                f"{failed} file{'s' if failed != 1 else ''} could not be read: "
                + ", ".join(outcome.path for outcome in report.failed[:5])
                + (", ..." if failed > 5 else "")
                + "."
            )

    def _progress_bar(self) -> collections.Progress:
        """A bar on the terminal's stderr, redrawn in place after each file."""
        width = shutil.get_terminal_size((80, 20)).columns

        def draw(done: int, total: int, path: str) -> None:
            if done == total:
                self.stderr.write("\r\033[K", style_func=_plain, ending="")
                return
            filled = BAR_WIDTH * done // total
            head = f"[{'#' * filled}{'.' * (BAR_WIDTH - filled)}] {done}/{total} "
            room = max(width - len(head) - 1, 0)
            shown = path if len(path) <= room else "…" + path[-(room - 1) :] if room > 1 else ""
            self.stderr.write(f"\r\033[K{head}{shown}", style_func=_plain, ending="")
            self.stderr.flush()

        return draw


def _plain(text: str) -> str:
    """No colour: stderr on a terminal is styled as errors by default."""
    return text
