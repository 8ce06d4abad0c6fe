"""Create, update and deactivate employee accounts from a CSV file.

Why it exists: there is no open registration, and adding people one by one in the admin
does not scale to a department, nor does remembering to deactivate leavers. HR or IT
exports a list; this applies it in one transaction (a bad line changes nothing), and a
deactivated person's streaming answers stop at once.
"""

from __future__ import annotations

import sys

from django.core.management.base import BaseCommand, CommandError

from assistant.staff import accounts
from assistant.staff.common import StaffError


class Command(BaseCommand):
    help = (
        "Create or update accounts from a CSV file with a header line. Columns: username "
        "(required), email, first_name, last_name, active, staff, reviewer (yes/no; an empty "
        "cell or a missing column leaves the value as it is). New accounts get no usable "
        "password (single sign-on or a password reset). active=no deactivates the account "
        "and stops its streaming answers. reviewer=yes adds the account to the 'Reviewers' "
        "group (and makes it staff) if that group exists. Accounts not in the file are left "
        "alone. All or nothing: any bad line and nothing changes. '-' reads stdin."
    )
    stealth_options = ("stdin",)

    def add_arguments(self, parser) -> None:
        parser.add_argument("path", metavar="accounts.csv", help="The CSV file, or '-' for stdin.")
        parser.add_argument("--dry-run", action="store_true", help="Show what would change; change nothing.")

    def handle(self, *args, **options) -> None:
        verbosity = options["verbosity"]
        try:
            if options["path"] == "-":
                rows = accounts.accounts_parse(options.get("stdin", sys.stdin))
            else:
                try:
                    with open(options["path"], encoding="utf-8-sig", newline="") as file:
                        rows = accounts.accounts_parse(file)
                except OSError as exc:
                    raise StaffError(f"Cannot read {options['path']}: {exc.strerror or exc}.") from None
                except UnicodeDecodeError:
                    raise StaffError(f"{options['path']} is not UTF-8 text.") from None
            results, reviewers_exist = accounts.accounts_import(rows, dry_run=options["dry_run"])
        except StaffError as error:
            raise CommandError(error) from None
        if not reviewers_exist and any(row.reviewer is not None for row in rows):
            self.stderr.write("There is no 'Reviewers' group, so the reviewer column was ignored.")
        prefix = "Dry run: would " if options["dry_run"] else ""
        for result in results:
            if result.action == "unchanged" and verbosity < 2:
                continue
            if verbosity >= 1:
                detail = f" ({', '.join(result.changes)})" if result.changes else ""
                stopped = (
                    f"; stopped {result.stopped_answers} streaming answers" if result.stopped_answers else ""
                )
                self.stdout.write(f"{prefix}{result.action} {result.username}{detail}{stopped}")
        if verbosity >= 1:
            created = sum(r.action == "create" for r in results)
            updated = sum(r.action == "update" for r in results)
            deactivated = sum(r.deactivated for r in results)
            unchanged = len(results) - created - updated
            if options["dry_run"]:
                self.stdout.write(
                    f"Dry run: {created} to create, {updated} to update ({deactivated} to deactivate), "
                    f"{unchanged} unchanged; nothing was changed."
                )
            else:
                self.stdout.write(
                    f"Created {created}, updated {updated} ({deactivated} deactivated), "
                    f"{unchanged} unchanged."
                )
