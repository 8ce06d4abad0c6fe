"""A terminal client for staff: ask as a given user, watch the answer stream in.

Why it exists: to try the whole path (services, generation, events, the model service)
from a shell, reproduce what a user reports, or script a question, without a browser.
It goes through the same service (`services.message_send`) and reads the same event
stream as the page; the answer is generated in this process, stored like any other,
and shows up in the user's conversation list.
"""

from __future__ import annotations

import asyncio
import functools
import json
import sys

from asgiref.sync import sync_to_async
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from assistant import errors, selectors, services, titles
from assistant.events import subscriber
from assistant.forms import MessageForm
from assistant.generation import leases, running, task


def sse_events(chunk: str) -> list[tuple[str, dict]]:
    """The (type, data) of each event in a chunk of `subscriber.stream` output (whole frames)."""
    parsed = []
    for frame in chunk.split("\n\n"):
        kind, data = "", ""
        for line in frame.split("\n"):
            if line.startswith("event: "):
                kind = line[7:]
            elif line.startswith("data: "):
                data = line[6:]
        if kind:
            parsed.append((kind, json.loads(data) if data else {}))
    return parsed


class Command(BaseCommand):
    help = (
        "Send a message as USER and print the answer as it streams, through the same "
        "services and events as the browser. Starts a new conversation unless "
        "--conversation is given. The question is the argument, or stdin when it is left "
        "out or '-'. Details (conversation id, finish reason, tokens, time) go to stderr. "
        "Exits non-zero when the answer fails; Ctrl-C stops the answer (stored as cancelled)."
    )
    stealth_options = ("stdin",)

    def add_arguments(self, parser) -> None:
        parser.add_argument("question", nargs="?", default="-", help="The message; '-' or none: read stdin.")
        parser.add_argument("--user", required=True, metavar="USERNAME", help="Ask as this user.")
        parser.add_argument("--conversation", metavar="UUID", help="Continue this conversation of the user.")
        parser.add_argument("--model", help="Model to answer with (one of ASSISTANT_MODELS).")
        parser.add_argument(
            "--language",
            default=settings.LANGUAGE_CODE,
            choices=[code for code, _name in settings.LANGUAGES],
            help="Language of messages from the app (e.g. errors), as for a browser.",
        )

    def handle(self, *args, **options) -> None:
        question = options["question"]
        if question == "-":
            question = options.get("stdin", sys.stdin).read()
        try:
            cleaned = MessageForm.parse({"content": question, "model": options["model"] or ""})
        except errors.ServiceError as error:
            raise CommandError(error.message) from None
        try:
            asyncio.run(
                self._chat(
                    username=options["user"],
                    conversation_id=options["conversation"],
                    content=cleaned["content"],
                    model=cleaned["model"] or None,
                    language=options["language"],
                    verbosity=options["verbosity"],
                )
            )
        except KeyboardInterrupt:
            raise CommandError("Stopped: the answer so far is stored as cancelled.") from None

    async def _chat(
        self, *, username: str, conversation_id: str | None, content: str, model, language, verbosity
    ) -> None:
        User = get_user_model()
        try:
            user = await User.objects.aget(username=username)
        except User.DoesNotExist:
            raise CommandError(f"No user named {username!r}.") from None
        if not user.is_active:
            raise CommandError(f"{username} is deactivated.")
        try:
            if conversation_id:
                # Not found is said before this process takes a lease.
                await selectors.aconversation_get(user=user, conversation_id=conversation_id)
                send = functools.partial(services.message_send, conversation_id=conversation_id)
            else:
                # Stored with its question or not at all: a refused question (a limit)
                # leaves no empty conversation behind.
                send = services.conversation_start
            try:
                # Its lease first, on this loop: the send runs in the shared thread, which
                # the supervisor's first heartbeat needs (leases.supervise_from_thread).
                await leases.ensure_supervisor()
                exchange = await sync_to_async(send)(
                    user=user, content=content, model=model, language=language
                )
                conversation = exchange.assistant_message.conversation
                if verbosity >= 1:
                    self.stderr.write(f"conversation {conversation.pk}")
                await self._follow(conversation.channel, exchange.assistant_message, verbosity)
                # The automatic title of a new conversation is asked for after its first
                # answer; let it land (bounded by its own timeout) before the loop closes.
                follow_ups = list(running.follow_ups)
                if follow_ups:
                    await asyncio.wait(follow_ups, timeout=titles.TITLE_TIMEOUT_SECONDS + 1)
            finally:
                # Give up this process's lease (no answer of it is left streaming) and
                # close its model connections, which belong to this command's event loop.
                await leases.shutdown()
        except errors.ServiceError as error:
            if error.code == "not_found":
                raise CommandError(f"{username} has no conversation {conversation_id}.") from None
            raise CommandError(error.message) from None

    async def _follow(self, channel: str, answer, verbosity: int) -> None:
        """Print the answer's deltas as they come; return on `done`, CommandError on `error`."""
        stream = subscriber.stream(channel, answer.event_id)
        try:
            async for chunk in stream:
                for kind, data in sse_events(chunk):
                    if data.get("message") != answer.pk:
                        if kind == "stream-reset":
                            raise CommandError(
                                "Lost the event stream; the answer is stored in the conversation."
                            )
                        continue
                    if kind == "delta":
                        self.stdout.write(data["text"], ending="")
                        self.stdout.flush()
                    elif kind == "done":
                        self.stdout.write("")
                        if verbosity >= 1:
                            usage = data.get("usage") or {}
                            self.stderr.write(
                                f"[{data['finish_reason']}, {usage.get('prompt_tokens')} prompt + "
                                f"{usage.get('completion_tokens')} completion tokens, "
                                f"{data.get('duration_ms')} ms]"
                            )
                        return
                    elif kind == "error":
                        self.stdout.write("")
                        raise CommandError(
                            f"The answer failed: {data['type']} ({data['code']}): {data['detail']}"
                        )
        except asyncio.CancelledError:
            # Ctrl-C: stop the answer; it stores itself as cancelled before this returns.
            await task.stop(answer.pk)
            raise
        finally:
            await stream.aclose()
