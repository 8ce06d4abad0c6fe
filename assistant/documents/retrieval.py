"""The passages of the documents in scope that answer a question: full text, and where an
embeddings model is configured, full text and vectors together (hybrid).

Full text (assistant/documents/search.py) gives the best CANDIDATES passages sharing the
question's words. With embeddings, the question's vector ranks passages by cosine too:
every passage in scope when there are at most SCAN_CHUNKS_MAX of them (a question that
shares no word with its passage still finds it), else the full-text candidates alone
(re-ranked). The two rankings are fused by reciprocal rank fusion (RRF): a passage's
score is the sum over the rankings it is in of 1 / (RRF_K + its rank there).

Vectors are the chunks' own (Chunk.embedding, float32), multiplied with numpy: no
database extension, the same on SQLite and PostgreSQL. A ready document's passages do
not change (reading it again changes its `updated_at`), so the vectors of the documents
of a small scope stay in memory (VECTOR_CACHE_BYTES, least recently used out): the next
question about the same documents reads none. Why, and what it costs, in
bench/README.md ("Documents"). Should the model service fail, the question is answered
from full text alone.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from django.db import connection
from django.db.models import Q

from assistant.documents.embeddings import (
    FLOAT32,
    EmbeddingError,
    embed_query,
    embeddings_enabled,
    similarities,
    vectors_matrix,
)
from assistant.documents.models import Chunk, Document
from assistant.documents.search import document_key, fulltext, scope_sql

logger = logging.getLogger(__name__)

# Full-text passages considered for fusion, and vector passages likewise.
CANDIDATES = 50
# A scope of at most this many passages has every vector compared with the question's
# (about 18 MB of 1,536-dimension vectors read, a few ms of numpy); a larger one only
# its full-text candidates'.
SCAN_CHUNKS_MAX = 3000
# RRF's constant: the usual 60, which keeps the first ranks of both lists close.
RRF_K = 60
# The vectors of small scopes' documents kept in memory, per process, at most.
VECTOR_CACHE_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class Hit:
    """A passage found for a question. `score` is larger for a better one: the fused RRF
    score in hybrid retrieval, BM25 (SQLite) or ts_rank_cd (PostgreSQL) in full text."""

    chunk_id: int
    document_id: uuid.UUID
    document_name: str
    page: int | None
    text: str
    score: float


def retrieve(
    question: str, *, documents: Iterable[uuid.UUID], collections: Iterable[int], limit: int
) -> list[Hit]:
    """The `limit` passages of `documents` (ready, the user's) and of `collections`
    (already checked as readable) that best answer `question`, best first."""
    documents, collections = list(documents), list(collections)
    if limit <= 0 or not (documents or collections) or not question.strip():
        return []
    ranking = fulltext(question, documents=documents, collections=collections, limit=max(CANDIDATES, limit))
    if embeddings_enabled():
        try:
            query = embed_query(question)
        except EmbeddingError:
            logger.warning("retrieval without vectors: the embeddings model failed")
        else:
            nearest = vector_ranking(query, documents, collections, candidates=[pk for pk, _ in ranking])
            ranking = fused([pk for pk, _ in ranking], [pk for pk, _ in nearest])
    return _hits(ranking[:limit])


def fused(*rankings: list[int]) -> list[tuple[int, float]]:
    """Reciprocal rank fusion of rankings of chunk ids (best first), best first."""
    scores: dict[int, float] = {}
    for ranking in rankings:
        for rank, pk in enumerate(ranking, start=1):
            scores[pk] = scores.get(pk, 0.0) + 1.0 / (RRF_K + rank)
    return sorted(scores.items(), key=lambda item: (-item[1], item[0]))


def _scope_count(documents: list[uuid.UUID], collections: list[int], at_most: int) -> int:
    """How many passages are in scope, counting no further than `at_most`: in the index of
    chunks by document, never reading a chunk (its text and vector)."""
    scope, params = scope_sql(documents, collections, document_id="d.id")
    chunk, document = Chunk._meta.db_table, Document._meta.db_table
    sql = f"""
        SELECT COUNT(*) FROM (
            SELECT 1 FROM {chunk} c WHERE c.document_id IN (SELECT d.id FROM {document} d WHERE {scope})
            LIMIT %s
        ) counted
    """  # noqa: S608 -- table names from the models; every value is a parameter
    with connection.cursor() as cursor:
        cursor.execute(sql, [*params, at_most])
        return cursor.fetchone()[0]


def _vectors(size: int, chunk_ids: list[int]) -> list[tuple[int, bytes]]:
    """(id, vector) of the passages `chunk_ids` (full-text candidates, in scope already)
    with a vector of `size` bytes (of the model the question's is from); by their ids, so
    the database reads those rows alone, however large the scope."""
    chunk = Chunk._meta.db_table
    sql = f"""
        SELECT id, embedding FROM {chunk}
        WHERE id IN ({", ".join(["%s"] * len(chunk_ids))}) AND LENGTH(embedding) = %s
    """  # noqa: S608 -- the table name from the model; every value is a parameter
    with connection.cursor() as cursor:
        cursor.execute(sql, [*chunk_ids, size])
        return [(pk, bytes(vector)) for pk, vector in cursor.fetchall()]


class _VectorCache:
    """The vectors of ready documents, by (document, its updated_at, vector size): chunk
    ids and their matrix; the least recently used go beyond `limit` bytes."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._lock = threading.Lock()
        self._entries: OrderedDict[tuple, tuple[np.ndarray, np.ndarray]] = OrderedDict()
        self._bytes = 0

    def get(self, key: tuple) -> tuple[np.ndarray, np.ndarray] | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                self._entries.move_to_end(key)
            return entry

    def put(self, key: tuple, entry: tuple[np.ndarray, np.ndarray]) -> None:
        with self._lock:
            if key in self._entries:
                return
            self._entries[key] = entry
            self._bytes += entry[1].nbytes
            while self._bytes > self.limit and len(self._entries) > 1:
                _, (_, matrix) = self._entries.popitem(last=False)
                self._bytes -= matrix.nbytes

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._bytes = 0


_cache = _VectorCache(VECTOR_CACHE_BYTES)


def _document_vectors(document_id: uuid.UUID, updated_at, size: int) -> tuple[np.ndarray, np.ndarray]:
    """A ready document's chunk ids and vectors of `size` bytes, from memory when it was
    read before as it is now."""
    key = (document_id, updated_at, size)
    entry = _cache.get(key)
    if entry is None:
        chunk = Chunk._meta.db_table
        sql = f"SELECT id, embedding FROM {chunk} WHERE document_id = %s AND LENGTH(embedding) = %s"  # noqa: S608
        with connection.cursor() as cursor:
            cursor.execute(sql, [document_key(document_id), size])
            rows = cursor.fetchall()
        ids = np.array([pk for pk, _ in rows], dtype=np.int64)
        vectors = [bytes(vector) for _, vector in rows]
        matrix = vectors_matrix(vectors) if vectors else np.zeros((0, size // 4), FLOAT32)
        entry = (ids, matrix)
        _cache.put(key, entry)
    return entry


def _scope_ready_documents(
    documents: list[uuid.UUID], collections: list[int]
) -> list[tuple[uuid.UUID, object]]:
    """(id, updated_at) of the ready documents in scope."""
    in_scope = Q(pk__in=documents) | Q(collection_id__in=collections)
    ready = Document.objects.filter(in_scope, status=Document.Status.READY)
    return list(ready.values_list("pk", "updated_at"))


def vector_ranking(
    query: bytes, documents: list[uuid.UUID], collections: list[int], *, candidates: list[int]
) -> list[tuple[int, float]]:
    """The passages nearest to `query`, best first, as (chunk id, cosine): among all in
    scope when there are at most SCAN_CHUNKS_MAX, else among `candidates`."""
    if _scope_count(documents, collections, SCAN_CHUNKS_MAX + 1) <= SCAN_CHUNKS_MAX:
        ready = _scope_ready_documents(documents, collections)
        parts = [_document_vectors(pk, updated_at, len(query)) for pk, updated_at in ready]
        parts = [(ids, matrix) for ids, matrix in parts if len(ids)]
        if not parts:
            return []
        ids = np.concatenate([ids for ids, _ in parts])
        scores = np.concatenate([similarities(query, matrix) for _, matrix in parts])
    elif candidates:
        rows = _vectors(len(query), candidates)
        if not rows:
            return []
        ids = np.array([pk for pk, _ in rows], dtype=np.int64)
        scores = similarities(query, [vector for _, vector in rows])
    else:
        return []
    best = np.argsort(-scores, kind="stable")[:CANDIDATES]
    return [(int(ids[i]), float(scores[i])) for i in best]


def _hits(ranking: list[tuple[int, float]]) -> list[Hit]:
    """The passages of `ranking` with their documents' names, in its order."""
    if not ranking:
        return []
    rows = Chunk.objects.filter(pk__in=[pk for pk, _ in ranking]).values_list(
        "pk", "document_id", "document__name", "page", "text"
    )
    found = {row[0]: row for row in rows}
    return [
        Hit(pk, found[pk][1], found[pk][2], found[pk][3], found[pk][4], score)
        for pk, score in ranking
        if pk in found
    ]
