"""The refusals of services and selectors, as the client gets them."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from django.core.exceptions import ObjectDoesNotExist, ValidationError
from django.utils.translation import gettext as _


class ServiceError(Exception):
    """A request the service refuses; `status` and `code` go to the client as they are."""

    def __init__(self, status: int, code: str, message: str, *, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        # Seconds until asking again can succeed (rate limits, quotas).
        self.retry_after = retry_after


def not_found() -> ServiceError:
    # The same answer for "does not exist" and "is not yours".
    return ServiceError(
        404,
        "not_found",
        _("This conversation or message does not exist (it may have been deleted). Reload the page."),
    )


@contextmanager
def found_or_404() -> Iterator[None]:
    """Turn a missing (or malformed-id) lookup into the 404 ServiceError."""
    try:
        yield
    except (ObjectDoesNotExist, ValueError, ValidationError):
        raise not_found() from None
