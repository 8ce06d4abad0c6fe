"""Personal API tokens: the digest of a secret shown once, its owner, expiry and use.

Imported by assistant/models.py, so Django registers it with the app.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone
from django.utils.translation import gettext_lazy as _


class ApiTokenQuerySet(models.QuerySet):
    def usable(self, now=None) -> ApiTokenQuerySet:
        """Neither revoked nor expired, of an active user."""
        now = now or timezone.now()
        return self.filter(
            Q(expires_at__isnull=True) | Q(expires_at__gt=now), revoked_at__isnull=True, user__is_active=True
        )


class ApiToken(models.Model):
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens", verbose_name=_("user")
    )
    name = models.CharField(_("name"), max_length=100, help_text=_("What it is for, e.g. the app or script."))
    # The start of the secret, shown to tell tokens apart; the secret itself is never stored.
    prefix = models.CharField(_("prefix"), max_length=16)
    # SHA-256 of the whole secret (hex): the secret has 256 random bits, so a fast hash
    # is safe, and a request is authenticated by one indexed lookup.
    digest = models.CharField(max_length=64, unique=True, editable=False)
    created_at = models.DateTimeField(_("created"), auto_now_add=True)
    expires_at = models.DateTimeField(_("expires"), null=True, blank=True, help_text=_("Empty: never."))
    last_used_at = models.DateTimeField(_("last used"), null=True, blank=True)
    revoked_at = models.DateTimeField(_("revoked"), null=True, blank=True)
    # Who revoked it: the owner, a staff member or a command (a name, so it outlives them).
    revoked_by = models.CharField(_("revoked by"), max_length=150, blank=True)

    objects = ApiTokenQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["user", "-created_at"], name="apitoken_user_recent")]
        verbose_name = _("API token")
        verbose_name_plural = _("API tokens")

    def __str__(self) -> str:
        # Not the name: its owner's free text, which staff lists do not show (admin/tokens.py).
        return f"{self.prefix}…"

    def state(self, now=None) -> str:
        """active, expired or revoked."""
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and self.expires_at <= (now or timezone.now()):
            return "expired"
        return "active"
