"""Admin: the conversation list (no content, constant queries), filters, search, deletion,
and the content view of the lists behind a logged reason."""

from __future__ import annotations

import html
import re
from urllib.parse import urlencode

import pytest
from django.contrib.admin.models import LogEntry
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.test import Client
from django.urls import reverse

from assistant import review
from assistant.models import AccessLog, Conversation, Message
from tests.helpers.live import logged_in

CHANGELIST = "admin:assistant_conversation_changelist"
MESSAGES = "admin:assistant_message_changelist"
REASON = {"purpose": "support", "details": "Ticket 4711: alice asked for help"}
SUPPORT = "User support request: Ticket 4711: alice asked for help"


def open_content_view(client: Client, next_url: str = "") -> None:
    """State a reason for the content view of the lists, as the reason form does."""
    url = reverse("admin:assistant_conversation_content") + "?" + urlencode({"next": next_url})
    response = client.post(url, REASON)
    assert response.status_code == 302, response.content.decode()


@pytest.fixture
def admin_client_(db) -> Client:
    admin = get_user_model().objects.create_superuser("root", password="root-password-1")
    client = Client()
    client.force_login(admin)
    return client


@pytest.fixture
def conversation(alice) -> Conversation:
    conversation = Conversation.objects.create(owner=alice, title="Quartalsbericht", model="demo")
    Message.objects.create(conversation=conversation, role="user", content="<img src=x onerror=alert(1)>")
    Message.objects.create(
        conversation=conversation,
        role="assistant",
        content="Teilantwort über Umsätze",
        status="error",
        error_type="rate_limited",
        error_code=429,
        prompt_tokens=12,
        completion_tokens=30,
    )
    return conversation


def conversation_with_messages(owner, title: str, *, feedback: int | None = None, error: bool = False):
    conversation = Conversation.objects.create(owner=owner, title=title, model="demo")
    Message.objects.create(conversation=conversation, role="user", content=f"Frage zu {title}")
    Message.objects.create(
        conversation=conversation,
        role="assistant",
        content=f"Antwort zu {title}",
        status="error" if error else "done",
        error_type="upstream" if error else "",
        prompt_tokens=5,
        completion_tokens=7,
        feedback=feedback,
    )
    return conversation


def test_admin_lists_conversations_by_label_and_searches_metadata_only(admin_client_, conversation):
    url = reverse(CHANGELIST)
    page = admin_client_.get(url).content.decode()
    assert "Quartalsbericht" not in page
    assert review.conversation_label(conversation) in page
    assert not admin_client_.get(url, {"q": "Teilantwort"}).context["cl"].result_list
    assert not admin_client_.get(url, {"q": "Quartalsbericht"}).context["cl"].result_list
    assert [c.pk for c in admin_client_.get(url, {"q": "alice"}).context["cl"].result_list] == [
        conversation.pk
    ]
    assert admin_client_.get(url, {"model": "demo"}).status_code == 200


def test_conversation_list_shows_figures_but_no_title_or_message_content(reviewer_client, conversation):
    response = reviewer_client.get(reverse(CHANGELIST))
    page = response.content.decode()
    assert response.status_code == 200
    assert "Quartalsbericht" not in page
    assert "alice" in page
    assert "Teilantwort" not in page
    assert "onerror" not in page
    row = response.context["cl"].result_list[0]
    assert row.message_count == 2
    assert row.total_tokens == 42
    assert row.has_error is True
    assert row.has_negative_feedback is False


def test_conversation_search_in_the_content_view_covers_message_text_without_duplicates(
    reviewer_client, alice
):
    conversation = Conversation.objects.create(owner=alice, title="Reise", model="demo")
    for _ in range(3):
        Message.objects.create(conversation=conversation, role="user", content="Hotel in Hamburg")
    conversation_with_messages(alice, "Anderes")
    open_content_view(reviewer_client)
    response = reviewer_client.get(reverse(CHANGELIST), {"q": "hamburg", "content_view": "1"})
    assert [c.pk for c in response.context["cl"].result_list] == [conversation.pk]
    response = reviewer_client.get(reverse(CHANGELIST), {"q": "alice reise", "content_view": "1"})
    assert [c.pk for c in response.context["cl"].result_list] == [conversation.pk]
    response = reviewer_client.get(reverse(CHANGELIST), {"q": str(conversation.pk)})
    assert [c.pk for c in response.context["cl"].result_list] == [conversation.pk]


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"negative_feedback": "yes"}, {"Schlecht"}),
        ({"negative_feedback": "no"}, {"Gut", "Kaputt"}),
        ({"has_error": "yes"}, {"Kaputt"}),
        ({"message_status": "error"}, {"Kaputt"}),
        ({"message_status": "streaming"}, set()),
        ({"model": "demo"}, {"Gut", "Schlecht", "Kaputt"}),
    ],
)
def test_conversation_filters_select_by_messages(reviewer_client, alice, params, expected):
    conversation_with_messages(alice, "Gut", feedback=1)
    conversation_with_messages(alice, "Schlecht", feedback=-1)
    conversation_with_messages(alice, "Kaputt", error=True)
    response = reviewer_client.get(reverse(CHANGELIST), params)
    assert {c.title for c in response.context["cl"].result_list} == expected


def test_conversation_filter_by_owner(reviewer_client, alice, bob):
    conversation_with_messages(alice, "Von Alice")
    conversation_with_messages(bob, "Von Bob")
    response = reviewer_client.get(reverse(CHANGELIST), {"owner__id__exact": bob.pk})
    assert [c.title for c in response.context["cl"].result_list] == ["Von Bob"]


# User, the reviewer's user and group permissions, the model filter's values, the owner
# filter's users, the page count, the page of rows (the session comes from memory).
LIST_QUERIES = 7


@pytest.mark.parametrize("count", [1, 3])
def test_conversation_list_query_count_is_constant(reviewer_client, alice, django_assert_num_queries, count):
    for n in range(count):
        conversation_with_messages(alice, f"Gespräch {n}", feedback=-1 if n % 2 else None, error=n == 2)
    with django_assert_num_queries(LIST_QUERIES):
        response = reviewer_client.get(reverse(CHANGELIST))
    assert len(response.context["cl"].result_list) == count


def test_conversation_list_query_count_is_constant_for_300(
    reviewer_client, alice, bob, django_assert_num_queries
):
    owners = [alice, bob]
    conversations = Conversation.objects.bulk_create(
        Conversation(owner=owners[n % 2], title=f"Gespräch {n}", model=f"model-{n % 3}") for n in range(300)
    )
    Message.objects.bulk_create(
        Message(
            conversation=c,
            role=role,
            content="x",
            feedback=-1 if role == "assistant" and n % 5 == 0 else None,
        )
        for n, c in enumerate(conversations)
        for role in ("user", "assistant")
    )
    with django_assert_num_queries(LIST_QUERIES):
        response = reviewer_client.get(reverse(CHANGELIST))
    assert response.context["cl"].result_count == 300
    assert len(response.context["cl"].result_list) == 50
    with django_assert_num_queries(LIST_QUERIES):
        reviewer_client.get(reverse(CHANGELIST), {"q": "x", "negative_feedback": "yes", "o": "4"})


def test_admin_cannot_add_or_change_conversations(admin_client_, conversation):
    assert admin_client_.get(reverse("admin:assistant_conversation_add")).status_code == 403
    url = reverse("admin:assistant_conversation_change", args=[conversation.pk])
    assert admin_client_.post(url, {"title": "geändert"}).status_code == 403
    conversation.refresh_from_db()
    assert conversation.title == "Quartalsbericht"


def test_superuser_delete_shows_a_confirmation_page_without_content(admin_client_, conversation):
    url = reverse("admin:assistant_conversation_delete", args=[conversation.pk])
    response = admin_client_.get(url)
    page = response.content.decode()
    assert response.status_code == 200
    assert review.conversation_label(conversation) in page
    assert "Quartalsbericht" not in page
    assert "Teilantwort" not in page
    assert "onerror" not in page
    assert Conversation.objects.filter(pk=conversation.pk).exists()
    response = admin_client_.post(url, {"post": "yes"}, follow=True)
    assert "Quartalsbericht" not in response.content.decode()  # the success message
    assert str(conversation.pk) in response.content.decode()
    assert not Conversation.objects.filter(pk=conversation.pk).exists()
    assert not Message.objects.filter(conversation_id=conversation.pk).exists()
    # The admin's log ("Recent actions") keeps the label, not the title.
    assert LogEntry.objects.get().object_repr == review.conversation_label(conversation)
    assert "Quartalsbericht" not in admin_client_.get(reverse("admin:index")).content.decode()


def test_superuser_bulk_delete_asks_for_confirmation_first(admin_client_, alice):
    first = conversation_with_messages(alice, "Erstes")
    second = conversation_with_messages(alice, "Zweites")
    url = reverse(CHANGELIST)
    data = {"action": "delete_selected", "_selected_action": [first.pk, second.pk]}
    response = admin_client_.post(url, data)
    page = response.content.decode()
    assert response.status_code == 200
    assert "Are you sure" in page
    assert review.conversation_label(first) in page
    assert "Erstes" not in page
    assert "Antwort zu" not in page
    assert Conversation.objects.count() == 2
    response = admin_client_.post(url, {**data, "post": "yes"})
    assert response.status_code == 302
    assert Conversation.objects.count() == 0
    assert {entry.object_repr for entry in LogEntry.objects.all()} == {
        review.conversation_label(first),
        review.conversation_label(second),
    }


def test_reviewer_cannot_delete_at_all(reviewer_client, conversation):
    url = reverse("admin:assistant_conversation_delete", args=[conversation.pk])
    assert reviewer_client.get(url).status_code == 403
    assert reviewer_client.post(url, {"post": "yes"}).status_code == 403
    data = {"action": "delete_selected", "_selected_action": [conversation.pk], "post": "yes"}
    reviewer_client.post(reverse(CHANGELIST), data)
    assert Conversation.objects.filter(pk=conversation.pk).exists()
    page = reviewer_client.get(reverse(CHANGELIST)).content.decode()
    assert "delete_selected" not in page


def test_admin_message_list_filters_by_status(admin_client_, conversation):
    url = reverse("admin:assistant_message_changelist")
    page = admin_client_.get(url, {"status__exact": "error"}).content.decode()
    assert "rate_limited" in page


def test_admin_is_closed_to_employees(alice):
    client = Client()
    client.force_login(alice)
    response = client.get(reverse(CHANGELIST))
    assert response.status_code == 302
    assert response.url.startswith(reverse("admin:login"))


# User, the reviewer's user and group permissions, the model and error type filters'
# values, the page count, the page of rows (the session comes from memory).
MESSAGE_LIST_QUERIES = 7


@pytest.mark.parametrize("count", [1, 3])
def test_message_list_query_count_is_constant(reviewer_client, alice, bob, django_assert_num_queries, count):
    for n in range(count):
        conversation_with_messages([alice, bob][n % 2], f"Gespräch {n}", feedback=-1, error=n == 1)
    with django_assert_num_queries(MESSAGE_LIST_QUERIES):
        response = reviewer_client.get(reverse("admin:assistant_message_changelist"))
    assert len(response.context["cl"].result_list) == 2 * count


def test_access_log_list_filters_by_conversation(reviewer_client, alice, conversation):
    rita = get_user_model().objects.get(username="rita")
    other = conversation_with_messages(alice, "Anderes")
    review.access_record(reviewer=rita, conversation=conversation, reason="Ticket 1 about the report")
    review.access_record(reviewer=rita, conversation=other, reason="Ticket 2 about another thing")
    url = reverse("admin:assistant_accesslog_changelist")
    page = reviewer_client.get(url).content.decode()
    assert "Ticket 1 about the report" in page
    assert f"?conversation_id={conversation.pk}" in page
    assert "Export CSV" in page
    response = reviewer_client.get(url, {"conversation_id": conversation.pk})
    assert [e.reason for e in response.context["cl"].result_list] == ["Ticket 1 about the report"]


# --- metadata lookups only, and the content view ---------------------------------------------


@pytest.mark.parametrize(
    "changelist", [CHANGELIST, MESSAGES, "admin:assistant_accesslog_changelist"], ids=lambda name: name[16:]
)
def test_every_filter_choice_of_the_lists_passes_the_lookup_allowlist(admin_client_, alice, bob, changelist):
    root = get_user_model().objects.get(username="root")
    for n, owner in enumerate([alice, bob]):
        conversation = conversation_with_messages(owner, f"Gespräch {n}", feedback=-1, error=n == 1)
        review.access_record(reviewer=root, conversation=conversation, reason="Ticket 1 for the test")
    page = admin_client_.get(reverse(changelist)).content.decode()
    sidebar = page[page.index('id="changelist-filter"') :]
    choices = set(re.findall(r'href="(\?[^"]+)"', sidebar))
    assert len(choices) > 5
    for query in choices:
        response = admin_client_.get(reverse(changelist) + html.unescape(query))
        assert response.status_code == 200, query


@pytest.mark.parametrize(
    ("changelist", "lookup"),
    [
        (CHANGELIST, "title__startswith"),
        (CHANGELIST, "title"),
        (CHANGELIST, "id__startswith"),
        (CHANGELIST, "messages__content__contains"),
        (MESSAGES, "content__startswith"),
        (MESSAGES, "feedback_comment"),
        (MESSAGES, "error_detail__contains"),
        (MESSAGES, "conversation__title__contains"),
        ("admin:assistant_accesslog_changelist", "reason__startswith"),
        ("admin:assistant_accesslog_changelist", "owner__password__startswith"),
    ],
)
def test_lookups_outside_the_metadata_allowlist_are_refused(admin_client_, conversation, changelist, lookup):
    assert admin_client_.get(reverse(changelist), {lookup: "Q"}).status_code == 400


def test_content_view_logs_each_conversation_once_per_grant_and_reason(reviewer_client, alice, bob):
    first = conversation_with_messages(alice, "Erstes")
    second = conversation_with_messages(bob, "Zweites")
    open_content_view(reviewer_client)
    for _ in range(2):
        page = reviewer_client.get(reverse(CHANGELIST), {"content_view": "1"}).content.decode()
    assert "Erstes" in page
    assert "Zweites" in page
    listed = f"list: {SUPPORT}"
    assert sorted(AccessLog.objects.values_list("owner_username", "reason")) == [
        ("alice", listed),
        ("bob", listed),
    ]
    reviewer_client.get(reverse(CHANGELIST), {"content_view": "1", "q": "Frage Erstes"})
    searched = AccessLog.objects.filter(reason=f"search “Frage Erstes”: {SUPPORT}")
    assert [entry.conversation_id for entry in searched] == [first.pk]
    # A new reason is a new grant: what it shows is logged again, with that reason.
    open_content_view(reviewer_client, reverse(MESSAGES))
    reviewer_client.get(reverse(MESSAGES), {"content_view": "1"})
    assert AccessLog.objects.count() == 5
    assert {entry.conversation_id for entry in AccessLog.objects.order_by("-pk")[:2]} == {first.pk, second.pk}


def test_content_view_ends_with_its_grant(reviewer_client, alice):
    conversation_with_messages(alice, "Erstes")
    open_content_view(reviewer_client)
    session = reviewer_client.session
    session[review.LIST_SESSION_KEY] = {**session[review.LIST_SESSION_KEY], "expires": 1.0}
    session.save()
    response = reviewer_client.get(reverse(CHANGELIST), {"content_view": "1"})
    assert response.status_code == 302
    assert response.url.startswith(reverse("admin:assistant_conversation_content"))
    assert not AccessLog.objects.exists()


@pytest.mark.parametrize(
    "next_url",
    ["https://evil.example/admin/assistant/message/", "//evil.example/", "/admin/auth/user/", "/", ""],
)
def test_content_view_reason_leads_only_back_to_a_review_list(reviewer_client, next_url):
    url = reverse("admin:assistant_conversation_content") + "?" + urlencode({"next": next_url})
    response = reviewer_client.post(url, REASON)
    assert response.url == reverse(CHANGELIST) + "?content_view=1"


def test_staff_without_the_review_permission_cannot_open_the_content_view(alice):
    clerk = get_user_model().objects.create_user("clerk", password="clerk-password-1", is_staff=True)
    clerk.user_permissions.add(
        *Group.objects.get(name=review.REVIEWERS_GROUP).permissions.exclude(codename="review_conversation")
    )
    client = logged_in(clerk)
    assert client.get(reverse(CHANGELIST)).status_code == 200
    assert client.get(reverse(CHANGELIST), {"content_view": "1"}).status_code == 403
    assert client.get(reverse("admin:assistant_conversation_content")).status_code == 403
    assert client.post(reverse("admin:assistant_conversation_content"), REASON).status_code == 403
    assert (
        reverse("admin:assistant_conversation_content")
        not in client.get(reverse(CHANGELIST)).content.decode()
    )


def test_conversations_are_not_offered_to_autocomplete_widgets(admin_client_, conversation):
    params = {
        "app_label": "assistant",
        "model_name": "message",
        "field_name": "conversation",
        "term": "alice",
    }
    response = admin_client_.get(reverse("admin:autocomplete"), params)
    assert response.status_code == 403
    assert "Quartalsbericht" not in response.content.decode()


# The list's 7, whether the page's conversations were logged under this grant, writing those
# that were not (none the second time).
CONTENT_LIST_QUERIES = LIST_QUERIES + 2


@pytest.mark.parametrize("count", [1, 3])
def test_content_view_query_count_is_constant(reviewer_client, alice, django_assert_num_queries, count):
    for n in range(count):
        conversation_with_messages(alice, f"Gespräch {n}", feedback=-1 if n % 2 else None, error=n == 2)
    open_content_view(reviewer_client)
    with django_assert_num_queries(CONTENT_LIST_QUERIES):
        response = reviewer_client.get(reverse(CHANGELIST), {"content_view": "1"})
    assert len(response.context["cl"].result_list) == count
    assert AccessLog.objects.count() == count
    with django_assert_num_queries(CONTENT_LIST_QUERIES - 1):
        reviewer_client.get(reverse(CHANGELIST), {"content_view": "1"})
    with django_assert_num_queries(MESSAGE_LIST_QUERIES + 1):
        reviewer_client.get(reverse(MESSAGES), {"content_view": "1"})  # logged already: no writes


# --- content columns, the search notice, the site's name ----------------------------------------

HIDDEN = "— (content: state a reason to review)"


def column_headers(response) -> list[str]:
    return [header["text"] for header in response.context["result_headers"]][1:]  # after the checkbox


def test_titles_and_comments_show_a_placeholder_outside_the_content_view(reviewer_client, alice):
    commented = conversation_with_messages(alice, "Gehaltsverhandlung", feedback=-1)
    answer = commented.messages.get(role="assistant")
    Message.objects.filter(pk=answer.pk).update(feedback_comment="Zahl stimmt nicht")
    conversation_with_messages(alice, "Urlaub")
    lists = [(reverse(CHANGELIST), "Gehaltsverhandlung"), (reverse(MESSAGES), "Zahl stimmt nicht")]
    plain = {url: reviewer_client.get(url) for url, _ in lists}
    for url, content in lists:
        page = plain[url].content.decode()
        assert content not in page
        assert "Urlaub" not in page
        assert HIDDEN in page
    # A comment's place says only that there is one: 4 messages, 1 comment, 4 titles.
    messages_page = plain[reverse(MESSAGES)].content.decode()
    assert messages_page.count(f'<td class="field-comment_hidden">{HIDDEN}</td>') == 1
    assert messages_page.count(f'<td class="field-conversation_title_hidden">{HIDDEN}</td>') == 4
    open_content_view(reviewer_client)
    for url, content in lists:
        shown = reviewer_client.get(url, {"content_view": "1"})
        page = shown.content.decode()
        assert content in page
        assert "Urlaub" in page
        assert HIDDEN not in page
        # The same columns in the same places: `?o=` sorts by the same column in both views.
        assert column_headers(shown) == column_headers(plain[url])


def test_conversation_list_has_nine_narrow_columns(reviewer_client, conversation):
    # These and the filters fit 1440 px (tests/browser/test_admin_layout.py measures it);
    # the label names the owner.
    response = reviewer_client.get(reverse(CHANGELIST))
    assert column_headers(response) == [
        "conversation",
        "title",
        "model",
        "messages",
        "tokens",
        "last activity",
        "negative feedback",
        "errors",
        "archived",
    ]


def test_a_search_by_staff_without_the_review_permission_names_no_way_to_content(alice, conversation):
    clerk = get_user_model().objects.create_user("clerk", password="clerk-password-1", is_staff=True)
    clerk.user_permissions.add(
        *Group.objects.get(name=review.REVIEWERS_GROUP).permissions.exclude(codename="review_conversation")
    )
    response = logged_in(clerk).get(reverse(CHANGELIST), {"q": "Teilantwort"})
    page = response.content.decode()
    assert list(response.context["cl"].result_list) == []
    assert "Only owners' usernames and conversation ids were searched." in page
    assert reverse("admin:assistant_conversation_content") not in page


@pytest.mark.parametrize("url", ["admin:index", "admin:login", CHANGELIST])
def test_the_admin_is_branded_assistant(admin_client_, url):
    client = Client() if url == "admin:login" else admin_client_
    page = client.get(reverse(url)).content.decode()
    assert re.search(r"<title>[^<]*\| Assistant administration</title>", page)
    assert "Django" not in page
    if url != "admin:login":
        assert re.search(r'<div id="site-name"><a href="[^"]*">Assistant administration</a></div>', page)
