"""Write floods: a logged-in script creating conversations, renaming, archiving, rating,
stopping and deleting as fast as it can, against the live daphne with the default limits
(ASSISTANT_CONVERSATIONS_PER_MINUTE, ASSISTANT_WRITES_PER_MINUTE). Beyond them each
request is 429 `rate_limited` with `retry_after` and Retry-After, like the answer limits
(docs/protocol.md, "Limits"), and changes nothing; another user is not affected."""

from __future__ import annotations

import httpx
from django.conf import settings

from assistant.models import Conversation, Message
from tests.helpers.chat import create_conversation, fake, send, wait_for_final

CONVERSATIONS = settings.ASSISTANT_CONVERSATIONS_PER_MINUTE
WRITES = settings.ASSISTANT_WRITES_PER_MINUTE


def assert_rate_limited(response: httpx.Response) -> None:
    assert response.status_code == 429, (response.status_code, response.text)
    error = response.json()["error"]
    assert error["code"] == "rate_limited"
    assert 0 < error["retry_after"] <= 60
    assert response.headers["Retry-After"] == str(error["retry_after"])
    assert str(error["retry_after"]) in error["message"]


def test_write_flood_of_new_conversations_is_rate_limited(alice, alice_http, bob_http, upstream):
    assert CONVERSATIONS > 0
    for n in range(CONVERSATIONS):
        create_conversation(alice_http, title=f"Flut {n}")

    assert_rate_limited(alice_http.post("/api/conversations/", json={"title": "eine zu viel"}))
    # With a first question too: refused before the question is stored or sent.
    assert_rate_limited(alice_http.post("/api/conversations/", json={"content": fake(text="nein")}))

    assert Conversation.objects.filter(owner=alice).count() == CONVERSATIONS
    assert not Message.objects.filter(conversation__owner=alice).exists()
    assert upstream.requests == []
    create_conversation(bob_http, title="Bob ist nicht betroffen")


def test_write_flood_of_renames_ratings_stops_and_deletes_is_rate_limited(
    alice, alice_http, bob_http, upstream
):
    assert WRITES > 0
    conversation = create_conversation(alice_http, title="Ziel", model="fake-model")
    sent = send(alice_http, conversation, fake(text="Antwort"))
    answer = wait_for_final(sent["assistant_message"]["id"])
    url = f"/api/conversations/{conversation['id']}/"
    writes = [
        lambda n: alice_http.patch(url, json={"title": f"Titel {n}"}),
        lambda n: alice_http.patch(url, json={"archived": n % 2 == 0}),
        lambda n: alice_http.post(f"/api/messages/{answer.pk}/feedback/", json={"rating": "up"}),
        lambda n: alice_http.post(f"/api/messages/{answer.pk}/cancel/"),
    ]
    for n in range(WRITES):
        response = writes[n % len(writes)](n)
        assert response.status_code in {200, 202}, (n, response.text)
    stored = Conversation.objects.get(pk=conversation["id"])

    for write in writes:
        assert_rate_limited(write(WRITES))
    assert_rate_limited(alice_http.delete(url))

    after = Conversation.objects.get(pk=conversation["id"])  # not deleted
    assert (after.title, after.archived) == (stored.title, stored.archived)
    # Another user's writes go on.
    theirs = create_conversation(bob_http, title="Bob")
    assert bob_http.patch(f"/api/conversations/{theirs['id']}/", json={"title": "Bob 2"}).status_code == 200
    assert bob_http.delete(f"/api/conversations/{theirs['id']}/").status_code == 204
