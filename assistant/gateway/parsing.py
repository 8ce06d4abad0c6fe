"""The body of `POST /v1/chat/completions`, checked: what the gateway takes, and a 400
naming the field (`param`) for anything else.

Taken: `model`, `messages` (roles system, developer, user, assistant; text, as a string
or as text parts), `stream`, `stream_options.include_usage`, `temperature`,
`max_tokens` / `max_completion_tokens`, and `user` (an end-user id for the caller's own
records; it changes nothing). A parameter the gateway cannot honour (tools, images,
n > 1, logprobs, stop sequences ...) is refused rather than ignored: a client that asked
for it would get an answer it did not ask for. A parameter given as null, or at the
value that changes nothing (n 1, top_p 1, the penalties 0, logprobs false), is taken
as not given, as clients often send the defaults.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.utils.translation import gettext as _

from assistant.gateway.errors import invalid, model_not_found

ROLES = ("system", "developer", "user", "assistant")
# Sent upstream as `system`: what OpenAI's newer models call developer messages is what
# every OpenAI-compatible server knows as the system message.
SYSTEM_ROLES = ("system", "developer")
TAKEN = frozenset(
    {
        "model",
        "messages",
        "stream",
        "stream_options",
        "temperature",
        "max_tokens",
        "max_completion_tokens",
        "user",
    }
)
# Parameters at the value that changes nothing, which clients send as defaults.
NEUTRAL = {"n": 1, "top_p": 1, "presence_penalty": 0, "frequency_penalty": 0, "logprobs": False}
TEMPERATURE_MAX = 2.0


@dataclass(frozen=True)
class ChatRequest:
    """A checked chat completion request: the messages as they go upstream."""

    model: str
    messages: list[dict[str, str]]
    stream: bool
    include_usage: bool
    options: dict[str, Any]

    @property
    def prompt_chars(self) -> int:
        return sum(len(message["content"]) for message in self.messages)


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _neutral(name: str, value: Any) -> bool:
    """`value` is the value of NEUTRAL[name] (true is not 1 here, nor 0 false)."""
    if name not in NEUTRAL:
        return False
    neutral = NEUTRAL[name]
    return value == neutral and isinstance(value, bool) == isinstance(neutral, bool)


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _text(value: Any, param: str) -> str:
    """A message's text: a string, or text parts joined (OpenAI's content parts)."""
    if isinstance(value, list):
        if not all(isinstance(part, dict) and part.get("type") == "text" for part in value):
            raise invalid(_("Only text content is supported (no images, audio or files)."), param=param)
        if not all(isinstance(part.get("text"), str) for part in value):
            raise invalid(_("A text part needs a string 'text'."), param=param)
        value = "".join(part["text"] for part in value)
    if not isinstance(value, str):
        raise invalid(_("A message's content must be a string or a list of text parts."), param=param)
    if "\x00" in value:
        raise invalid(_("The text contains invalid characters."), param=param)
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate, from a \ud800 escape in the JSON
        raise invalid(_("The text contains invalid characters."), param=param) from None
    return value


def _messages(value: Any) -> list[dict[str, str]]:
    if not isinstance(value, list) or not value:
        raise invalid(_("'messages' must be a non-empty list."), param="messages")
    messages = []
    for index, message in enumerate(value):
        param = f"messages[{index}]"
        if not isinstance(message, dict):
            raise invalid(_("Each message must be an object."), param=param)
        role = message.get("role")
        if role not in ROLES:
            raise invalid(
                _(
                    "Unsupported role: the gateway takes system, developer, user and assistant "
                    "messages (no tools)."
                ),
                param=f"{param}.role",
                code="unsupported_value",
            )
        extra = sorted(
            key for key, item in message.items() if key not in ("role", "content") and item is not None
        )
        if extra:
            raise invalid(
                _("Unsupported message field: %(field)s.") % {"field": extra[0]},
                param=f"{param}.{extra[0]}",
                code="unsupported_parameter",
            )
        content = _text(message.get("content"), f"{param}.content")
        messages.append({"role": "system" if role in SYSTEM_ROLES else role, "content": content})
    if not any(message["role"] == "user" for message in messages):
        raise invalid(_("'messages' must contain a user message."), param="messages")
    return messages


def _options(body: dict[str, Any]) -> dict[str, Any]:
    options: dict[str, Any] = {}
    temperature = body.get("temperature")
    if temperature is not None:
        if not _number(temperature) or not 0 <= temperature <= TEMPERATURE_MAX:
            raise invalid(_("'temperature' must be a number from 0 to 2."), param="temperature")
        options["temperature"] = float(temperature)
    limits = {
        name: body.get(name) for name in ("max_tokens", "max_completion_tokens") if body.get(name) is not None
    }
    for name, limit in limits.items():
        if not _whole(limit) or limit < 1:
            raise invalid(_("'%(name)s' must be a whole number of at least 1.") % {"name": name}, param=name)
    if len(set(limits.values())) > 1:
        raise invalid(
            _("Give either 'max_tokens' or 'max_completion_tokens', not two different values."),
            param="max_completion_tokens",
        )
    if limits:
        options["max_tokens"] = next(iter(limits.values()))
    return options


def chat_request(body: dict[str, Any]) -> ChatRequest:
    """The request in `body` (a JSON object), checked; GatewayError for anything else.

    The model is checked against the allowlist last: 404, as OpenAI answers an unknown one.
    """
    for name, value in body.items():
        if name in TAKEN or value is None or _neutral(name, value):
            continue
        if name in NEUTRAL:
            neutral = json.dumps(NEUTRAL[name])
            message = _("'%(name)s' is supported only at %(value)s.") % {"name": name, "value": neutral}
        else:
            message = _("Unsupported parameter: '%(name)s' is not supported by this gateway.") % {
                "name": name
            }
        raise invalid(message, param=name, code="unsupported_parameter")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise invalid(_("'model' is required: one of GET /v1/models."), param="model")
    messages = _messages(body.get("messages"))
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise invalid(_("'stream' must be true or false."), param="stream")
    stream_options = body.get("stream_options")
    include_usage = False
    if stream_options is not None:
        if not stream:
            raise invalid(_("'stream_options' is allowed only with 'stream': true."), param="stream_options")
        if not isinstance(stream_options, dict) or set(stream_options) - {"include_usage"}:
            raise invalid(_("'stream_options' takes only 'include_usage'."), param="stream_options")
        include_usage = stream_options.get("include_usage")
        if include_usage is not None and not isinstance(include_usage, bool):
            raise invalid(_("'include_usage' must be true or false."), param="stream_options.include_usage")
    if body.get("user") is not None and not isinstance(body["user"], str):
        raise invalid(_("'user' must be a string."), param="user")
    options = _options(body)
    if model not in settings.ASSISTANT_MODELS:
        raise model_not_found(model)
    return ChatRequest(
        model=model,
        messages=messages,
        stream=bool(stream),
        include_usage=bool(include_usage),
        options=options,
    )
