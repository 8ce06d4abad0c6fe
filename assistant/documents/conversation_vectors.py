"""Conversations as vectors, for the sidebar search by meaning (assistant/selectors.py),
where an embeddings model is configured.

One vector per conversation, of its title, its questions and, while there is room
(EMBED_INPUT_CHARS), the beginnings of its answers: a search compares the question's
vector with one per conversation, a few MB for thousands of conversations, where one per
message would be tens of MB read at every search (bench/README.md, "Documents").

A vector covers the messages up to `last_message_id` and is of one model: a later
message (an answer, an edit) or another model makes it stale. `conversation_vectors_queue`
has stale vectors computed again on a thread of this process after the transaction
commits: call it where an answer ends. A search queues the user's stale ones too, so a
queue lost in a restart, or the conversations from before a model was configured, catch
up; until then full text finds them.

Registered with the app by assistant/models.py, like the documents' models.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Iterable

from django.conf import settings
from django.db import IntegrityError, connections, models, transaction
from django.db.models import F, OuterRef, Q, Subquery
from django.utils.translation import gettext_lazy as _

from assistant.documents.embeddings import (
    EMBED_BATCH,
    EMBED_INPUT_CHARS,
    EmbeddingError,
    embed_texts,
    embeddings_enabled,
)

logger = logging.getLogger(__name__)

# The beginning of each answer that a conversation's text includes, after its questions.
ANSWER_CHARS = 500
# A search looks for a user's stale vectors at most this often (seconds), and at most
# this many of the most recent conversations at a time.
STALE_CHECK_SECONDS = 60.0
STALE_CHECK_MAX = 2000


class ConversationVector(models.Model):
    """The vector of a conversation's text (conversation_text), from `model`."""

    conversation = models.OneToOneField(
        "assistant.Conversation", primary_key=True, on_delete=models.CASCADE, related_name="vector"
    )
    # The last message its text includes: a later one makes it stale.
    last_message_id = models.BigIntegerField(default=0)
    model = models.CharField(max_length=200)
    # float32 little-endian, normalised (assistant/documents/embeddings.py).
    embedding = models.BinaryField()
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = _("conversation vector")
        verbose_name_plural = _("conversation vectors")

    def __str__(self) -> str:
        return str(self.conversation_id)


def _shown_messages():
    from assistant.models import Message

    return Message.objects.filter(superseded=False).exclude(status=Message.Status.STREAMING)


def conversation_text(title: str, messages: list[tuple[str, str]]) -> str:
    """What a conversation's vector is of: the title, each question, then the beginning of
    each answer while there is room. `messages` are (role, content) in order."""
    parts = [title.strip()] if title.strip() else []
    parts += [content.strip() for role, content in messages if role == "user" and content.strip()]
    answers = [content.strip() for role, content in messages if role != "user" and content.strip()]
    parts += [answer[:ANSWER_CHARS] for answer in answers]
    return "\n\n".join(parts)[:EMBED_INPUT_CHARS]


def conversation_vectors_update(conversation_ids: Iterable[uuid.UUID]) -> int:
    """Compute the vectors of these conversations from their current text and store them;
    the number stored. EmbeddingError when the model service fails (nothing is stored)."""
    from assistant.models import Conversation

    ids = list(dict.fromkeys(conversation_ids))
    if not ids or not embeddings_enabled():
        return 0
    model = settings.ASSISTANT_EMBEDDINGS_MODEL
    titles = dict(Conversation.objects.filter(pk__in=ids).values_list("pk", "title"))
    rows = _shown_messages().filter(conversation_id__in=titles).order_by("conversation_id", "pk")
    messages: dict[uuid.UUID, list[tuple[str, str]]] = {pk: [] for pk in titles}
    last: dict[uuid.UUID, int] = dict.fromkeys(titles, 0)
    for conversation_id, pk, role, content in rows.values_list("conversation_id", "pk", "role", "content"):
        messages[conversation_id].append((role, content))
        last[conversation_id] = pk
    texts = {pk: conversation_text(titles[pk], messages[pk]) for pk in titles}
    texts = {pk: text for pk, text in texts.items() if text}
    if not texts:
        return 0
    vectors = embed_texts(list(texts.values()))
    with transaction.atomic():
        # Only those still there: a conversation deleted meanwhile gets no vector.
        present = set(Conversation.objects.filter(pk__in=texts).values_list("pk", flat=True))
        stored = [
            ConversationVector(conversation_id=pk, last_message_id=last[pk], model=model, embedding=vector)
            for pk, vector in zip(texts, vectors, strict=True)
            if pk in present
        ]
        ConversationVector.objects.bulk_create(
            stored,
            update_conflicts=True,
            unique_fields=["conversation"],
            update_fields=["last_message_id", "model", "embedding", "updated_at"],
        )
    return len(stored)


def stale_conversations(conversations) -> list[uuid.UUID]:
    """Of `conversations` (a queryset), the most recent STALE_CHECK_MAX whose vector is
    missing, of another model, or older than their last message."""
    latest = _shown_messages().filter(conversation=OuterRef("pk")).order_by("-pk").values("pk")[:1]
    stale = (
        conversations.annotate(latest=Subquery(latest))
        .filter(latest__isnull=False)
        .filter(
            Q(vector__isnull=True)
            | ~Q(vector__model=settings.ASSISTANT_EMBEDDINGS_MODEL)
            | Q(vector__last_message_id__lt=F("latest"))
        )
    )
    return list(stale.order_by("-updated_at").values_list("pk", flat=True)[:STALE_CHECK_MAX])


class _Worker:
    """Conversations waiting for their vectors, and one daemon thread computing them,
    EMBED_BATCH at a time, while there are any."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: dict[uuid.UUID, None] = {}
        self._thread: threading.Thread | None = None
        self._checked: dict[int, float] = {}

    def put(self, conversation_ids: Iterable[uuid.UUID]) -> None:
        with self._lock:
            self._pending.update(dict.fromkeys(conversation_ids))
            if self._pending and (self._thread is None or not self._thread.is_alive()):
                self._thread = threading.Thread(target=self._run, name="conversation-vectors", daemon=True)
                self._thread.start()

    def due(self, user_id: int) -> bool:
        """Whether the user's stale vectors are to be looked for now (once a minute)."""
        now = time.monotonic()
        with self._lock:
            if now - self._checked.get(user_id, -STALE_CHECK_SECONDS) < STALE_CHECK_SECONDS:
                return False
            self._checked[user_id] = now
            return True

    def _take(self) -> list[uuid.UUID]:
        with self._lock:
            batch = list(self._pending)[:EMBED_BATCH]
            for pk in batch:
                del self._pending[pk]
            if not batch:
                self._thread = None
            return batch

    def _run(self) -> None:
        try:
            while batch := self._take():
                try:
                    conversation_vectors_update(batch)
                except (EmbeddingError, IntegrityError):
                    # The next search queues them again.
                    logger.warning("conversation vectors not computed", exc_info=True)
                except Exception:
                    logger.exception("conversation vectors failed")
        finally:
            connections.close_all()  # this thread's, before it ends


_worker = _Worker()


def conversation_vectors_queue(conversation_ids: Iterable[uuid.UUID]) -> None:
    """Have these conversations' vectors computed again, on a thread, once the current
    transaction commits (at once outside one). Nothing when embeddings are off."""
    ids = list(conversation_ids)
    if ids and embeddings_enabled():
        transaction.on_commit(lambda: _worker.put(ids))


def conversation_vectors_catch_up(user, conversations) -> None:
    """Queue the user's stale vectors among `conversations`, at most once a minute."""
    if embeddings_enabled() and _worker.due(user.pk):
        conversation_vectors_queue(stale_conversations(conversations))
