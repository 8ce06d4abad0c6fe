"""Query-string lookups of the review lists: only those of their metadata filters.

Django's admin takes a lookup on any local field (`?content__startswith=...`), and
result counts would spell content out without a reason or a log entry.
"""

from __future__ import annotations

from django.contrib import admin


def date_lookups(*fields: str) -> set[str]:
    """What DateFieldListFilter puts in the query string."""
    return {f"{field}__{lookup}" for field in fields for lookup in ("gte", "lt", "isnull")}


def value_lookups(*fields: str) -> set[str]:
    """What the choice, boolean and all-values filters put in the query string, and the field itself."""
    return {lookup for field in fields for lookup in (field, f"{field}__exact", f"{field}__isnull")}


class MetadataLookupsOnly(admin.ModelAdmin):
    """Query-string lookups only from `metadata_lookups`, refused like any disallowed lookup (400).

    Django's own rule allows every lookup on a local field and relational ones its filters
    use: `?content__startswith=Mein` would answer, by its result count, whether a message
    begins so, and a few hundred such requests spell the message out.
    """

    metadata_lookups: frozenset[str] = frozenset()

    def lookup_allowed(self, lookup, value, request):
        return lookup in self.metadata_lookups

    def to_field_allowed(self, request, to_field) -> bool:
        # Nothing picks these rows in a popup or an autocomplete widget, which name them by
        # str(): a conversation's title, a message's text.
        return False
