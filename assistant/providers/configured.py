"""The provider this process uses: the demo model or the configured upstream."""

from __future__ import annotations

from functools import cache

from django.conf import settings

from assistant.providers.demo import DemoProvider
from assistant.providers.openai_compatible import OpenAIProvider


@cache
def get_provider() -> OpenAIProvider | DemoProvider:
    """The configured provider, built on first use (settings are final by then)."""
    return DemoProvider() if settings.ASSISTANT_DEMO_MODE else OpenAIProvider()


async def provider_close() -> None:
    """Close the provider's connections, if one was built: they belong to this event loop.

    The next get_provider() builds a new one.
    """
    if get_provider.cache_info().currsize:
        provider = get_provider()
        get_provider.cache_clear()
        if isinstance(provider, OpenAIProvider):
            await provider.client.close()
