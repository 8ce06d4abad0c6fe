"""Pages and lists at size: the same number of queries for 1 message or 500, 1 conversation
or 10,000; the sidebar shows the newest 50 and pages on with a cursor (never an offset)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from assistant.models import Conversation, Message
from assistant.views.pages import SIDEBAR_CONVERSATIONS

# An answer with what answers have: a list, a link, a code block, a table, a quote.
ANSWER = """Here is a **plan** with `code`:

1. First step, see [the docs](https://example.com/docs)
2. Second step

```python
def greet(name):
    return f"Hallo {name}"
```

| Stadt | Einwohner |
|-------|----------:|
| Köln  | 1 084 000 |

> Grüße aus Köln, *bis bald*.
"""


def conversations_for(owner, count: int, *, title: str) -> list[Conversation]:
    return Conversation.objects.bulk_create(
        Conversation(owner=owner, title=f"{title} {n}", model="demo") for n in range(count)
    )


def messages_for(conversation: Conversation, count: int) -> None:
    """Questions and answers taking turns; some answers rated, some failed, the last one streaming."""
    Message.objects.bulk_create(
        Message(
            conversation=conversation,
            role="user" if n % 2 == 0 else "assistant",
            content=f"Frage {n} <b>nicht fett</b>" if n % 2 == 0 else ANSWER,
            status="streaming" if n == count - 1 and n % 2 else "error" if n % 10 == 3 else "done",
            error_type="upstream_unavailable" if n % 10 == 3 else "",
            feedback=-1 if n % 10 == 5 else None,
            prompt_tokens=10 if n % 2 else None,
            completion_tokens=90 if n % 2 else None,
        )
        for n in range(count)
    )


def bob_data(bob) -> None:
    """Another user's conversations, newer than everything of alice's, with messages."""
    for conversation in conversations_for(bob, 3, title="Bobs Geheimnis"):
        messages_for(conversation, 2)


def sidebar_ids(html: str) -> list[str]:
    marker = 'data-conversation-id="'
    return [part.split('"', 1)[0] for part in html.split(marker)[1:]]


def newest(owner, count: int) -> list[str]:
    rows = Conversation.objects.filter(owner=owner).order_by("-updated_at", "-pk")[:count]
    return [str(pk) for pk in rows.values_list("pk", flat=True)]


# --- the chat page and its sidebar ------------------------------------------------------------

# The user, one page of the sidebar (with one more row to know there are more). The
# session comes from the process's memory (config/settings.py, one process).
SIDEBAR_PAGE_QUERIES = 2
# ... and a new chat's example prompts and the assistants the user may choose.
CHAT_PAGE_QUERIES = SIDEBAR_PAGE_QUERIES + 2
# ... or the conversation, its messages and its documents.
CONVERSATION_PAGE_QUERIES = SIDEBAR_PAGE_QUERIES + 3


@pytest.fixture(params=[1, 10_000])
def alice_conversations(request, alice, bob) -> int:
    """Alice has 1 conversation, or 10,000; bob has his own."""
    conversations_for(alice, request.param, title="Gespräch")
    bob_data(bob)
    return request.param


def test_chat_page_queries_do_not_grow_with_conversations(
    alice_client, alice, django_assert_num_queries, alice_conversations
):
    with django_assert_num_queries(CHAT_PAGE_QUERIES):
        response = alice_client.get(reverse("chat"))

    html = response.content.decode()
    assert sidebar_ids(html) == newest(alice, SIDEBAR_CONVERSATIONS)
    assert ('id="show-more"' in html) == (alice_conversations > SIDEBAR_CONVERSATIONS)
    assert "Bobs Geheimnis" not in html


@pytest.mark.parametrize(("conversations", "messages"), [(1, 1), (10_000, 500)])
def test_conversation_page_queries_do_not_grow_with_messages_or_conversations(
    alice_client, alice, bob, django_assert_num_queries, conversations, messages
):
    conversations_for(alice, conversations - 1, title="Gespräch")
    conversation = Conversation.objects.create(owner=alice, title="Die lange", model="demo")
    messages_for(conversation, messages)
    bob_data(bob)

    with django_assert_num_queries(CONVERSATION_PAGE_QUERIES):
        response = alice_client.get(reverse("conversation", args=[conversation.pk]))

    html = response.content.decode()
    # Every message of the conversation, each once; the sidebar at most one page.
    assert html.count('class="message ') == messages
    assert html.count("<b>nicht fett</b>") == 0
    assert html.count("<table>") == messages // 2
    assert sidebar_ids(html) == newest(alice, SIDEBAR_CONVERSATIONS)
    assert "Bobs Geheimnis" not in html


def test_sidebar_search_and_archive_keep_one_page(alice_client, alice, django_assert_num_queries):
    found = conversations_for(alice, SIDEBAR_CONVERSATIONS + 5, title="Köln")
    conversations_for(alice, 10, title="Bonn")
    Conversation.objects.filter(pk__in=[c.pk for c in found[:3]]).update(archived=True)

    with django_assert_num_queries(CHAT_PAGE_QUERIES):
        html = alice_client.get(reverse("chat"), {"q": "Köln"}).content.decode()
    assert len(sidebar_ids(html)) == SIDEBAR_CONVERSATIONS
    assert 'id="show-more"' in html
    archived = alice_client.get(reverse("chat"), {"archived": "1"}).content.decode()
    assert sorted(sidebar_ids(archived)) == sorted(str(c.pk) for c in found[:3])
    assert 'id="show-more"' not in archived


# --- the JSON API behind the page ------------------------------------------------------------

# The user, one page of conversations.
LIST_API_QUERIES = 2
# The user, the conversation, its messages.
DETAIL_API_QUERIES = 3


def listed(client: Client, **params) -> dict:
    response = client.get(reverse("api_conversations"), params)
    assert response.status_code == 200
    return response.json()


def test_list_api_queries_do_not_grow_with_conversations(
    alice_client, alice, django_assert_num_queries, alice_conversations
):
    with django_assert_num_queries(LIST_API_QUERIES):
        first = listed(alice_client)
    assert [c["id"] for c in first["conversations"]] == newest(alice, 100)
    assert (first["next"] is None) == (alice_conversations <= 100)
    if first["next"]:
        # A page deep in the list costs the same: the cursor seeks, nothing is counted through.
        with django_assert_num_queries(LIST_API_QUERIES):
            second = listed(alice_client, before=first["next"])
        assert [c["id"] for c in second["conversations"]] == newest(alice, 200)[100:]


@pytest.fixture(params=[1, 500])
def long_conversation(request, alice, bob) -> Conversation:
    """Alice's conversation of 1 message, or of 500; bob has his own."""
    conversation = Conversation.objects.create(owner=alice, title="Die lange", model="demo")
    messages_for(conversation, request.param)
    bob_data(bob)
    return conversation


def test_detail_api_queries_do_not_grow_with_messages(
    alice_client, django_assert_num_queries, long_conversation
):
    with django_assert_num_queries(DETAIL_API_QUERIES):
        response = alice_client.get(reverse("api_conversation", args=[long_conversation.pk]))

    assert len(response.json()["messages"]) == long_conversation.messages.count()


def test_list_api_pages_through_everything_once_in_order(alice_client, alice, bob):
    conversations = conversations_for(alice, 250, title="Gespräch")
    bob_data(bob)
    # Ties in the time of last activity, across the page boundaries, and some older ones.
    moment = timezone.now() - timedelta(hours=1)
    Conversation.objects.filter(pk__in=[c.pk for c in conversations[:180]]).update(updated_at=moment)
    Conversation.objects.filter(pk__in=[c.pk for c in conversations[180:]]).update(
        updated_at=moment - timedelta(days=3)
    )

    pages, cursor = [], ""
    while cursor is not None:
        page = listed(alice_client, before=cursor) if cursor else listed(alice_client)
        pages.append([c["id"] for c in page["conversations"]])
        cursor = page["next"]

    assert [len(page) for page in pages] == [100, 100, 50]
    assert [conversation for page in pages for conversation in page] == newest(alice, 250)


def test_list_api_continues_a_search_and_the_archive(alice_client, alice):
    conversations_for(alice, 120, title="Köln")
    conversations_for(alice, 30, title="Bonn")
    Conversation.objects.filter(title__startswith="Köln").update(archived=True)

    first = listed(alice_client, q="köln", archived="1")
    second = listed(alice_client, q="köln", archived="1", before=first["next"])

    assert len(first["conversations"]) + len(second["conversations"]) == 120
    assert second["next"] is None
    assert all(c["title"].startswith("Köln") and c["archived"] for c in second["conversations"])


@pytest.mark.parametrize(
    "before", ["x", "1.2", "12.zz", "9" * 40 + ".0123456789abcdef0123456789abcdef", "1.2.3"]
)
def test_list_api_rejects_a_malformed_cursor(alice_client, before):
    response = alice_client.get(reverse("api_conversations"), {"before": before})
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid"


# --- the admin: list, transcript and the messages of a long conversation ---------------------

# User, the reviewer's user and group permissions, the model filter's values, the owner
# filter's users, the page count, the page of rows.
ADMIN_LIST_QUERIES = 7
# User, the reviewer's user and group permissions, the conversation with its figures, its
# messages.
TRANSCRIPT_QUERIES = 5
# User, the reviewer's user and group permissions, the page count, the page of messages
# with their conversation and owner, the model and error type filters' values.
MESSAGE_LIST_QUERIES = 7


def test_admin_pages_of_a_long_conversation_have_constant_queries(
    reviewer_client, alice, django_assert_num_queries, long_conversation
):
    conversation = long_conversation
    count = conversation.messages.count()
    reason = {"purpose": "support", "details": "Ticket 4711: alice asked for help"}
    reviewer_client.post(reverse("admin:assistant_conversation_review", args=[conversation.pk]), reason)

    with django_assert_num_queries(ADMIN_LIST_QUERIES):
        listing = reviewer_client.get(reverse("admin:assistant_conversation_changelist"))
    with django_assert_num_queries(TRANSCRIPT_QUERIES):
        transcript = reviewer_client.get(
            reverse("admin:assistant_conversation_change", args=[conversation.pk])
        )
    with django_assert_num_queries(MESSAGE_LIST_QUERIES):
        messages = reviewer_client.get(
            reverse("admin:assistant_message_changelist"), {"conversation__id__exact": conversation.pk}
        )

    assert [c.pk for c in listing.context["cl"].result_list if c.owner == alice] == [conversation.pk]
    assert transcript.status_code == 200
    assert transcript.content.decode().count('class="module transcript-message"') == count
    assert len(messages.context["cl"].result_list) == min(count, 50)
