"""Who may use which assistant: everyone, its groups, or its users; never a retired one."""

from __future__ import annotations

from django.db.models import Q, QuerySet
from django.utils.translation import gettext as _

from assistant.errors import ServiceError
from assistant.models import Assistant, AssistantVersion


def assistants_visible(user) -> QuerySet[Assistant]:
    """The active assistants `user` may use, with their current versions, in gallery order."""
    allowed = Q(everyone=True) | Q(users=user) | Q(groups__in=user.groups.all())
    ids = Assistant.objects.filter(allowed, active=True, current__isnull=False).values("pk")
    return Assistant.objects.filter(pk__in=ids).select_related("current")


def assistant_get(*, user, slug: str) -> Assistant:
    """An assistant `user` may use; 404 for any other, as for one that does not exist."""
    assistant = assistants_visible(user).filter(slug=slug).first()
    if assistant is None:
        raise ServiceError(404, "not_found", _("This assistant does not exist or is not available to you."))
    return assistant


def version_usable(*, user, version: AssistantVersion) -> bool:
    """Whether `user` may still ask the assistant of `version` (not retired, still theirs)."""
    return assistants_visible(user).filter(pk=version.assistant_id).exists()
