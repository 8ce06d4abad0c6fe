"""The review's lists show records: nobody adds or edits them in the admin."""

from __future__ import annotations

from django.contrib import admin


class ReadOnly:
    """No adding, changing or deleting, for a model admin or an inline; an admin that
    lets someone delete says so."""

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


class ReadOnlyRecords(ReadOnly, admin.ModelAdmin):
    """A list of records (transcripts, the access log)."""
