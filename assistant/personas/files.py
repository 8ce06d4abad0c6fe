"""Assistants in files: exported to and imported from JSON or YAML (`manage.py assistants`).

A company keeps its assistants under version control: the file is the reviewed source,
the import makes the database say the same. The format, by the file's extension (.json,
.yaml, .yml), UTF-8:

    {"assistants": [{"slug", "name", "description", "icon", "instructions", "model",
      "temperature", "max_tokens", "starters": [...], "phases": [{"title", "goal",
      "instructions"}], "active", "position",
      "access": {"everyone": bool, "groups": [group names], "users": [usernames]}}]}

An export holds the current version of every assistant, retired ones too, in gallery order,
and nothing that changes by itself (no dates, no version numbers): exporting twice gives the
same bytes, and a diff shows what someone changed. In a file only slug, name and
instructions are required; a key left out takes its default (the values of a new
assistant). An import checks the whole file before it changes anything, and changes only
the assistants the file names.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.exceptions import ValidationError
from django.core.validators import validate_slug
from django.db import transaction

from assistant.models import Assistant
from assistant.personas.versions import VERSION_FIELDS, version_clean, version_save, version_values
from assistant.staff.common import StaffError

FORMATS = {".json": "json", ".yaml": "yaml", ".yml": "yaml"}
# An entry's keys, in the order an export writes them.
ENTRY_KEYS = ("slug", *VERSION_FIELDS, "active", "position", "access")
ACCESS_KEYS = ("everyone", "groups", "users")
REQUIRED_KEYS = ("slug", "name", "instructions")
SLUG_MAX_CHARS = Assistant._meta.get_field("slug").max_length
POSITION_MAX = 32767  # PositiveSmallIntegerField, on every database

_TEXT_FIELDS = ("name", "description", "icon", "instructions", "model")


def file_format(path: str | Path) -> str:
    """The format of `path`, "json" or "yaml", by the extension of `path`; StaffError for any other."""
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        raise StaffError(f"Cannot tell the format of {path}: name it .json, .yaml or .yml.")
    return FORMATS[suffix]


# --- export --------------------------------------------------------------------------------


def assistant_entry(assistant: Assistant) -> dict[str, Any]:
    """`assistant` as an entry of the file: its current version, state and access."""
    entry: dict[str, Any] = {"slug": assistant.slug, **version_values(assistant.current)}
    entry["active"] = assistant.active
    entry["position"] = assistant.position
    entry["access"] = {
        "everyone": assistant.everyone,
        "groups": sorted(group.name for group in assistant.groups.all()),
        "users": sorted(user.get_username() for user in assistant.users.all()),
    }
    return entry


def assistants_export() -> dict[str, Any]:
    """Every assistant with a version, retired ones too, by position and slug."""
    assistants = (
        Assistant.objects.filter(current__isnull=False)
        .select_related("current")
        .prefetch_related("groups", "users")
        .order_by("position", "slug")
    )
    return {"assistants": [assistant_entry(assistant) for assistant in assistants]}


class _Dumper(yaml.SafeDumper):
    """YAML that reads like the text it holds: multi-line texts as literal blocks, lists
    indented under their key, no anchors."""

    def increase_indent(self, flow: bool = False, indentless: bool = False) -> None:
        return super().increase_indent(flow, False)

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _text_representer(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    # PyYAML falls back to a quoted scalar itself where a block cannot hold the text
    # (trailing spaces on a line, control characters).
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|" if "\n" in value else None)


_Dumper.add_representer(str, _text_representer)


def assistants_dumps(data: dict[str, Any], fmt: str) -> str:
    """`data` as the text of a file in `fmt`: UTF-8 characters as they are, one line per
    value, keys in a fixed order."""
    if fmt == "json":
        return json.dumps(data, ensure_ascii=False, indent=2) + "\n"
    return yaml.dump(
        data, Dumper=_Dumper, allow_unicode=True, sort_keys=False, default_flow_style=False, width=1 << 16
    )


# --- reading -------------------------------------------------------------------------------


class _Loader(yaml.SafeLoader):
    """YAML's safe loader, refusing a key given twice (YAML keeps the last silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen = set()
        for key_node, _value in node.value:
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, str) and key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"the key {key!r} is given twice", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _json_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [key for key, _value in pairs]
    twice = sorted({key for key in keys if keys.count(key) > 1})
    if twice:
        raise ValueError(f"the key {twice[0]!r} is given twice")
    return dict(pairs)


def assistants_loads(text: str, fmt: str, *, name: str = "the file") -> Any:
    """The data of a file's text; StaffError, with the place, when it is not JSON or YAML."""
    try:
        if fmt == "json":
            return json.loads(text, object_pairs_hook=_json_object)
        return yaml.load(text, Loader=_Loader)  # noqa: S506 - _Loader is a SafeLoader
    except json.JSONDecodeError as error:
        raise StaffError(f"{name} is not valid JSON: {error.msg} (line {error.lineno}).") from None
    except ValueError as error:
        raise StaffError(f"{name} is not valid JSON: {error}.") from None
    except yaml.YAMLError as error:
        raise StaffError(f"{name} is not valid YAML: {_yaml_problem(error)}.") from None


def _yaml_problem(error: yaml.YAMLError) -> str:
    if isinstance(error, yaml.MarkedYAMLError):
        mark = error.problem_mark or error.context_mark
        place = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        return f"{error.problem or error.context}{place}"
    return str(error)


@dataclass(frozen=True)
class Entry:
    """One assistant of a file, checked: its version fields as version_clean returns them."""

    slug: str
    version: dict[str, Any]
    active: bool = True
    position: int = 0
    everyone: bool = True
    groups: tuple[str, ...] = ()
    users: tuple[str, ...] = ()


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return (_is_int(value) or isinstance(value, float)) and math.isfinite(value)


def _type_problem(key: str, value: Any) -> str | None:
    """What is wrong with the type of an entry's `key`, or None."""
    if key in _TEXT_FIELDS:
        return None if isinstance(value, str) else "must be a text"
    if key == "temperature":
        return None if value is None or _is_number(value) else "must be a number or null"
    if key == "max_tokens":
        return None if value is None or _is_int(value) else "must be a whole number or null"
    if key in ("starters", "phases"):
        return None if isinstance(value, list) else "must be a list"
    if key == "active":
        return None if isinstance(value, bool) else "must be true or false"
    if key == "position" and not (_is_int(value) and 0 <= value <= POSITION_MAX):
        return f"must be a whole number from 0 to {POSITION_MAX}"
    return None


class _Problems:
    """The problems of a file, each naming the assistant and the field."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def add(self, where: str, key: str | None, problem: str) -> None:
        self.lines.append(f"{where}, {key}: {problem}" if key else f"{where}: {problem}")


def _access_parse(access: Any, where: str, problems: _Problems) -> tuple[bool, list[str], list[str]]:
    if not isinstance(access, dict):
        problems.add(where, "access", "must be a mapping of everyone, groups and users")
        return True, [], []
    for key in sorted(set(access) - set(ACCESS_KEYS), key=str):
        problems.add(where, f"access.{key}", "unknown key (known: everyone, groups, users)")
    everyone = access.get("everyone", True)
    if not isinstance(everyone, bool):
        problems.add(where, "access.everyone", "must be true or false")
    names = {}
    for key in ("groups", "users"):
        value = access.get(key, [])
        if not isinstance(value, list) or not all(isinstance(item, str) and item for item in value):
            problems.add(where, f"access.{key}", "must be a list of names")
            value = []
        elif len(set(value)) != len(value):
            problems.add(where, f"access.{key}", "has a name twice")
        names[key] = value
    return everyone is True, names["groups"], names["users"]


def assistants_parse(data: Any) -> list[Entry]:
    """The entries of a file's data, all checked (types, unknown keys, version_clean, that
    the groups and users exist); StaffError listing every problem when there is one."""
    problems = _Problems()
    if not isinstance(data, dict) or "assistants" not in data:
        raise StaffError('The file must hold a mapping with the key "assistants": a list of assistants.')
    for key in sorted(set(data) - {"assistants"}, key=str):
        problems.add("The file", str(key), 'unknown key (known: "assistants")')
    items = data["assistants"]
    if not isinstance(items, list):
        raise StaffError('"assistants" must be a list of assistants.')

    accesses: list[tuple[str, list[str], list[str]]] = []
    entries: list[Entry] = []
    seen: dict[str, int] = {}
    for number, item in enumerate(items, start=1):
        where = f"Assistant {number}"
        if not isinstance(item, dict):
            problems.add(where, None, "must be a mapping of keys (slug, name, instructions ...)")
            continue
        slug = item.get("slug")
        if isinstance(slug, str) and slug:
            where = f"Assistant {slug!r}"
        for key in sorted(set(item) - set(ENTRY_KEYS), key=str):
            problems.add(where, str(key), f"unknown key (known: {', '.join(ENTRY_KEYS)})")
        for key in REQUIRED_KEYS:
            if key not in item:
                problems.add(where, key, "is required")
        if "slug" in item:
            try:
                if not isinstance(slug, str):
                    raise ValidationError("")
                validate_slug(slug)
                if len(slug) > SLUG_MAX_CHARS:
                    raise ValidationError("")
            except ValidationError:
                problems.add(
                    where,
                    "slug",
                    f"must be 1 to {SLUG_MAX_CHARS} letters, digits, hyphens or underscores",
                )
            else:
                if slug in seen:
                    problems.add(where, "slug", f"is also the slug of assistant {seen[slug]}")
                seen.setdefault(slug, number)
        typed = set()
        for key in ENTRY_KEYS:
            if key in item and key not in ("slug", "access"):
                problem = _type_problem(key, item[key])
                if problem:
                    problems.add(where, key, problem)
                    typed.add(key)
        values = {key: item[key] for key in VERSION_FIELDS if key in item and key not in typed}
        cleaned: dict[str, Any] = {}
        try:
            cleaned = version_clean(values)
        except ValidationError as error:
            for key, messages in error.message_dict.items():
                # A field left out or of the wrong type has its problem already.
                if key in values:
                    for message in messages:
                        problems.add(where, key, message)
        everyone, groups, users = _access_parse(item.get("access", {}), where, problems)
        accesses.append((where, groups, users))
        entries.append(
            Entry(
                slug=slug if isinstance(slug, str) else "",
                version=cleaned,
                active=item.get("active", True) is True,
                position=item["position"] if "position" in item and "position" not in typed else 0,
                everyone=everyone,
                groups=tuple(sorted(set(groups))),
                users=tuple(sorted(set(users))),
            )
        )

    _names_check(accesses, problems)
    if problems.lines:
        count = len(problems.lines)
        raise StaffError(
            f"The file has {count} problem{'s' if count != 1 else ''}; nothing was changed:\n"
            + "\n".join(f"  {line}" for line in problems.lines)
        )
    return entries


def _names_check(accesses: list[tuple[str, list[str], list[str]]], problems: _Problems) -> None:
    """A problem for each group and user named in `accesses` that does not exist."""
    user_model = get_user_model()
    username = user_model.USERNAME_FIELD
    wanted_groups = {name for _where, groups, _users in accesses for name in groups}
    wanted_users = {name for _where, _groups, users in accesses for name in users}
    groups = set(Group.objects.filter(name__in=wanted_groups).values_list("name", flat=True))
    users = set(
        user_model.objects.filter(**{f"{username}__in": wanted_users}).values_list(username, flat=True)
    )
    for where, group_names, usernames in accesses:
        for name in group_names:
            if name not in groups:
                problems.add(where, "access.groups", f"there is no group named {name!r}")
        for name in usernames:
            if name not in users:
                problems.add(where, "access.users", f"there is no user named {name!r}")


# --- import --------------------------------------------------------------------------------


# What an import does to an assistant: "kept" is one that exists, with keep_existing.
ACTIONS = ("created", "updated", "unchanged", "kept")


@dataclass
class Outcome:
    """What an import did (or, dry, would do) to one assistant."""

    slug: str
    action: str  # one of ACTIONS
    # The version it created, if any.
    version: int | None = None
    # The version fields that differ from the previous version.
    fields: list[str] = field(default_factory=list)
    # What else changed: "active", "position", "access".
    settings: list[str] = field(default_factory=list)


def _access_of(assistant: Assistant) -> tuple[bool, tuple[str, ...], tuple[str, ...]]:
    return (
        assistant.everyone,
        tuple(sorted(assistant.groups.values_list("name", flat=True))),
        tuple(sorted(user.get_username() for user in assistant.users.all())),
    )


def _access_set(assistant: Assistant, entry: Entry) -> None:
    user_model = get_user_model()
    assistant.groups.set(Group.objects.filter(name__in=entry.groups))
    assistant.users.set(user_model.objects.filter(**{f"{user_model.USERNAME_FIELD}__in": entry.users}))


def _entry_apply(entry: Entry, *, by: str, keep_existing: bool) -> Outcome:
    assistant = Assistant.objects.select_related("current").filter(slug=entry.slug).first()
    if assistant is None:
        assistant = Assistant.objects.create(
            slug=entry.slug, active=entry.active, position=entry.position, everyone=entry.everyone
        )
        _access_set(assistant, entry)
        version = version_save(assistant, entry.version, by=by)
        return Outcome(entry.slug, "created", version=version.number if version else None)
    if keep_existing:
        return Outcome(entry.slug, "kept")

    before = version_values(assistant.current)
    fields = [name for name in VERSION_FIELDS if before.get(name) != entry.version[name]]
    version = version_save(assistant, entry.version, by=by) if fields else None
    settings = []
    if assistant.active != entry.active:
        assistant.active = entry.active
        settings.append("active")
    if assistant.position != entry.position:
        assistant.position = entry.position
        settings.append("position")
    if _access_of(assistant) != (entry.everyone, entry.groups, entry.users):
        assistant.everyone = entry.everyone
        _access_set(assistant, entry)
        settings.append("access")
    if settings:
        assistant.save(update_fields=["active", "position", "everyone", "updated_at"])
    if not fields and not settings:
        return Outcome(entry.slug, "unchanged")
    return Outcome(
        entry.slug, "updated", version=version.number if version else None, fields=fields, settings=settings
    )


def assistants_import(
    entries: list[Entry], *, by: str, keep_existing: bool = False, dry_run: bool = False
) -> list[Outcome]:
    """Make the assistants of `entries` (from assistants_parse) say what the file says.

    New slugs become assistants at version 1; a changed version field adds a version
    (saved by `by`); state and access are set as they are. Assistants the file does not
    name stay as they are; with `keep_existing` so do the ones it names that exist. All or
    nothing, in one transaction; `dry_run` rolls it back, so it reports exactly what an
    import would do.
    """
    with transaction.atomic():
        outcomes = [_entry_apply(entry, by=by, keep_existing=keep_existing) for entry in entries]
        if dry_run:
            transaction.set_rollback(True)
    return outcomes
