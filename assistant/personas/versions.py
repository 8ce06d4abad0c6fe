"""An assistant's versions: checked values, and a new version only when one changes."""

from __future__ import annotations

import math
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils.translation import gettext as _

from assistant.models import ICONS, Assistant, AssistantVersion

# What a version holds; editing any of them adds a version.
VERSION_FIELDS = (
    "name",
    "description",
    "icon",
    "instructions",
    "model",
    "temperature",
    "max_tokens",
    "starters",
    "phases",
)
PHASE_FIELDS = ("title", "goal", "instructions")
MAX_TOKENS_LIMIT = 1_000_000
STARTER_MAX_CHARS = 500
NAME_MAX_CHARS = 100
DESCRIPTION_MAX_CHARS = 300
PHASE_TITLE_MAX_CHARS = 100


def _text(value: Any, *, required: bool, limit: int | None = None) -> str | None:
    """`value` as a stripped string, or None when it is not one, is missing or too long."""
    if not isinstance(value, str):
        return None
    value = value.strip()
    if (required and not value) or (limit is not None and len(value) > limit):
        return None
    return value


def _clean_phases(phases: Any) -> list[dict[str, str]]:
    if not isinstance(phases, list):
        raise ValidationError({"phases": _("Phases must be a list.")})
    cleaned = []
    for number, phase in enumerate(phases, start=1):
        values = {}
        if isinstance(phase, dict) and set(phase) == set(PHASE_FIELDS):
            values = {name: _text(phase[name], required=True) for name in PHASE_FIELDS}
        if not values or None in values.values() or len(values["title"]) > PHASE_TITLE_MAX_CHARS:
            message = _(
                "Phase %(number)d needs a title of at most %(limit)d characters, a goal and instructions."
            )
            raise ValidationError({"phases": message % {"number": number, "limit": PHASE_TITLE_MAX_CHARS}})
        cleaned.append(values)
    return cleaned


def _clean_starters(starters: Any) -> list[str]:
    if not isinstance(starters, list):
        raise ValidationError({"starters": _("Example prompts must be a list of texts.")})
    cleaned = [_text(starter, required=True, limit=STARTER_MAX_CHARS) for starter in starters]
    if None in cleaned:
        raise ValidationError(
            {
                "starters": _("Each example prompt is a text of 1 to %(limit)d characters.")
                % {"limit": STARTER_MAX_CHARS}
            }
        )
    return cleaned


def version_clean(values: dict[str, Any]) -> dict[str, Any]:
    """The version fields of `values`, checked and normalised; ValidationError keyed by field.

    Missing optional fields take their defaults; the model must be on the allowlist
    (settings.ASSISTANT_MODELS) or empty for the site's default.
    """
    errors: dict[str, str] = {}
    cleaned: dict[str, Any] = {}
    name = _text(values.get("name"), required=True, limit=NAME_MAX_CHARS)
    if name is None:
        errors["name"] = _("A name of 1 to %(limit)d characters is required.") % {"limit": NAME_MAX_CHARS}
    cleaned["name"] = name
    description = _text(values.get("description", ""), required=False, limit=DESCRIPTION_MAX_CHARS)
    if description is None:
        errors["description"] = _("The description is a text of at most %(limit)d characters.") % {
            "limit": DESCRIPTION_MAX_CHARS
        }
    cleaned["description"] = description
    icon = values.get("icon") or "sparkles"
    if icon not in dict(ICONS):
        errors["icon"] = _("Unknown icon: %(icon)s") % {"icon": icon}
    cleaned["icon"] = icon
    instructions = _text(values.get("instructions"), required=True)
    if instructions is None:
        errors["instructions"] = _("Instructions are required.")
    cleaned["instructions"] = instructions
    model = values.get("model") or ""
    if model and model not in settings.ASSISTANT_MODELS:
        errors["model"] = _("The model %(model)s is not one of this site's models (%(models)s).") % {
            "model": model,
            "models": ", ".join(settings.ASSISTANT_MODELS),
        }
    cleaned["model"] = model
    temperature = values.get("temperature")
    if temperature is not None and (
        isinstance(temperature, bool)
        or not isinstance(temperature, int | float)
        or not math.isfinite(temperature)
        or not 0 <= temperature <= 2
    ):
        errors["temperature"] = _("The temperature is a number from 0 to 2, or empty.")
    cleaned["temperature"] = None if temperature is None else float(temperature)
    max_tokens = values.get("max_tokens")
    if max_tokens is not None and (
        isinstance(max_tokens, bool)
        or not isinstance(max_tokens, int)
        or not 1 <= max_tokens <= MAX_TOKENS_LIMIT
    ):
        errors["max_tokens"] = _(
            "The maximum answer tokens are a whole number from 1 to %(limit)d, or empty."
        ) % {"limit": MAX_TOKENS_LIMIT}
    cleaned["max_tokens"] = max_tokens
    for key, clean in (("starters", _clean_starters), ("phases", _clean_phases)):
        try:
            cleaned[key] = clean(values.get(key) or [])
        except ValidationError as error:
            errors.update({field: messages[0] for field, messages in error.message_dict.items()})
    if errors:
        raise ValidationError(errors)
    return cleaned


def version_values(version: AssistantVersion | None) -> dict[str, Any]:
    """The version fields of `version`, as version_clean returns them; {} for None."""
    return {} if version is None else {name: getattr(version, name) for name in VERSION_FIELDS}


@transaction.atomic
def version_save(assistant: Assistant, values: dict[str, Any], *, by: str) -> AssistantVersion | None:
    """Add a version of `assistant` with `values` (checked with version_clean) when they
    differ from its current version; returns it, or None when nothing changed.

    Earlier versions stay as they were: the conversations that ran with them keep them.
    """
    cleaned = version_clean(values)
    current = assistant.current
    if current is not None and version_values(current) == cleaned:
        return None
    last = assistant.versions.order_by("-number").values_list("number", flat=True).first() or 0
    version = AssistantVersion.objects.create(assistant=assistant, number=last + 1, created_by=by, **cleaned)
    assistant.current = version
    assistant.save(update_fields=["current", "updated_at"])
    return version
