"""Every failure of a provider, before or during the stream, as one `ProviderError`:
a safe message (never the upstream's body, URL or key) and a `retryable` flag the
browser shows as a Retry button."""

from __future__ import annotations

from dataclasses import dataclass, field

from django.utils.translation import gettext_lazy as _


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
    "bad_request": (False, _("The model service rejected the request.")),
    "auth_failed": (False, _("The model service refused the configured credentials.")),
    "model_not_found": (False, _("The model service does not know this model.")),
    "timeout": (True, _("The model service took too long to answer.")),
    "conflict": (True, _("The model service reported a conflict.")),
    "rate_limited": (True, _("The model service is busy (rate limit). Try again shortly.")),
    "upstream_unavailable": (True, _("The model service is unavailable right now.")),
    "upstream_error": (True, _("The model service sent a broken answer.")),
    "internal": (True, _("Something went wrong while generating the answer.")),
    "interrupted": (
        True,
        _("The server restarted while writing this answer. The text so far is kept; you can retry."),
    ),
}


RETRYABLE_TYPES = frozenset(type_ for type_, (retryable, _detail) in _ERRORS.items() if retryable)


def provider_error(type_: str, code: int, retry_after: float | None = None) -> ProviderError:
    retryable, detail = _ERRORS[type_]
    return ProviderError(code, type_, str(detail), retryable, retry_after)
