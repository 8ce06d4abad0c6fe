"""What a provider yields: the answer's text as it arrives, the tools the model called,
then one `Finish`.

Every value from an upstream passes through here on its way to the database and the
wire: token counts, finish reasons and the model's text, each as Assistant stores it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# The largest token count kept: a billion, far beyond any model's context. Counts go to
# 32-bit columns (PositiveIntegerField), and SQL adds an answer's two in that type (the
# usage limits): 2**31 - 1 in each made every later send of the user fail on PostgreSQL.
TOKENS_MAX = 1_000_000_000
# The reasons an OpenAI-compatible server gives for ending an answer. Anything else an
# upstream says (a long text, a number, an object, "cancelled", which only a stop
# decides) is stored and published as OTHER_FINISH_REASON.
FINISH_REASONS = frozenset({"stop", "length", "content_filter", "tool_calls", "function_call"})
OTHER_FINISH_REASON = "other"


def token_count(value: object) -> int | None:
    """A usage figure from the upstream as Assistant stores it: a whole number from 0 to
    TOKENS_MAX, or None (not said, or not a count).

    A figure out of range is None, not clamped: no answer has a billion tokens, and the
    maximum stored in its place would pass for a measurement.
    """
    if type(value) is float and value.is_integer():  # 12.0; never inf or nan
        value = int(value)
    if type(value) is not int:  # bool is an int, but true is not a count; "12" is a string
        return None
    return value if 0 <= value <= TOKENS_MAX else None


def finish_reason_of(value: object) -> str:
    """The upstream's finish_reason as Assistant stores it: one of FINISH_REASONS,
    `stop` when it said none, OTHER_FINISH_REASON for anything else."""
    if value is None or value == "":
        return "stop"
    return value if isinstance(value, str) and value in FINISH_REASONS else OTHER_FINISH_REASON


@dataclass(frozen=True)
class Finish:
    """How an answer ended, as the upstream said, always within what the database stores:
    every provider's values pass through `finish_reason_of` and `token_count` here."""

    finish_reason: str = "stop"
    prompt_tokens: int | None = None
    completion_tokens: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "finish_reason", finish_reason_of(self.finish_reason))
        object.__setattr__(self, "prompt_tokens", token_count(self.prompt_tokens))
        object.__setattr__(self, "completion_tokens", token_count(self.completion_tokens))


# NUL, which PostgreSQL cannot store, and lone surrogates (a JSON escape such as \ud800 with
# no pair), which have no UTF-8 form and would break the stream and the database write.
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def model_text(text: str) -> str:
    """The model's text as Assistant publishes and stores it: NUL and lone surrogates become
    U+FFFD (as an HTML parser shows them); every other character is kept."""
    return _UNSTORABLE.sub("\ufffd", text)


@dataclass(frozen=True)
class ToolCall:
    """A tool the model called, whole: its arguments assembled from the streamed
    fragments and parsed, always a JSON object. What they mean, and whether they fit the
    tool's schema, is for the tool's own code to decide: they are the model's output."""

    id: str
    name: str
    arguments: dict


def unpaced() -> float:
    """The pace of a reader that batches nothing: read again at once."""
    return 0.0


def tool_names(tools: list[dict] | None) -> frozenset[str]:
    """The names of the tools offered to the model (OpenAI tool definitions)."""
    return frozenset(tool["function"]["name"] for tool in tools or ())
