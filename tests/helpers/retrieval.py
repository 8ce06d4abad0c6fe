"""Documents with passages, and embeddings from the fake upstream, for the retrieval tests
(tests/test_retrieval.py on SQLite, tests/scaleout/test_retrieval_postgres.py on PostgreSQL).

Documents and chunks are written directly, as the reading of an upload stores them, so a
test of retrieval depends on nothing but the database.
"""

from __future__ import annotations

from django.core.files.base import ContentFile

from assistant import selectors
from assistant.documents.embeddings import embed_texts
from assistant.documents.models import Chunk, Document
from assistant.models import Conversation

EMBEDDINGS_MODEL = "fake-embed"


def use_embeddings(settings, upstream) -> None:
    """Embeddings on, from the fake upstream (no retries, short timeouts)."""
    settings.ASSISTANT_DEMO_MODE = False
    settings.ASSISTANT_EMBEDDINGS_MODEL = EMBEDDINGS_MODEL
    settings.OPENAI_BASE_URL = upstream.url
    settings.OPENAI_API_KEY = "test-key-abc123"
    settings.OPENAI_MAX_RETRIES = 0
    settings.OPENAI_TIMEOUT = 2
    settings.OPENAI_CONNECT_TIMEOUT = 0.5
    selectors._search_vector.cache_clear()  # searches of earlier tests


def make_document(*texts: str, owner=None, collection=None, name="notes.txt", status="ready", vectors=False):
    """A document with a chunk per text (a page each): the user's in a new conversation of
    `owner`, or `collection`'s; with vectors from the embeddings model when asked. Its
    file goes to MEDIA_ROOT."""
    conversation = Conversation.objects.create(owner=owner, model="demo") if owner else None
    document = Document(
        owner=owner,
        conversation=conversation,
        collection=collection,
        name=name,
        kind=Document.Kind.TXT,
        size=len("".join(texts)),
        sha256="0" * 64,
        status=status,
        file=ContentFile("\n\n".join(texts).encode(), name=name),
    )
    document.save()
    embedded = embed_texts(list(texts)) if vectors else [b""] * len(texts)
    Chunk.objects.bulk_create(
        Chunk(document=document, ordinal=n, page=n + 1, text=text, embedding=vector)
        for n, (text, vector) in enumerate(zip(texts, embedded, strict=True))
    )
    return document


def texts(hits) -> list[str]:
    return [hit.text for hit in hits]
