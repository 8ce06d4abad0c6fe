"""A user's own conversation, downloaded as Markdown or as JSON.

Read and shaped by the staff exporter (assistant/staff/export.py): the same reader and
the same JSON as `manage.py export_conversations` and the GDPR export, without the access
log (the owner reading their own conversation is no review). Markdown is the transcript
as the page shows it: superseded questions and answers are left out.
"""

from __future__ import annotations

import json
import uuid
from urllib.parse import quote

from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.utils import timezone
from django.utils.text import slugify
from django.utils.translation import gettext as _
from django.views.decorators.http import require_GET

from assistant.models import Conversation, Message
from assistant.personas.flows import phase_label
from assistant.staff.export import conversation_export_json, conversations_stream


def _own_conversation(request: HttpRequest, conversation_id: uuid.UUID) -> Conversation:
    """The conversation with its owner and messages; another user's is 404, like none."""
    conversations = Conversation.objects.filter(pk=conversation_id, owner=request.user)
    conversation = next(conversations_stream(conversations, chunk_size=1), None)
    if conversation is None:
        raise Http404
    return conversation


def attachment(content: str, *, content_type: str, title: str, extension: str) -> HttpResponse:
    """A download named after `title`: an ASCII `filename` for every client, and the
    title's own letters in `filename*` (RFC 6266) where it has others."""
    ascii_name = f"{slugify(title)[:80] or 'conversation'}.{extension}"
    unicode_name = f"{slugify(title, allow_unicode=True)[:80] or 'conversation'}.{extension}"
    disposition = f'attachment; filename="{ascii_name}"'
    if unicode_name != ascii_name:
        disposition += f"; filename*=UTF-8''{quote(unicode_name, safe='')}"
    response = HttpResponse(content, content_type=f"{content_type}; charset=utf-8")
    response["Content-Disposition"] = disposition
    return response


def _moment(message: Message) -> str:
    return timezone.localtime(message.created_at).strftime("%Y-%m-%d %H:%M")


def conversation_markdown(conversation: Conversation) -> str:
    """The transcript: the title, then each question and answer under a heading naming the
    speaker, the time and, for an answer, the model. The text stays as it was written."""
    lines = [f"# {conversation.title or _('Untitled')}", ""]
    version = conversation.assistant_version
    if version is not None:
        lines += [
            f"*{_('%(name)s, version %(number)s') % {'name': version.name, 'number': version.number}}*",
            "",
        ]
    phases = version.phases if version is not None else []
    for message in conversation.messages.all():
        if message.superseded:
            continue
        if message.role == Message.Role.USER:
            heading = _("You · %(time)s") % {"time": _moment(message)}
        else:
            heading = _("Assistant (%(model)s) · %(time)s") % {
                "model": message.model or conversation.model,
                "time": _moment(message),
            }
            if message.phase is not None:
                heading += f" · {phase_label(phases, message.phase)}"
        lines += [f"## {heading}", "", message.content.strip("\n"), ""]
        if message.role == Message.Role.ASSISTANT and message.status != Message.Status.DONE:
            lines += [f"*{_('The answer ended: %(status)s') % {'status': message.get_status_display()}}*", ""]
        if message.phase_summary:
            ended = _("Phase completed: %(summary)s") % {
                "summary": message.phase_summary.get("summary") or "–"
            }
            lines += [f"*{ended}*", ""]
    return "\n".join(lines)


@require_GET
@login_required
def conversation_export_markdown(request: HttpRequest, conversation_id: uuid.UUID) -> HttpResponse:
    conversation = _own_conversation(request, conversation_id)
    return attachment(
        conversation_markdown(conversation),
        content_type="text/markdown",
        title=conversation.title,
        extension="md",
    )


@require_GET
@login_required
def conversation_export_json_file(request: HttpRequest, conversation_id: uuid.UUID) -> HttpResponse:
    conversation = _own_conversation(request, conversation_id)
    return attachment(
        json.dumps(conversation_export_json(conversation), ensure_ascii=False, indent=2) + "\n",
        content_type="application/json",
        title=conversation.title,
        extension="json",
    )
