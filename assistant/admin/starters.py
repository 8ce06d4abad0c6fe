"""The example prompts of a new chat's empty page, edited by administrators."""

from __future__ import annotations

from django.contrib import admin

from assistant.models import StarterPrompt


@admin.register(StarterPrompt)
class StarterPromptAdmin(admin.ModelAdmin):
    list_display = ["text", "language", "position", "active"]
    list_editable = ["position", "active"]
    list_filter = ["active", "language"]
    search_fields = ["text"]
    ordering = ["language", "position", "id"]
