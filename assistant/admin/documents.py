"""Documents in the admin, a knowledge collection's and a user's.

A collection's documents are company knowledge: listed with their names, opened (their
passages) and downloaded without a reason. Files come in on the collection's page
("Add documents", collections.py) or from a folder (`manage.py ingest`,
assistant/staff/collections.py).

A user's document (uploaded into a conversation) is personal content, like a transcript:
the list shows its metadata (owner, conversation, type, size, status) and its name only in
the content view; its page (name and passages) and its file open only after a stated
reason, for `review.GRANT_SECONDS`. The reason goes on the access log first, and every
download of the file again, so the owner sees both at /access-log/. Nothing names a
user's document by `str()` (its name) before a reason: see `document_label`.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, MutableMapping
from datetime import UTC, datetime
from typing import Any

from asgiref.sync import sync_to_async
from django.contrib import admin, messages
from django.contrib.admin.models import DELETION, LogEntry
from django.contrib.admin.utils import quote, unquote
from django.contrib.admin.views.main import ChangeList
from django.contrib.contenttypes.models import ContentType
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.db.models import Q, QuerySet
from django.http import Http404, HttpRequest, HttpResponse, StreamingHttpResponse
from django.shortcuts import redirect
from django.template.defaultfilters import filesizeformat
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import formats, timezone
from django.utils.html import format_html
from django.utils.http import content_disposition_header, urlencode
from django.utils.translation import gettext, ngettext
from django.utils.translation import gettext_lazy as _

from assistant import review
from assistant.admin.content_view import (
    CONTENT_HIDDEN,
    CONTENT_VIEW,
    ContentViewAdmin,
    ReviewReasonForm,
    content_view_target,
    search_words,
    transcript_url,
    uuid_or_none,
)
from assistant.admin.lookups import date_lookups, value_lookups
from assistant.models import AccessLog, Chunk, Conversation, Document
from assistant.staff import collections as collection_files

# A reviewer's session may show these users' documents (id -> {"expires", "reason"}).
DOCUMENT_SESSION_KEY = "assistant_review_document_grants"
PASSAGES_PER_PAGE = 100
FILE_BLOCK = 256 * 1024


def document_label(document: Document) -> str:
    """How the admin names a document without its name, when it is a user's: owner, upload
    time, short id. A collection's document is named by its name."""
    if document.collection_id is not None:
        return document.name
    uploaded = formats.date_format(timezone.localtime(document.created_at), "Y-m-d H:i")
    return gettext("%(owner)s · %(uploaded)s · %(short_id)s") % {
        "owner": document.owner.get_username() if document.owner else "—",
        "uploaded": uploaded,
        "short_id": str(document.pk)[:8],
    }


# --- a reviewer opening a user's document ----------------------------------------------------


def document_open(
    *, reviewer, document: Document, reason: str, session: MutableMapping[str, Any], now: float | None = None
) -> AccessLog:
    """Record the access (on the access log of the document's conversation, which its owner
    reads), then let `session` show the document and its file for GRANT_SECONDS.

    The log row comes first: if it cannot be written, nothing opens.
    """
    entry = review.access_record(
        reviewer=reviewer, conversation=document.conversation, reason=f"document {document.pk}: {reason}"
    )
    now = time.time() if now is None else now
    grants = {
        key: grant
        for key, grant in session.get(DOCUMENT_SESSION_KEY, {}).items()
        if isinstance(grant, dict) and grant.get("expires", 0) > now
    }
    grants[str(document.pk)] = {"expires": now + review.GRANT_SECONDS, "reason": reason}
    session[DOCUMENT_SESSION_KEY] = grants
    return entry


def document_granted(
    *, session: MutableMapping[str, Any], document_id: uuid.UUID | str, now: float | None = None
) -> dict[str, Any] | None:
    """This session's access to a user's document ({"expires", "reason"}), if it has one."""
    grant = session.get(DOCUMENT_SESSION_KEY, {}).get(str(document_id))
    now = time.time() if now is None else now
    if not isinstance(grant, dict) or not grant.get("expires", 0) > now:
        return None
    return grant


def document_download_record(*, reviewer, document: Document, reason: str) -> AccessLog:
    """Each download of a user's file goes on the access log, with the reason it opened for."""
    return review.access_record(
        reviewer=reviewer,
        conversation=document.conversation,
        reason=f"document {document.pk} downloaded: {reason}",
    )


async def _file_blocks(document: Document) -> AsyncIterator[bytes]:
    """The stored file, block by block, read in a thread (an async iterator: under ASGI
    Django would read a synchronous one whole into memory first)."""
    handle = await sync_to_async(document.file.storage.open)(document.file.name, "rb")
    try:
        while block := await sync_to_async(handle.read)(FILE_BLOCK):
            yield block
    finally:
        await sync_to_async(handle.close)()


def file_response(document: Document) -> StreamingHttpResponse:
    """The document's file as a download: never shown in the browser, never sniffed."""
    if not document.file.name or not document.file.storage.exists(document.file.name):
        raise Http404(gettext("The file of this document is missing from storage."))
    response = StreamingHttpResponse(_file_blocks(document), content_type="application/octet-stream")
    response["Content-Disposition"] = content_disposition_header(True, document.name)
    response["X-Content-Type-Options"] = "nosniff"
    response["Content-Length"] = str(document.file.storage.size(document.file.name))
    return response


# --- documents -----------------------------------------------------------------------------


class DocumentSourceFilter(admin.SimpleListFilter):
    title = _("belongs to")
    parameter_name = "source"

    def lookups(self, request, model_admin):
        return [
            ("collection", _("a knowledge collection")),
            ("user", _("a user (uploaded into a conversation)")),
        ]

    def queryset(self, request, queryset):
        if self.value() == "collection":
            return queryset.filter(collection__isnull=False)
        if self.value() == "user":
            return queryset.filter(collection__isnull=True)
        return queryset


@admin.register(Document)
class DocumentAdmin(ContentViewAdmin):
    """Documents as a list of metadata; a collection's open as they are, a user's behind a reason."""

    list_display = [
        "label",
        "document_name",
        "belongs_to",
        "kind",
        "status_shown",
        "pages",
        "size_shown",
        "created_at",
    ]
    content_columns = {"document_name": "document_name_hidden"}
    list_filter = [
        DocumentSourceFilter,
        ("collection", admin.RelatedOnlyFieldListFilter),
        "status",
        "kind",
        "created_at",
    ]
    metadata_lookups = frozenset(
        {
            DocumentSourceFilter.parameter_name,
            *value_lookups("status", "kind"),
            *date_lookups("created_at"),
            "collection__id__exact",
            "collection__isnull",
            # A conversation's or an owner's documents (links).
            "conversation__id__exact",
            "owner__id__exact",
            CONTENT_VIEW,
        }
    )
    list_select_related = ["owner", "collection", "conversation__owner"]
    # Searched in get_search_results; declared so that the search box shows.
    search_fields = ["owner__username"]
    metadata_search_help_text = _(
        "Searches owners' usernames, ids, and the names and paths of collection documents. "
        "Names of users' documents: in the content view."
    )
    content_search_help_text = _(
        "Searches owners' usernames, ids and document names. Every conversation whose document "
        "is found is recorded in the access log with your reason and the search."
    )
    ordering = ["-created_at"]
    list_per_page = 50
    show_full_result_count = False
    actions = ["read_again"]

    # --- who may do what

    def has_view_permission(self, request, obj: Document | None = None) -> bool:
        # Reviewers reach users' documents (after a reason) as they reach transcripts;
        # collections' documents need the view permission on documents.
        if obj is not None and obj.collection_id is not None:
            return super().has_view_permission(request, obj)
        return super().has_view_permission(request, obj) or review.can_review(request.user)

    def has_delete_permission(self, request, obj: Document | None = None) -> bool:
        user = request.user
        if obj is not None and obj.collection_id is None:
            # A user's document is theirs: like a transcript, only superusers delete it.
            return user.is_active and user.is_superuser
        return user.is_active and user.has_perm("assistant.delete_document")

    def has_read_again_permission(self, request) -> bool:
        return request.user.is_active and request.user.has_perm("assistant.change_document")

    def has_review_permission(self, request) -> bool:
        return review.can_review(request.user)

    def get_queryset(self, request) -> QuerySet[Document]:
        documents = super().get_queryset(request)
        if not request.user.has_perm("assistant.view_document"):
            documents = documents.filter(collection__isnull=True)
        return documents

    # --- the list

    def get_search_results(self, request, queryset, search_term):
        content = self.content_grant(request) is not None
        for word in search_words(search_term):
            matches = (
                Q(owner__username__icontains=word)
                | Q(collection__slug__icontains=word)
                | Q(collection__name__icontains=word)
                | Q(collection__isnull=False, name__icontains=word)
                | Q(collection__isnull=False, path__icontains=word)
            )
            if (pk := uuid_or_none(word)) is not None:
                matches |= Q(pk=pk) | Q(conversation_id=pk)
            if content:
                matches |= Q(name__icontains=word)
            queryset = queryset.filter(matches)
        return queryset, False

    def conversations_matched(self, changelist: ChangeList) -> QuerySet[Conversation]:
        return Conversation.objects.filter(
            pk__in=changelist.queryset.filter(conversation__isnull=False).values("conversation_id")
        )

    def conversations_shown(self, changelist: ChangeList) -> QuerySet[Conversation]:
        return Conversation.objects.filter(
            pk__in={
                document.conversation_id for document in changelist.result_list if document.conversation_id
            }
        )

    @staticmethod
    def content_reason_url(next_url: str) -> str:
        return f"{reverse('admin:assistant_document_content')}?{urlencode({'next': next_url})}"

    @admin.display(description=_("document"), ordering="created_at")
    def label(self, obj: Document) -> str:
        if obj.collection_id is not None:
            return f"{obj.collection.slug} · {str(obj.pk)[:8]}"
        return document_label(obj)

    def row_label(self, obj: Document) -> str:
        return self.label(obj)

    # No ordering: sorting users' documents by name would tell how their names compare.
    @admin.display(description=_("name"))
    def document_name(self, obj: Document) -> str:
        return obj.path or obj.name if obj.collection_id is not None else obj.name

    @admin.display(description=_("name"))
    def document_name_hidden(self, obj: Document) -> str:
        return self.document_name(obj) if obj.collection_id is not None else CONTENT_HIDDEN

    @admin.display(description=_("belongs to"))
    def belongs_to(self, obj: Document):
        if obj.collection_id is not None:
            url = reverse("admin:assistant_collection_change", args=[quote(obj.collection_id)])
            return format_html('<a href="{}">{}</a>', url, obj.collection.name)
        return format_html(
            '<a href="{}">{}</a>',
            transcript_url(obj.conversation_id),
            review.conversation_label(obj.conversation),
        )

    @admin.display(description=_("status"), ordering="status")
    def status_shown(self, obj: Document) -> str:
        if obj.status == Document.Status.FAILED and obj.error_code:
            return f"{obj.get_status_display()} ({obj.error_code})"
        return obj.get_status_display()

    @admin.display(description=_("size"), ordering="size")
    def size_shown(self, obj: Document) -> str:
        return filesizeformat(obj.size)

    @admin.action(permissions=["read_again"], description=_("Read selected collection documents again"))
    def read_again(self, request: HttpRequest, queryset: QuerySet[Document]) -> None:
        """Read a collection's documents again from their files (in the background), e.g.
        after an embeddings model was configured. Users' documents are left alone."""
        chosen = queryset.filter(collection__isnull=False)
        count = collection_files.collection_documents_reread(chosen)
        skipped = queryset.count() - chosen.count()
        self.message_user(
            request,
            ngettext(
                "%(count)d document is read again in the background.",
                "%(count)d documents are read again in the background.",
                count,
            )
            % {"count": count},
            messages.SUCCESS if count else messages.WARNING,
        )
        if skipped:
            self.message_user(
                request,
                ngettext(
                    "%(count)d document of a user was left alone: only collection documents are read again.",
                    "%(count)d documents of users were left alone: only collection documents are read again.",
                    skipped,
                )
                % {"count": skipped},
                messages.WARNING,
            )

    # --- a document's page, its file, the reasons

    def get_urls(self):
        view = self.admin_site.admin_view
        return [
            # Before Django's `<path:object_id>/`, which would take "content" for an id.
            path("content/", view(self.content_reason_view), name="assistant_document_content"),
            path("<path:object_id>/review/", view(self.review_view), name="assistant_document_review"),
            path("<path:object_id>/file/", view(self.file_view), name="assistant_document_file"),
            *super().get_urls(),
        ]

    def _document(self, request: HttpRequest, object_id: str) -> Document:
        """The document, if this user may see it at all (a user's: reviewers only)."""
        document = self.get_object(request, unquote(object_id))
        if document is None:
            raise Http404
        if not self.has_view_permission(request, document):
            raise PermissionDenied
        if document.collection_id is None and not self.has_review_permission(request):
            raise PermissionDenied
        return document

    def _page(self, request: HttpRequest, template: str, context: dict) -> TemplateResponse:
        context = {**self.admin_site.each_context(request), "opts": self.opts, **context}
        return TemplateResponse(request, f"admin/assistant/document/{template}", context)

    def _review_url(self, document: Document) -> str:
        return reverse("admin:assistant_document_review", args=[quote(document.pk)])

    def change_view(self, request, object_id, form_url="", extra_context=None):
        """The document read-only: its metadata and passages, and its file. A user's only
        for a reviewer who stated a reason for it in the last GRANT_SECONDS."""
        if request.method not in ("GET", "HEAD"):
            raise PermissionDenied
        document = self._document(request, object_id)
        grant = None
        if document.collection_id is None:
            grant = document_granted(session=request.session, document_id=document.pk)
            if grant is None:
                return redirect(self._review_url(document))
        chunks = Chunk.objects.filter(document=document).order_by("ordinal").only("ordinal", "page", "text")
        passages = Paginator(chunks, PASSAGES_PER_PAGE).get_page(request.GET.get("page"))
        return self._page(
            request,
            "document.html",
            {
                "title": _("Document"),
                "subtitle": document_label(document),
                "document": document,
                "label": document_label(document),
                "passages": passages,
                "file_url": reverse("admin:assistant_document_file", args=[quote(document.pk)]),
                "access_ends": datetime.fromtimestamp(grant["expires"], tz=UTC) if grant else None,
                "access_log_url": reverse("admin:assistant_accesslog_changelist")
                + "?"
                + urlencode({"conversation_id": document.conversation_id})
                if document.conversation_id
                else None,
                "transcript_url": transcript_url(document.conversation_id)
                if document.conversation_id
                else None,
                "conversation_label": review.conversation_label(document.conversation)
                if document.conversation_id
                else None,
                "has_delete_permission": self.has_delete_permission(request, document),
                **(extra_context or {}),
            },
        )

    def review_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """State a reason for a user's document; it is logged, then the document opens for a while."""
        if request.method not in ("GET", "HEAD", "POST"):
            raise PermissionDenied
        document = self._document(request, object_id)
        if document.collection_id is not None:
            return redirect("admin:assistant_document_change", quote(document.pk))
        form = ReviewReasonForm(request.POST if request.method == "POST" else None)
        if form.is_bound and form.is_valid():
            document_open(
                reviewer=request.user, document=document, reason=form.reason(), session=request.session
            )
            return redirect("admin:assistant_document_change", quote(document.pk))
        return self._page(
            request,
            "review_reason.html",
            {
                "title": _("Why do you open this document?"),
                "subtitle": document_label(document),
                "document": document,
                "label": document_label(document),
                "owner": document.owner.get_username() if document.owner else "—",
                "form": form,
                "grant_minutes": review.GRANT_SECONDS // 60,
            },
        )

    def file_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """The file as a download. A user's needs a stated reason, and each download is logged."""
        if request.method not in ("GET", "HEAD"):
            raise PermissionDenied
        document = self._document(request, object_id)
        if document.collection_id is None:
            grant = document_granted(session=request.session, document_id=document.pk)
            if grant is None:
                return redirect(self._review_url(document))
            response = file_response(document)
            document_download_record(reviewer=request.user, document=document, reason=grant["reason"])
            return response
        return file_response(document)

    def content_reason_view(self, request: HttpRequest) -> HttpResponse:
        """State a reason for the content view (names of users' documents); then back to the list."""
        if request.method not in ("GET", "HEAD", "POST"):
            raise PermissionDenied
        if not (self.has_view_permission(request) and self.has_review_permission(request)):
            raise PermissionDenied
        _list, url = content_view_target(
            request.GET.get("next", ""), {reverse("admin:assistant_document_changelist"): Document}
        )
        form = ReviewReasonForm(request.POST if request.method == "POST" else None)
        if form.is_bound and form.is_valid():
            review.list_content_open(session=request.session, reason=form.reason())
            return redirect(url)
        return self._page(
            request,
            "content_reason.html",
            {
                "title": _("Why do you show the names of users' documents?"),
                "form": form,
                "grant_minutes": review.GRANT_SECONDS // 60,
            },
        )

    def history_view(self, request, object_id, extra_context=None):
        document = self._document(request, object_id)
        if document.collection_id is None:
            # Its title would be the document's name; nobody changes it in the admin anyway.
            return self.change_view(request, object_id)
        return super().history_view(request, object_id, extra_context)

    # --- deletion, without naming users' documents

    def delete_view(self, request, object_id, extra_context=None):
        document = self.get_object(request, unquote(object_id))
        context = {"object_label": document_label(document) if document else "", **(extra_context or {})}
        return super().delete_view(request, object_id, context)

    def get_deleted_objects(self, objs, request):
        # Django's summary names each object by str() (a user's document by its name), and
        # its permission check is per model: a user's document needs a superuser.
        documents = list(objs)
        shown = [document_label(document) for document in documents[:100]]
        if len(documents) > len(shown):
            shown.append(gettext("… and %(count)d more") % {"count": len(documents) - len(shown)})
        chunks = Chunk.objects.filter(document__in=[d.pk for d in documents]).count()
        counts = {Document._meta.verbose_name_plural: len(documents), Chunk._meta.verbose_name_plural: chunks}
        perms_needed = set()
        if any(d.collection_id is None for d in documents) and not request.user.is_superuser:
            perms_needed.add(gettext("documents of users (superusers only)"))
        return shown, counts, perms_needed, []

    def log_deletions(self, request, queryset):
        content_type = ContentType.objects.get_for_model(Document)
        return LogEntry.objects.bulk_create(
            [
                LogEntry(
                    user_id=request.user.pk,
                    content_type_id=content_type.pk,
                    object_id=str(document.pk),
                    object_repr=document_label(document)[:200],
                    action_flag=DELETION,
                )
                for document in queryset
            ]
        )

    def response_delete(self, request, obj_display, obj_id):
        # obj_display is str(document), a user's document's name.
        return super().response_delete(request, str(obj_id), obj_id)
