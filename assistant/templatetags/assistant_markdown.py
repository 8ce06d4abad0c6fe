"""`{{ text|markdown }}`: model output as sanitized HTML, and `{{ message|answer_html }}`:
an answer's, as stored at its end (see assistant/rendering.py)."""

from __future__ import annotations

from django import template
from django.utils.safestring import SafeString

from assistant import rendering

register = template.Library()


@register.filter(name="markdown")
def markdown(text: object) -> SafeString:
    return rendering.render_markdown("" if text is None else str(text))


@register.filter(name="answer_html")
def answer_html(message) -> SafeString:
    return rendering.answer_html(message)
