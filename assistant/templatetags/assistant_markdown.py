"""`{{ text|markdown }}`: model output as sanitized HTML (see assistant/rendering.py)."""

from __future__ import annotations

from django import template
from django.utils.safestring import SafeString

from assistant.rendering import render_markdown

register = template.Library()


@register.filter(name="markdown")
def markdown(text: object) -> SafeString:
    return render_markdown("" if text is None else str(text))
