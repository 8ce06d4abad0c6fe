"""Documents, their chunks of text, and the knowledge collections administrators curate.

Imported by assistant/models.py, so Django registers them with the app. A document is
either a user's (uploaded into a conversation, gone with it) or a collection's (curated
by administrators, readable by the collection's groups). Its text lives in its chunks,
each with its page and, where an embeddings model is configured, its vector.
"""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone
from django.utils.translation import gettext_lazy as _


class Collection(models.Model):
    """Company knowledge: documents curated by administrators, readable by some groups."""

    slug = models.SlugField(_("identifier"), max_length=50, unique=True)
    name = models.CharField(_("name"), max_length=100)
    description = models.CharField(_("description"), max_length=300, blank=True)
    everyone = models.BooleanField(_("everyone may read it"), default=False)
    groups = models.ManyToManyField("auth.Group", blank=True, related_name="+", verbose_name=_("groups"))
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        verbose_name = _("knowledge collection")
        verbose_name_plural = _("knowledge collections")

    def __str__(self) -> str:
        return self.name


def document_path(document: Document, filename: str) -> str:
    """Where a document's file is stored: by month and id, never by the uploaded name."""
    return f"documents/{timezone.now():%Y/%m}/{document.pk}"


class Document(models.Model):
    class Status(models.TextChoices):
        QUEUED = "queued", _("queued")
        PROCESSING = "processing", _("reading")
        READY = "ready", _("ready")
        FAILED = "failed", _("failed")

    class Kind(models.TextChoices):
        PDF = "pdf", "PDF"
        DOCX = "docx", "Word (DOCX)"
        ODT = "odt", "OpenDocument text (ODT)"
        PPTX = "pptx", "PowerPoint (PPTX)"
        XLSX = "xlsx", "Excel (XLSX)"
        CSV = "csv", "CSV"
        TXT = "txt", _("text")
        MARKDOWN = "md", "Markdown"
        HTML = "html", "HTML"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    # A user's document belongs to a conversation (and goes with it); a collection's to
    # the collection. Exactly one of the two is set.
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.CASCADE, related_name="documents"
    )
    conversation = models.ForeignKey(
        "assistant.Conversation", null=True, blank=True, on_delete=models.CASCADE, related_name="documents"
    )
    collection = models.ForeignKey(
        Collection, null=True, blank=True, on_delete=models.CASCADE, related_name="documents"
    )
    # The name it was uploaded with (shown, never used as a path), and for a collection's
    # document its path below the ingested folder (`manage.py ingest`).
    name = models.CharField(_("name"), max_length=255)
    path = models.CharField(max_length=500, blank=True)
    kind = models.CharField(_("type"), max_length=10, choices=Kind.choices)
    size = models.PositiveBigIntegerField(_("size"))
    sha256 = models.CharField(max_length=64)
    file = models.FileField(upload_to=document_path, max_length=200)
    status = models.CharField(_("status"), max_length=16, choices=Status.choices, default=Status.QUEUED)
    # Pages read so far and in all (a page is a PDF page, a slide, a sheet; 1 for text).
    pages_done = models.PositiveIntegerField(default=0)
    pages = models.PositiveIntegerField(null=True, blank=True)
    chars = models.PositiveIntegerField(default=0)
    error_code = models.CharField(max_length=40, blank=True)
    error_detail = models.CharField(max_length=500, blank=True)
    # The server process reading it, while it is read (see ServerProcess): a restart
    # finds it and reads it again.
    processed_by = models.CharField(max_length=100, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["created_at"]
        constraints = [
            models.CheckConstraint(
                condition=Q(collection__isnull=True, owner__isnull=False, conversation__isnull=False)
                | Q(collection__isnull=False, owner__isnull=True, conversation__isnull=True),
                name="document_owner_or_collection",
            ),
        ]
        indexes = [
            models.Index(fields=["conversation", "created_at"], name="document_conversation"),
            models.Index(fields=["collection", "path"], name="document_collection_path"),
            models.Index(fields=["status"], condition=~Q(status="ready"), name="document_unfinished"),
        ]
        verbose_name = _("document")
        verbose_name_plural = _("documents")

    def __str__(self) -> str:
        return self.name


class Chunk(models.Model):
    """A passage of a document's text: what retrieval finds and an answer cites."""

    document = models.ForeignKey(Document, on_delete=models.CASCADE, related_name="chunks")
    ordinal = models.PositiveIntegerField()
    # The page it starts on (from 1), as the document counts pages.
    page = models.PositiveIntegerField(null=True, blank=True)
    text = models.TextField()
    # Its vector from ASSISTANT_EMBEDDINGS_MODEL, float32 little-endian; empty without one.
    embedding = models.BinaryField(blank=True, default=b"")

    class Meta:
        ordering = ["document", "ordinal"]
        constraints = [models.UniqueConstraint(fields=["document", "ordinal"], name="chunk_document_ordinal")]
        verbose_name = _("passage")
        verbose_name_plural = _("passages")

    def __str__(self) -> str:
        return f"{self.document_id} #{self.ordinal}"
