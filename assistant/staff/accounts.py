"""Employee accounts from a CSV: created, updated, deactivated, in one transaction."""

from __future__ import annotations

import csv
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.db import transaction

from assistant.review import REVIEWERS_GROUP
from assistant.staff.common import StaffError, user_streams_end

ACCOUNT_COLUMNS = ("username", "email", "first_name", "last_name", "active", "staff", "reviewer")
YES = frozenset({"yes", "y", "true", "1"})
NO = frozenset({"no", "n", "false", "0"})
MAX_REPORTED_PROBLEMS = 20


@dataclass(frozen=True)
class AccountRow:
    """One line of the accounts file; None: the column is absent or empty (leave as is)."""

    line: int
    username: str
    email: str | None = None
    first_name: str | None = None
    last_name: str | None = None
    active: bool | None = None
    staff: bool | None = None
    reviewer: bool | None = None


def _yes_no(value: str) -> bool | None:
    value = value.strip().lower()
    if not value:
        return None
    if value in YES:
        return True
    if value in NO:
        return False
    raise ValueError(value)


def accounts_parse(lines: Iterable[str]) -> list[AccountRow]:
    """Rows of an accounts CSV (header first); StaffError listing every problem found.

    `username` is required; the other columns of ACCOUNT_COLUMNS may be left out, and an
    empty cell leaves that attribute as it is. Yes/no cells take yes/no, y/n, true/false, 1/0.
    """
    reader = csv.DictReader(lines)
    header = [name.strip().lower() for name in reader.fieldnames or []]
    if "username" not in header:
        raise StaffError(
            f"The file needs a header line with a 'username' column (columns: {', '.join(ACCOUNT_COLUMNS)})."
        )
    unknown = [name for name in header if name not in ACCOUNT_COLUMNS]
    if unknown:
        raise StaffError(
            f"Unknown column(s) {', '.join(unknown)}: the columns are {', '.join(ACCOUNT_COLUMNS)}."
        )
    reader.fieldnames = header
    validate_username = get_user_model().username_validator
    rows: list[AccountRow] = []
    problems: list[str] = []
    seen: dict[str, int] = {}
    for record in reader:
        line = reader.line_num
        if None in record:
            problems.append(f"line {line}: more cells than columns")
            continue
        cells = {name: (value or "").strip() for name, value in record.items()}
        username = cells["username"]
        if not username:
            problems.append(f"line {line}: no username")
            continue
        try:
            validate_username(username)
        except ValidationError:
            problems.append(f"line {line}: {username!r} is not a valid username")
            continue
        if username in seen:
            problems.append(f"line {line}: {username!r} already on line {seen[username]}")
            continue
        seen[username] = line
        if cells.get("email"):
            try:
                validate_email(cells["email"])
            except ValidationError:
                problems.append(f"line {line}: {cells['email']!r} is not an email address")
        flags: dict[str, bool | None] = {}
        for name in ("active", "staff", "reviewer"):
            try:
                flags[name] = _yes_no(cells.get(name, ""))
            except ValueError:
                problems.append(f"line {line}: {name} must be yes or no, got {cells[name]!r}")
        if flags.get("reviewer") and flags.get("staff") is False:
            problems.append(f"line {line}: a reviewer must be staff (staff=no, reviewer=yes)")
        rows.append(
            AccountRow(
                line=line,
                username=username,
                email=cells.get("email") or None,
                first_name=cells.get("first_name") or None,
                last_name=cells.get("last_name") or None,
                **flags,
            )
        )
    if problems:
        shown = problems[:MAX_REPORTED_PROBLEMS]
        more = len(problems) - len(shown)
        raise StaffError(
            "The accounts file has problems; nothing was changed:\n  "
            + "\n  ".join(shown)
            + (f"\n  … and {more} more" if more else "")
        )
    return rows


@dataclass
class AccountChange:
    username: str
    action: str  # "create", "update" or "unchanged"
    changes: list[str] = field(default_factory=list)
    deactivated: bool = False
    stopped_answers: int = 0


def _account_apply(user, row: AccountRow, reviewers: Group | None) -> list[str]:
    """Set `row`'s values on `user` (unsaved); the names of what changed."""
    changes: list[str] = []
    for name in ("email", "first_name", "last_name"):
        value = getattr(row, name)
        if value is not None and getattr(user, name) != value:
            setattr(user, name, value)
            changes.append(name)
    staff = True if row.reviewer and row.staff is None else row.staff
    for name, wanted in (("is_active", row.active), ("is_staff", staff)):
        if wanted is not None and getattr(user, name) != wanted:
            setattr(user, name, wanted)
            changes.append(f"{name}={'yes' if wanted else 'no'}")
    if reviewers is not None and row.reviewer is not None:
        member = user.pk is not None and user.groups.filter(pk=reviewers.pk).exists()
        if member != row.reviewer:
            changes.append(f"reviewer={'yes' if row.reviewer else 'no'}")
    return changes


def accounts_import(rows: Sequence[AccountRow], *, dry_run: bool = False) -> tuple[list[AccountChange], bool]:
    """Create missing accounts and update existing ones from `rows`, in one transaction.

    New accounts get an unusable password: people sign in through single sign-on or set
    a password through a reset. Accounts not in `rows` are left alone. Deactivating an
    account stops its streaming answers (after the commit); its sessions end with it,
    since Django treats an inactive user as logged out. Returns the changes and whether
    the reviewers group exists (without it the `reviewer` column is ignored).
    """
    User = get_user_model()
    reviewers = Group.objects.filter(name=REVIEWERS_GROUP).first()
    results: list[AccountChange] = []
    with transaction.atomic():
        existing = {
            u.username: u
            for u in User.objects.select_for_update().filter(username__in=[r.username for r in rows])
        }
        for row in rows:
            user = existing.get(row.username)
            was_active = user.is_active if user is not None else None
            if user is None:
                user = User(username=row.username, is_active=True)
                user.set_unusable_password()
            changes = _account_apply(user, row, reviewers)
            action = "create" if user.pk is None else ("update" if changes else "unchanged")
            result = AccountChange(
                row.username, action, changes, deactivated=bool(was_active and not user.is_active)
            )
            results.append(result)
            if dry_run or action == "unchanged":
                continue
            user.save()
            if reviewers is not None and row.reviewer is not None:
                (user.groups.add if row.reviewer else user.groups.remove)(reviewers)
    if not dry_run:
        for result in results:
            if result.deactivated:
                result.stopped_answers = user_streams_end(user=existing[result.username])
    return results, reviewers is not None
