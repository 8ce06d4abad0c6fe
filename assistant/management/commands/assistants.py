"""Company assistants in files: export them, or import a file, so they live under version
control and every change to them is reviewed like code.

Why it exists: assistants are edited in the admin, but a company wants its reviewed
instructions in a repository, and the same assistants on every installation (the shipped
examples are such a file). The import is idempotent and says what it changed; --dry-run
shows that without changing anything.
"""

from __future__ import annotations

import sys
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from assistant.personas import files
from assistant.staff import common
from assistant.staff.common import StaffError

CREATED_BY_MAX_CHARS = 150


class Command(BaseCommand):
    help = (
        "Export the company assistants to a JSON or YAML file, or import one. "
        "'assistants export FILE' writes the current version of every assistant, retired ones "
        "too ('-' is stdout); 'assistants import FILE' checks the whole file first (nothing "
        "changes if anything is wrong), then creates the missing assistants, adds a version "
        "to each whose name, instructions, model ... differ, and sets state and access. "
        "Importing the same file again changes nothing. Assistants not in the file are left "
        "alone. The format follows the file's extension: .json, .yaml or .yml."
    )

    def add_arguments(self, parser) -> None:
        actions = parser.add_subparsers(dest="action", required=True, metavar="export|import")
        export = actions.add_parser("export", help="Write every assistant to a file.")
        export.add_argument(
            "file", metavar="FILE", help="File to write (.json, .yaml or .yml); '-' is stdout."
        )
        export.add_argument(
            "--format", choices=["json", "yaml"], help="Overrides the extension; for '-' the default is yaml."
        )
        load = actions.add_parser("import", help="Create and update assistants from a file.")
        load.add_argument("file", metavar="FILE", help="File to read (.json, .yaml or .yml); '-' is stdin.")
        load.add_argument(
            "--format", choices=["json", "yaml"], help="Overrides the extension; for '-' the default is yaml."
        )
        load.add_argument("--dry-run", action="store_true", help="Show what would change; change nothing.")
        load.add_argument(
            "--keep-existing",
            action="store_true",
            help="Create the assistants that are missing; leave the ones that exist as they are.",
        )
        load.add_argument(
            "--actor", help="Who imports, saved with each new version (default: the operating system user)."
        )

    def handle(self, *args, **options) -> None:
        try:
            fmt = options["format"] or (
                "yaml" if options["file"] == "-" else files.file_format(options["file"])
            )
            if options["action"] == "export":
                self._export(options["file"], fmt, options["verbosity"])
            else:
                self._import(options["file"], fmt, options)
        except StaffError as error:
            raise CommandError(error) from None

    def _export(self, path: str, fmt: str, verbosity: int) -> None:
        data = files.assistants_export()
        text = files.assistants_dumps(data, fmt)
        if path == "-":
            self.stdout.write(text, ending="")
        else:
            with common.atomic_output(path) as out:
                out.write(text)
        if verbosity >= 1:
            count = len(data["assistants"])
            where = "stdout" if path == "-" else path
            self.stderr.write(f"Exported {count} assistant{'s' if count != 1 else ''} to {where}.")

    def _import(self, path: str, fmt: str, options) -> None:
        entries = files.assistants_parse(files.assistants_loads(_read(path), fmt, name=_shown(path)))
        by = (options["actor"] or common.shell_actor())[:CREATED_BY_MAX_CHARS]
        outcomes = files.assistants_import(
            entries, by=by, keep_existing=options["keep_existing"], dry_run=options["dry_run"]
        )
        if options["verbosity"] < 1:
            return
        for outcome in outcomes:
            self.stdout.write(f"{outcome.slug}: {_described(outcome)}")
        count = {action: sum(o.action == action for o in outcomes) for action in files.ACTIONS}
        kept = f", {count['kept']} left as they are (--keep-existing)" if options["keep_existing"] else ""
        verb = "Would import" if options["dry_run"] else "Imported"
        self.stdout.write(
            f"{verb} {len(outcomes)} assistant{'s' if len(outcomes) != 1 else ''} from {_shown(path)}: "
            f"{count['created']} created, {count['updated']} changed, {count['unchanged']} unchanged{kept}. "
            "Assistants not in the file were left alone."
        )
        if options["dry_run"]:
            self.stdout.write("Dry run: nothing was changed.")


def _shown(path: str) -> str:
    return "stdin" if path == "-" else path


def _read(path: str) -> str:
    """The text of `path` ('-': stdin), UTF-8 (a byte order mark is allowed)."""
    try:
        if path == "-":
            return sys.stdin.buffer.read().decode("utf-8-sig")
        return Path(path).read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise StaffError(f"There is no file {path}.") from None
    except UnicodeDecodeError as error:
        raise StaffError(f"{_shown(path)} is not UTF-8 (byte {error.start}).") from None
    except OSError as error:
        raise StaffError(f"Cannot read {path}: {error.strerror or error}.") from None


def _described(outcome: files.Outcome) -> str:
    """One assistant's line: what the import did to it."""
    if outcome.action == "created":
        return f"created (version {outcome.version})"
    if outcome.action == "kept":
        return "exists, left as it is (--keep-existing)"
    if outcome.action == "unchanged":
        return "unchanged"
    parts = []
    if outcome.version is not None:
        parts.append(f"new version {outcome.version} (changed: {', '.join(outcome.fields)})")
    if outcome.settings:
        parts.append(f"{', '.join(outcome.settings)} changed")
    return "; ".join(parts)
