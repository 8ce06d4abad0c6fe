"""CONTENT IN THE ADMIN'S LISTS: a reviewer reading content without a reason, over real HTTP.

Django's admin accepts query-string lookups on any local field, so a reviewer who never
opens a transcript could spell a message out from result counts (`?content__startswith=M`,
`Me`, `Mei`, ...), compare titles by sorting, or read titles and feedback comments in the
lists. Rita, a reviewer, tries all of it on the live daphne: nothing she is shown without
a reason depends on what alice wrote. With a stated reason the content view shows titles
and comments, and alice reads every such access at /access-log/.
"""

from __future__ import annotations

import html
import re

import httpx
import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission

from assistant.models import AccessLog, Conversation, Message
from tests.helpers.live import session_client
from tests.helpers.routes import Victim

pytestmark = pytest.mark.live

CONVERSATIONS = "/admin/assistant/conversation/"
MESSAGES = "/admin/assistant/message/"
CONTENT_REASON = "/admin/assistant/conversation/content/"
AUTOCOMPLETE = "/admin/autocomplete/"
COMMENT = "Die Zahl 4711 stimmt nicht"
ERROR_DETAIL = "Kontext 4711 zu lang"
# What alice wrote, was answered, named or commented: never in a page rita sees without a reason.
CONTENT = ("Gehaltsverhandlung", "4711", "Antwort 0815", "geheimer 2906", "stimmt nicht", "zu lang")
REASON = {"purpose": "support", "details": "Ticket 4711-B: alice asked about her answers"}
LOGGED_REASON = "User support request: Ticket 4711-B: alice asked about her answers"


@pytest.fixture
def commented(victim: Victim, alice_http: httpx.Client) -> Victim:
    """Alice's data (tests/security/conftest.py) with a thumbs down and its comment, given
    through the API, and a failed answer with an error detail."""
    response = alice_http.post(
        f"/api/messages/{victim.answer.pk}/feedback/", json={"rating": "down", "comment": COMMENT}
    )
    assert response.status_code == 200, response.text
    Message.objects.create(
        conversation=victim.streaming,
        role="assistant",
        status="error",
        error_type="upstream_unavailable",
        error_detail=ERROR_DETAIL,
        superseded=True,
    )
    return victim


def observed(response: httpx.Response) -> tuple:
    """All a list tells about its rows: the status, the rows in order, the result count."""
    rows = re.findall(r'href="/admin/assistant/(?:conversation|message)/([^/"]+)/change/', response.text)
    count = re.search(r'<p class="paginator">(.*?)</p>', response.text, re.S)
    return response.status_code, rows, count and " ".join(re.sub(r"<[^>]+>", " ", count[1]).split())


def open_content_view(client: httpx.Client, list_url: str) -> httpx.Response:
    """Ask `list_url` for its content view and state the reason on the form it sends to."""
    asked = client.get(list_url, params={"content_view": "1"})
    assert asked.status_code == 302, asked.text
    assert asked.headers["location"].startswith(CONTENT_REASON)
    stated = client.post(asked.headers["location"], data=REASON)
    assert stated.status_code == 302, stated.text
    return stated


def owners_log(client: httpx.Client) -> list[tuple[str, str, str]]:
    """The rows of the owner's /access-log/ page: reviewer, conversation link, reason."""
    page = client.get("/access-log/")
    assert page.status_code == 200
    rows = re.findall(
        r"<tr>\s*<td><time[^>]*>.*?</time></td>\s*<td>(.*?)</td>\s*<td>(.*?)</td>\s*<td>(.*?)</td>",
        page.text,
        re.S,
    )
    return [
        (html.unescape(reviewer), re.sub(r".*/c/([^/]+)/.*", r"\1", cell, flags=re.S), html.unescape(reason))
        for reviewer, cell, reason in rows
    ]


# --- without a reason: the extraction attack learns nothing -----------------------------------

# (list, lookup, a true guess, a false guess): each pair once as a lookup in the query string.
LOOKUP_GUESSES = [
    (CONVERSATIONS, "title", "Gehaltsverhandlung", "Urlaubsplanung"),
    (CONVERSATIONS, "title__startswith", "Gehalt", "Urlaub"),
    (CONVERSATIONS, "title__regex", "^G", "^U"),
    (CONVERSATIONS, "title__gt", "A", "Z"),
    (CONVERSATIONS, "messages__content__startswith", "Mein Gehalt", "Kein Gehalt"),
    (CONVERSATIONS, "messages__content__contains", "4711", "4712"),
    (CONVERSATIONS, "messages__content__regex", "^Mein", "^Kein"),
    (CONVERSATIONS, "messages__feedback_comment__contains", "stimmt", "passt"),
    (CONVERSATIONS, "messages__error_detail__contains", "4711", "4712"),
    (CONVERSATIONS, "owner__password__startswith", "md5$", "pbkdf2"),
    (MESSAGES, "content", "Antwort 0815", "Antwort 0816"),
    (MESSAGES, "content__startswith", "Mein Gehalt", "Kein Gehalt"),
    (MESSAGES, "content__icontains", "gehalt", "urlaub"),
    (MESSAGES, "content__regex", "0815$", "0816$"),
    (MESSAGES, "feedback_comment__startswith", "Die Zahl", "Der Satz"),
    (MESSAGES, "error_detail__contains", "4711", "4712"),
    (MESSAGES, "conversation__title__startswith", "Gehalt", "Urlaub"),
    (MESSAGES, "conversation__messages__content__contains", "2906", "2907"),
    (MESSAGES, "conversation__owner__password__startswith", "md5$", "pbkdf2"),
]
# Search: a word of a title, a message or a comment, and one of none.
SEARCH_GUESSES = [
    (CONVERSATIONS, "Gehaltsverhandlung", "Urlaubsplanung"),
    (CONVERSATIONS, "4711", "4712"),
    (CONVERSATIONS, "geheimer", "harmloser"),
    (MESSAGES, "0815", "0816"),
    (MESSAGES, "stimmt", "passt"),
    (MESSAGES, "Gehaltsverhandlung", "Urlaubsplanung"),
]


def test_content_lookups_and_search_without_a_reason_tell_a_reviewer_nothing(commented, rita_http):
    """Each guess true and false: refused alike (400, as Django refuses a disallowed
    lookup) or answered alike; the counts, rows and statuses never differ. Without the
    fix a few hundred such requests spell alice's message out."""
    models = {CONVERSATIONS: Conversation, MESSAGES: Message}
    failures, cases = [], 0
    for url, lookup, true, false in LOOKUP_GUESSES:
        # The guesses really differ, so equal answers mean the list told nothing.
        model = models[url].objects
        assert model.filter(**{lookup: true}).exists()
        assert not model.filter(**{lookup: false}).exists()
        for extra in ({}, {"_facets": "1"}):
            answers = [
                observed(rita_http.get(url, params={lookup: guess, **extra})) for guess in (true, false)
            ]
            cases += 2
            if answers[0] != answers[1] or answers[0][0] != 400:
                failures.append(f"{url}?{lookup}=…{extra}: {answers}")
    for url, true, false in SEARCH_GUESSES:
        answers = [observed(rita_http.get(url, params={"q": guess})) for guess in (true, false)]
        cases += 2
        if answers[0] != answers[1] or answers[0][0] != 200:
            failures.append(f"{url}?q=…: {answers}")
    # The autocomplete widget's view searches with the list's search and names rows by str().
    for true, false in (("Gehaltsverhandlung", "Urlaubsplanung"), ("4711", "4712"), ("alice", "nobody")):
        params = {"app_label": "assistant", "model_name": "message", "field_name": "conversation"}
        answers = [rita_http.get(AUTOCOMPLETE, params={**params, "term": guess}) for guess in (true, false)]
        cases += 2
        if (answers[0].status_code, answers[0].text) != (answers[1].status_code, answers[1].text):
            failures.append(f"autocomplete {true}/{false}: {[a.text[:200] for a in answers]}")
        elif any(a.status_code == 200 for a in answers):
            failures.append(f"autocomplete answers {answers[0].text[:200]}")
    assert failures == [], failures
    assert cases == 94
    assert not AccessLog.objects.exclude(reason="Ticket 12 for alice").exists()


def list_orders(client: httpx.Client) -> dict[str, list]:
    """Both lists sorted by every column, both ways (Django ignores columns it cannot sort by)."""
    return {
        f"{url}?o={sign}{column}": observed(client.get(url, params={"o": f"{sign}{column}"}))[1]
        for url in (CONVERSATIONS, MESSAGES)
        for column in range(1, 14)
        for sign in ("", "-")
    }


def test_sorting_the_lists_by_any_column_tells_a_reviewer_nothing_about_content(commented, rita, rita_http):
    """Sorting by a title or a text compares it with the reviewer's own rows; the order of
    every sorted page stays the same when only alice's words change."""
    probe = Conversation.objects.create(owner=rita, title="Mittelweg", model="fake-model")
    Message.objects.create(
        conversation=probe, role="assistant", content="Mittel", feedback=-1, feedback_comment="Mittel"
    )
    before = list_orders(rita_http)
    # Only the words change (a queryset update leaves every time stamp as it was).
    Conversation.objects.filter(pk=commented.done.pk).update(title="Zeugnis")
    Conversation.objects.filter(pk=commented.streaming.pk).update(title="Zeugnis 2")
    Message.objects.filter(conversation__owner__username="alice").update(
        content="Zzz", feedback_comment="Zzz", error_detail="Zzz"
    )
    after = list_orders(rita_http)
    assert len(before) == 52
    assert [key for key in before if before[key] != after[key]] == []
    assert not AccessLog.objects.exclude(reason="Ticket 12 for alice").exists()


def test_lists_and_pages_show_no_title_comment_or_text_without_a_reason(
    live, commented, rita_http, django_user_model
):
    """Every list view, filter and page a reviewer (and a superuser, with the delete
    confirmation) reaches before stating a reason: no title, text, comment or error detail."""
    django_user_model.objects.create_superuser("root", password="root-password-1")
    done = commented.done.pk
    pages = [
        CONVERSATIONS,
        f"{CONVERSATIONS}?_facets=1",
        f"{CONVERSATIONS}?negative_feedback=yes",
        f"{CONVERSATIONS}?q=alice",
        f"{CONVERSATIONS}?o=1",
        f"{CONVERSATIONS}?o=-2.1",
        f"{CONVERSATIONS}{done}/review/",
        f"{CONVERSATIONS}{done}/history/",
        f"{CONVERSATIONS}{done}/change/",
        CONTENT_REASON,
        MESSAGES,
        f"{MESSAGES}?feedback_review=down_comment",
        f"{MESSAGES}?feedback_review=comment&_facets=1",
        f"{MESSAGES}?error_type__exact=upstream_unavailable",
        f"{MESSAGES}?q=alice",
        f"{MESSAGES}{commented.answer.pk}/change/",
        f"{MESSAGES}{commented.answer.pk}/history/",
        "/admin/",
        "/admin/assistant/",
    ]
    root = session_client(live, django_user_model.objects.get(username="root"))
    with root:
        found = {}
        for client, name in ((rita_http, "rita"), (root, "root")):
            for page in [*pages, f"{CONVERSATIONS}{done}/delete/"] if name == "root" else pages:
                response = client.get(page, follow_redirects=True)
                assert response.status_code in (200, 403), (page, response.status_code)
                if leaked := [word for word in CONTENT if word in response.text]:
                    found[f"{name} {page}"] = leaked
    # The deletion itself (its message, the admin's log) is tests/test_admin.py's: the
    # session's daphne caches content type ids that a flushed test database renumbers.
    assert found == {}
    assert not AccessLog.objects.exclude(reason="Ticket 12 for alice").exists()


# --- with a reason: the content view, on the record --------------------------------------------


def test_the_content_view_shows_titles_and_comments_after_a_reason_and_alice_reads_each_access(
    commented, rita_http, alice_http, bob, bob_http
):
    """Rita states a reason once; the conversation list, a search and the feedback review
    show content, each conversation logged once per reason before the page renders."""
    bobs = Conversation.objects.create(owner=bob, title="Bobs Reiseplan", model="fake-model")
    stated = open_content_view(rita_http, CONVERSATIONS)
    assert stated.headers["location"] == f"{CONVERSATIONS}?content_view=1"
    assert not AccessLog.objects.exclude(reason="Ticket 12 for alice").exists()  # nothing read yet

    listing = rita_http.get(stated.headers["location"])
    assert "Gehaltsverhandlung" in listing.text
    assert "Bobs Reiseplan" in listing.text
    rita_http.get(stated.headers["location"])  # again: the same access, not logged twice
    listed = f"list: {LOGGED_REASON}"
    assert sorted(
        AccessLog.objects.exclude(reason="Ticket 12 for alice").values_list("owner_username", "reason")
    ) == [("alice", listed), ("alice", listed), ("bob", listed)]

    # A search of message text: its match logged with the search, the other not.
    found = rita_http.get(CONVERSATIONS, params={"content_view": "1", "q": "geheimer"})
    assert observed(found)[1] == [str(commented.streaming.pk)]
    searched = f"search “geheimer”: {LOGGED_REASON}"
    assert list(AccessLog.objects.filter(reason=searched).values_list("conversation_id", flat=True)) == [
        commented.streaming.pk
    ]

    # The feedback review: the comment shows; its conversation was logged for this reason already.
    review = rita_http.get(MESSAGES, params={"feedback_review": "down_comment", "content_view": "1"})
    assert COMMENT in review.text
    assert "Antwort 0815" not in review.text
    assert AccessLog.objects.exclude(reason="Ticket 12 for alice").count() == 4

    # Leaving the content view: no content, nothing logged.
    plain = rita_http.get(MESSAGES, params={"feedback_review": "down_comment"})
    assert COMMENT not in plain.text
    assert "Gehaltsverhandlung" not in plain.text

    assert sorted(owners_log(alice_http)) == sorted(
        [
            ("rita", str(commented.done.pk), listed),
            ("rita", str(commented.streaming.pk), listed),
            ("rita", str(commented.streaming.pk), searched),
            ("rita", str(commented.streaming.pk), "Ticket 12 for alice"),
        ]
    )
    assert owners_log(bob_http) == [("rita", str(bobs.pk), listed)]


def test_a_content_search_logs_every_conversation_it_matches_not_only_the_page(
    live, alice, rita, rita_http, bob
):
    """A match says something about a conversation's text, shown on the page or not."""
    projects = Conversation.objects.bulk_create(
        Conversation(owner=alice, title=f"Gespräch {n}", model="fake-model") for n in range(60)
    )
    Message.objects.bulk_create(
        Message(conversation=c, role="user", content=f"Das Projekt Nummer {n}")
        for n, c in enumerate(projects)
    )
    other = Conversation.objects.create(owner=bob, title="Anderes", model="fake-model")
    Message.objects.create(conversation=other, role="user", content="Nichts davon")
    open_content_view(rita_http, CONVERSATIONS)

    page = rita_http.get(CONVERSATIONS, params={"content_view": "1", "q": "projekt"})
    assert len(set(observed(page)[1])) == 50
    page_two = rita_http.get(CONVERSATIONS, params={"content_view": "1", "q": "projekt", "p": "2"})
    assert len(set(observed(page_two)[1])) == 10

    entries = AccessLog.objects.all()
    assert {entry.conversation_id for entry in entries} == {c.pk for c in projects}
    assert {entry.reason for entry in entries} == {f"search “projekt”: {LOGGED_REASON}"}
    assert entries.count() == 60  # the second page matched the same conversations


def test_staff_without_the_review_permission_get_no_content_view(live, commented):
    clerk = get_user_model().objects.create_user("clerk", password="clerk-password-1", is_staff=True)
    clerk.user_permissions.add(
        *Permission.objects.filter(codename__in=["view_conversation", "view_message", "view_accesslog"])
    )
    with session_client(live, clerk) as client:
        assert client.get(CONVERSATIONS).status_code == 200
        assert client.get(CONVERSATIONS, params={"content_view": "1"}).status_code == 403
        assert client.post(CONTENT_REASON, data=REASON).status_code == 403
        assert client.get(CONVERSATIONS, params={"content_view": "1", "q": "4711"}).status_code == 403
    assert not AccessLog.objects.exclude(reason="Ticket 12 for alice").exists()


# --- a neutral admin -----------------------------------------------------------------------------


def test_the_admin_login_page_does_not_name_django(anonymous_http):
    for path in ("/admin/login/", "/admin/login/?next=/admin/"):
        page = anonymous_http.get(path)
        assert page.status_code == 200
        assert "django" not in page.text.lower()
        assert "Assistant administration" in page.text
