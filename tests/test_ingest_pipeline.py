"""The reading pipeline in this process: one transaction to ready or failed, the take-over
of documents a gone process left, names shown and downloaded, the upload path's body
limit, and files leaving storage with their rows."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.core.files.uploadedfile import SimpleUploadedFile
from django.utils import timezone

from assistant import processes, services
from assistant.documents import ingest, worker
from assistant.documents.extract import IngestError
from assistant.models import Chunk, Collection, Conversation, Document, ServerProcess
from assistant.processes import PROCESS_ID
from assistant.staff.retention import retention_purge
from assistant.views.documents import download_name
from config.body_limits import MULTIPART_OVERHEAD_BYTES, body_limit
from tests.helpers import documents as samples


@pytest.fixture
def conversation(alice) -> Conversation:
    return Conversation.objects.create(owner=alice, model="fake-model")


def uploaded(conversation: Conversation, data: bytes, name: str, on_commit) -> Document:
    """An upload taken in, its reading not started (the test reads it in this thread)."""
    with on_commit(execute=False) as queued:
        document = ingest.document_upload(
            user=conversation.owner,
            conversation_id=conversation.pk,
            upload=SimpleUploadedFile(name, data),
        )
    assert len(queued) == 1
    return document


def stored_files() -> list[Path]:
    root = Path(settings.MEDIA_ROOT) / "documents"
    return sorted(path for path in root.rglob("*") if path.is_file()) if root.exists() else []


# --- reading --------------------------------------------------------------------------------


def test_reading_stores_every_passage_and_ready_together(conversation, django_capture_on_commit_callbacks):
    text = "\n\n".join(samples.german_paragraphs(30)).encode()
    document = uploaded(conversation, text, "richtlinie.txt", django_capture_on_commit_callbacks)

    ended = worker.document_read(document.pk)

    assert (ended.status, ended.processed_by, ended.error_code) == ("ready", "", "")
    chunks = list(ended.chunks.order_by("ordinal"))
    assert len(chunks) > 1
    # A long text without pages is cut into sections, which its passages cite as pages.
    assert ended.pages == ended.pages_done == chunks[-1].page > 1
    assert [c.ordinal for c in chunks] == list(range(len(chunks)))
    assert "Absatz 30" in chunks[-1].text
    assert all(c.embedding == b"" for c in chunks)  # no embeddings model configured


def test_reading_again_replaces_the_old_passages(conversation, django_capture_on_commit_callbacks):
    document = uploaded(conversation, samples.txt(), "notiz.txt", django_capture_on_commit_callbacks)
    Chunk.objects.create(document=document, ordinal=0, page=1, text="veraltet")
    Chunk.objects.create(document=document, ordinal=1, page=1, text="auch veraltet")

    worker.document_read(document.pk)

    assert list(document.chunks.values_list("text", flat=True)) == [samples.UMLAUTS]


def test_a_failed_reading_leaves_no_passages(conversation, django_capture_on_commit_callbacks):
    document = uploaded(conversation, samples.scanned_pdf(), "scan.pdf", django_capture_on_commit_callbacks)
    Chunk.objects.create(document=document, ordinal=0, page=1, text="von früher")

    ended = worker.document_read(document.pk)

    assert (ended.status, ended.error_code) == ("failed", "no_text")
    assert "text" in ended.error_detail
    assert ended.processed_by == ""
    assert not Chunk.objects.filter(document=document).exists()


def test_reading_a_document_another_process_took_changes_nothing(
    conversation, django_capture_on_commit_callbacks
):
    document = uploaded(conversation, samples.txt(), "notiz.txt", django_capture_on_commit_callbacks)
    Document.objects.filter(pk=document.pk).update(processed_by="elsewhere:1:ab:cd")

    assert worker.document_read(document.pk) is None

    document.refresh_from_db()
    assert (document.status, document.processed_by) == ("queued", "elsewhere:1:ab:cd")
    assert not document.chunks.exists()


@pytest.fixture
def embeddings(settings, upstream):
    """An embeddings model on the fake upstream."""
    settings.ASSISTANT_EMBEDDINGS_MODEL = "fake-embed"
    settings.ASSISTANT_DEMO_MODE = False
    settings.OPENAI_BASE_URL = upstream.url
    settings.OPENAI_API_KEY = "test-key-abc123"
    settings.OPENAI_MAX_RETRIES = 0
    return upstream


def test_passages_get_their_vectors_with_an_embeddings_model(
    conversation, embeddings, django_capture_on_commit_callbacks
):
    text = "\n\n".join(samples.german_paragraphs(12)).encode()
    document = uploaded(conversation, text, "richtlinie.txt", django_capture_on_commit_callbacks)

    ended = worker.document_read(document.pk)

    assert ended.status == "ready"
    vectors = list(ended.chunks.values_list("embedding", flat=True))
    assert len(vectors) > 1
    assert all(len(bytes(vector)) > 0 for vector in vectors)
    assert len({len(bytes(vector)) for vector in vectors}) == 1
    assert any("/embeddings" in r["path"] for r in embeddings.requests)


def test_a_failing_embeddings_model_fails_the_document_with_no_passages(
    conversation, embeddings, django_capture_on_commit_callbacks
):
    document = uploaded(conversation, samples.txt(), "notiz.txt", django_capture_on_commit_callbacks)
    embeddings.set(status=503)

    ended = worker.document_read(document.pk)

    assert (ended.status, ended.error_code) == ("failed", "embedding_failed")
    assert ended.error_detail
    assert not ended.chunks.exists()


def test_a_collection_file_is_read_at_once(db):
    collection = Collection.objects.create(slug="handbuch", name="Handbuch")

    document = ingest.document_ingest_file(
        collection=collection, path="hr/urlaub.md", name="urlaub.md", file=ContentFile(samples.markdown())
    )

    assert (document.status, document.kind, document.path) == ("ready", "md", "hr/urlaub.md")
    assert "Größe" in document.chunks.get().text


def test_a_collection_file_of_no_known_type_is_refused_with_nothing_stored(db):
    collection = Collection.objects.create(slug="handbuch", name="Handbuch")
    before = stored_files()

    with pytest.raises(IngestError) as refused:
        ingest.document_ingest_file(
            collection=collection, path="a.pdf", name="a.pdf", file=ContentFile(samples.elf_executable())
        )

    assert refused.value.code == "unsupported_type"
    assert not Document.objects.exists()
    assert stored_files() == before


# --- restart recovery: which documents are taken over ---------------------------------------


def dead_process_here() -> str:
    """The name a process of this host had whose pid is gone now."""
    script = "import os; print(os.getpid())"
    child = subprocess.run([sys.executable, "-c", script], capture_output=True, check=True)
    pid = int(child.stdout)
    host, _, rest = PROCESS_ID.partition(":")
    key = rest.rsplit(":", 1)[1]
    return f"{host}:{pid}:0badc0de:{key}"


def unfinished(conversation: Conversation, processed_by: str, *, status: str = "processing", age: float = 0):
    document = Document.objects.create(
        owner=conversation.owner,
        conversation=conversation,
        name="vertrag.pdf",
        kind="pdf",
        size=1,
        sha256=os.urandom(32).hex(),
        file="documents/none",
        status=status,
        pages_done=7,
        pages=40,
        processed_by=processed_by,
    )
    if age:
        Document.objects.filter(pk=document.pk).update(updated_at=timezone.now() - timedelta(seconds=age))
    return document


def test_take_over_claims_documents_of_a_process_that_died_on_this_host(conversation):
    name = dead_process_here()
    assert processes.crashed_here(name)
    ServerProcess.objects.create(pk=name, heartbeat_at=timezone.now())  # its lease still runs
    reading = unfinished(conversation, name)
    waiting = unfinished(conversation, name, status="queued")

    taken = worker.documents_take_over()

    assert {d.pk for d in taken} == {reading.pk, waiting.pk}
    for document in taken:
        assert (document.status, document.processed_by, document.pages_done) == ("queued", PROCESS_ID, 0)


def test_take_over_claims_documents_of_a_process_whose_lease_lapsed(conversation):
    lapsed = timezone.now() - timedelta(seconds=settings.ASSISTANT_LEASE_SECONDS + 5)
    ServerProcess.objects.create(pk="other-host:17:ab:cd", heartbeat_at=lapsed)
    document = unfinished(conversation, "other-host:17:ab:cd")

    assert [d.pk for d in worker.documents_take_over()] == [document.pk]


def test_take_over_leaves_documents_of_living_processes(conversation):
    ServerProcess.objects.create(pk="other-host:17:ab:cd", heartbeat_at=timezone.now())
    unfinished(conversation, "other-host:17:ab:cd")
    unfinished(conversation, PROCESS_ID)
    # No lease at all (a command reading, a flushed row) but touched just now.
    unfinished(conversation, "command-host:99:ab:cd")
    ready = unfinished(conversation, dead_process_here())
    Document.objects.filter(pk=ready.pk).update(status="ready")

    assert worker.documents_take_over() == []
    assert Document.objects.filter(processed_by=PROCESS_ID).count() == 1


def test_take_over_claims_a_document_without_a_lease_once_it_went_untouched(conversation):
    document = unfinished(conversation, "", status="queued", age=settings.ASSISTANT_LEASE_SECONDS + 5)

    assert [d.pk for d in worker.documents_take_over()] == [document.pk]
    assert worker.documents_take_over() == []  # taken once


# --- names, limits, files -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("uploaded_name", "shown"),
    [
        ("Vertrag 2026.pdf", "Vertrag 2026.pdf"),
        ("../../etc/passwd", "passwd"),
        ("C:\\Users\\jürgen\\Prüfbericht.docx", "Prüfbericht.docx"),
        ("bericht\u202etxt.exe", "berichttxt.exe"),  # no right-to-left override
        ("zeile\r\nneu\x00.txt", "zeileneu.txt"),
        ("%22Zitat%22%0A.txt", '"Zitat".txt'),  # as browsers send " and line breaks
        ("  viel   Platz  .md", "viel Platz .md"),
        ("..", "document"),
        ("", "document"),
        ("a" * 300 + ".xlsx", "a" * 195 + ".xlsx"),
    ],
)
def test_uploaded_names_are_shown_cleaned(uploaded_name, shown):
    assert ingest.display_name(uploaded_name) == shown
    assert len(ingest.display_name(uploaded_name)) <= ingest.NAME_CHARS


@pytest.mark.parametrize(
    ("name", "kind", "downloaded"),
    [
        ("Vertrag.pdf", "pdf", "Vertrag.pdf"),
        ("Vertrag.PDF", "pdf", "Vertrag.PDF"),
        ("seite.html", "pdf", "seite.html.pdf"),  # opens as what it is
        ("bericht", "docx", "bericht.docx"),
        ("notiz.htm", "html", "notiz.htm"),
    ],
)
def test_a_download_is_named_for_its_kind(name, kind, downloaded):
    assert download_name(Document(name=name, kind=kind)) == downloaded


def test_only_the_upload_path_takes_a_file_sized_body():
    upload = "/api/conversations/0b6e1c4e-2a5e-4d1c-9a55-3e0c1f2a4b5c/documents/"
    assert body_limit(upload) == settings.ASSISTANT_UPLOAD_MAX_BYTES + MULTIPART_OVERHEAD_BYTES
    assert body_limit(upload.removesuffix("documents/") + "messages/") == settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    assert body_limit(upload + "x") == settings.DATA_UPLOAD_MAX_MEMORY_SIZE


def test_deleting_a_conversation_removes_its_files(conversation, django_capture_on_commit_callbacks):
    document = uploaded(conversation, samples.txt(), "notiz.txt", django_capture_on_commit_callbacks)
    assert default_storage.exists(document.file.name)

    with django_capture_on_commit_callbacks(execute=True):
        services.conversation_delete(user=conversation.owner, conversation_id=conversation.pk)

    assert not Document.objects.exists()
    assert not default_storage.exists(document.file.name)


def test_deleting_a_user_removes_their_files(conversation, django_capture_on_commit_callbacks):
    document = uploaded(conversation, samples.txt(), "notiz.txt", django_capture_on_commit_callbacks)

    with django_capture_on_commit_callbacks(execute=True):
        get_user_model().objects.filter(pk=conversation.owner_id).delete()

    assert not default_storage.exists(document.file.name)


def test_the_retention_purge_removes_files(conversation, django_capture_on_commit_callbacks):
    document = uploaded(conversation, samples.txt(), "notiz.txt", django_capture_on_commit_callbacks)
    kept = uploaded(
        Conversation.objects.create(owner=conversation.owner, model="fake-model"),
        samples.markdown(),
        "neu.md",
        django_capture_on_commit_callbacks,
    )
    Conversation.objects.filter(pk=conversation.pk).update(updated_at=timezone.now() - timedelta(days=40))

    with django_capture_on_commit_callbacks(execute=True):
        retention_purge(days=30, actor="test")

    assert not default_storage.exists(document.file.name)
    assert default_storage.exists(kept.file.name)


def test_a_file_is_kept_while_its_deletion_may_roll_back(conversation, django_capture_on_commit_callbacks):
    document = uploaded(conversation, samples.txt(), "notiz.txt", django_capture_on_commit_callbacks)

    with django_capture_on_commit_callbacks(execute=False) as pending:
        document.delete()
        assert default_storage.exists(document.file.name)

    assert len(pending) == 1
