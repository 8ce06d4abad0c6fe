"""The sidebar's search: ranked results, snippets as parts, the archive included and flagged,
case folding beyond ASCII, only the user's own; the page's search with the same ranking."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from assistant.models import Conversation, Message
from assistant.selectors import snippet_parts


def conversation_with(
    owner, title: str, *texts: str, days_ago: int = 0, archived: bool = False
) -> Conversation:
    """A conversation of questions and answers taking turns, last active `days_ago` days ago."""
    conversation = Conversation.objects.create(owner=owner, title=title, model="demo", archived=archived)
    Message.objects.bulk_create(
        Message(
            conversation=conversation, role="user" if n % 2 == 0 else "assistant", content=text, model="demo"
        )
        for n, text in enumerate(texts)
    )
    moment = timezone.now() - timedelta(days=days_ago)
    Conversation.objects.filter(pk=conversation.pk).update(updated_at=moment)
    return conversation


def search(client: Client, q: str, **params) -> dict:
    response = client.get(reverse("api_conversations"), {"q": q, **params})
    assert response.status_code == 200, response.content
    return response.json()


def found_titles(client: Client, q: str, **params) -> list[str]:
    return [c["title"] for c in search(client, q, **params)["conversations"]]


def marked(parts: list[dict]) -> str:
    """The parts as one string, matches in brackets."""
    return "".join(f"[{p['text']}]" if p["match"] else p["text"] for p in parts)


# --- ranking ----------------------------------------------------------------------------------


def test_search_ranks_title_matches_then_more_matches_then_recent(alice_client, alice):
    conversation_with(alice, "Reise", "Köln im Mai", "Köln ist schön", "Und Köln im Juni?", days_ago=5)
    conversation_with(alice, "Wetter", "Regen in Köln?", "Ja.", days_ago=1)
    conversation_with(alice, "Wetter alt", "Sonne in Köln?", "Nein.", days_ago=3)
    conversation_with(alice, "Köln, alt", "Dom", days_ago=30)
    conversation_with(alice, "Köln und Bonn", "Rhein", "Köln liegt am Rhein", days_ago=2)
    conversation_with(alice, "Bonn", "Nichts davon")

    assert found_titles(alice_client, "köln", archived="all") == [
        "Köln und Bonn",  # the title, and a message
        "Köln, alt",  # the title only
        "Reise",  # three messages
        "Wetter",  # one message, yesterday
        "Wetter alt",  # one message, three days ago
    ]


def test_search_without_archive_scope_keeps_to_the_list_asked_for(alice_client, alice):
    conversation_with(alice, "Köln heute", "Dom")
    conversation_with(alice, "Köln damals", "Dom", archived=True, days_ago=1)

    assert found_titles(alice_client, "köln") == ["Köln heute"]
    assert found_titles(alice_client, "köln", archived="1") == ["Köln damals"]
    everywhere = search(alice_client, "köln", archived="all")["conversations"]
    assert [(c["title"], c["archived"]) for c in everywhere] == [("Köln heute", False), ("Köln damals", True)]


def test_search_results_carry_snippet_and_archived_flag(alice_client, alice):
    archived = conversation_with(
        alice, "Datenbanken", "Was ist schneller?", "Die Übersicht:\n\n| DB | Tempo |\n|--|--|", archived=True
    )

    results = search(alice_client, "übersicht", archived="all")["conversations"]

    assert results == [
        {
            "id": str(archived.pk),
            "title": "Datenbanken",
            "url": f"/c/{archived.pk}/",
            "updated_at": Conversation.objects.get(pk=archived.pk).updated_at.isoformat(),
            "archived": True,
            "origin": "page",
            "snippet": [
                {"text": "Die ", "match": False},
                {"text": "Übersicht", "match": True},
                {"text": ": | DB | Tempo | |--|--|", "match": False},
            ],
        }
    ]


def test_search_finds_umlauts_in_any_case(alice_client, alice):
    conversation_with(alice, "Straßen", "ÜBERSICHT der Straßen")
    conversation_with(alice, "Öl", "Kein Treffer")

    assert found_titles(alice_client, "übersicht") == ["Straßen"]
    assert found_titles(alice_client, "STRASSEN") == []  # no "ß" -> "SS" folding, like the page
    assert found_titles(alice_client, "straßen") == ["Straßen"]
    assert found_titles(alice_client, "öL") == ["Öl"]


@pytest.mark.parametrize("query", ["100%", "a_b", "[x]", "*", "?"])
def test_search_takes_wildcards_literally(alice_client, alice, query):
    conversation_with(alice, "Treffer", f"vorher {query} nachher")
    conversation_with(alice, "Daneben", "vorher 1000 aXb x nachher")

    assert found_titles(alice_client, query) == ["Treffer"]


def test_search_never_shows_another_users_conversations(alice_client, alice, bob):
    conversation_with(alice, "Meins", "Köln")
    conversation_with(bob, "Köln bei Bob", "Köln Köln")
    conversation_with(bob, "Bobs Archiv", "Köln", archived=True)

    results = search(alice_client, "köln", archived="all")["conversations"]

    assert [c["title"] for c in results] == ["Meins"]


def test_search_pages_through_the_ranking_once_each(alice_client, alice):
    for n in range(130):
        conversation_with(
            alice, f"Köln {n}" if n % 3 == 0 else f"Nr. {n}", *["köln"] * (n % 4), days_ago=n % 7
        )

    pages, cursor = [], None
    while True:
        page = search(alice_client, "köln", archived="all", **({"before": cursor} if cursor else {}))
        pages.append(page["conversations"])
        if not (cursor := page["next"]):
            break

    found = [c for page in pages for c in page]
    expected = Conversation.objects.filter(owner=alice).exclude(title__startswith="Nr", messages=None)
    assert [len(page) for page in pages] == [100, len(found) - 100]
    assert len({c["id"] for c in found}) == len(found) == expected.distinct().count()
    # Title matches all come before text matches.
    title_flags = [c["title"].startswith("Köln") for c in found]
    assert title_flags == sorted(title_flags, reverse=True)


@pytest.mark.parametrize("before", ["1.2", "x.1.1.0123456789abcdef0123456789abcdef", "1.1.1"])
def test_search_rejects_a_malformed_cursor(alice_client, before):
    response = alice_client.get(reverse("api_conversations"), {"q": "köln", "before": before})
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid"


def test_search_answers_in_two_queries_however_many_match(alice_client, alice, django_assert_num_queries):
    for n in range(3):
        conversation_with(alice, f"Köln {n}", "Köln", "Köln")
    for n in range(3):
        conversation_with(alice, f"Nr. {n}", "in Köln")

    # The user, the ranked page with its counts and snippets (the session comes from memory).
    with django_assert_num_queries(2):
        results = search(alice_client, "köln", archived="all")["conversations"]
    assert len(results) == 6
    assert all(r["snippet"] for r in results)


# --- snippets ---------------------------------------------------------------------------------


def test_snippet_marks_every_match_and_cuts_at_words():
    text = "Ein langer Anfang " * 10 + "mit Köln in der Mitte und köln danach, " + "dann noch mehr Text " * 20

    parts = snippet_parts(text, "KÖLN")

    assert marked(parts) == (
        "…Ein langer Anfang Ein langer Anfang Ein langer Anfang mit [Köln] in der Mitte und [köln] danach, "
        + "dann noch mehr Text " * 5
        + "dann…"
    )


def test_snippet_of_a_short_text_is_the_whole_text_without_ellipsis():
    assert snippet_parts("Übersicht\n\nder   Lage", "übersicht") == [
        {"text": "Übersicht", "match": True},
        {"text": " der Lage", "match": False},
    ]


def test_snippet_is_empty_without_a_match_and_treats_markup_as_text():
    assert snippet_parts("nichts", "köln") == []
    assert marked(snippet_parts("<b>Köln</b> & *Bonn*", "köln")) == "<b>[Köln]</b> & *Bonn*"


def test_title_only_matches_have_an_empty_snippet(alice_client, alice):
    conversation_with(alice, "Köln", "Dom")

    assert search(alice_client, "köln")["conversations"][0]["snippet"] == []


# --- the page's own search ------------------------------------------------------------------


def sidebar_ids(html: str) -> list[str]:
    marker = 'data-conversation-id="'
    return [part.split('"', 1)[0] for part in html.split(marker)[1:]]


def test_page_search_lists_the_same_ranking_archive_included(alice_client, alice):
    conversation_with(alice, "Wetter", "Regen in Köln?", days_ago=1)
    conversation_with(alice, "Reise", "Köln", "Köln", days_ago=3)
    conversation_with(alice, "Köln, alt", "Dom", days_ago=30, archived=True)

    response = alice_client.get(reverse("chat"), {"q": "köln"})

    api = search(alice_client, "köln", archived="all")["conversations"]
    assert sidebar_ids(response.content.decode()) == [c["id"] for c in api]
    context = response.context
    assert [r["title"] for r in context["search_results"]] == ["Köln, alt", "Reise", "Wetter"]
    assert context["search_results"][0]["archived"] is True
    assert context["page_data"]["sidebar"]["search"] == {"ranked": True, "archived": "all"}
    assert [r["snippet"] for r in context["search_results"]] == [r["snippet"] for r in api]


def test_page_search_in_the_archive_stays_in_the_archive(alice_client, alice):
    conversation_with(alice, "Köln heute", "Dom")
    archived = conversation_with(alice, "Köln damals", "Dom", archived=True)

    response = alice_client.get(reverse("chat"), {"q": "köln", "archived": "1"})

    assert sidebar_ids(response.content.decode()) == [str(archived.pk)]
    assert response.context["page_data"]["sidebar"]["search"] == {"ranked": True, "archived": "1"}
