"""Documents through the API: upload into a conversation, list, read, delete; the file
itself as a download; the sources an answer was given.

The JSON views follow the API's conventions (assistant/views/api.py: api_view, its
error shape). The download is a plain page URL, so a link in the page opens it.
"""

from __future__ import annotations

import uuid
from typing import Any

from asgiref.sync import sync_to_async
from django.contrib.auth.decorators import login_required
from django.core.exceptions import RequestDataTooBig, SuspiciousOperation
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.http.multipartparser import MultiPartParserError
from django.urls import reverse
from django.utils.http import content_disposition_header
from django.views.decorators.http import require_safe

from assistant import errors
from assistant.documents import ingest
from assistant.models import Document
from assistant.views.api import api_methods, api_view

Kind = Document.Kind

# What a download is sent as. An HTML file goes as bytes: a browser must never render it.
CONTENT_TYPES = {
    Kind.PDF: "application/pdf",
    Kind.DOCX: "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    Kind.ODT: "application/vnd.oasis.opendocument.text",
    Kind.PPTX: "application/vnd.openxmlformats-officedocument.presentationml.presentation",
    Kind.XLSX: "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    Kind.CSV: "text/csv; charset=utf-8",
    Kind.TXT: "text/plain; charset=utf-8",
    Kind.MARKDOWN: "text/markdown; charset=utf-8",
}
# The extensions a downloaded file's name may end with, by kind (the first one is added
# to a name that ends with none of them): the file opens as what it is.
EXTENSIONS = {
    Kind.PDF: ("pdf",),
    Kind.DOCX: ("docx",),
    Kind.ODT: ("odt",),
    Kind.PPTX: ("pptx",),
    Kind.XLSX: ("xlsx",),
    Kind.CSV: ("csv",),
    Kind.TXT: ("txt", "text"),
    Kind.MARKDOWN: ("md", "markdown"),
    Kind.HTML: ("html", "htm"),
}
DOWNLOAD_BLOCK = 64 * 1024


def document_json(document: Document) -> dict[str, Any]:
    error = None
    if document.status == Document.Status.FAILED:
        error = {"code": document.error_code, "message": document.error_detail}
    return {
        "id": str(document.pk),
        "name": document.name,
        "kind": document.kind,
        "size": document.size,
        "status": document.status,
        "pages_done": document.pages_done,
        "pages": document.pages,
        "error": error,
        "file_url": reverse("document_file", args=[document.pk]),
        "created_at": document.created_at.isoformat(),
    }


def _uploaded_file(request: HttpRequest):
    """The request's file in the field `file`; None without one (or a body that is no
    multipart form), which the upload refuses once the conversation is known to be theirs."""
    try:
        return request.FILES.get("file")
    except (MultiPartParserError, RequestDataTooBig, SuspiciousOperation):
        return None


@api_methods("GET", "POST")
@api_view
def conversation_documents(request: HttpRequest, conversation_id: uuid.UUID) -> JsonResponse:
    """`/api/conversations/<id>/documents/`: the list (GET), an upload (POST, 202)."""
    if request.method == "POST":
        document = ingest.document_upload(
            user=request.user, conversation_id=conversation_id, upload=_uploaded_file(request)
        )
        return JsonResponse(document_json(document), status=202)
    documents = ingest.documents_of_conversation(user=request.user, conversation_id=conversation_id)
    return JsonResponse({"documents": [document_json(d) for d in documents]})


@api_methods("GET", "DELETE")
@api_view
def document_api(request: HttpRequest, document_id: uuid.UUID) -> HttpResponse:
    """`/api/documents/<id>/`: one of the user's documents (GET), deleted (DELETE, 204)."""
    if request.method == "DELETE":
        ingest.document_delete(user=request.user, document_id=document_id)
        return HttpResponse(status=204)
    return JsonResponse(document_json(ingest.document_get(user=request.user, document_id=document_id)))


@api_methods("GET")
@api_view
def message_sources(request: HttpRequest, message_id: int) -> JsonResponse:
    """`/api/messages/<id>/sources/`: the passages an answer was given, as it cites them."""
    return JsonResponse({"sources": ingest.message_sources(user=request.user, message_id=message_id)})


def download_name(document: Document) -> str:
    """The document's shown name, ending with an extension of its kind."""
    extensions = EXTENSIONS.get(document.kind, ())
    stem, dot, extension = document.name.rpartition(".")
    if not extensions or (dot and stem and extension.lower() in extensions):
        return document.name
    return f"{document.name}.{extensions[0]}"


async def _blocks(storage, name: str):
    # Opened and read in a worker thread, block by block: the loop never waits on
    # storage, and a large file is never held whole in memory.
    handle = await sync_to_async(storage.open, thread_sensitive=False)(name, "rb")
    try:
        while block := await sync_to_async(handle.read, thread_sensitive=False)(DOWNLOAD_BLOCK):
            yield block
    finally:
        await sync_to_async(handle.close, thread_sensitive=False)()


@require_safe
@login_required
def document_file(request: HttpRequest, document_id: uuid.UUID) -> HttpResponse:
    """The document's file, as a download: for its owner, or a reader of its collection;
    404 for anyone else, as for none."""
    try:
        document = ingest.document_readable(user=request.user, document_id=document_id)
    except errors.ServiceError:
        raise Http404 from None
    storage, name = document.file.storage, document.file.name
    try:
        size = storage.size(name)
    except (OSError, NotImplementedError):
        raise Http404 from None
    response = StreamingHttpResponse(
        _blocks(storage, name), content_type=CONTENT_TYPES.get(document.kind, "application/octet-stream")
    )
    response["Content-Length"] = str(size)
    response["Content-Disposition"] = content_disposition_header(True, download_name(document))
    response["X-Content-Type-Options"] = "nosniff"
    response["Cache-Control"] = "private, no-store"
    return response
