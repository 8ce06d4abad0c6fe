"""Retention, GDPR export and erasure, and the deletion record, for users' documents: the
rows, their passages and vectors, and their files in storage."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection
from django.utils import timezone

from assistant.documents.ingest import document_upload
from assistant.documents.worker import document_read
from assistant.models import Chunk, Conversation, DeletionRecord, Document
from assistant.staff import retention
from tests.helpers import documents as samples
from tests.helpers.commands import conversation_with, run


@pytest.fixture
def media(settings, tmp_path) -> Path:
    settings.MEDIA_ROOT = tmp_path / "media"
    return settings.MEDIA_ROOT


def uploaded(user, conversation: Conversation, name: str, data: bytes) -> Document:
    """A user's upload, read to the end in this thread (the pipeline a reader thread runs)."""
    document = document_upload(
        user=user, conversation_id=conversation.pk, upload=SimpleUploadedFile(name, data)
    )
    read = document_read(document.pk)
    assert read is not None
    assert read.status == "ready", read.error_detail
    return read


def with_a_vector(document: Document) -> None:
    """One passage with a vector, as an embeddings model leaves it."""
    chunk = Chunk.objects.filter(document=document).order_by("ordinal").first()
    Chunk.objects.filter(pk=chunk.pk).update(embedding=b"\x00\x00\x80\x3f" * 8)


def stored(document: Document, media: Path) -> bool:
    return (media / document.file.name).is_file()


def fts_matches(word: str) -> int:
    """Rows of the SQLite full-text index matching `word` (its own rows, not the chunks')."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM assistant_chunk_fts WHERE assistant_chunk_fts MATCH %s", [word])
        return cursor.fetchone()[0]


def age(conversation: Conversation, days: int) -> None:
    Conversation.objects.filter(pk=conversation.pk).update(updated_at=timezone.now() - timedelta(days=days))


@pytest.fixture
def papers(alice, bob, media):
    """alice's old conversation with a contract (two passages, one with a vector), her
    recent one with a note, and bob's old one with his CV."""
    old = conversation_with(alice, title="Vertrag")
    contract = uploaded(
        alice,
        old,
        "Arbeitsvertrag.pdf",
        samples.text_pdf(["Probezeit sechs Monate.", "Kündigungsfrist drei Monate."]),
    )
    with_a_vector(contract)
    recent = conversation_with(alice, title="Notiz")
    note = uploaded(alice, recent, "Notiz.txt", samples.txt("Einkaufsliste für Freitag"))
    theirs = conversation_with(bob, title="Bewerbung")
    cv = uploaded(bob, theirs, "Lebenslauf.md", samples.markdown())
    age(old, 200)
    age(theirs, 200)
    return {"contract": contract, "note": note, "cv": cv, "old": old, "recent": recent, "theirs": theirs}


# --- retention ---------------------------------------------------------------------------------


def test_retention_purge_deletes_documents_passages_vectors_and_files(
    papers, media, django_capture_on_commit_callbacks
):
    contract, note, cv = papers["contract"], papers["note"], papers["cv"]
    assert stored(contract, media)
    assert Chunk.objects.filter(document=contract).count() == 2

    with django_capture_on_commit_callbacks(execute=True):
        out, _err = run("purge_conversations", "--older-than", "90d", "--actor", "cron@host")

    assert set(Document.objects.values_list("pk", flat=True)) == {note.pk}
    assert not Chunk.objects.filter(document_id__in=[contract.pk, cv.pk]).exists()
    assert not stored(contract, media)
    assert not stored(cv, media)
    assert stored(note, media)
    record = DeletionRecord.objects.get()
    assert record.conversations == 2
    assert record.parameters["documents"] == 2
    assert "Deleted 2 conversations" in out


def test_retention_record_counts_documents_chunks_and_vectors(
    papers, media, django_capture_on_commit_callbacks
):
    expected_chunks = Chunk.objects.filter(document__in=[papers["contract"], papers["cv"]]).count()

    with django_capture_on_commit_callbacks(execute=True):
        run("purge_conversations", "--older-than", "90d")

    parameters = DeletionRecord.objects.get().parameters
    assert (parameters["documents"], parameters["chunks"], parameters["vectors"]) == (2, expected_chunks, 1)
    assert expected_chunks >= 3
    stored_text = json.dumps(parameters)
    assert "Arbeitsvertrag" not in stored_text
    assert "Probezeit" not in stored_text


def test_retention_in_batches_adds_up_documents_in_one_record(
    papers, media, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        run("purge_conversations", "--older-than", "90d", "--batch-size", "1")

    record = DeletionRecord.objects.get()
    assert record.conversations == 2
    assert (record.parameters["documents"], record.parameters["vectors"]) == (2, 1)


@pytest.mark.skipif(connection.vendor != "sqlite", reason="the FTS5 index is SQLite's")
def test_retention_leaves_nothing_in_the_full_text_index(papers, media, django_capture_on_commit_callbacks):
    assert fts_matches("Probezeit") == 1

    with django_capture_on_commit_callbacks(execute=True):
        run("purge_conversations", "--older-than", "90d")

    assert fts_matches("Probezeit") == 0
    assert fts_matches("Einkaufsliste") == 1


def test_retention_preview_counts_documents_and_changes_nothing(papers, media):
    summary = retention.retention_preview(days=90)

    assert (summary.documents.documents, summary.documents.vectors) == (2, 1)
    assert Document.objects.count() == 3
    assert stored(papers["contract"], media)


# --- GDPR: export -------------------------------------------------------------------------------


def test_user_data_export_holds_her_documents_with_their_text(papers, alice):
    out, _err = run("user_data", "export", "alice", "--actor", "dpo@example.com")

    data = json.loads(out)
    documents = {d["name"]: d for d in data["documents"]}
    assert sorted(documents) == ["Arbeitsvertrag.pdf", "Notiz.txt"]
    contract = documents["Arbeitsvertrag.pdf"]
    assert contract["id"] == str(papers["contract"].pk)
    assert contract["kind"] == "pdf"
    assert contract["size"] == papers["contract"].size
    assert contract["status"] == "ready"
    assert contract["conversation_id"] == str(papers["old"].pk)
    assert contract["created_at"] == papers["contract"].created_at.isoformat()
    pages = [passage["page"] for passage in contract["passages"]]
    assert pages == sorted(pages)
    text = " ".join(passage["text"] for passage in contract["passages"])
    assert "Probezeit sechs Monate" in text
    assert "Kündigungsfrist drei Monate" in text
    assert documents["Notiz.txt"]["passages"][0]["text"].startswith("Einkaufsliste für Freitag")
    assert "Lebenslauf" not in out  # bob's


# --- GDPR: erasure ------------------------------------------------------------------------------


def test_user_data_delete_erases_her_documents_passages_and_files(
    papers, alice, media, django_capture_on_commit_callbacks
):
    contract, note, cv = papers["contract"], papers["note"], papers["cv"]
    chunks = Chunk.objects.filter(document__in=[contract, note]).count()

    with django_capture_on_commit_callbacks(execute=True):
        run("user_data", "delete", "alice", "--yes", "--keep-account", "--actor", "dpo@example.com")

    assert list(Document.objects.values_list("pk", flat=True)) == [cv.pk]
    assert not Chunk.objects.filter(document_id__in=[contract.pk, note.pk]).exists()
    assert not stored(contract, media)
    assert not stored(note, media)
    assert stored(cv, media)
    parameters = DeletionRecord.objects.get().parameters
    assert (parameters["documents_deleted"], parameters["chunks_deleted"], parameters["vectors_deleted"]) == (
        2,
        chunks,
        1,
    )
    assert "Arbeitsvertrag" not in json.dumps(parameters)


def test_user_data_delete_dry_run_counts_documents_and_changes_nothing(papers, alice, media):
    from assistant.staff import user_data

    summary = user_data.user_data_preview(user=alice)

    assert (summary.documents.documents, summary.documents.vectors) == (2, 1)
    assert Document.objects.count() == 3
    assert stored(papers["note"], media)


def test_erasing_the_account_takes_the_files_too(papers, alice, media, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        run("user_data", "delete", "alice", "--yes")

    assert not Document.objects.filter(pk__in=[papers["contract"].pk, papers["note"].pk]).exists()
    assert sorted(p.name for p in media.rglob("*") if p.is_file()) == [Path(papers["cv"].file.name).name]
