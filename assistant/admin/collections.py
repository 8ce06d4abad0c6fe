"""Knowledge collections in the admin: their name, who may read them, their documents
(read-only, on the collection's page; opened in documents.py) and "Add documents": files
into the collection, the same pipeline as uploads, read in the background.
"""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.utils import quote, unquote
from django.core.exceptions import PermissionDenied
from django.db.models import Count, QuerySet
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.template.defaultfilters import filesizeformat
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.http import urlencode
from django.utils.translation import gettext, ngettext
from django.utils.translation import gettext_lazy as _

from assistant.models import Chunk, Collection, Document
from assistant.staff import collections as collection_files

# Documents listed on a collection's page; the rest are in the document list.
COLLECTION_PAGE_DOCUMENTS = 100


class MultipleFileInput(forms.ClearableFileInput):
    allow_multiple_selected = True


class MultipleFileField(forms.FileField):
    """Several files in one field (Django's documented recipe)."""

    widget = MultipleFileInput

    def clean(self, data, initial=None):
        if isinstance(data, list | tuple):
            return [super(MultipleFileField, self).clean(item, initial) for item in data]
        return [super().clean(data, initial)]


class DocumentUploadForm(forms.Form):
    """Files for a collection: together no larger than one upload may be (the request's
    body limit, config/body_limits.py); larger sets go in several steps or by `ingest`."""

    files = MultipleFileField(
        label=_("Files"),
        help_text=_(
            "PDF, Word (DOCX), OpenDocument text (ODT), PowerPoint (PPTX), Excel (XLSX), CSV, text, "
            "Markdown or HTML; at most %(size)s at once. They are read in the background: their "
            "status shows on the collection's page."
        ),
    )

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        field = self.fields["files"]
        field.help_text = field.help_text % {"size": filesizeformat(collection_files.upload_limit())}

    def clean_files(self) -> list:
        files = self.cleaned_data["files"]
        if sum(file.size for file in files) > collection_files.upload_limit():
            raise forms.ValidationError(
                _(
                    "These files are larger than %(size)s together. Add them in several steps, or "
                    "a whole folder with manage.py ingest."
                )
                % {"size": filesizeformat(collection_files.upload_limit())}
            )
        return files


@admin.register(Collection)
class CollectionAdmin(admin.ModelAdmin):
    """Company knowledge: name, who may read it, its documents (read-only) and an upload."""

    list_display = ["name", "slug", "access", "document_count", "updated_at"]
    list_display_links = ["name", "slug"]
    list_filter = ["everyone"]
    search_fields = ["name", "slug"]
    prepopulated_fields = {"slug": ["name"]}
    filter_horizontal = ["groups"]
    fieldsets = [
        (None, {"fields": ["name", "slug", "description"]}),
        (
            _("Who may read it"),
            {
                "fields": ["everyone", "groups"],
                "description": _(
                    "Its documents answer the questions of these people, in the assistants bound to it. "
                    "Anyone else gets nothing from it: no passage, no name, no count."
                ),
            },
        ),
    ]
    change_form_template = "admin/assistant/collection/change_form.html"

    def get_queryset(self, request) -> QuerySet[Collection]:
        return (
            super()
            .get_queryset(request)
            .annotate(document_total=Count("documents"))
            .prefetch_related("groups")
        )

    @admin.display(description=_("who may read it"))
    def access(self, collection: Collection) -> str:
        if collection.everyone:
            return gettext("everyone")
        names = [group.name for group in collection.groups.all()]
        return ", ".join(names) or gettext("nobody")

    @admin.display(description=_("documents"), ordering="document_total")
    def document_count(self, collection: Collection) -> int:
        return collection.document_total

    def get_urls(self):
        upload = self.admin_site.admin_view(self.upload_view)
        return [
            path("<path:object_id>/upload/", upload, name="assistant_collection_upload"),
            *super().get_urls(),
        ]

    def has_upload_permission(self, request, collection: Collection | None = None) -> bool:
        return self.has_change_permission(request, collection) and request.user.has_perm(
            "assistant.add_document"
        )

    def change_view(self, request, object_id, form_url="", extra_context=None):
        collection = self.get_object(request, unquote(object_id))
        context = dict(extra_context or {})
        if collection is not None:
            documents = Document.objects.filter(collection=collection).order_by("path", "name", "created_at")
            context.update(
                {
                    "collection_documents": documents.only(
                        "pk", "name", "path", "kind", "status", "pages", "size", "error_code", "updated_at"
                    )[:COLLECTION_PAGE_DOCUMENTS],
                    "collection_document_total": documents.count(),
                    "collection_documents_url": reverse("admin:assistant_document_changelist")
                    + "?"
                    + urlencode({"collection__id__exact": collection.pk}),
                    "upload_url": reverse("admin:assistant_collection_upload", args=[quote(collection.pk)])
                    if self.has_upload_permission(request, collection)
                    else None,
                }
            )
        return super().change_view(request, object_id, form_url, context)

    def get_deleted_objects(self, objs, request):
        # Django's summary lists every passage of every document: thousands of lines.
        collections = list(objs)
        documents = Document.objects.filter(collection__in=[c.pk for c in collections])
        shown: list = []
        for collection in collections:
            of_collection = documents.filter(collection=collection).order_by("path", "name")
            names = [document.path or document.name for document in of_collection[:100]]
            total = of_collection.count()
            if total > len(names):
                names.append(gettext("… and %(count)d more") % {"count": total - len(names)})
            shown += [collection.name, names]
        chunks = Chunk.objects.filter(document__in=documents.values("pk"))
        counts = {
            Collection._meta.verbose_name_plural: len(collections),
            Document._meta.verbose_name_plural: documents.count(),
            Chunk._meta.verbose_name_plural: chunks.count(),
        }
        perms_needed = set()
        if documents.exists() and not request.user.has_perm("assistant.delete_document"):
            perms_needed.add(Document._meta.verbose_name_plural)
        return shown, counts, perms_needed, []

    def upload_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """Files into the collection: each checked (size, type by content, not there
        already) and stored, then read in the background; refusals named one by one."""
        if request.method not in ("GET", "HEAD", "POST"):
            raise PermissionDenied
        collection = self.get_object(request, unquote(object_id))
        if collection is None:
            raise Http404
        if not self.has_upload_permission(request, collection):
            raise PermissionDenied
        form = DocumentUploadForm(request.POST or None, request.FILES or None)
        if request.method == "POST" and form.is_valid():
            added = 0
            for upload in form.cleaned_data["files"]:
                try:
                    collection_files.collection_upload(collection=collection, upload=upload)
                except collection_files.ReadFailed as failure:
                    self.message_user(
                        request,
                        gettext("“%(name)s” was not added: %(reason)s")
                        % {"name": upload.name, "reason": failure.message},
                        messages.ERROR,
                    )
                else:
                    added += 1
            if added:
                self.message_user(
                    request,
                    ngettext(
                        "%(count)d document added; it is read in the background.",
                        "%(count)d documents added; they are read in the background.",
                        added,
                    )
                    % {"count": added},
                    messages.SUCCESS,
                )
            return redirect("admin:assistant_collection_change", quote(collection.pk))
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": gettext("Add documents to %(name)s") % {"name": collection.name},
            "collection": collection,
            "form": form,
        }
        return TemplateResponse(request, "admin/assistant/collection/upload.html", context)
