"""Personal API tokens for tests, made through the service as the settings page makes them;
a gateway client that leaves mid-answer."""

from __future__ import annotations

from assistant.tokens.service import token_create
from tests.helpers.chat import fake
from tests.helpers.upstream import split_tokens


def token_for(user, name: str = "test", days: int | None = 30) -> str:
    """A new token of `user`; its secret."""
    return token_create(user=user, name=name, days=days)[1]


def bearer(secret: str) -> dict[str, str]:
    """The request headers that authenticate with `secret`."""
    return {"Authorization": f"Bearer {secret}"}


def leave_mid_stream(sdk, tokens: int) -> str:
    """Stream a never-ending completion through the gateway with the openai SDK `sdk`,
    and close the connection once `tokens` tokens arrived; the text received."""
    stream = sdk.chat.completions.create(
        model="fake-model", messages=[{"role": "user", "content": fake(never_end=True, tps=50)}], stream=True
    )
    received = ""
    for chunk in stream:
        received += chunk.choices[0].delta.content or ""
        if len(split_tokens(received)) >= tokens:
            break
    stream.close()
    return received
