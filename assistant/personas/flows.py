"""Guided flows: an assistant's phases, where a conversation stands, and a phase's end.

A phase ends on the answer that ended it: the model called `complete_phase` with a
summary, or the user moved on. That answer keeps the summary (`Message.phase_summary`),
so where a conversation stands follows its shown branch: regenerating or editing the
answer that ended a phase reopens it, switching back to that version closes it again.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.db import transaction
from django.utils.translation import gettext as _

from assistant.errors import ServiceError, found_or_404
from assistant.events.publish import publish_or_defer
from assistant.models import AssistantVersion, Conversation, Message
from assistant.providers.values import ToolCall

COMPLETE_PHASE = "complete_phase"
SUMMARY_MAX_CHARS = 2000
POINTS_MAX = 20
COMPLETE_PHASE_TOOL = {
    "type": "function",
    "function": {
        "name": COMPLETE_PHASE,
        "description": (
            "End the current phase of the guided conversation once its goal is reached, "
            "with a summary of what the user said in it. The next phase starts after your answer."
        ),
        "parameters": {
            "type": "object",
            "properties": {
                "summary": {
                    "type": "string",
                    "description": "What this phase established, in one to three sentences.",
                },
                "points": {
                    "type": "array",
                    "items": {"type": "string"},
                    "description": "The key facts or decisions of this phase.",
                },
            },
            "required": ["summary"],
            "additionalProperties": False,
        },
    },
}


@dataclass(frozen=True)
class Completed:
    """A finished phase: its number (from 1), title, and how it ended."""

    phase: int
    title: str
    by: str
    summary: str
    points: list[str]

    def json(self) -> dict[str, Any]:
        return {
            "phase": self.phase,
            "title": self.title,
            "by": self.by,
            "summary": self.summary,
            "points": self.points,
        }


@dataclass(frozen=True)
class FlowState:
    """Where a conversation stands in its assistant's flow."""

    phases: list[dict[str, str]]
    completed: list[Completed]

    @property
    def total(self) -> int:
        return len(self.phases)

    @property
    def finished(self) -> bool:
        return len(self.completed) >= self.total

    @property
    def phase(self) -> int:
        """The current phase, from 1; the last one once the flow is finished."""
        return min(len(self.completed) + 1, self.total)

    @property
    def current(self) -> dict[str, str]:
        return self.phases[self.phase - 1]

    def json(self) -> dict[str, Any]:
        return {
            "phase": self.phase,
            "total": self.total,
            "phases": [{"title": p["title"], "goal": p["goal"]} for p in self.phases],
            "finished": self.finished,
            "completed": [c.json() for c in self.completed],
        }

    def event(self, message_id: int) -> dict[str, Any]:
        """The `phase` event that says the latest phase ended (docs/protocol.md)."""
        return {
            "message": message_id,
            "phase": self.phase,
            "total": self.total,
            "title": "" if self.finished else self.current["title"],
            "finished": self.finished,
            "completed": self.completed[-1].json(),
        }


def phase_label(phases: list[dict[str, str]], number: int) -> str:
    """An answer's phase as transcripts and exports name it: "Phase 2/4 Ziel"."""
    phase = phases[number - 1] if 0 < number <= len(phases) else {}
    return _("Phase %(phase)d/%(total)d %(title)s") % {
        "phase": number,
        "total": len(phases),
        "title": phase.get("title", ""),
    }


def flow_of(version: AssistantVersion | None, summaries: list[dict[str, Any]]) -> FlowState | None:
    """The flow state of `version` after the phases ended by `summaries`, in order."""
    if version is None or not version.phases:
        return None
    completed = [
        Completed(
            phase=number,
            title=phase["title"],
            by=summary.get("by", "model"),
            summary=summary.get("summary", ""),
            points=list(summary.get("points", [])),
        )
        for number, (phase, summary) in enumerate(zip(version.phases, summaries, strict=False), start=1)
    ]
    return FlowState(phases=version.phases, completed=completed)


def flow_state(conversation: Conversation) -> FlowState | None:
    """Where `conversation` stands in its flow (None: its assistant has no phases)."""
    version = conversation.assistant_version if conversation.assistant_version_id else None
    if version is None or not version.phases:
        return None
    summaries = (
        conversation.messages.filter(
            role=Message.Role.ASSISTANT, superseded=False, phase_summary__isnull=False
        )
        .order_by("pk")
        .values_list("phase_summary", flat=True)
    )
    return flow_of(version, list(summaries))


def _text(value: Any, limit: int) -> str | None:
    return value.strip()[:limit] if isinstance(value, str) and value.strip() else None


def phase_summary_from(call: ToolCall) -> dict[str, Any] | None:
    """The summary a `complete_phase` call gives, as an answer stores it; None when its
    arguments are not what the tool's schema asks for (untrusted model output)."""
    args = call.arguments
    summary = _text(args.get("summary"), SUMMARY_MAX_CHARS)
    points = args.get("points", [])
    if summary is None or set(args) - {"summary", "points"} or not isinstance(points, list):
        return None
    points = [_text(point, SUMMARY_MAX_CHARS) for point in points[:POINTS_MAX]]
    if None in points:
        return None
    return {"by": "model", "summary": summary, "points": points}


@transaction.atomic
def phase_next(*, user, conversation_id) -> FlowState:
    """The user ends the current phase: its latest answer keeps the end, without a summary
    of the model's; the next phase starts with the next question."""
    with found_or_404():
        conversation = (
            Conversation.objects.select_for_update()
            .select_related("assistant_version")
            .get(pk=conversation_id, owner=user)
        )
    state = flow_state(conversation)
    if state is None:
        raise ServiceError(400, "not_a_flow", _("This conversation is not a guided flow."))
    if state.finished:
        raise ServiceError(409, "flow_finished", _("All phases of this conversation are finished."))
    shown = conversation.messages.filter(superseded=False)
    if shown.filter(status=Message.Status.STREAMING).exists():
        raise ServiceError(409, "answer_in_progress", _("An answer is still being generated."))
    latest = shown.filter(role=Message.Role.ASSISTANT, phase=state.phase).order_by("-pk").first()
    if latest is None or shown.filter(pk__gt=latest.pk).exists():
        raise ServiceError(
            409, "no_answer_yet", _("Write at least one message in this phase before moving on.")
        )
    latest.phase_summary = {"by": "user", "summary": "", "points": []}
    latest.save(update_fields=["phase_summary", "updated_at"])
    state = flow_state(conversation)
    transaction.on_commit(lambda: publish_or_defer(conversation.channel, "phase", state.event(latest.pk)))
    return state
