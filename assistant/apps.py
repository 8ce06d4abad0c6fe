from __future__ import annotations

from django.apps import AppConfig


class AssistantConfig(AppConfig):
    name = "assistant"
    verbose_name = "Assistant"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Signal receivers: open_streams' end the event streams of deactivated, deleted
        # and logged-out users, in every process (commands included, so that other
        # processes hear of it); throttle's counts and logs every failed login; documents'
        # ingest deletes a document's file from storage when its row goes (a conversation
        # deleted, purged or erased). The tokens' system check registers itself.
        from assistant import open_streams, throttle  # noqa: F401
        from assistant.documents import ingest  # noqa: F401
        from assistant.tokens import checks  # noqa: F401
