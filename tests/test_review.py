"""Review: a transcript opens only for a stated reason, every access is logged, owners see it."""

from __future__ import annotations

import csv
import io
import json

import pytest
from asgiref.sync import async_to_sync
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.test import Client
from django.urls import reverse

from assistant import review
from assistant.models import AccessLog, Conversation, Message
from tests.helpers.live import logged_in

REASON = {"purpose": "support", "details": "Ticket 4711: alice asked for help"}


@pytest.fixture
def rita(db):
    user = get_user_model().objects.create_user("rita", password="rita-password-1")
    review.reviewer_grant(user=user)
    return user


@pytest.fixture
def reviewer_client(rita) -> Client:
    return logged_in(rita)


@pytest.fixture
def root(db):
    return get_user_model().objects.create_superuser("root", password="root-password-1")


@pytest.fixture
def root_client(root) -> Client:
    return logged_in(root)


@pytest.fixture
def conversation(alice) -> Conversation:
    conversation = Conversation.objects.create(owner=alice, title="Gehaltsfrage", model="demo")
    Message.objects.create(
        conversation=conversation, role="user", content="<b>fett</b> <img src=x onerror=alert(1)>"
    )
    Message.objects.create(
        conversation=conversation,
        role="assistant",
        content="Hier: <script>alert(1)</script> und [klick](javascript:alert(2)) und **wichtig**",
        model="demo",
        prompt_tokens=11,
        completion_tokens=22,
        time_to_first_token_ms=340,
        duration_ms=1200,
        feedback=-1,
        feedback_comment="Falsche Zahl <i>im</i> Text",
    )
    Message.objects.create(
        conversation=conversation,
        role="assistant",
        content="abgebrochen",
        status="error",
        error_code=503,
        error_type="upstream_unavailable",
        error_detail="The model is overloaded",
        superseded=True,
    )
    return conversation


def change_url(conversation: Conversation) -> str:
    return reverse("admin:assistant_conversation_change", args=[conversation.pk])


def reason_url(conversation: Conversation) -> str:
    return reverse("admin:assistant_conversation_review", args=[conversation.pk])


def streamed(response) -> bytes:
    """The body of a streaming response with an async iterator, read in this thread's transaction."""

    async def collect() -> bytes:
        return b"".join([chunk async for chunk in response.streaming_content])

    return async_to_sync(collect)()


# --- the role -----------------------------------------------------------------------------------


def test_reviewers_group_has_read_permissions_only(db):
    group = Group.objects.get(name=review.REVIEWERS_GROUP)
    codenames = set(group.permissions.values_list("codename", flat=True))
    assert codenames == {"review_conversation", "view_conversation", "view_message", "view_accesslog"}


def test_reviewer_grant_makes_staff_with_the_permission(alice):
    assert not review.can_review(alice)
    review.reviewer_grant(user=alice)
    alice = get_user_model().objects.get(pk=alice.pk)
    assert alice.is_staff
    assert not alice.is_superuser
    assert review.can_review(alice)
    review.reviewer_revoke(user=alice)
    alice = get_user_model().objects.get(pk=alice.pk)
    assert not review.can_review(alice)


def test_staff_without_the_review_permission_cannot_open_transcripts(conversation):
    clerk = get_user_model().objects.create_user("clerk", password="clerk-password-1", is_staff=True)
    clerk.user_permissions.add(
        *Group.objects.get(name=review.REVIEWERS_GROUP).permissions.exclude(codename="review_conversation")
    )
    client = Client()
    client.force_login(clerk)
    assert client.get(reverse("admin:assistant_conversation_changelist")).status_code == 200
    assert client.get(change_url(conversation)).status_code == 403
    assert client.post(reason_url(conversation), REASON).status_code == 403
    assert not AccessLog.objects.exists()


# --- a reason before the transcript --------------------------------------------------------------


def test_reviewer_sees_the_list_but_gets_the_reason_form_first(reviewer_client, conversation):
    listing = reviewer_client.get(reverse("admin:assistant_conversation_changelist")).content.decode()
    assert review.conversation_label(conversation) in listing
    assert "Gehaltsfrage" not in listing
    response = reviewer_client.get(change_url(conversation))
    assert response.status_code == 302
    assert response.url == reason_url(conversation)
    response = reviewer_client.get(response.url)
    page = response.content.decode()
    assert response.status_code == 200
    assert 'name="details"' in page
    assert "alice" in page
    assert 'value="Record reason and open the transcript"' in page
    label = review.conversation_label(conversation)
    assert f'<a href="/admin/assistant/conversation/">Conversations</a>\n&rsaquo; {label}\n</div>' in page
    assert 'class=" app-assistant model-conversation review-reason"' in page
    for content in ("Gehaltsfrage", "fett", "Hier:", "abgebrochen", "Falsche Zahl"):
        assert content not in page
    assert not AccessLog.objects.exists()


@pytest.mark.parametrize(
    "data",
    [
        {},
        {"purpose": "support", "details": ""},
        {"purpose": "support", "details": "   kurz   "},
        {"purpose": "unknown", "details": "Ticket 4711: alice asked for help"},
    ],
)
def test_reason_form_rejects_missing_or_short_reasons(reviewer_client, conversation, data):
    response = reviewer_client.post(reason_url(conversation), data)
    assert response.status_code == 200
    assert "errorlist" in response.content.decode()
    assert not AccessLog.objects.exists()
    assert reviewer_client.get(change_url(conversation)).status_code == 302


def test_reason_opens_the_transcript_and_is_logged(reviewer_client, rita, alice, conversation):
    response = reviewer_client.post(reason_url(conversation), REASON)
    assert response.status_code == 302
    assert response.url == change_url(conversation)
    entry = AccessLog.objects.get()
    assert entry.reviewer == rita
    assert entry.reviewer_username == "rita"
    assert entry.owner == alice
    assert entry.owner_username == "alice"
    assert entry.conversation_id == conversation.pk
    assert entry.reason == "User support request: Ticket 4711: alice asked for help"
    response = reviewer_client.get(change_url(conversation))
    assert response.status_code == 200
    assert AccessLog.objects.count() == 1  # reading again within the grant is the same access


def test_transcript_renders_messages_inert(reviewer_client, conversation):
    reviewer_client.post(reason_url(conversation), REASON)
    page = reviewer_client.get(change_url(conversation)).content.decode()
    # The user's HTML is text.
    assert "&lt;b&gt;fett&lt;/b&gt; &lt;img src=x onerror=alert(1)&gt;" in page
    assert "<img src=x" not in page
    # The answer is sanitized Markdown: no script, no javascript: link, formatting kept.
    assert "<script>alert(1)</script>" not in page
    assert 'href="javascript' not in page
    assert "[klick](javascript:alert(2))" in page  # shown as text
    assert "<strong>wichtig</strong>" in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    # The comment is escaped too.
    assert "Falsche Zahl &lt;i&gt;im&lt;/i&gt; Text" in page


def test_transcript_shows_usage_timings_errors_feedback(reviewer_client, conversation):
    reviewer_client.post(reason_url(conversation), REASON)
    page = reviewer_client.get(change_url(conversation)).content.decode()
    for detail in ("11 prompt tokens", "22 completion tokens", "340 ms", "1200 ms", "upstream_unavailable",
                   "503", "The model is overloaded", "superseded", "down"):  # fmt: skip
        assert detail in page, detail


def test_transcript_is_read_only(reviewer_client, conversation):
    reviewer_client.post(reason_url(conversation), REASON)
    page = reviewer_client.get(change_url(conversation)).content.decode()
    assert 'name="_save"' not in page
    assert "deletelink" not in page
    assert reviewer_client.post(change_url(conversation), {"title": "neu"}).status_code == 403
    conversation.refresh_from_db()
    assert conversation.title == "Gehaltsfrage"


def test_reason_opens_only_that_transcript(reviewer_client, alice, conversation):
    other = Conversation.objects.create(owner=alice, title="Anderes", model="demo")
    reviewer_client.post(reason_url(conversation), REASON)
    assert reviewer_client.get(change_url(other)).status_code == 302


def test_grant_expires_after_its_time(db):
    session: dict = {}
    assert review.transcript_granted(session=session, conversation_id="c", now=1000) is None
    session[review.SESSION_KEY] = {"c": 1000 + review.GRANT_SECONDS}
    assert review.transcript_granted(session=session, conversation_id="c", now=1001) is not None
    assert (
        review.transcript_granted(session=session, conversation_id="c", now=1000 + review.GRANT_SECONDS)
        is None
    )


def test_superuser_also_needs_a_reason(root_client, root, conversation):
    response = root_client.get(change_url(conversation))
    assert response.status_code == 302
    assert response.url == reason_url(conversation)
    root_client.post(
        reason_url(conversation), {"purpose": "security", "details": "Incident 2024-17 analysis"}
    )
    assert AccessLog.objects.get().reviewer == root
    page = root_client.get(change_url(conversation)).content.decode()
    assert "Hier:" in page
    assert "deletelink" in page  # superusers may delete, through the confirmation page


def test_unknown_conversation_is_404_without_logging(reviewer_client):
    missing = "00000000-0000-0000-0000-000000000000"
    review = reverse("admin:assistant_conversation_review", args=[missing])
    transcript = reverse("admin:assistant_conversation_change", args=[missing])
    assert reviewer_client.post(review, REASON).status_code == 404
    assert reviewer_client.get(transcript).status_code == 404
    assert not AccessLog.objects.exists()


# --- reviewers change nothing --------------------------------------------------------------------


def test_reviewer_cannot_change_or_delete_anything(reviewer_client, conversation):
    message = conversation.messages.first()
    reviewer_client.post(reason_url(conversation), REASON)
    entry = AccessLog.objects.get()
    urls = [
        reverse("admin:assistant_conversation_add"),
        reverse("admin:assistant_conversation_delete", args=[conversation.pk]),
        reverse("admin:assistant_message_add"),
        reverse("admin:assistant_message_delete", args=[message.pk]),
        reverse("admin:assistant_accesslog_add"),
        reverse("admin:assistant_accesslog_delete", args=[entry.pk]),
    ]
    for url in urls:
        assert reviewer_client.post(url, {"post": "yes", "reason": "x"}).status_code == 403, url
    assert reviewer_client.post(change_url(conversation), {"title": "x"}).status_code == 403
    change_entry = reverse("admin:assistant_accesslog_change", args=[entry.pk])
    assert reviewer_client.post(change_entry, {"reason": "gefälscht"}).status_code == 403
    entry.refresh_from_db()
    assert entry.reason.startswith("User support request")
    assert Message.objects.filter(pk=message.pk).exists()
    assert AccessLog.objects.count() == 1


def test_nobody_edits_the_access_log_not_even_superusers(root_client, rita, conversation):
    entry = review.access_record(reviewer=rita, conversation=conversation, reason="Ticket 4711 for alice")
    page = root_client.get(reverse("admin:assistant_accesslog_change", args=[entry.pk])).content.decode()
    assert 'name="_save"' not in page
    assert "deletelink" not in page
    assert (
        root_client.post(
            reverse("admin:assistant_accesslog_delete", args=[entry.pk]), {"post": "yes"}
        ).status_code
        == 403
    )
    assert root_client.get(reverse("admin:assistant_accesslog_add")).status_code == 403
    changelist = root_client.get(reverse("admin:assistant_accesslog_changelist")).content.decode()
    assert "delete_selected" not in changelist
    assert AccessLog.objects.filter(pk=entry.pk).exists()


def test_message_view_leads_to_the_transcript_behind_the_reason(reviewer_client, conversation):
    message = conversation.messages.first()
    response = reviewer_client.get(reverse("admin:assistant_message_change", args=[message.pk]))
    assert response.status_code == 302
    assert "fett" not in response.content.decode()
    response = reviewer_client.get(response.url)
    assert response.status_code == 302
    assert response.url == f"{reason_url(conversation)}?message={message.pk}"
    response = reviewer_client.post(response.url, REASON)
    assert response.url == f"{change_url(conversation)}#message-{message.pk}"
    history = reviewer_client.get(reverse("admin:assistant_message_history", args=[message.pk]))
    assert history.status_code == 302


# --- the owner's view ----------------------------------------------------------------------------


def test_owner_sees_accesses_to_own_conversations(alice, rita, conversation):
    review.access_record(reviewer=rita, conversation=conversation, reason="User support request: Ticket 4711")
    client = Client()
    client.force_login(alice)
    response = client.get(reverse("access_log"))
    page = response.content.decode()
    assert response.status_code == 200
    assert "rita" in page
    assert "Ticket 4711" in page
    assert "Gehaltsfrage" in page
    assert reverse("conversation", args=[conversation.pk]) in page


def test_owner_sees_deleted_conversations_as_deleted(alice, rita, conversation):
    review.access_record(reviewer=rita, conversation=conversation, reason="Legal request: court order 12")
    conversation.delete()
    client = Client()
    client.force_login(alice)
    page = client.get(reverse("access_log")).content.decode()
    assert "court order 12" in page
    assert "deleted" in page
    assert "Gehaltsfrage" not in page


def test_owner_does_not_see_others_accesses(bob, rita, conversation):
    review.access_record(reviewer=rita, conversation=conversation, reason="User support request: Ticket 4711")
    client = Client()
    client.force_login(bob)
    page = client.get(reverse("access_log")).content.decode()
    assert "Ticket 4711" not in page
    assert "rita" not in page
    assert "Gehaltsfrage" not in page


def test_access_log_page_needs_login(db):
    response = Client().get(reverse("access_log"))
    assert response.status_code == 302
    assert response.url.startswith(reverse("login"))


# --- exports -------------------------------------------------------------------------------------


def test_access_log_csv_export_by_staff(reviewer_client, rita, alice, conversation):
    review.access_record(reviewer=rita, conversation=conversation, reason='=HYPERLINK("x") Ticket 4711')
    review.access_record(reviewer=rita, conversation=conversation, reason="Security incident: 17")
    response = reviewer_client.get(reverse("admin:assistant_accesslog_export"), {"q": "4711"})
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/csv")
    assert "attachment" in response["Content-Disposition"]
    rows = list(csv.reader(io.StringIO(streamed(response).decode())))
    assert rows[0] == review.ACCESS_LOG_COLUMNS
    assert len(rows) == 2
    assert rows[1][1:4] == ["rita", "alice", str(conversation.pk)]
    assert rows[1][4] == '\'=HYPERLINK("x") Ticket 4711'  # no formula in a spreadsheet


def test_access_log_csv_export_action(reviewer_client, rita, conversation):
    first = review.access_record(reviewer=rita, conversation=conversation, reason="Ticket 1 for alice")
    review.access_record(reviewer=rita, conversation=conversation, reason="Ticket 2 for alice")
    response = reviewer_client.post(
        reverse("admin:assistant_accesslog_changelist"),
        {"action": "export_csv", "_selected_action": [first.pk]},
    )
    rows = list(csv.reader(io.StringIO(streamed(response).decode())))
    assert [row[4] for row in rows[1:]] == ["Ticket 1 for alice"]


def test_access_log_export_closed_to_staff_without_view_permission(conversation):
    clerk = get_user_model().objects.create_user("clerk", password="clerk-password-1", is_staff=True)
    client = Client()
    client.force_login(clerk)
    assert client.get(reverse("admin:assistant_accesslog_export")).status_code == 403


def test_export_action_asks_for_a_reason_first(reviewer_client, conversation):
    data = {"action": "export_jsonl", "_selected_action": [conversation.pk]}
    response = reviewer_client.post(reverse("admin:assistant_conversation_changelist"), data)
    page = response.content.decode()
    assert response.status_code == 200
    assert 'name="details"' in page
    assert 'value="Record reason and export (JSON Lines)"' in page
    assert '<a href="/admin/assistant/conversation/">Conversations</a>\n&rsaquo; Export\n</div>' in page
    assert not response.streaming
    assert "Hier:" not in page
    response = reviewer_client.post(
        reverse("admin:assistant_conversation_changelist"), {**data, "export_reason": "1", "details": "kurz"}
    )
    assert not response.streaming
    assert "errorlist" in response.content.decode()
    assert not AccessLog.objects.exists()


def test_export_action_streams_json_lines_and_logs_each(reviewer_client, rita, alice, bob, conversation):
    other = Conversation.objects.create(owner=bob, title="Bobs Frage", model="demo")
    Message.objects.create(conversation=other, role="user", content="Hallo")
    Conversation.objects.create(owner=bob, title="Nicht gewählt", model="demo")
    data = {
        "action": "export_jsonl",
        "_selected_action": [conversation.pk, other.pk],
        "export_reason": "1",
        "purpose": "legal",
        "details": "Court order 2024-55, both parties",
    }
    response = reviewer_client.post(reverse("admin:assistant_conversation_changelist"), data)
    assert response.status_code == 200
    assert response.streaming
    assert response["Content-Type"].startswith("application/x-ndjson")
    lines = streamed(response).decode().splitlines()
    exported = [json.loads(line) for line in lines]
    assert {item["title"] for item in exported} == {"Gehaltsfrage", "Bobs Frage"}
    first = next(item for item in exported if item["id"] == str(conversation.pk))
    assert first["owner"] == "alice"
    assert [m["role"] for m in first["messages"]] == ["user", "assistant", "assistant"]
    answer = first["messages"][1]
    assert answer["usage"] == {"prompt_tokens": 11, "completion_tokens": 22}
    assert answer["feedback"] == "down"
    assert answer["feedback_comment"] == "Falsche Zahl <i>im</i> Text"
    assert first["messages"][2]["error"] == {
        "code": 503,
        "type": "upstream_unavailable",
        "detail": "The model is overloaded",
    }
    entries = AccessLog.objects.order_by("owner_username")
    assert [(e.owner_username, e.reviewer_username) for e in entries] == [("alice", "rita"), ("bob", "rita")]
    assert {e.reason for e in entries} == {"export: Legal request: Court order 2024-55, both parties"}
    assert {e.conversation_id for e in entries} == {conversation.pk, other.pk}


def test_export_of_all_matching_conversations(reviewer_client, alice, bob):
    matching = [Conversation.objects.create(owner=bob, title=f"Treffer {n}", model="demo") for n in range(3)]
    Conversation.objects.create(owner=alice, title="Anderes", model="demo")
    url = reverse("admin:assistant_conversation_changelist") + "?q=bob"
    # As the browser sends "select all 3": the rows on the page are checked as well.
    data = {
        "action": "export_jsonl",
        "select_across": "1",
        "_selected_action": [matching[0].pk],
        "index": "0",
    }
    page = reviewer_client.post(url, data).content.decode()
    assert "export 3 conversations" in page
    data.pop("index")
    response = reviewer_client.post(url, {**data, "export_reason": "1", **REASON})
    titles = sorted(json.loads(line)["title"] for line in streamed(response).decode().splitlines())
    assert titles == ["Treffer 0", "Treffer 1", "Treffer 2"]
    assert AccessLog.objects.count() == 3


def test_export_is_closed_to_staff_without_the_review_permission(conversation):
    clerk = get_user_model().objects.create_user("clerk", password="clerk-password-1", is_staff=True)
    clerk.user_permissions.add(
        *Group.objects.get(name=review.REVIEWERS_GROUP).permissions.exclude(codename="review_conversation")
    )
    client = Client()
    client.force_login(clerk)
    data = {"action": "export_jsonl", "_selected_action": [conversation.pk], "export_reason": "1", **REASON}
    response = client.post(reverse("admin:assistant_conversation_changelist"), data)
    assert not response.streaming
    assert not AccessLog.objects.exists()


# --- feedback review -----------------------------------------------------------------------------


def test_feedback_review_lists_thumbs_down_with_comments_and_links_to_context(
    reviewer_client, alice, conversation
):
    other = Conversation.objects.create(owner=alice, title="Lob", model="demo")
    Message.objects.create(
        conversation=other, role="assistant", content="gut", feedback=1, feedback_comment="Super"
    )
    Message.objects.create(conversation=other, role="assistant", content="naja", feedback=-1)
    url = reverse("admin:assistant_message_changelist")
    response = reviewer_client.get(url, {"feedback_review": "down_comment"})
    page = response.content.decode()
    assert response.status_code == 200
    assert [m.pk for m in response.context["cl"].result_list] == [conversation.messages.all()[1].pk]
    # Without a reason: that there is a comment, not what it says, nor the title.
    assert "Falsche Zahl" not in page
    assert "Gehaltsfrage" not in page
    assert review.conversation_label(conversation) in page
    assert "alice" in page
    # The review's link asks for a reason, the purpose preselected, and comes back.
    response = reviewer_client.get(url, {"feedback_review": "down_comment", "content_view": "1"})
    assert response.status_code == 302
    form = reviewer_client.get(response.url)
    assert form.context["form"]["purpose"].value() == "feedback"
    assert not AccessLog.objects.exists()
    back = reviewer_client.post(response.url, {"purpose": "feedback", "details": "Weekly review of answers"})
    assert back.url == f"{url}?feedback_review=down_comment&content_view=1"
    response = reviewer_client.get(back.url)
    page = response.content.decode()
    rows = response.context["cl"].result_list
    assert [m.feedback_comment for m in rows] == ["Falsche Zahl <i>im</i> Text"]
    assert "Falsche Zahl &lt;i&gt;im&lt;/i&gt; Text" in page
    assert "Gehaltsfrage" in page
    assert "Hier:" not in page  # the answer itself only in the transcript
    entry = AccessLog.objects.get()
    assert (entry.conversation_id, entry.owner_username, entry.reason) == (
        conversation.pk,
        "alice",
        "list: Quality review of negative feedback: Weekly review of answers",
    )
    answer = rows[0]
    link = f"{change_url(conversation)}?message={answer.pk}#message-{answer.pk}"
    assert link in page
    response = reviewer_client.get(link.split("#")[0])
    assert response.url == f"{reason_url(conversation)}?message={answer.pk}"
    assert len(reviewer_client.get(url, {"feedback_review": "down"}).context["cl"].result_list) == 2
    assert "Feedback review" in reviewer_client.get(url).content.decode()


# --- searching content -----------------------------------------------------------------------------


def test_content_search_without_a_reason_is_refused_and_offers_the_reason_form(
    reviewer_client, rita, alice, conversation
):
    url = reverse("admin:assistant_message_changelist")
    response = reviewer_client.get(url, {"q": "Falsche Zahl"})
    page = response.content.decode()
    assert response.status_code == 200
    assert list(response.context["cl"].result_list) == []
    assert "Only owners' usernames and conversation ids were searched." in page
    assert not AccessLog.objects.exists()
    # The way in keeps the search: state a reason, land on the search in the content view.
    asked = response.context["content_view_on_url"]
    assert asked in page
    assert "q%3DFalsche%2BZahl" in asked
    back = reviewer_client.post(asked, REASON)
    assert back.url == f"{url}?q=Falsche+Zahl&content_view=1"
    found = reviewer_client.get(back.url)
    assert [m.feedback_comment for m in found.context["cl"].result_list] == ["Falsche Zahl <i>im</i> Text"]
    assert "content-search-refused" not in found.content.decode()
    entry = AccessLog.objects.get()
    assert (entry.reviewer, entry.owner, entry.conversation_id) == (rita, alice, conversation.pk)
    assert entry.reason == "search “Falsche Zahl”: User support request: Ticket 4711: alice asked for help"
    # The owner reads it: who, which conversation, the search and the reason.
    owners_page = logged_in(alice).get(reverse("access_log")).content.decode()
    assert "search “Falsche Zahl”: User support request: Ticket 4711" in owners_page
    assert "rita" in owners_page
    assert reverse("conversation", args=[conversation.pk]) in owners_page


def test_a_metadata_search_says_what_it_did_not_search_whatever_it_finds(reviewer_client, conversation):
    url = reverse("admin:assistant_conversation_changelist")
    found, not_found = (reviewer_client.get(url, {"q": q}) for q in ("alice", "Gehaltsfrage"))
    assert [c.pk for c in found.context["cl"].result_list] == [conversation.pk]
    assert list(not_found.context["cl"].result_list) == []
    # The notice does not depend on whether the content would have matched.
    assert found.context["content_search_refused"] is not_found.context["content_search_refused"] is True
    assert "content-search-refused" in found.content.decode()
    assert "content-search-refused" not in reviewer_client.get(url).content.decode()
    assert not AccessLog.objects.exists()
