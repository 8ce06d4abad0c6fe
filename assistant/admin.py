"""Review UI: conversations and their messages, read-only."""

from __future__ import annotations

from django.contrib import admin
from django.db.models import Count

from assistant.models import Conversation, Message


class ReadOnlyAdminMixin:
    """Transcripts are records: reviewers read them, nobody edits them here."""

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


class MessageInline(ReadOnlyAdminMixin, admin.TabularInline):
    model = Message
    extra = 0
    fields = [
        "role",
        "content",
        "status",
        "model",
        "finish_reason",
        "error_type",
        "error_detail",
        "prompt_tokens",
        "completion_tokens",
        "time_to_first_token_ms",
        "duration_ms",
        "feedback",
        "feedback_comment",
        "created_at",
    ]
    readonly_fields = fields
    ordering = ["pk"]


@admin.register(Conversation)
class ConversationAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ["title", "owner", "model", "message_count", "archived", "updated_at"]
    list_filter = ["model", "archived", "created_at", "updated_at"]
    list_select_related = ["owner"]
    search_fields = ["title", "owner__username", "messages__content"]
    readonly_fields = [
        "id",
        "owner",
        "title",
        "title_chosen",
        "model",
        "archived",
        "created_at",
        "updated_at",
    ]
    inlines = [MessageInline]
    date_hierarchy = "updated_at"

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(message_count=Count("messages"))

    @admin.display(ordering="message_count", description="messages")
    def message_count(self, obj: Conversation) -> int:
        return obj.message_count


@admin.register(Message)
class MessageAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ["pk", "conversation", "role", "status", "model", "error_type", "feedback", "created_at"]
    list_filter = ["role", "status", "model", "error_type", "feedback"]
    list_select_related = ["conversation"]
    search_fields = ["content"]
    readonly_fields = [f.name for f in Message._meta.fields]
