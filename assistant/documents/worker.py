"""Reading documents in the background: a few threads of this process, never a request's
thread or the event loop, and the restart recovery that hands them what a dead process
left unread.

A document's row is the truth. A reader claims it (`processing`, `processed_by` this
process), reports progress on the row and as `document` events on its conversation's
stream, and ends in ONE transaction: its old passages out, all new ones in, `ready`; or
`failed` with the reason and no passages. A process that dies midway leaves the row
`processing` under its name: `documents_recover`, run with every heartbeat of every
server process (assistant/generation/leases.py), finds such rows once their process is
gone and reads them again from the start.

The threads are daemons: a process that stops does not wait for a long document, and
the next one reads it again.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import uuid
from collections.abc import Callable
from datetime import timedelta

from django.conf import settings
from django.db import connections, transaction
from django.db.models import Q
from django.utils import timezone, translation
from django.utils.translation import gettext as _

from assistant.documents.chunking import chunks_of
from assistant.documents.embeddings import EmbeddingError, embed_texts, embeddings_enabled
from assistant.documents.extract import IngestError, extract
from assistant.events.publish import publish_or_defer
from assistant.events.wire import channel_for
from assistant.models import Chunk, Document, ServerProcess
from assistant.processes import PROCESS_ID, crashed_here

logger = logging.getLogger(__name__)

Status = Document.Status
UNFINISHED = (Status.QUEUED, Status.PROCESSING)

# Documents read at once by this process. Reading is CPU work in Python (pypdf and the
# like hold the GIL): more threads would not read faster, only slow the answers streaming.
READER_THREADS = 2
# Progress reaches the row and the stream at most this often (and at the end).
PROGRESS_SECONDS = 0.5
# Passages sent to the embeddings model per request; the row is touched between batches
# so that a long run is not taken for an abandoned one.
EMBED_BATCH = 64
CHUNKS_PER_INSERT = 500


class _Readers:
    """A queue of jobs and READER_THREADS daemon threads working it, started on first use."""

    def __init__(self, threads: int) -> None:
        self.threads = threads
        self.jobs: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self.started = False
        self.lock = threading.Lock()

    def submit(self, job: Callable[[], None]) -> None:
        with self.lock:
            if not self.started:
                for number in range(self.threads):
                    threading.Thread(target=self._work, name=f"documents-{number}", daemon=True).start()
                self.started = True
        self.jobs.put(job)

    def _work(self) -> None:
        while True:
            job = self.jobs.get()
            try:
                job()
            except Exception:
                logger.exception("reading a document failed")
            finally:
                # A thread outside any request: nothing else closes its connections.
                connections.close_all()


_readers = _Readers(READER_THREADS)


def document_event(document: Document) -> dict:
    """The `document` event's payload: where reading the document stands."""
    data = {
        "document": str(document.pk),
        "name": document.name,
        "status": document.status,
        "pages_done": document.pages_done,
        "pages": document.pages,
    }
    if document.status == Status.FAILED:
        data["error"] = {"code": document.error_code, "message": document.error_detail}
    return data


def _announce(document: Document) -> None:
    if document.conversation_id is not None:
        publish_or_defer(channel_for(document.conversation_id), "document", document_event(document))


def document_queue(document: Document, *, language: str | None = None) -> None:
    """Read `document` (claimed by this process: `processed_by` is PROCESS_ID) in a
    reader thread; its messages in `language` (the uploader's), else the site's."""
    _announce(document)
    _readers.submit(lambda: document_read(document.pk, language=language))


class _Abandoned(Exception):
    """The document was deleted, or another process took it over, while it was read."""


def document_read(document_id: uuid.UUID, *, language: str | None = None) -> Document | None:
    """Read a document this process has claimed, from the start, to `ready` or `failed`.

    Returns it as it ended; None when it is no longer this process's to read (deleted,
    or taken over by another process after this one was taken for gone).
    """
    claimed = Document.objects.filter(pk=document_id, status__in=UNFINISHED, processed_by=PROCESS_ID)
    if not claimed.update(status=Status.PROCESSING, pages_done=0, updated_at=timezone.now()):
        return None
    document = Document.objects.get(pk=document_id)
    _announce(document)
    with translation.override(language or settings.LANGUAGE_CODE):
        try:
            passages, pages, chars = _text_of(document)
            ended = _store_ready(document, passages, pages=pages, chars=chars)
        except _Abandoned:
            return None
        except (IngestError, EmbeddingError) as error:
            ended = _store_failed(document, error.code, str(error.message))
        except Exception:
            logger.exception("reading document %s failed", document_id)
            message = _(
                "The file could not be read because of an error on the server. Upload it again later."
            )
            ended = _store_failed(document, "internal", message)
    if ended is not None:
        _announce(ended)
    return ended


def _still_mine(document: Document) -> Q:
    return Q(pk=document.pk, status=Status.PROCESSING, processed_by=PROCESS_ID)


def _text_of(document: Document) -> tuple[list, int, int]:
    """The document's passages with their vectors, its pages and its characters."""
    last = 0.0

    def progress(done: int, total: int | None) -> None:
        nonlocal last
        document.pages_done, document.pages = done, total
        now = time.monotonic()
        if now - last < PROGRESS_SECONDS:
            return
        last = now
        touched = Document.objects.filter(_still_mine(document)).update(
            pages_done=done, pages=total, updated_at=timezone.now()
        )
        if not touched:
            raise _Abandoned
        _announce(document)

    with document.file.storage.open(document.file.name, "rb") as handle:
        pages = extract(
            handle, document.kind, max_pages=settings.ASSISTANT_UPLOAD_MAX_PAGES, progress=progress
        )
    passages = chunks_of(pages)
    vectors = _vectors_of(document, [passage.text for passage in passages])
    count = max([page.number for page in pages] + [document.pages or 0, len(pages)])
    return list(zip(passages, vectors, strict=True)), count, sum(len(page.text) for page in pages)


def _vectors_of(document: Document, texts: list[str]) -> list[bytes]:
    """The passages' vectors where an embeddings model is configured, else none (b"").
    EmbeddingError when the model fails: the document fails with it (and can be
    uploaded again), rather than be ready without the vectors its search expects."""
    vectors = [b""] * len(texts)
    if not texts or not embeddings_enabled():
        return vectors
    for start in range(0, len(texts), EMBED_BATCH):
        batch = texts[start : start + EMBED_BATCH]
        vectors[start : start + len(batch)] = embed_texts(batch)
        if not Document.objects.filter(_still_mine(document)).update(updated_at=timezone.now()):
            raise _Abandoned
    return vectors


def _store_ready(document: Document, passages: list, *, pages: int, chars: int) -> Document | None:
    with transaction.atomic():
        if not Document.objects.select_for_update().filter(_still_mine(document)).exists():
            return None
        Chunk.objects.filter(document=document).delete()
        Chunk.objects.bulk_create(
            [
                Chunk(document=document, ordinal=p.ordinal, page=p.page, text=p.text, embedding=vector)
                for p, vector in passages
            ],
            batch_size=CHUNKS_PER_INSERT,
        )
        Document.objects.filter(pk=document.pk).update(
            status=Status.READY,
            pages=pages,
            pages_done=pages,
            chars=chars,
            error_code="",
            error_detail="",
            processed_by="",
            updated_at=timezone.now(),
        )
    return Document.objects.get(pk=document.pk)


def _store_failed(document: Document, code: str, message: str) -> Document | None:
    detail = message[: Document._meta.get_field("error_detail").max_length]
    with transaction.atomic():
        if not Document.objects.select_for_update().filter(_still_mine(document)).exists():
            return None
        Chunk.objects.filter(document=document).delete()
        Document.objects.filter(pk=document.pk).update(
            status=Status.FAILED,
            error_code=code,
            error_detail=detail,
            processed_by="",
            updated_at=timezone.now(),
        )
    return Document.objects.get(pk=document.pk)


def documents_take_over() -> list[Document]:
    """Claim for this process the documents left unread by a process that is gone, queued
    to be read again from the start; returns them.

    Gone, as for answers (leases.heartbeat_and_recover): a process of this host whose pid
    no longer exists (processes.crashed_here) at once; another whose lease lapsed; a
    name without a lease at all (a command, or a row cleaned up) once the document went
    untouched for a lease. Each document is taken by a conditional update, so of several
    processes recovering at once one reads it.
    """
    now = timezone.now()
    cutoff = now - timedelta(seconds=settings.ASSISTANT_LEASE_SECONDS)
    unfinished = Document.objects.filter(status__in=UNFINISHED).exclude(processed_by=PROCESS_ID)
    names = set(unfinished.values_list("processed_by", flat=True).distinct())
    if not names:
        return []
    leases = dict(ServerProcess.objects.filter(pk__in=names).values_list("pk", "heartbeat_at"))
    gone = {name for name in names if crashed_here(name) or (name in leases and leases[name] < cutoff)}
    unknown = names - set(leases) - gone
    candidates = unfinished.filter(
        Q(processed_by__in=gone) | Q(processed_by__in=unknown, updated_at__lt=cutoff)
    )
    taken = []
    for document_id, name in list(candidates.values_list("pk", "processed_by")):
        if Document.objects.filter(pk=document_id, status__in=UNFINISHED, processed_by=name).update(
            status=Status.QUEUED, processed_by=PROCESS_ID, pages_done=0, updated_at=now
        ):
            taken.append(Document.objects.get(pk=document_id))
    return taken


def documents_recover() -> list[uuid.UUID]:
    """Read again, in this process's readers, what `documents_take_over` claims. Run with
    every heartbeat (leases._supervise): at start-up, and whenever another process goes."""
    taken = documents_take_over()
    for document in taken:
        document_queue(document)
    if taken:
        logger.warning("reading %d documents again that a stopped process left unread", len(taken))
    return [document.pk for document in taken]
