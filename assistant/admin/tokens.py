"""Personal API tokens, for staff: who holds which, when it was last used; revoke any.

Tokens are made by their owners (the settings page) or `manage.py api_token create`; the
admin shows no secret (none is stored) and no content, and revokes instead of deleting,
so the record of a token stays. A token's name is its owner's free text, like a
conversation's title, which the review shows only for a stated reason: here a token is
told apart by its prefix, its owner and its dates.
"""

from __future__ import annotations

from django.contrib import admin, messages
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext

from assistant.models import ApiToken
from assistant.tokens.service import token_revoke


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    list_display = ["prefix", "user", "created_at", "last_used_at", "expires_at", "state_display"]
    list_filter = [("revoked_at", admin.EmptyFieldListFilter), "expires_at", "last_used_at"]
    search_fields = ["prefix", "user__username"]
    list_select_related = ["user"]
    fields = [
        "user",
        "prefix",
        "created_at",
        "last_used_at",
        "expires_at",
        "revoked_at",
        "revoked_by",
    ]
    readonly_fields = fields
    actions = ["revoke"]

    def has_add_permission(self, request) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False

    @admin.display(description=_("state"))
    def state_display(self, token: ApiToken) -> str:
        return {"active": _("active"), "expired": _("expired"), "revoked": _("revoked")}[token.state()]

    @admin.action(description=_("Revoke the selected tokens"), permissions=["change"])
    def revoke(self, request, queryset) -> None:
        revoked = sum(token_revoke(token=token, by=request.user.get_username()) for token in queryset)
        self.message_user(
            request,
            ngettext("%(count)d token revoked.", "%(count)d tokens revoked.", revoked) % {"count": revoked},
            messages.SUCCESS,
        )
