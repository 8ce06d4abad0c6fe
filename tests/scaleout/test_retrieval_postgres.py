"""Retrieval on PostgreSQL: its full-text search over the german and english configurations
(stemming, compounds by prefix, case, ranking, scope, the question never query syntax),
hybrid retrieval with the fake upstream's embeddings, and the search by meaning over one's
own conversations. The same on SQLite: tests/test_retrieval.py."""

from __future__ import annotations

import pytest
from django.db import connection

from assistant.documents.conversation_vectors import conversation_vectors_update
from assistant.documents.models import Chunk, Collection, Document
from assistant.documents.retrieval import retrieve
from assistant.models import Conversation, Message
from assistant.selectors import conversations_list
from tests.helpers.retrieval import make_document, texts, use_embeddings


@pytest.fixture(autouse=True)
def _media(settings, tmp_path):
    settings.MEDIA_ROOT = str(tmp_path / "media")


@pytest.fixture
def embeddings(settings, upstream):
    use_embeddings(settings, upstream)
    return upstream


def found(question: str, *, documents=(), collections=(), limit=10) -> list[str]:
    return texts(
        retrieve(question, documents=[d.pk for d in documents], collections=collections, limit=limit)
    )


def test_the_database_is_postgresql(db):
    assert connection.vendor == "postgresql"


def test_fulltext_stems_german_and_english(alice):
    document = make_document(
        "Alle Verträge liegen im Archiv.",
        "The contracts are filed in the archive.",
        "Die Kantine öffnet um zwölf.",
        owner=alice,
    )

    assert found("Vertrag", documents=[document]) == ["Alle Verträge liegen im Archiv."]
    assert found("den Verträgen", documents=[document]) == ["Alle Verträge liegen im Archiv."]
    assert found("contract", documents=[document]) == ["The contracts are filed in the archive."]


def test_fulltext_finds_compounds_by_their_beginning_and_folds_case(alice):
    document = make_document("Der Urlaubsantrag geht an den Chef.", "Die ÜBERSICHT der Kosten.", owner=alice)

    assert found("Urlaub", documents=[document]) == ["Der Urlaubsantrag geht an den Chef."]
    assert found("übersicht", documents=[document]) == ["Die ÜBERSICHT der Kosten."]


def test_fulltext_ranks_passages_with_more_of_the_words_first(alice):
    document = make_document(
        "Reisekosten werden erstattet.",
        "Die Kantine öffnet um zwölf.",
        "Reisekosten für Bahnfahrten werden nach der Reise erstattet, Hotels nach Beleg.",
        "Hotels buchen Sie selbst.",
        owner=alice,
    )

    hits = retrieve("Reisekosten Bahnfahrten Hotels", documents=[document.pk], collections=[], limit=10)

    assert texts(hits)[0] == "Reisekosten für Bahnfahrten werden nach der Reise erstattet, Hotels nach Beleg."
    assert set(texts(hits)[1:]) == {"Reisekosten werden erstattet.", "Hotels buchen Sie selbst."}
    assert [hit.score for hit in hits] == sorted((hit.score for hit in hits), reverse=True)
    assert (hits[0].document_id, hits[0].document_name, hits[0].page) == (document.pk, "notes.txt", 3)


def test_fulltext_keeps_to_the_documents_and_collections_in_scope(alice, bob):
    mine = make_document("Mein Vertrag endet im Mai.", owner=alice)
    bobs = make_document("Bobs Vertrag ist geheim.", owner=bob)
    handbook = Collection.objects.create(slug="handbook", name="Handbuch")
    secret = Collection.objects.create(slug="secret", name="Geheim")
    make_document("Der Vertrag im Handbuch.", collection=handbook)
    make_document("Der geheime Vertrag.", collection=secret)
    make_document("Ein Vertrag, noch nicht gelesen.", collection=handbook, status=Document.Status.PROCESSING)

    assert sorted(found("Vertrag", documents=[mine], collections=[handbook.pk])) == [
        "Der Vertrag im Handbuch.",
        "Mein Vertrag endet im Mai.",
    ]
    assert found("Vertrag", documents=[bobs]) == ["Bobs Vertrag ist geheim."]
    assert found("Vertrag", collections=[secret.pk]) == ["Der geheime Vertrag."]
    assert found("Vertrag") == []


@pytest.mark.parametrize(
    "question",
    ["Vertrag'", "Vertrag & !Mai", "Vertrag:*", "Vertrag | Kantine <-> x", "(Vertrag", "Vertrag\\",
     "Vertrag'); DROP TABLE assistant_chunk; --"],
)  # fmt: skip
def test_fulltext_syntax_in_the_question_is_only_text(alice, question):
    document = make_document("Der Vertrag endet im Mai.", "Die Kantine öffnet.", owner=alice)

    assert "Der Vertrag endet im Mai." in found(question, documents=[document])
    assert Chunk.objects.count() == 2


PASSAGES = (
    "Der Urlaubsanspruch beträgt 30 Arbeitstage im Kalenderjahr.",
    "Die Kantine öffnet um zwölf und schließt um zwei.",
    "Reisekosten werden nach der Reise gegen Beleg erstattet.",
    "Das Passwort muss alle 90 Tage geändert werden.",
)


def test_hybrid_finds_a_passage_that_shares_no_word_with_the_question(embeddings, alice):
    document = make_document(*PASSAGES, owner=alice, vectors=True)

    assert found("Wie viele Ferientage habe ich?", documents=[document])[0] == PASSAGES[0]


def test_search_by_meaning_over_own_conversations(embeddings, alice, bob):
    leave = Conversation.objects.create(owner=alice, title="Antrag stellen", model="demo")
    Message.objects.create(conversation=leave, role="user", content="Wie beantrage ich meinen Urlaub?")
    lunch = Conversation.objects.create(owner=alice, title="Mittag", model="demo")
    Message.objects.create(conversation=lunch, role="user", content="Was gibt es in der Kantine?")
    bobs = Conversation.objects.create(owner=bob, title="Bobs Urlaub", model="demo")
    Message.objects.create(conversation=bobs, role="user", content="Wie viele Urlaubstage habe ich noch?")
    conversation_vectors_update([leave.pk, lunch.pk, bobs.pk])

    page = conversations_list(user=alice, query="Ferientage", archived=None)

    assert [c.title for c in page.conversations] == ["Antrag stellen"]
    assert page.snippets[leave.pk] == [{"text": "Wie beantrage ich meinen Urlaub?", "match": False}]
