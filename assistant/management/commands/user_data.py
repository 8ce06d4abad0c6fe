"""One person's data: export all of it (GDPR Art. 15) or erase it (Art. 17).

Why it exists: a data subject request must be answered completely and provably. The
export gathers everything stored about someone in one JSON file; the deletion stops
their streaming answers, removes their conversations, anonymises the access log rows
that name them and their usage record (counts per day and model stay, for usage
reports), removes (or keeps, with --keep-account) the account, and leaves a deletion
record with counts only.
"""

from __future__ import annotations

import json

from django.core.management.base import BaseCommand, CommandError

from assistant.staff import common, user_data
from assistant.staff.common import StaffError


def _preferences(extra: dict) -> str:
    if extra["preferences"]:
        return "their personal instructions"
    return "no personal instructions (they set none)"


class Command(BaseCommand):
    help = (
        "Export or delete everything stored about one user. "
        "'user_data export USERNAME [--output PATH]' writes JSON: the account (no password), "
        "personal instructions, conversations with all messages (each with its assistant and "
        "the personal instructions it started with), feedback given, and access log entries "
        "about them and by them; reading their conversations for it goes on the access log too. "
        "'user_data delete USERNAME --yes' erases their conversations and personal "
        "instructions, anonymises access log rows naming them ('deleted user #<id>') and their "
        "usage record (counts per day, model and assistant stay), deletes the account "
        "(--keep-account keeps it) and records counts in a deletion record; --dry-run shows "
        "what would go. "
        "Deleting needs --yes."
    )

    def add_arguments(self, parser) -> None:
        actions = parser.add_subparsers(dest="action", required=True, metavar="export|delete")
        export = actions.add_parser("export", help="Write everything about the user as JSON.")
        export.add_argument("username", help="The account's username.")
        export.add_argument(
            "--output", "-o", default="-", metavar="PATH", help="File to write; '-' (default) is stdout."
        )
        export.add_argument(
            "--actor",
            help="Who exports, for the access log entries this writes (default: the operating system user).",
        )
        delete = actions.add_parser("delete", help="Erase the user's data (and account).")
        delete.add_argument("username", help="The account's username.")
        delete.add_argument("--dry-run", action="store_true", help="Show what would go; change nothing.")
        delete.add_argument("--yes", action="store_true", help="Really delete: required, as it is final.")
        delete.add_argument(
            "--keep-account", action="store_true", help="Delete the data only; the account stays as it is."
        )
        delete.add_argument(
            "--actor", help="Who runs this, for the deletion record (default: the operating system user)."
        )

    def handle(self, *args, **options) -> None:
        try:
            user = common.user_get(options["username"])
            if options["action"] == "export":
                self._export(user, options)
            else:
                self._delete(user, options)
        except StaffError as error:
            raise CommandError(error) from None

    def _export(self, user, options) -> None:
        actor = options["actor"] or common.shell_actor()

        def write(out) -> dict:
            data = user_data.user_data_export(user=user, actor=actor)
            json.dump(data, out, ensure_ascii=False, indent=2)
            out.write("\n")
            return data

        if options["output"] == "-":
            data = user_data.user_data_export(user=user, actor=actor)
            self.stdout.write(json.dumps(data, ensure_ascii=False, indent=2))
        else:
            with common.atomic_output(options["output"]) as out:
                data = write(out)
        if options["verbosity"] >= 1:
            messages = sum(len(c["messages"]) for c in data["conversations"])
            self.stderr.write(
                f"Exported {user.get_username()}: {len(data['conversations'])} conversations "
                f"({messages} messages), {len(data['feedback'])} ratings, "
                f"{len(data['access_log']['about_them'])} accesses to their conversations, "
                f"{len(data['access_log']['by_them'])} by them, "
                f"{'their' if data['preferences'] else 'no'} personal instructions, to "
                f"{'stdout' if options['output'] == '-' else options['output']}."
            )

    def _delete(self, user, options) -> None:
        name = user.get_username()
        verbosity = options["verbosity"]
        if options["dry_run"]:
            summary = user_data.user_data_preview(user=user)
            if verbosity >= 1:
                extra = summary.extra
                account = "keep the account" if options["keep_account"] else "delete the account"
                self.stdout.write(
                    f"Dry run: for {name} would stop {extra['streaming_answers']} streaming answers, delete "
                    f"{summary.conversations} conversations ({summary.messages} messages, "
                    f"{extra['feedback']} rated answers) and {_preferences(extra)}, anonymise "
                    f"{extra['access_log_about_them'] + extra['access_log_by_them']} access log rows and "
                    f"the usage of {extra['usage_answers']} answers (kept as counts), and "
                    f"{account}. Nothing was changed."
                )
            return
        if not options["yes"]:
            raise CommandError(
                f"Deleting {name}'s data is final: add --yes to go ahead, or --dry-run to see what would go."
            )
        summary, record = user_data.user_data_delete(
            user=user,
            actor=options["actor"] or common.shell_actor(),
            keep_account=options["keep_account"],
        )
        if verbosity >= 1:
            extra = summary.extra
            account = "kept the account" if options["keep_account"] else "deleted the account"
            self.stdout.write(
                f"For {name}: stopped {extra['streaming_answers']} streaming answers, deleted "
                f"{summary.conversations} conversations ({summary.messages} messages) and "
                f"{_preferences(extra)}, anonymised "
                f"{extra['access_log_about_them'] + extra['access_log_by_them']} access log rows and "
                f"the usage of {extra['usage_answers']} answers (kept as counts), and "
                f"{account}. Deletion record #{record.pk}."
            )
