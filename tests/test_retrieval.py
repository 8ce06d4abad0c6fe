"""Retrieval of passages: full text on SQLite (umlauts, inflections, ranking, scope, query
syntax), vectors through the fake upstream's /v1/embeddings, and hybrid retrieval that finds
a passage sharing no word with the question. PostgreSQL: tests/scaleout/test_retrieval_postgres.py."""

from __future__ import annotations

import base64
import contextlib
import math
import struct
from collections.abc import Iterator

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from assistant.documents import retrieval, search
from assistant.documents.conversation_vectors import (
    ANSWER_CHARS,
    ConversationVector,
    conversation_text,
    conversation_vectors_catch_up,
    conversation_vectors_queue,
    conversation_vectors_update,
    stale_conversations,
)
from assistant.documents.embeddings import (
    EMBED_BATCH,
    EMBED_INPUT_CHARS,
    EmbeddingError,
    cosine,
    embed_query,
    embed_texts,
    embeddings_enabled,
)
from assistant.documents.models import Chunk, Collection, Document
from assistant.documents.retrieval import retrieve
from assistant.models import Conversation, Message
from assistant.providers.errors import ProviderError
from assistant.providers.openai_compatible import OpenAIEmbeddings
from assistant.selectors import conversations_list
from tests.helpers.live import free_port, live_env, session_client, start_daphne, stop_daphne, wait_until
from tests.helpers.retrieval import EMBEDDINGS_MODEL, make_document, texts, use_embeddings
from tests.helpers.upstream import fake_embedding


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


# --- the question as a full-text query -----------------------------------------------------------


def test_fts5_expression_quotes_every_word_and_keeps_no_syntax():
    expression = search.fts5_expression('Kündigung "frist" OR NEAR(a b) x* -y col:z ^w (((')

    assert expression == '"kündigung"* OR "frist"* OR "near"* OR "b" OR "x" OR "y" OR "col" OR "z" OR "w"'


def test_query_words_drop_function_words_unless_there_are_only_those():
    assert search.query_words("Was ist die Übersicht der Verträge?") == ["übersicht", "verträge"]
    assert search.query_words("Die und das") == ["die", "und", "das"]
    assert search.query_words("  ?! ") == []


def test_query_words_are_bounded():
    assert len(search.query_words(" ".join(f"wort{n}" for n in range(100)))) == search.QUERY_WORDS_MAX


def test_stem_keeps_four_letters():
    assert search.stem("verträgen") == "verträg"
    assert search.stem("policies") == "polic"
    assert search.stem("haus") == "haus"


# --- full text on SQLite ----------------------------------------------------------------------


def test_fulltext_folds_umlauts_and_case(alice):
    document = make_document(
        "Die Übersicht der Kosten", "Eine ubersicht ohne Umlaut", "Nichts davon", owner=alice
    )

    assert sorted(found("übersicht", documents=[document])) == [
        "Die Übersicht der Kosten",
        "Eine ubersicht ohne Umlaut",
    ]
    assert sorted(found("UBERSICHT", documents=[document])) == [
        "Die Übersicht der Kosten",
        "Eine ubersicht ohne Umlaut",
    ]


def test_fulltext_finds_inflections_and_compounds(alice):
    document = make_document(
        "Der Urlaubsantrag geht an die Personalabteilung.",
        "Alle Verträge liegen im Archiv.",
        "Die Kantine öffnet um zwölf.",
        owner=alice,
    )

    assert found("Urlaub", documents=[document]) == ["Der Urlaubsantrag geht an die Personalabteilung."]
    assert found("Vertrag", documents=[document]) == ["Alle Verträge liegen im Archiv."]
    assert found("den Verträgen", documents=[document]) == ["Alle Verträge liegen im Archiv."]


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
    assert hits[0].document_id == document.pk
    assert hits[0].document_name == "notes.txt"
    assert hits[0].page == 3


def test_fulltext_keeps_to_the_documents_and_collections_in_scope(alice, bob):
    mine = make_document("Mein Vertrag endet im Mai.", owner=alice)
    other_conversation = make_document("Ein anderer Vertrag von mir.", owner=alice)
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
    assert found("Vertrag", documents=[other_conversation]) == ["Ein anderer Vertrag von mir."]
    assert found("Vertrag") == []


def test_fulltext_leaves_out_documents_not_ready(alice):
    failed = make_document("Vertrag", owner=alice, status=Document.Status.FAILED)
    queued = make_document("Vertrag", owner=alice, status=Document.Status.QUEUED)

    assert found("Vertrag", documents=[failed, queued]) == []


@pytest.mark.parametrize(
    "question",
    ['Vertrag "', '"Vertrag""', "Vertrag*", "NEAR(Vertrag Mai)", "Vertrag AND", "OR Vertrag", "-Vertrag",
     "text:Vertrag", "^Vertrag", "(((Vertrag", "Vertrag'); DROP TABLE assistant_chunk; --", "Vertrag\x00",
     "{Vertrag}"],
)  # fmt: skip
def test_fulltext_syntax_in_the_question_is_only_text(alice, question):
    document = make_document("Der Vertrag endet im Mai.", "Die Kantine öffnet.", owner=alice)

    assert found(question, documents=[document]) == ["Der Vertrag endet im Mai."]
    assert Chunk.objects.count() == 2


@pytest.mark.parametrize("question", ["", "   ", "?!", "*", '"*"'])
def test_fulltext_without_words_finds_nothing(alice, question):
    document = make_document("Der Vertrag endet im Mai.", owner=alice)

    assert found(question, documents=[document]) == []


def test_fulltext_limit(alice):
    document = make_document(*[f"Vertrag Nummer {n}" for n in range(20)], owner=alice)

    assert len(found("Vertrag", documents=[document], limit=6)) == 6
    assert found("Vertrag", documents=[document], limit=0) == []


def test_fulltext_leaves_out_the_commonest_words_over_the_budget(alice, monkeypatch):
    document = make_document(
        *[f"Der Vertrag Nummer {n} regelt Arbeitszeit." for n in range(8)],
        "Der Vertrag regelt die Rufbereitschaft.",
        "Rufbereitschaft ohne das andere Wort.",
        owner=alice,
    )
    monkeypatch.setattr(search, "MATCH_BUDGET", 4)

    # "vertrag" is in nine passages: left out; "rufbereitschaft" (two) decides.
    assert sorted(found("Vertrag Rufbereitschaft", documents=[document])) == [
        "Der Vertrag regelt die Rufbereitschaft.",
        "Rufbereitschaft ohne das andere Wort.",
    ]
    # Both words common: the passages with both of them.
    assert found("Vertrag Arbeitszeit regelt", documents=[document], limit=20) == [
        f"Der Vertrag Nummer {n} regelt Arbeitszeit." for n in range(8)
    ]


# --- embeddings -------------------------------------------------------------------------------


def test_embeddings_are_off_without_a_model_or_in_demo_mode(settings, embeddings):
    assert embeddings_enabled()
    settings.ASSISTANT_DEMO_MODE = True
    assert not embeddings_enabled()
    settings.ASSISTANT_DEMO_MODE = False
    settings.ASSISTANT_EMBEDDINGS_MODEL = ""
    assert not embeddings_enabled()
    with pytest.raises(EmbeddingError) as raised:
        embed_texts(["Text"])
    assert raised.value.code == "embedding_failed"
    assert embeddings.requests == []


def test_embed_texts_sends_batches_and_returns_unit_float32_vectors(embeddings):
    given = [f"Text Nummer {n}" for n in range(EMBED_BATCH + 6)] + [""]

    vectors = embed_texts(given)

    assert len(vectors) == len(given)
    assert {len(vector) for vector in vectors} == {4 * 256}
    for vector in vectors:
        values = struct.unpack(f"<{len(vector) // 4}f", vector)
        assert math.isclose(math.fsum(x * x for x in values), 1.0, rel_tol=1e-5)
    bodies = [request["body"] for request in embeddings.requests]
    assert [request["path"] for request in embeddings.requests] == ["/v1/embeddings"] * 2
    assert [len(body["input"]) for body in bodies] == [EMBED_BATCH, 7]
    assert {body["model"] for body in bodies} == {EMBEDDINGS_MODEL}
    assert bodies[1]["input"][-1] == " "  # the API refuses an empty input
    assert vectors[0] == embed_texts(["Text Nummer 0"])[0]  # deterministic, in order


def test_embed_query_rewards_related_text(embeddings):
    question = embed_query("Wie viele Ferientage habe ich?")
    related, unrelated = embed_texts(
        ["Der Urlaubsanspruch beträgt 30 Arbeitstage.", "Die Kantine öffnet um zwölf."]
    )

    assert cosine(question, related) > 0.2 > cosine(question, unrelated)
    assert cosine(question, question) == pytest.approx(1.0)
    assert cosine(question, b"") == 0.0


@pytest.mark.parametrize(
    ("behaviour", "retryable"),
    [({"status": 500}, True), ({"status": 401}, False), ({"status": 404}, False), ({"status": 429}, True)],
)
def test_embed_texts_raises_embedding_failed_on_upstream_errors(embeddings, behaviour, retryable):
    embeddings.set(**behaviour)

    with pytest.raises(EmbeddingError) as raised:
        embed_texts(["Text"])

    assert raised.value.code == "embedding_failed"
    assert raised.value.retryable is retryable
    assert raised.value.message


def _base64(*values: float) -> str:
    return base64.b64encode(struct.pack(f"<{len(values)}f", *values)).decode()


@pytest.mark.parametrize(
    "body",
    [
        "not json",
        {"object": "list", "data": []},
        {"data": [{"index": 0, "embedding": _base64(1, 0)}, {"index": 1, "embedding": _base64(1, 0)}]},
        {"data": [{"index": 3, "embedding": _base64(1, 0)}]},
        {"data": [{"index": 0, "embedding": "%%% not base64"}]},
        {"data": [{"index": 0, "embedding": base64.b64encode(b"abc").decode()}]},
        {"data": [{"index": 0, "embedding": _base64(0, 0, 0)}]},
        {"data": [{"index": 0, "embedding": _base64(float("nan"), 1)}]},
        {"data": [{"index": 0, "embedding": ["x", 1]}]},
        {"data": [{"index": 0, "embedding": [1e300, 1]}]},
        {"data": [{"index": 0, "embedding": None}]},
    ],
)
def test_embed_texts_refuses_unusable_answers(embeddings, body):
    embeddings.set(embeddings=body)

    with pytest.raises(EmbeddingError) as raised:
        embed_texts(["Text"])

    assert raised.value.code == "embedding_failed"


def test_embed_texts_takes_vectors_as_floats_too(embeddings):
    embeddings.set(embeddings={"data": [{"index": 0, "embedding": [3.0, 4.0]}]})

    (vector,) = embed_texts(["Text"])

    assert struct.unpack("<2f", vector) == pytest.approx((0.6, 0.8))


# --- hybrid retrieval -------------------------------------------------------------------------

PASSAGES = (
    "Der Urlaubsanspruch beträgt 30 Arbeitstage im Kalenderjahr.",
    "Die Kantine öffnet um zwölf und schließt um zwei.",
    "Reisekosten werden nach der Reise gegen Beleg erstattet.",
    "Das Passwort muss alle 90 Tage geändert werden.",
    "Die Kündigungsfrist beträgt drei Monate zum Quartalsende.",
)
QUESTION = "Wie viele Ferientage habe ich?"  # no word in common with the first passage


def test_hybrid_finds_a_passage_that_shares_no_word_with_the_question(embeddings, alice):
    document = make_document(*PASSAGES, owner=alice, vectors=True)

    hits = retrieve(QUESTION, documents=[document.pk], collections=[], limit=3)

    assert texts(hits)[0] == PASSAGES[0]
    assert [hit.score for hit in hits] == sorted((hit.score for hit in hits), reverse=True)
    assert embeddings.requests[-1]["body"]["input"] == [QUESTION]


def test_full_text_alone_does_not_find_it(settings, embeddings, alice):
    document = make_document(*PASSAGES, owner=alice, vectors=True)
    settings.ASSISTANT_EMBEDDINGS_MODEL = ""

    assert found(QUESTION, documents=[document]) == []


def test_hybrid_fuses_full_text_and_vectors(embeddings, alice):
    document = make_document(*PASSAGES, owner=alice, vectors=True)

    hits = retrieve("Kündigungsfrist Passwort", documents=[document.pk], collections=[], limit=5)

    assert set(texts(hits)[:2]) == {PASSAGES[3], PASSAGES[4]}


def test_hybrid_keeps_to_the_scope(embeddings, alice, bob):
    mine = make_document(*PASSAGES[1:], owner=alice, vectors=True)
    make_document(PASSAGES[0], owner=bob, vectors=True)
    handbook = Collection.objects.create(slug="handbook", name="Handbuch")
    make_document(PASSAGES[0], collection=handbook, vectors=True)

    assert PASSAGES[0] not in found(QUESTION, documents=[mine])
    assert found(QUESTION, documents=[mine], collections=[handbook.pk])[0] == PASSAGES[0]


def test_hybrid_over_a_large_scope_reranks_the_full_text_candidates(embeddings, alice, monkeypatch):
    document = make_document(*PASSAGES, owner=alice, vectors=True)
    monkeypatch.setattr(retrieval, "SCAN_CHUNKS_MAX", 2)

    assert found(QUESTION, documents=[document]) == []
    assert set(found("Urlaubsanspruch Kantine", documents=[document])) == {PASSAGES[0], PASSAGES[1]}


def test_hybrid_ignores_vectors_of_another_model(embeddings, alice):
    document = make_document(*PASSAGES, owner=alice, vectors=True)
    Chunk.objects.filter(document=document).update(embedding=struct.pack("<3f", 1, 0, 0))

    assert found(QUESTION, documents=[document]) == []


def test_hybrid_reads_a_documents_vectors_once_while_it_is_unchanged(
    embeddings, alice, django_assert_num_queries
):
    document = make_document(*PASSAGES, owner=alice, vectors=True)
    retrieval._cache.clear()
    with CaptureQueriesContext(connection) as first:
        found(QUESTION, documents=[document])

    with django_assert_num_queries(len(first) - 1):
        assert found(QUESTION, documents=[document])[0] == PASSAGES[0]

    # Read again (as after a restart): its passages may differ, its vectors are read anew.
    Chunk.objects.filter(document=document).update(embedding=struct.pack("<3f", 1, 0, 0))
    Document.objects.filter(pk=document.pk).update(updated_at=timezone.now())
    assert found(QUESTION, documents=[document]) == []


def test_hybrid_falls_back_to_full_text_when_the_model_fails(embeddings, alice):
    document = make_document(*PASSAGES, owner=alice, vectors=True)
    embeddings.set(status=503)

    assert found(QUESTION, documents=[document]) == []
    assert found("Passwort", documents=[document]) == [PASSAGES[3]]


# --- the provider's embed() --------------------------------------------------------------------


@contextlib.contextmanager
def embeddings_at(url: str) -> Iterator[OpenAIEmbeddings]:
    client = OpenAIEmbeddings(api_key="test-key-abc123", base_url=url, max_retries=0, timeout=2, connect=0.5)
    try:
        yield client
    finally:
        client.close()


def test_provider_embed_returns_the_vectors_in_order(upstream):
    with embeddings_at(upstream.url) as client:
        vectors = client.embed(["eins", "zwei"], model=EMBEDDINGS_MODEL)

    assert [struct.unpack("<256f", vector) for vector in vectors] == [
        pytest.approx(fake_embedding("eins"), abs=1e-6),
        pytest.approx(fake_embedding("zwei"), abs=1e-6),
    ]
    assert upstream.requests[-1]["headers"]["authorization"] == "Bearer test-key-abc123"


@pytest.mark.parametrize(
    ("behaviour", "error_type"),
    [
        ({"status": 401}, "auth_failed"),
        ({"models": ["another-model"]}, "model_not_found"),
        ({"status": 429}, "rate_limited"),
        ({"status": 500}, "upstream_unavailable"),
        ({"status": 400}, "bad_request"),
        ({"embeddings": "not json"}, "upstream_error"),
    ],
)
def test_provider_embed_maps_failures(upstream, behaviour, error_type):
    upstream.set(**behaviour)

    with embeddings_at(upstream.url) as client, pytest.raises(ProviderError) as raised:
        client.embed(["eins"], model=EMBEDDINGS_MODEL)

    assert raised.value.type == error_type


def test_provider_embed_times_out(upstream):
    upstream.set(ttft=1)

    with embeddings_at(upstream.url) as client, pytest.raises(ProviderError) as raised:
        client.embed(["eins"], model=EMBEDDINGS_MODEL, timeout=0.2)

    assert raised.value.type == "timeout"


def test_provider_embed_without_a_server_is_unavailable():
    with (
        embeddings_at(f"http://127.0.0.1:{free_port()}/v1") as client,
        pytest.raises(ProviderError) as raised,
    ):
        client.embed(["eins"], model=EMBEDDINGS_MODEL)

    assert raised.value.type == "upstream_unavailable"


# --- the sidebar search by meaning -------------------------------------------------------------


def conversation_of(owner, title: str, *texts: str, archived: bool = False) -> Conversation:
    """A conversation of questions and answers taking turns."""
    conversation = Conversation.objects.create(owner=owner, title=title, model="demo", archived=archived)
    Message.objects.bulk_create(
        Message(conversation=conversation, role="user" if n % 2 == 0 else "assistant", content=text)
        for n, text in enumerate(texts)
    )
    return conversation


def search_results(client, q: str, **params) -> list[dict]:
    response = client.get(reverse("api_conversations"), {"q": q, **params})
    assert response.status_code == 200, response.content
    return response.json()["conversations"]


@pytest.fixture
def conversations(alice, bob):
    """Alice's conversations about leave, a contract and lunch; Bob's about leave."""
    return {
        "leave": conversation_of(
            alice, "Antrag stellen", "Wie beantrage ich meinen Urlaub?", "Im Portal unter Abwesenheiten."
        ),
        "contract": conversation_of(
            alice, "Kündigung", "Welche Kündigungsfrist steht in meinem Vertrag?", "Drei Monate."
        ),
        "lunch": conversation_of(alice, "Mittag", "Was gibt es heute in der Kantine?", "Nudeln."),
        "bobs": conversation_of(bob, "Bobs Urlaub", "Wie viele Urlaubstage habe ich noch?", "Zwölf."),
    }


def test_search_by_meaning_finds_what_full_text_cannot(embeddings, alice_client, conversations):
    assert conversation_vectors_update(c.pk for c in conversations.values()) == 4

    results = search_results(alice_client, "Ferientage", archived="all")

    assert [r["title"] for r in results] == ["Antrag stellen"]
    assert results[0]["snippet"] == [{"text": "Wie beantrage ich meinen Urlaub?", "match": False}]
    assert results[0]["archived"] is False


def test_search_by_meaning_fuses_literal_matches(embeddings, alice_client, conversations):
    conversation_vectors_update(c.pk for c in conversations.values())
    literal = conversation_of(
        conversations["leave"].owner, "Notizen", "Der Urlaubsplan hängt an der Tür.", "Gut."
    )

    results = search_results(alice_client, "Urlaub", archived="all")

    titles = [r["title"] for r in results]
    assert set(titles) == {"Antrag stellen", "Notizen"}
    marked = next(r for r in results if r["id"] == str(literal.pk))["snippet"]
    assert {"text": "Urlaub", "match": True} in marked


def test_search_by_meaning_marks_the_searched_words_in_the_snippet(embeddings, alice, alice_client):
    found = conversation_of(
        alice, "Fristen", "Bis wann muss die Kündigung beim Arbeitgeber sein?", "Drei Monate."
    )
    conversation_vectors_update([found.pk])

    results = search_results(alice_client, "kündigung frist")

    assert [r["title"] for r in results] == ["Fristen"]
    assert {"text": "Kündigung", "match": True} in results[0]["snippet"]


def test_search_by_meaning_never_finds_another_users_conversations(embeddings, bob_client, conversations):
    conversation_vectors_update(c.pk for c in conversations.values())

    assert [r["title"] for r in search_results(bob_client, "Ferientage", archived="all")] == ["Bobs Urlaub"]


def test_search_by_meaning_keeps_to_the_archive_asked_for(embeddings, alice, alice_client):
    archived = conversation_of(alice, "Alt", "Urlaubsplanung für den Sommer", "Ja.", archived=True)
    conversation_vectors_update([archived.pk])

    assert search_results(alice_client, "Ferien") == []
    assert [r["title"] for r in search_results(alice_client, "Ferien", archived="1")] == ["Alt"]


def test_search_by_meaning_pages_through_the_fused_list(embeddings, alice):
    for n in range(5):
        conversation_of(alice, f"Urlaub {n}", f"Ferien im Sommer Nummer {n}", "Ja.")
    conversation_vectors_update(Conversation.objects.values_list("pk", flat=True))

    first = conversations_list(user=alice, query="Urlaub", limit=2, archived=None)
    second = conversations_list(user=alice, query="Urlaub", limit=2, archived=None, before=first.next)
    third = conversations_list(user=alice, query="Urlaub", limit=2, archived=None, before=second.next)

    pages = [first, second, third]
    assert [page.next for page in pages] == ["s2", "s4", None]
    ids = [c.pk for page in pages for c in page.conversations]
    assert len(ids) == len(set(ids)) == 5


@pytest.mark.parametrize("before", ["1.1.1.0123", "x", "s", "s-1", "s1234567"])
def test_search_by_meaning_rejects_a_malformed_cursor(embeddings, alice_client, before):
    response = alice_client.get(reverse("api_conversations"), {"q": "Urlaub", "before": before})

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid"


def test_search_by_meaning_falls_back_to_full_text_when_the_model_fails(
    embeddings, alice_client, conversations
):
    conversation_vectors_update(c.pk for c in conversations.values())
    embeddings.set(status=503)

    assert search_results(alice_client, "Ferientage", archived="all") == []
    assert [r["title"] for r in search_results(alice_client, "Kantine")] == ["Mittag"]


def test_search_without_embeddings_asks_no_model(settings, upstream, alice_client, conversations):
    settings.OPENAI_BASE_URL = upstream.url
    settings.ASSISTANT_DEMO_MODE = False
    settings.ASSISTANT_EMBEDDINGS_MODEL = ""

    assert search_results(alice_client, "Ferientage", archived="all") == []
    assert [r["title"] for r in search_results(alice_client, "urlaub", archived="all")] == ["Antrag stellen"]
    assert upstream.requests == []
    assert conversation_vectors_update([conversations["leave"].pk]) == 0


def test_stale_conversations_are_those_without_a_current_vector(settings, embeddings, alice, conversations):
    mine = Conversation.objects.filter(owner=alice)
    assert set(stale_conversations(mine)) == {conversations[k].pk for k in ("leave", "contract", "lunch")}

    conversation_vectors_update(mine.values_list("pk", flat=True))
    assert stale_conversations(mine) == []

    Message.objects.create(conversation=conversations["lunch"], role="user", content="Und morgen?")
    Message.objects.create(
        conversation=conversations["leave"], role="assistant", content="", status="streaming"
    )
    assert stale_conversations(mine) == [conversations["lunch"].pk]

    settings.ASSISTANT_EMBEDDINGS_MODEL = "another-model"
    assert len(stale_conversations(mine)) == 3


def test_conversation_text_has_title_questions_then_answers():
    text = conversation_text(
        "Titel", [("user", "Frage eins"), ("assistant", "A" * 900), ("user", " Frage zwei ")]
    )

    assert text == "Titel\n\nFrage eins\n\nFrage zwei\n\n" + "A" * ANSWER_CHARS
    assert len(conversation_text("", [("user", "x" * 20_000)])) == EMBED_INPUT_CHARS


def test_conversation_vector_goes_with_its_conversation(embeddings, conversations):
    conversation_vectors_update([conversations["leave"].pk])

    conversations["leave"].delete()

    assert not ConversationVector.objects.exists()


def test_queued_vectors_are_computed_after_the_commit(embeddings, transactional_db, alice):
    conversation = conversation_of(alice, "Reise", "Wie rechne ich eine Dienstreise ab?", "Mit dem Formular.")

    conversation_vectors_queue([conversation.pk])

    assert wait_until(lambda: ConversationVector.objects.filter(conversation=conversation).exists())
    assert stale_conversations(Conversation.objects.all()) == []


def test_nothing_is_queued_without_embeddings(settings, upstream, transactional_db, alice):
    settings.ASSISTANT_EMBEDDINGS_MODEL = ""
    conversation = conversation_of(alice, "Reise", "Wie rechne ich eine Dienstreise ab?", "Mit dem Formular.")

    conversation_vectors_queue([conversation.pk])
    conversation_vectors_catch_up(alice, Conversation.objects.all())

    assert upstream.requests == []
    assert not ConversationVector.objects.exists()


@pytest.fixture(scope="module")
def embeddings_server(django_db_setup, django_db_blocker, fake_upstream):
    server = start_daphne(
        live_env(fake_upstream, ASSISTANT_EMBEDDINGS_MODEL=EMBEDDINGS_MODEL), "daphne-embeddings"
    )
    yield server
    stop_daphne(server)


@pytest.mark.live
def test_search_through_the_server_catches_up_and_finds_by_meaning(
    embeddings_server, transactional_db, alice, upstream
):
    conversation_of(alice, "Antrag stellen", "Wie beantrage ich meinen Urlaub?", "Im Portal.")
    conversation_of(alice, "Mittag", "Was gibt es heute in der Kantine?", "Nudeln.")

    with session_client(embeddings_server, alice) as client:
        first = client.get("/api/conversations/", params={"q": "Ferientage"}).json()["conversations"]
        # The first search queued the conversations without vectors: a thread computes them.
        assert wait_until(lambda: ConversationVector.objects.count() == 2)
        second = client.get("/api/conversations/", params={"q": "Ferientage"}).json()["conversations"]

    assert first == []
    assert [r["title"] for r in second] == ["Antrag stellen"]
    paths = [request["path"] for request in upstream.requests]
    assert set(paths) == {"/v1/embeddings"}


@pytest.mark.live
def test_an_answers_end_computes_its_conversations_vector(
    embeddings_server, transactional_db, alice, upstream
):
    with session_client(embeddings_server, alice) as client:
        created = client.post("/api/conversations/", json={"content": "Wie beantrage ich Urlaub?"})
        assert created.status_code == 201, created.text
        conversation_id = created.json()["id"]

        # No search ran: the answer's end queued the vector itself.
        assert wait_until(lambda: ConversationVector.objects.filter(conversation_id=conversation_id).exists())
    assert "/v1/embeddings" in {request["path"] for request in upstream.requests}
