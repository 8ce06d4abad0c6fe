"""Usage per user, model, assistant, origin and day: answers, tokens and, when priced, cost.

Why it exists: the model service bills by tokens, and staff need to know who and what
uses how much (budgets, quotas, choosing models) without reading anyone's conversations.
It reads counts and token sums only, never message text.
"""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from assistant import spreadsheet
from assistant.staff import common, usage_report
from assistant.staff.common import StaffError

DEFAULT_DAYS = 30
HEADINGS = {"user": "user", "model": "model", "assistant": "assistant", "origin": "origin", "day": "day"}
NUMBERS = ["answers", "prompt tokens", "completion tokens"]


def _cost(value: Decimal | None, places: int) -> str:
    return "" if value is None else f"{value:.{places}f}"


class Command(BaseCommand):
    help = (
        "Answers and tokens (prompt, completion) of the assistant's answers in a period, "
        "grouped by user, model, assistant, origin and/or day, as an aligned table or CSV. An "
        "assistant is named by its identifier, '(none)' for the model alone; the origin is page, "
        "api (a client with a personal token) or gateway (the OpenAI-compatible /v1/). Every answer counts, "
        "also retried, failed and stopped ones. With ASSISTANT_MODEL_COSTS set (USD per "
        "million prompt and completion tokens per model) a cost column is added. Days are "
        "in the site's time zone; the default period is the last 30 days up to today."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument(
            "--since", metavar="YYYY-MM-DD", help="First day (default: 30 days before --until)."
        )
        parser.add_argument("--until", metavar="YYYY-MM-DD", help="Last day, included (default: today).")
        parser.add_argument(
            "--by",
            action="append",
            metavar="user|model|assistant|origin|day",
            help="Group by these, in this order; repeat or comma-separate (default: user,model).",
        )
        parser.add_argument(
            "--format", choices=["table", "csv"], default="table", help="table (default) or csv."
        )

    def handle(self, *args, **options) -> None:
        try:
            period = common.period_parse(options["since"], options["until"])
            by = usage_report.usage_by_parse(options["by"] or ["user,model"])
        except StaffError as error:
            raise CommandError(error) from None
        until = period.until or (
            max(timezone.localdate(), period.since) if period.since else timezone.localdate()
        )
        since = period.since or until - timedelta(days=DEFAULT_DAYS - 1)
        period = common.Period(since, until)
        report = usage_report.usage_report(period=period, by=by)
        if options["format"] == "csv":
            self._csv(report)
        else:
            self._table(report, period, options["verbosity"])
        self._limits(period)
        if report.unpriced_models and options["verbosity"] >= 1:
            self.stderr.write(
                "No price in ASSISTANT_MODEL_COSTS for: "
                + ", ".join(report.unpriced_models)
                + " (their tokens add no cost)."
            )

    def _limits(self, period: common.Period) -> None:
        """The per-user limits in force, and who reached the daily token quota when (on
        stderr, like the other notes: stdout is the table or the CSV alone)."""
        out = self.stderr
        rate, quota = settings.ASSISTANT_RATE_LIMIT_PER_MINUTE, settings.ASSISTANT_DAILY_TOKEN_QUOTA
        out.write(
            f"Limits per user: {rate or 'no'} answers a minute, "
            f"{f'{quota} tokens a day' if quota else 'no daily token quota'}."
        )
        for username, day, tokens in usage_report.quota_reached(period=period):
            out.write(f"Daily quota reached: {username} on {day} ({tokens} tokens).")

    def _values(self, row: usage_report.UsageRow, priced: bool, places: int) -> list[str]:
        values = [str(row.answers), str(row.prompt_tokens), str(row.completion_tokens)]
        return [*values, _cost(row.cost, places)] if priced else values

    def _csv(self, report: usage_report.UsageReport) -> None:
        # User names may start like a formula (`-x`, `@x`): every cell is made inert.
        writer = spreadsheet.writer(_Lines(self), lineterminator="\n")
        numbers = [name.replace(" ", "_") for name in NUMBERS]
        writer.writerow([*report.by, *numbers, *(["cost_usd"] if report.priced else [])])
        for row in report.rows:
            writer.writerow([*row.key, *self._values(row, report.priced, 6)])

    def _table(self, report: usage_report.UsageReport, period: common.Period, verbosity: int) -> None:
        heading = [HEADINGS[key] for key in report.by] + NUMBERS + (["cost (USD)"] if report.priced else [])
        lines = [[*row.key, *self._values(row, report.priced, 4)] for row in report.rows]
        total = ["total", *[""] * (len(report.by) - 1)] if report.by else []
        lines.append([*total, *self._values(report.total, report.priced, 4)])
        widths = [max(len(line[i]) for line in [heading, *lines]) for i in range(len(heading))]
        keys = len(report.by)

        def render(cells: list[str]) -> str:
            return "  ".join(
                cell.ljust(width) if i < keys else cell.rjust(width)
                for i, (cell, width) in enumerate(zip(cells, widths, strict=True))
            ).rstrip()

        if verbosity >= 1:
            self.stdout.write(f"Usage {period.since} to {period.until}")
        self.stdout.write(render(heading))
        self.stdout.write("  ".join("-" * width for width in widths))
        for line in lines[:-1]:
            self.stdout.write(render(line))
        self.stdout.write("  ".join("-" * width for width in widths))
        self.stdout.write(render(lines[-1]))


class _Lines:
    """A file for the CSV writer over the command's stdout."""

    def __init__(self, command: BaseCommand) -> None:
        self.command = command

    def write(self, text: str) -> None:
        self.command.stdout.write(text, ending="")
