"""Documents in: a user's upload into a conversation, an administrator's file into a
collection; the reads of the documents API; their files out of storage when they go.

An upload is checked before anything is stored: the conversation is the user's, the
size within ASSISTANT_UPLOAD_MAX_BYTES, the type one we read (by content:
extract.sniff), the same content not in the conversation already. Then its file goes
to storage under the document's id (never the uploaded name, which is kept, cleaned, for
display only) and its row is queued; reading starts once that is committed, in the
background (assistant/documents/worker.py).
"""

from __future__ import annotations

import hashlib
import logging
import unicodedata
import uuid

from django.conf import settings
from django.core.files import File
from django.core.files.storage import default_storage
from django.db import transaction
from django.db.models.signals import post_delete
from django.dispatch import receiver
from django.template.defaultfilters import filesizeformat
from django.utils.translation import get_language
from django.utils.translation import gettext as _

from assistant import throttle
from assistant.documents.extract import IngestError, extract, sniff
from assistant.documents.sources import readable_collections
from assistant.documents.worker import document_event, document_queue, document_read
from assistant.errors import ServiceError, found_or_404
from assistant.events.publish import publish_or_defer
from assistant.events.wire import channel_for
from assistant.limits import writes_allow
from assistant.models import Collection, Conversation, Document, Message
from assistant.processes import PROCESS_ID
from assistant.selectors import conversation_get

logger = logging.getLogger(__name__)

# What extract.sniff is shown of a file: enough for every signature it knows.
SNIFF_BYTES = 8192
# Shown names are cut to this many characters (their extension kept).
NAME_CHARS = 200
EXTENSION_CHARS = 10
# Kinds whose structure is checked before a file is taken (_structure_check).
STRUCTURED_KINDS = frozenset(
    {Document.Kind.PDF, Document.Kind.DOCX, Document.Kind.ODT, Document.Kind.PPTX, Document.Kind.XLSX}
)
# What a name may not contain: control and format characters (bidirectional overrides
# included), unpaired surrogates, line and paragraph separators.
_UNSHOWN = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})


def display_name(uploaded: str | None) -> str:
    """The name an upload is shown with: its last path part, without control or format
    characters, spaces collapsed, at most NAME_CHARS long with its extension kept.

    Browsers send a name's `"` as %22 (and line breaks as %0A, %0D: WHATWG HTML, multipart
    form data), which Django leaves as it is: those are read back."""
    name = (uploaded or "").replace("%22", '"').replace("%0A", "\n").replace("%0D", "\r")
    name = unicodedata.normalize("NFC", name).replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(char for char in name if unicodedata.category(char) not in _UNSHOWN)
    name = " ".join(name.split()).strip(" .")
    if len(name) > NAME_CHARS:
        stem, dot, extension = name.rpartition(".")
        if dot and stem and len(extension) <= EXTENSION_CHARS:
            name = f"{stem[: NAME_CHARS - len(extension) - 1].rstrip(' .')}.{extension}"
        else:
            name = name[:NAME_CHARS].rstrip(" .")
    return name or "document"


def too_large_message() -> str:
    """What a file over ASSISTANT_UPLOAD_MAX_BYTES is refused with (the page says it too)."""
    return _("The file is larger than %(size)s, the limit for documents.") % {
        "size": filesizeformat(settings.ASSISTANT_UPLOAD_MAX_BYTES)
    }


def _sha256(file: File) -> str:
    digest = hashlib.sha256()
    file.seek(0)
    for block in file.chunks():
        digest.update(block)
    file.seek(0)
    return digest.hexdigest()


def _kind_of(file: File, name: str) -> str:
    """The document's kind by its content; IngestError when it is none we read."""
    file.seek(0)
    head = file.read(SNIFF_BYTES)
    file.seek(0)
    return sniff(head, name)


class _Opened(IngestError):
    """What `_structure_check` stops extract with at its first progress report (extract
    lets an IngestError through as it is, from anywhere)."""

    def __init__(self) -> None:
        super().__init__("opened", "")


def _structure_check(file: File, kind: str) -> None:
    """Refuse at once what is wrong with a file's structure: encrypted, damaged where it
    opens, a zip bomb, over ASSISTANT_UPLOAD_MAX_PAGES pages. extract checks all of that
    before its first progress report (a PDF's page tree, an archive's every entry, in
    bounded steps): it runs up to that report and stops. No page is read; a text file,
    which has no structure to check, is not opened at all."""
    if kind not in STRUCTURED_KINDS:
        return

    def opened(done: int, total: int | None) -> None:
        raise _Opened

    try:
        extract(file, kind, max_pages=settings.ASSISTANT_UPLOAD_MAX_PAGES, progress=opened)
    except _Opened:
        pass
    finally:
        file.seek(0)


def _refused(error: IngestError) -> ServiceError:
    status = {"unsupported_type": 415, "too_large": 413}.get(error.code, 400)
    return ServiceError(status, error.code, str(error.message))


def _duplicate_refuse(conversation: Conversation, sha256: str) -> None:
    existing = Document.objects.filter(conversation=conversation, sha256=sha256).first()
    if existing is not None:
        raise ServiceError(
            409,
            "duplicate_document",
            _("This file is in the conversation already, as “%(name)s”.") % {"name": existing.name},
        )


def _store(document: Document, file: File) -> None:
    """Save `file` to storage as `document`'s file (under its id) and insert its row;
    the file is removed again if the row is not inserted."""
    document.file.save(str(document.pk), file, save=False)
    try:
        document.save(force_insert=True)
    except BaseException:
        file_delete(document.file.name)
        raise


def document_upload(*, user, conversation_id: uuid.UUID | str, upload) -> Document:
    """Take an uploaded file into one of the user's conversations, queued for reading.

    Refused, with nothing stored: another user's conversation (404), no file (400
    `no_file`), a file over
    ASSISTANT_UPLOAD_MAX_BYTES (413 `too_large`), a type not read (415
    `unsupported_type`, or another IngestError code as 400), the same content in the
    conversation already (409 `duplicate_document`), too many writes (429). Reading
    starts after the commit, in a reader thread, with messages in the uploader's language.
    """
    writes_allow(user, throttle.writes_limit())
    conversation = conversation_get(user=user, conversation_id=conversation_id)
    if upload is None:
        raise ServiceError(
            400, "no_file", _("Send the document as a file in the form field “file” (multipart/form-data).")
        )
    if upload.size > settings.ASSISTANT_UPLOAD_MAX_BYTES:
        raise ServiceError(413, "too_large", too_large_message())
    name = display_name(upload.name)
    try:
        kind = _kind_of(upload, name)
        _structure_check(upload, kind)
    except IngestError as error:
        raise _refused(error) from None
    sha256 = _sha256(upload)
    _duplicate_refuse(conversation, sha256)
    document = Document(
        owner=user,
        conversation=conversation,
        name=name,
        kind=kind,
        size=upload.size,
        sha256=sha256,
        processed_by=PROCESS_ID,
    )
    language = get_language()
    with transaction.atomic():
        # Uploads into one conversation one at a time: two of the same file would both
        # pass the check above.
        Conversation.objects.select_for_update().only("pk").get(pk=conversation.pk)
        _duplicate_refuse(conversation, sha256)
        _store(document, upload)
        transaction.on_commit(lambda: document_queue(document, language=language))
    return document


def document_ingest_file(
    *, collection: Collection, path: str, name: str, file, background: bool = False
) -> Document:
    """A new document of `collection` from `file` (a binary file object), read through
    the upload pipeline: in this thread, returned as it ended (ready or failed), or with
    `background` in a reader thread of this process, returned queued.

    `path` is its path below the ingested folder ("" for one uploaded in the admin).
    Raises IngestError, with nothing stored, for a file too large or of a type not read.
    """
    file = file if isinstance(file, File) else File(file)
    if file.size > settings.ASSISTANT_UPLOAD_MAX_BYTES:
        raise IngestError("too_large", too_large_message())
    name = display_name(name)
    kind = _kind_of(file, name)
    _structure_check(file, kind)
    document = Document(
        collection=collection,
        path=path,
        name=name,
        kind=kind,
        size=file.size,
        sha256=_sha256(file),
        processed_by=PROCESS_ID,
    )
    with transaction.atomic():
        _store(document, file)
        if background:
            transaction.on_commit(lambda: document_queue(document))
    if background:
        return document
    return document_read(document.pk) or Document.objects.get(pk=document.pk)


# --- reads and deletion through the API ---------------------------------------------------


def _document_missing() -> ServiceError:
    return ServiceError(404, "not_found", _("This document does not exist (it may have been deleted)."))


def document_get(*, user, document_id: uuid.UUID | str) -> Document:
    """One of the user's own documents (uploaded into a conversation); 404 otherwise."""
    try:
        return Document.objects.get(pk=document_id, owner=user)
    except (Document.DoesNotExist, ValueError):
        raise _document_missing() from None


def documents_of_conversation(*, user, conversation_id: uuid.UUID | str) -> list[Document]:
    """The documents of one of the user's conversations, oldest first; 404 for another's."""
    return documents_of(conversation_get(user=user, conversation_id=conversation_id))


def documents_of(conversation: Conversation) -> list[Document]:
    """The documents of `conversation` (its owner's, checked by the caller), oldest first."""
    return list(Document.objects.filter(conversation=conversation).order_by("created_at"))


def document_readable(*, user, document_id: uuid.UUID | str) -> Document:
    """A document whose file `user` may download: their own, or one of a collection they
    may read (everyone's, or one of their groups'). 404 for any other, as for none."""
    try:
        document = Document.objects.get(pk=document_id)
    except (Document.DoesNotExist, ValueError):
        raise _document_missing() from None
    if document.owner_id is not None and document.owner_id == user.pk:
        return document
    if document.collection_id is not None and document.collection_id in readable_collections(user):
        return document
    raise _document_missing()


def document_delete(*, user, document_id: uuid.UUID | str) -> None:
    """Delete one of the user's documents: its passages with it, its file after the
    commit; a reading still going on stops at its next step and stores nothing."""
    writes_allow(user, throttle.writes_limit())
    document = document_get(user=user, document_id=document_id)
    event = {**document_event(document), "status": "deleted"}
    document.delete()
    publish_or_defer(channel_for(document.conversation_id), "document", event)


def message_sources(*, user, message_id: int) -> list[dict]:
    """What an answer of the user's was given of documents (Message.sources)."""
    with found_or_404():
        message = Message.objects.only("sources").get(pk=message_id, conversation__owner=user)
    return message.sources or []


# --- storage hygiene ------------------------------------------------------------------------


def file_delete(name: str) -> None:
    """Remove a stored file; a failure is logged (the row is gone either way)."""
    if not name:
        return
    try:
        default_storage.delete(name)
    except Exception:
        logger.exception("the stored file %s could not be deleted", name)


@receiver(post_delete, sender=Document, dispatch_uid="documents.file_delete")
def _document_deleted(sender, instance: Document, **kwargs) -> None:
    # However the row went (the user, a conversation's deletion, the retention purge,
    # a user's erasure), its file goes once that is committed.
    name = instance.file.name
    transaction.on_commit(lambda: file_delete(name))
