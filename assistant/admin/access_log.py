"""The access log: readable and exportable as CSV with the view permission, changed by nobody."""

from __future__ import annotations

from django.contrib import admin
from django.contrib.admin.options import IncorrectLookupParameters
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.shortcuts import redirect
from django.urls import path
from django.utils import timezone
from django.utils.html import format_html
from django.utils.http import urlencode
from django.utils.text import Truncator
from django.utils.translation import gettext_lazy as _

from assistant import review
from assistant.admin.lookups import MetadataLookupsOnly, date_lookups, value_lookups
from assistant.admin.records import ReadOnlyRecords
from assistant.models import AccessLog


@admin.register(AccessLog)
class AccessLogAdmin(ReadOnlyRecords, MetadataLookupsOnly):
    """Append-only: readable (and exportable) with the view permission, changeable by nobody."""

    list_display = ["accessed_at", "reviewer_username", "owner_username", "conversation", "short_reason"]
    list_filter = ["accessed_at", "reviewer_username", "owner_username"]
    metadata_lookups = frozenset(
        {
            *date_lookups("accessed_at"),
            *value_lookups("reviewer_username", "owner_username", "conversation_id"),
        }
    )
    search_fields = ["reviewer_username", "owner_username", "reason"]
    readonly_fields = [
        "accessed_at",
        "reviewer",
        "reviewer_username",
        "owner",
        "owner_username",
        "conversation_id",
        "reason",
    ]
    fields = readonly_fields
    list_per_page = 100
    show_full_result_count = False
    actions = ["export_csv"]

    @admin.display(description=_("conversation"), ordering="conversation_id")
    def conversation(self, obj: AccessLog) -> str:
        # All accesses to the same conversation; the conversation itself may be gone.
        query = urlencode({"conversation_id": obj.conversation_id})
        return format_html('<a href="?{}">{}</a>', query, obj.conversation_id)

    @admin.display(description=_("reason"))
    def short_reason(self, obj: AccessLog) -> str:
        return Truncator(obj.reason).chars(200)

    def get_urls(self):
        export_view = self.admin_site.admin_view(self.export_view)
        return [path("export/", export_view, name="assistant_accesslog_export"), *super().get_urls()]

    def export_view(self, request: HttpRequest) -> HttpResponse:
        """The whole list as it is filtered and searched on the page, as CSV."""
        if request.method not in ("GET", "HEAD") or not self.has_view_permission(request):
            raise PermissionDenied
        try:
            changelist = self.get_changelist_instance(request)
        except IncorrectLookupParameters:
            return redirect("admin:assistant_accesslog_changelist")
        return self._csv_response(changelist.get_queryset(request))

    @admin.action(permissions=["view"], description=_("Export selected entries as CSV"))
    def export_csv(self, request: HttpRequest, queryset: QuerySet[AccessLog]) -> HttpResponse:
        return self._csv_response(queryset)

    def _csv_response(self, queryset: QuerySet[AccessLog]) -> StreamingHttpResponse:
        response = StreamingHttpResponse(
            review.access_log_csv(queryset), content_type="text/csv; charset=utf-8"
        )
        filename = f"transcript-access-log-{timezone.now():%Y%m%d-%H%M%S}.csv"
        response["Content-Disposition"] = f'attachment; filename="{filename}"'
        return response
