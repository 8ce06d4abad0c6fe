"""An answer's end as its row stores it and as its final event says it (docs/protocol.md)."""

from __future__ import annotations

from assistant.models import Message
from assistant.providers.errors import RETRYABLE_TYPES, ProviderError, provider_error
from assistant.providers.values import Finish
from assistant.rendering import rendered_fields
from assistant.usage import usage_tokens_add

Status = Message.Status


def interrupted_error() -> ProviderError:
    return provider_error("interrupted", 503)


def error_payload(message_id: int, error: ProviderError) -> dict:
    """The `error` event of an answer (docs/protocol.md)."""
    payload = {
        "message": message_id,
        "code": error.code,
        "type": error.type,
        "detail": error.detail,
        "retryable": error.retryable,
    }
    if error.retry_after is not None:
        payload["retry_after"] = error.retry_after
    return payload


async def end_as_error(message_id: int, error: ProviderError, text: dict) -> tuple[str, dict] | None:
    """End an answer still `streaming` with `error` (and `text`: its content and event_id,
    if given); returns the final event for its row: this error, the end it had already,
    or None when it is gone."""
    answer = Message.objects.filter(pk=message_id)
    if await answer.filter(status=Status.STREAMING).aupdate(
        status=Status.ERROR,
        finish_reason="",
        error_code=error.code,
        error_type=error.type,
        error_detail=error.detail,
        **text,
    ):
        return "error", error_payload(message_id, error)
    message = await answer.afirst()
    return None if message is None else stored_end(message)


def stored_end(message: Message) -> tuple[str, dict] | None:
    """The final event that agrees with an ended answer's row; None while it streams."""
    if message.status in (Status.ERROR, Status.INTERRUPTED):
        error = ProviderError(
            message.error_code or 500,
            message.error_type or "internal",
            message.error_detail,
            message.error_type in RETRYABLE_TYPES,
        )
        return "error", error_payload(message.pk, error)
    if message.status in (Status.DONE, Status.CANCELLED):
        return "done", {
            "message": message.pk,
            "finish_reason": message.finish_reason,
            "usage": usage_of(message),
            "duration_ms": message.duration_ms,
        }
    return None


def usage_of(message: Message) -> dict:
    return {"prompt_tokens": message.prompt_tokens, "completion_tokens": message.completion_tokens}


def final_fields(
    status: str,
    *,
    content: str,
    finish: Finish | None,
    error: ProviderError | None,
    time_to_first_token_ms: int | None,
    duration_ms: int | None,
) -> dict:
    """An ended answer's row as `store_final` takes it: its status, text and timings, and
    what the upstream's Finish or the error said of its end."""
    fields = {
        "status": status,
        "content": content,
        "time_to_first_token_ms": time_to_first_token_ms,
        "duration_ms": duration_ms,
    }
    if finish is not None:
        fields.update(
            finish_reason=finish.finish_reason,
            prompt_tokens=finish.prompt_tokens,
            completion_tokens=finish.completion_tokens,
        )
    if status == Status.CANCELLED:
        fields["finish_reason"] = "cancelled"
    if error is not None:
        fields.update(error_code=error.code, error_type=error.type, error_detail=error.detail)
    return fields


# What became of an answer's final row (store_final).
ENDED, INTERRUPTED, GONE = "ended", "interrupted", "gone"


def store_final(message_id: int, fields: dict, usage: dict[str, int]) -> str:
    """An ended answer's tokens, then its final row, in one trip to the database thread.
    The usage record first, in a statement of its own, whatever becomes of the row
    (deleted, ended elsewhere, refused): the tokens were spent, and they are counted
    before the answer reads as ended.

    ENDED: stored. INTERRUPTED: another process found this one's lease lapsed and marked
    the answer interrupted; it keeps the whole text (and position) under that verdict.
    GONE: deleted with its conversation, or ended elsewhere: nothing stored."""
    usage_tokens_add(message_id=message_id, **usage)
    answer = Message.objects.filter(pk=message_id)
    if answer.filter(status=Status.STREAMING).update(**fields, **rendered_fields(fields["content"])):
        return ENDED
    text = {name: fields[name] for name in ("content", "event_id") if name in fields}
    return INTERRUPTED if answer.filter(status=Status.INTERRUPTED).update(**text) else GONE
