"""Models: naming and the indexes the lists rely on."""

from __future__ import annotations

from assistant.models import Conversation, Message


def test_conversation_str_and_channel(alice):
    conversation = Conversation.objects.create(owner=alice, model="demo")
    assert str(conversation) == str(conversation.pk)
    conversation.title = "Reisekosten"
    assert str(conversation) == "Reisekosten"
    assert conversation.channel == f"conversation-{conversation.pk}"


def test_message_str_and_streaming_flag(alice):
    conversation = Conversation.objects.create(owner=alice, model="demo")
    message = Message.objects.create(conversation=conversation, role="assistant", status="streaming")
    assert message.is_streaming
    assert str(message) == "assistant: "


def test_messages_keep_their_order(alice):
    conversation = Conversation.objects.create(owner=alice, model="demo")
    contents = [f"m{n}" for n in range(5)]
    for content in contents:
        Message.objects.create(conversation=conversation, role="user", content=content)
    assert [m.content for m in conversation.messages.all()] == contents


def test_indexes_cover_the_lists(db):
    names = {index.name for index in Conversation._meta.indexes + Message._meta.indexes}
    assert {"conversation_owner_recent", "message_conversation_order", "message_streaming"} <= names
