"""Personal API tokens for tests: made through the service, as the settings page makes them."""

from __future__ import annotations

from assistant.tokens.service import token_create


def token_for(user, name: str = "test", days: int | None = 30) -> str:
    """A new token of `user`; its secret."""
    return token_create(user=user, name=name, days=days)[1]


def bearer(secret: str) -> dict[str, str]:
    """The request headers that authenticate with `secret`."""
    return {"Authorization": f"Bearer {secret}"}
