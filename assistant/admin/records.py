"""The review's lists show records: nobody adds or edits them in the admin."""

from __future__ import annotations

from django.contrib import admin


class ReadOnlyRecords(admin.ModelAdmin):
    """No adding, changing or deleting; an admin that lets someone delete says so."""

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False
