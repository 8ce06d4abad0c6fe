"""System checks of the token seam (run by `manage.py check`, and at start)."""

from __future__ import annotations

from django.conf import settings
from django.core import checks

# Django's CSRF middleware but for Bearer requests (assistant/tokens/middleware.py).
CSRF_MIDDLEWARE = "assistant.tokens.middleware.CsrfViewMiddleware"


@checks.register(checks.Tags.security, deploy=True)
def csrf_middleware_check(app_configs, **kwargs) -> list[checks.CheckMessage]:
    """Django's own check (security.W003, silenced in settings) looks for its middleware
    by name; this one looks for the subclass that replaces it."""
    if CSRF_MIDDLEWARE in settings.MIDDLEWARE:
        return []
    return [
        checks.Warning(
            f"{CSRF_MIDDLEWARE} is not in MIDDLEWARE: pages and the JSON API have no CSRF protection.",
            id="assistant.W001",
        )
    ]
