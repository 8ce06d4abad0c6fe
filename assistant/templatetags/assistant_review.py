"""`{{ conversation|conversation_label }}`: a conversation named without its title (assistant/review.py)."""

from __future__ import annotations

from django import template

from assistant import review
from assistant.models import Conversation

register = template.Library()


@register.filter(name="conversation_label")
def conversation_label(conversation: Conversation) -> str:
    return review.conversation_label(conversation)
