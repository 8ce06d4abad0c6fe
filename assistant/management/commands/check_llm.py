"""Check the model service: can this installation reach it, sign in and use each model?

Why it exists: "answers fail" has a handful of causes (a wrong or expired key, an
unreachable base URL, a model name the server does not know, a slow server), and the
page shows users only a safe, general message. This sends one tiny request per model,
non-streamed and streamed, exactly as the app does, and names the cause and the setting
to fix. It never prints the API key.
"""

from __future__ import annotations

import asyncio

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from assistant.providers.openai_compatible import OpenAIProvider
from assistant.staff import model_check


def _ms(value: int | None) -> str:
    return "-" if value is None else f"{value} ms"


class Command(BaseCommand):
    help = (
        "Check the configured model service (OPENAI_BASE_URL, OPENAI_API_KEY) with a tiny "
        "request to each model in ASSISTANT_MODELS (or --model): one non-streamed, one "
        "streamed. Prints the latency per model or a diagnosis (key refused, base URL "
        "unreachable, model unknown, timeout). Exits non-zero if any check failed. In demo "
        "mode (neither setting set) there is nothing to check."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument(
            "--model",
            action="append",
            help="Check this model instead of ASSISTANT_MODELS (repeatable; may be one not listed yet).",
        )

    def handle(self, *args, **options) -> None:
        verbosity = options["verbosity"]
        if settings.ASSISTANT_DEMO_MODE:
            self.stdout.write(
                "Demo mode: neither OPENAI_API_KEY nor OPENAI_BASE_URL is set, so answers come from "
                "the built-in offline demo model. Nothing to check."
            )
            return
        models = options["model"] or settings.ASSISTANT_MODELS
        if verbosity >= 1:
            key = "set" if settings.OPENAI_API_KEY else "not set"
            self.stdout.write(f"Model service {model_check.base_url_shown()} (API key {key})")
        checks = asyncio.run(self._check(models))
        failed = 0
        for check in checks:
            note = "" if check.model in settings.ASSISTANT_MODELS else " (not in ASSISTANT_MODELS)"
            if check.ok:
                if verbosity >= 1:
                    self.stdout.write(
                        f"  {check.model}{note}: OK  complete {_ms(check.complete_ms)}, "
                        f"stream {_ms(check.stream_ms)} (first token {_ms(check.first_token_ms)})"
                    )
            else:
                failed += 1
                self.stdout.write(f"  {check.model}{note}: FAILED  {check.diagnosis}")
        if failed:
            raise CommandError(f"{failed} of {len(checks)} models failed the check.")

    async def _check(self, models: list[str]) -> list[model_check.ModelCheck]:
        # A provider of its own, closed at the end: its connections belong to this event loop.
        provider = OpenAIProvider()
        try:
            return [await model_check.model_check(provider, model=model) for model in models]
        finally:
            await provider.client.close()
