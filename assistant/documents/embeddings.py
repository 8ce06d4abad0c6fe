"""Texts as vectors, where an embeddings model is configured (ASSISTANT_EMBEDDINGS_MODEL),
for the hybrid retrieval of passages and the search of one's own conversations.

A vector is stored as float32 little-endian bytes, normalised to length 1, so that the
cosine of two is their dot product. Texts go to the upstream's `/v1/embeddings` through
the provider (assistant/providers/openai_compatible.py), EMBED_BATCH at a time; any
failure is an `EmbeddingError`, which a document's reading stores as `embedding_failed`
and a search answers by falling back to full text. numpy multiplies the vectors: about a
hundred times faster than Python's own arithmetic (bench/README.md, "Documents").
"""

from __future__ import annotations

import threading

import numpy as np
from django.conf import settings
from django.utils.translation import gettext as _

from assistant.providers.errors import ProviderError
from assistant.providers.openai_compatible import OpenAIEmbeddings

# Texts per request to the model service.
EMBED_BATCH = 64
# A text's characters sent at most: about 2,000 to 4,000 tokens, well within the input
# limit of every common embeddings model (8,192 tokens for OpenAI's).
EMBED_INPUT_CHARS = 8000
# A search waits this long at most for its question's vector, then searches without it.
QUERY_TIMEOUT_SECONDS = 10.0
FLOAT32 = np.dtype("<f4")


class EmbeddingError(Exception):
    """The embeddings model gave no usable vectors: `code` and a user-facing `message`."""

    code = "embedding_failed"

    def __init__(self, message: str, *, retryable: bool = True) -> None:
        super().__init__(message)
        self.message = message
        self.retryable = retryable


def embeddings_enabled() -> bool:
    """Whether texts get vectors here: a model is configured and the upstream is real."""
    return bool(settings.ASSISTANT_EMBEDDINGS_MODEL) and not settings.ASSISTANT_DEMO_MODE


_lock = threading.Lock()
# The client and the settings it was built from: one at a time, the last one closed when
# the settings change (tests change them; a server's stay).
_built: tuple[tuple, OpenAIEmbeddings] | None = None


def embeddings_client() -> OpenAIEmbeddings:
    """The client for the configured upstream, built on first use and shared by threads."""
    global _built
    key = (
        settings.OPENAI_API_KEY,
        settings.OPENAI_BASE_URL,
        settings.OPENAI_MAX_RETRIES,
        float(settings.OPENAI_TIMEOUT),
        float(settings.OPENAI_CONNECT_TIMEOUT),
    )
    with _lock:
        if _built is None or _built[0] != key:
            if _built is not None:
                _built[1].close()
            api_key, base_url, max_retries, timeout, connect = key
            client = OpenAIEmbeddings(
                api_key=api_key, base_url=base_url, max_retries=max_retries, timeout=timeout, connect=connect
            )
            _built = (key, client)
        return _built[1]


def normalised(vector: bytes) -> bytes:
    """`vector` (float32 LE) scaled to length 1; EmbeddingError for one that cannot be
    (all zeros, not finite)."""
    values = np.frombuffer(vector, dtype=FLOAT32).astype(np.float64)
    norm = float(np.linalg.norm(values)) if values.size else 0.0
    if not np.isfinite(values).all() or not np.isfinite(norm) or norm == 0.0:
        raise EmbeddingError(_("The embeddings model returned an unusable vector."))
    return (values / norm).astype(FLOAT32).tobytes()


def _input(text: str) -> str:
    # The API refuses an empty input; a text is cut where the model would refuse it.
    return text[:EMBED_INPUT_CHARS] if text.strip() else " "


def embed_texts(texts: list[str], *, timeout: float | None = None) -> list[bytes]:
    """Each text's vector, in order: float32 LE bytes of length 1, EMBED_BATCH texts per
    request. EmbeddingError when embeddings are off or the model service fails."""
    if not texts:
        return []
    if not embeddings_enabled():
        raise EmbeddingError(_("No embeddings model is configured."), retryable=False)
    client, model = embeddings_client(), settings.ASSISTANT_EMBEDDINGS_MODEL
    vectors: list[bytes] = []
    for start in range(0, len(texts), EMBED_BATCH):
        batch = [_input(text) for text in texts[start : start + EMBED_BATCH]]
        try:
            raw = client.embed(batch, model=model, timeout=timeout)
        except ProviderError as error:
            raise EmbeddingError(
                _("The embeddings model failed: %(detail)s") % {"detail": error.detail},
                retryable=error.retryable,
            ) from None
        vectors += [normalised(vector) for vector in raw]
    if len({len(vector) for vector in vectors}) > 1:
        raise EmbeddingError(_("The embeddings model returned an unusable vector."))
    return vectors


def embed_query(text: str) -> bytes:
    """The vector of a question or a search, waiting QUERY_TIMEOUT_SECONDS at most."""
    return embed_texts([text], timeout=min(QUERY_TIMEOUT_SECONDS, float(settings.OPENAI_TIMEOUT)))[0]


def vectors_matrix(vectors: list[bytes]) -> np.ndarray:
    """Vectors of one length as the rows of a float32 matrix (one copy of their bytes)."""
    if not vectors:
        return np.zeros((0, 0), dtype=FLOAT32)
    return np.frombuffer(b"".join(vectors), dtype=FLOAT32).reshape(len(vectors), -1)


def similarities(query: bytes, vectors: list[bytes] | np.ndarray) -> np.ndarray:
    """The cosine of `query` with each of `vectors` (all normalised, of the query's length;
    a list of them or the rows of a matrix)."""
    matrix = vectors if isinstance(vectors, np.ndarray) else vectors_matrix(vectors)
    if not len(matrix):
        return np.zeros(0, dtype=np.float32)
    # einsum's own loop, not BLAS (`@`): no thread pool woken per request, whose threads
    # on a busy server made the slowest searches several times slower (bench/README.md).
    return np.einsum("ij,j->i", matrix, np.frombuffer(query, dtype=FLOAT32))


def cosine(a: bytes, b: bytes) -> float:
    """The cosine of two vectors (float32 LE); 0.0 when their lengths differ or one is zero."""
    if len(a) != len(b) or not a:
        return 0.0
    x, y = np.frombuffer(a, dtype=FLOAT32), np.frombuffer(b, dtype=FLOAT32)
    norms = float(np.linalg.norm(x) * np.linalg.norm(y))
    return float(x @ y) / norms if norms else 0.0
