"""Company assistants, edited by administrators: one form for the assistant and its
current version; saving a changed version field adds a version, shown read-only below.

A conversation keeps the version it started with, so the versions stay as they were. An
assistant whose versions have conversations is retired, not deleted.
"""

from __future__ import annotations

import json
from typing import Any

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.db.models import Count, QuerySet
from django.utils.translation import gettext, ngettext
from django.utils.translation import gettext_lazy as _

from assistant.admin.records import ReadOnly
from assistant.models import ICONS, Assistant, AssistantVersion, Conversation
from assistant.personas.versions import (
    DESCRIPTION_MAX_CHARS,
    MAX_TOKENS_LIMIT,
    NAME_MAX_CHARS,
    VERSION_FIELDS,
    version_clean,
    version_save,
    version_values,
)


class StartersField(forms.CharField):
    """Example prompts as a text, one per line."""

    widget = forms.Textarea(attrs={"rows": 4})

    def prepare_value(self, value: Any) -> Any:
        return "\n".join(value) if isinstance(value, list) else value

    def to_python(self, value: Any) -> list[str]:
        text = super().to_python(value)
        return [line.strip() for line in text.splitlines() if line.strip()]


class PhasesField(forms.JSONField):
    """A guided flow's phases as indented JSON, umlauts as they are."""

    widget = forms.Textarea(attrs={"rows": 12, "class": "vLargeTextField"})

    def prepare_value(self, value: Any) -> Any:
        if isinstance(value, forms.fields.InvalidJSONInput):
            return value
        return json.dumps(value or [], ensure_ascii=False, indent=2)

    def to_python(self, value: Any) -> Any:
        result = super().to_python(value)
        return [] if result is None else result


class AssistantForm(forms.ModelForm):
    """The assistant's own fields, and its version fields, starting from its current version.

    `version_values` after validation: the checked version fields when any changed, else None.
    """

    name = forms.CharField(label=_("name"), max_length=NAME_MAX_CHARS)
    description = forms.CharField(
        label=_("description"),
        max_length=DESCRIPTION_MAX_CHARS,
        required=False,
        widget=forms.Textarea(attrs={"rows": 2}),
        help_text=_("Shown in the gallery of new chats."),
    )
    icon = forms.ChoiceField(label=_("icon"), choices=ICONS, initial="sparkles")
    instructions = forms.CharField(
        label=_("instructions"),
        widget=forms.Textarea(attrs={"rows": 16, "class": "vLargeTextField"}),
        help_text=_("The system prompt: what the assistant is and how it answers."),
    )
    model = forms.ChoiceField(label=_("model"), required=False)
    temperature = forms.FloatField(
        label=_("temperature"),
        required=False,
        min_value=0,
        max_value=2,
        help_text=_("From 0 (focused) to 2 (varied); empty for the model's default."),
    )
    max_tokens = forms.IntegerField(
        label=_("maximum answer tokens"),
        required=False,
        min_value=1,
        max_value=MAX_TOKENS_LIMIT,
        help_text=_("Empty for no limit of its own."),
    )
    starters = StartersField(
        label=_("example prompts"), required=False, help_text=_("One per line, offered on a new chat.")
    )
    phases = PhasesField(
        label=_("phases"),
        required=False,
        help_text=_(
            'A guided flow: a list of {"title": ..., "goal": ..., "instructions": ...}, in order. '
            "Empty for an ordinary assistant."
        ),
    )

    class Meta:
        model = Assistant
        fields = ["slug", "active", "position", "everyone", "groups", "users", "collections"]
        help_texts = {
            "collections": _(
                "Its answers may draw on these collections' documents, for the people who may read "
                "them: a user who may not read a collection gets nothing from it."
            ),
        }

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.version_values: dict[str, Any] | None = None
        self.current = self.instance.current if self.instance.pk else None
        self.initial.update(version_values(self.current))
        allowed = list(settings.ASSISTANT_MODELS)
        choices = [("", gettext("The site's default (%(model)s)") % {"model": allowed[0]})]
        choices += [(model, model) for model in allowed]
        if self.current is not None and self.current.model and self.current.model not in allowed:
            # Kept as it is until someone picks another: it is no longer on the allowlist.
            label = gettext("%(model)s (no longer allowed)") % {"model": self.current.model}
            choices.append((self.current.model, label))
        self.fields["model"].choices = choices

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        if any(name in self.errors for name in VERSION_FIELDS):
            return cleaned
        values = {name: cleaned.get(name) for name in VERSION_FIELDS}
        if self.current is not None and values == version_values(self.current):
            return cleaned
        try:
            self.version_values = version_clean(values)
        except ValidationError as error:
            for name, problems in error.message_dict.items():
                self.add_error(name if name in self.fields else None, problems)
        return cleaned


class VersionInline(ReadOnly, admin.StackedInline):
    """Every version, newest first, read-only: what each conversation ran with."""

    model = AssistantVersion
    fk_name = "assistant"
    extra = 0
    can_delete = False
    show_change_link = False
    verbose_name = _("version")
    verbose_name_plural = _("versions (read-only; a conversation keeps the version it started with)")
    fields = [
        "number",
        "saved_at",
        "created_by",
        "name",
        "model_shown",
        "temperature",
        "max_tokens",
        "icon",
        "description",
        "instructions",
        "starters_shown",
        "phases_shown",
    ]
    readonly_fields = fields

    def has_view_permission(self, request, obj=None) -> bool:
        # Whoever may see the assistant sees its versions: they are part of it.
        return request.user.has_perm("assistant.view_assistant") or request.user.has_perm(
            "assistant.change_assistant"
        )

    @admin.display(description=_("saved at"))
    def saved_at(self, version: AssistantVersion):
        return version.created_at

    @admin.display(description=_("model"))
    def model_shown(self, version: AssistantVersion) -> str:
        return version.model or gettext("the site's default")

    @admin.display(description=_("example prompts"))
    def starters_shown(self, version: AssistantVersion) -> str:
        return "\n".join(version.starters)

    @admin.display(description=_("phases"))
    def phases_shown(self, version: AssistantVersion) -> str:
        return "\n\n".join(
            f"{number}. {phase['title']}\n{gettext('Goal')}: {phase['goal']}\n{phase['instructions']}"
            for number, phase in enumerate(version.phases, start=1)
        )


@admin.register(Assistant)
class AssistantAdmin(admin.ModelAdmin):
    form = AssistantForm
    inlines = [VersionInline]
    list_display = ["name", "slug", "active", "version", "access", "position"]
    list_display_links = ["name", "slug"]
    list_filter = ["active", "everyone"]
    search_fields = ["slug", "current__name"]
    ordering = ["position", "slug"]
    filter_horizontal = ["groups", "users", "collections"]
    fieldsets = [
        (None, {"fields": ["name", "slug", "description", "icon", "active", "position"]}),
        (
            _("What it says (saving a change here adds a version)"),
            {"fields": ["instructions", "model", "temperature", "max_tokens", "starters", "phases"]},
        ),
        (_("Who may use it"), {"fields": ["everyone", "groups", "users"]}),
        (_("Knowledge it draws on"), {"fields": ["collections"]}),
    ]

    def get_queryset(self, request) -> QuerySet[Assistant]:
        return super().get_queryset(request).select_related("current").prefetch_related("groups", "users")

    @admin.display(description=_("name"), ordering="current__name")
    def name(self, assistant: Assistant) -> str:
        return assistant.current.name if assistant.current else "—"

    @admin.display(description=_("version"), ordering="current__number")
    def version(self, assistant: Assistant) -> int | None:
        return assistant.current.number if assistant.current else None

    @admin.display(description=_("who may use it"))
    def access(self, assistant: Assistant) -> str:
        if assistant.everyone:
            return gettext("everyone")
        names = [gettext("group %(name)s") % {"name": group.name} for group in assistant.groups.all()]
        names += [user.get_username() for user in assistant.users.all()]
        return ", ".join(names) or gettext("nobody")

    def save_model(self, request, obj: Assistant, form: AssistantForm, change: bool) -> None:
        super().save_model(request, obj, form, change)
        if form.version_values is None:
            return
        version = version_save(obj, form.version_values, by=request.user.get_username())
        if version is not None and version.number > 1:
            self.message_user(
                request,
                gettext(
                    "Saved as version %(number)d. Conversations that started earlier keep the version "
                    "they started with."
                )
                % {"number": version.number},
                messages.INFO,
            )

    def get_deleted_objects(self, objs, request):
        """Django's list of what goes, where conversations that ran with an assistant are
        named by the assistant: the PROTECT on their version refuses the deletion, and
        the admin's own list would show the conversations' titles."""
        deleted, counts, perms_needed, protected = super().get_deleted_objects(objs, request)
        ran = dict(
            Conversation.objects.filter(assistant_version__assistant__in=[obj.pk for obj in objs])
            .values("assistant_version__assistant")
            .annotate(count=Count("pk"))
            .values_list("assistant_version__assistant", "count")
        )
        if ran:
            protected = [
                ngettext(
                    "%(name)s: %(count)d conversation ran with it. Retire it instead: untick “active”.",
                    "%(name)s: %(count)d conversations ran with it. Retire it instead: untick “active”.",
                    ran[obj.pk],
                )
                % {"name": obj, "count": ran[obj.pk]}
                for obj in objs
                if obj.pk in ran
            ]
        return deleted, counts, perms_needed, protected
