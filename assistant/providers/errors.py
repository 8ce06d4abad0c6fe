"""Every failure of a provider, before or during the stream, as one `ProviderError`:
a safe message (never the upstream's body, URL or key) and a `retryable` flag the
browser shows as a Retry button.

Each message is written for the person who asked: what happened, in everyday words,
and what to do now: wait (and how long, when the model service said), try again, or ask
the administrator where trying again cannot help.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext


@dataclass
class ProviderError(Exception):
    """What went wrong upstream, in terms safe to show to the user."""

    code: int
    type: str
    detail: str
    retryable: bool
    retry_after: float | None = field(default=None)

    def __str__(self) -> str:
        return f"{self.code} {self.type}: {self.detail}"


# type -> (retryable, user-facing detail)
_ERRORS: dict[str, tuple[bool, str]] = {
    "bad_request": (
        False,
        _(
            "The model service could not process this request. Try a shorter question or "
            "start a new conversation. If this keeps happening, ask your administrator."
        ),
    ),
    "auth_failed": (
        False,
        _(
            "The model service did not accept this app's access credentials. Trying again "
            "will not help: please ask your administrator to check the configuration."
        ),
    ),
    "model_not_found": (
        False,
        _(
            "The selected model is not available at the model service. Trying again will "
            "not help: please ask your administrator."
        ),
    ),
    "timeout": (True, _("The model service took too long to answer. Please try again in a moment.")),
    "conflict": (True, _("The model service could not take this request just now. Please try again.")),
    "rate_limited": (
        True,
        _("The model service is receiving too many requests right now. Please wait a minute and try again."),
    ),
    "upstream_unavailable": (
        True,
        _(
            "The model service cannot be reached right now. Please try again in a few "
            "minutes; if it stays unavailable, ask your administrator."
        ),
    ),
    "connection_lost": (
        True,
        _(
            "The connection to the model service broke off before the answer was complete. "
            "The text so far is kept; please try again."
        ),
    ),
    "upstream_error": (
        True,
        _(
            "The model service sent an answer this app could not read. The text so far is "
            "kept; please try again."
        ),
    ),
    # The model called a tool Assistant did not offer, or with arguments that are not the
    # tool's: a model's slip, which a new answer to the same question rarely repeats.
    "tool_error": (
        True,
        _("The model used a tool in a way Assistant does not understand. Try again or rephrase."),
    ),
    "internal": (
        True,
        _(
            "Something went wrong in this app while writing the answer. Please try again; "
            "if it keeps happening, ask your administrator."
        ),
    ),
    "interrupted": (
        True,
        _("The server restarted while writing this answer. The text so far is kept; please try again."),
    ),
}


RETRYABLE_TYPES = frozenset(type_ for type_, (retryable, _detail) in _ERRORS.items() if retryable)


def _wait_detail(type_: str, seconds: int) -> str:
    """The message of a busy or unavailable model service that said how long to wait:
    seconds up to two minutes, whole minutes (rounded up) beyond."""
    if type_ == "rate_limited":
        if seconds < 120:
            return ngettext(
                "The model service is receiving too many requests right now. "
                "Please wait %(count)d second and try again.",
                "The model service is receiving too many requests right now. "
                "Please wait %(count)d seconds and try again.",
                seconds,
            ) % {"count": seconds}
        minutes = math.ceil(seconds / 60)
        return ngettext(
            "The model service is receiving too many requests right now. "
            "Please wait %(count)d minute and try again.",
            "The model service is receiving too many requests right now. "
            "Please wait %(count)d minutes and try again.",
            minutes,
        ) % {"count": minutes}
    if seconds < 120:
        return ngettext(
            "The model service is unavailable right now. Please wait %(count)d second and try again.",
            "The model service is unavailable right now. Please wait %(count)d seconds and try again.",
            seconds,
        ) % {"count": seconds}
    minutes = math.ceil(seconds / 60)
    return ngettext(
        "The model service is unavailable right now. Please wait %(count)d minute and try again.",
        "The model service is unavailable right now. Please wait %(count)d minutes and try again.",
        minutes,
    ) % {"count": minutes}


def provider_error(type_: str, code: int, retry_after: float | None = None) -> ProviderError:
    """The error of `type_` in the active language. `retry_after`, the upstream's
    Retry-After, becomes whole seconds (rounded up), which the message names too: the
    event's `retry_after` and the text the user reads say the same wait."""
    retryable, detail = _ERRORS[type_]
    if retry_after is not None:
        retry_after = math.ceil(retry_after)
    if retry_after and type_ in ("rate_limited", "upstream_unavailable"):
        return ProviderError(code, type_, _wait_detail(type_, retry_after), retryable, retry_after)
    return ProviderError(code, type_, str(detail), retryable, retry_after)
