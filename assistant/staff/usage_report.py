"""Usage: answers and tokens per user, model, assistant, origin and day, with their cost;
days over the quota.

Read from the usage record (assistant.usage), so answers of deleted conversations and
erased accounts still count.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db.models import Sum
from django.db.models.functions import TruncDate
from django.utils import timezone
from django.utils.translation import gettext_lazy

from assistant.models import UsageRecord
from assistant.staff.common import Period, StaffError

USAGE_KEYS = ("user", "model", "assistant", "origin", "day")
# The one group of usage_report for answers whose account was erased or deleted.
DELETED_USERS = gettext_lazy("(deleted users)")
# The group of answers of the model alone, without an assistant.
NO_ASSISTANT = gettext_lazy("(none)")


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
                raise StaffError(f"Unknown --by {key!r}: use {', '.join(USAGE_KEYS)}.")
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
    Answers of erased or deleted accounts are one group, `DELETED_USERS`; answers without
    an assistant are `NO_ASSISTANT` (an assistant is named by its slug, which outlives its
    retirement); `origin` tells the chat page, API clients and the OpenAI-compatible
    gateway apart. With `costs`
    (USD per million prompt and completion tokens, per model) rows get a cost; models
    without a price are listed in `unpriced_models` and add nothing.
    """
    costs = settings.ASSISTANT_MODEL_COSTS if costs is None else costs
    answers = period.filter(UsageRecord.objects.all(), "created_at")
    fields: dict[str, Any] = {
        "owner": "user__username",
        "model": "model",
        "assistant": "assistant",
        "origin": "origin",
    }
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
        values = {
            "user": user,
            "model": item["model"] or "-",
            "assistant": item["assistant"] or str(NO_ASSISTANT),
            # Where the answers were asked for: page, api (a client with a token), gateway.
            "origin": item["origin"],
            "day": str(item.get("day")),
        }
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
