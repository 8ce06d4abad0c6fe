"""What an answer sends upstream besides the history: the system message and the options.

The system message is the assistant's instructions, the user's personal instructions as
the conversation started with them, in a guided flow the current phase with the
summaries of the finished ones, and the passages of documents found for the question
(docs/architecture.md, "Assistants and guided flows", "Documents"). The demo
model reads the flow lines, so their shape is part of the contract.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from assistant.documents.sources import Source, sources_for, sources_text
from assistant.models import AssistantVersion, Conversation
from assistant.personas.flows import COMPLETE_PHASE_TOOL, FlowState, flow_state


@dataclass(frozen=True)
class Prompt:
    """The messages of one request upstream and its options (tools, temperature, max_tokens)."""

    messages: list[dict[str, str]]
    options: dict[str, Any] = field(default_factory=dict)
    # The passages of documents it was given, as the answer cites them.
    sources: list[Source] = field(default_factory=list)


def _flow_lines(state: FlowState) -> list[str]:
    finished = [f"- {c.title}: {c.summary}" if c.summary else f"- {c.title}" for c in state.completed]
    if state.finished:
        return ["Guided flow finished.", "Finished phases:", *finished]
    phase = state.current
    lines = [
        f"Guided flow, phase {state.phase} of {state.total}: {phase['title']}",
        f"Goal of this phase: {phase['goal']}",
        phase["instructions"],
    ]
    if finished:
        lines += ["Finished phases:", *finished]
    lines.append("When the goal of this phase is reached, call the tool complete_phase with a summary.")
    return lines


def system_text(
    version: AssistantVersion | None, personal: str, state: FlowState | None, sources: list[Source]
) -> str:
    """The system message: the parts that apply, each a paragraph; "" when none does."""
    parts = []
    if version is not None:
        parts.append(version.instructions)
    if personal:
        parts.append(personal)
    if state is not None:
        parts.append("\n".join(_flow_lines(state)))
    if sources:
        parts.append(sources_text(sources))
    return "\n\n".join(parts)


def personal_instructions(preferences) -> str:
    """A user's preferences as the lines a conversation keeps; "" when there are none."""
    if preferences is None:
        return ""
    lines = []
    if preferences.about_me.strip():
        lines.append(f"About the user: {preferences.about_me.strip()}")
    if preferences.answer_style.strip():
        lines.append(f"How to answer: {preferences.answer_style.strip()}")
    return "\n".join(lines)


def prompt_for(
    conversation: Conversation,
    history: list[dict[str, str]],
    *,
    question: str,
    sources: list[Source] | None = None,
) -> Prompt:
    """The request for the next answer of `conversation`, whose shown branch is `history`,
    to `question`: with the sources found for it, unless `sources` are given (an answer
    that goes on keeps those it had).

    One query for a conversation without an assistant or documents (it has none); one more
    for a flow's state.
    """
    version = conversation.assistant_version if conversation.assistant_version_id else None
    state = flow_state(conversation) if version is not None and version.phases else None
    if sources is None:
        sources = sources_for(conversation, question)
    system = system_text(version, conversation.personal_instructions, state, sources)
    messages = [{"role": "system", "content": system}, *history] if system else history
    options: dict[str, Any] = {}
    if version is not None:
        if version.temperature is not None:
            options["temperature"] = version.temperature
        if version.max_tokens is not None:
            options["max_tokens"] = version.max_tokens
    if state is not None and not state.finished:
        options["tools"] = [COMPLETE_PHASE_TOOL]
    return Prompt(messages=messages, options=options, sources=sources)
