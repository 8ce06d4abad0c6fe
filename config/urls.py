from __future__ import annotations

from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path, re_path, register_converter

from assistant.gateway import views as gateway
from assistant.views import api, documents, exports, health_checks, me, pages, schema, tokens


class IdConverter:
    """A database id: a positive 64-bit integer. Django's `int` takes any number of
    digits, and a number past 64 bits (or past Python's 4,300-digit conversion limit)
    made the lookup a 500; such a URL names nothing, so it does not resolve (404)."""

    regex = "[0-9]{1,19}"

    def to_python(self, value: str) -> int:
        number = int(value)
        if number > ID_MAX:
            raise ValueError("beyond 64 bits")  # the pattern does not match: 404
        return number

    def to_url(self, value: int) -> str:
        return str(value)


ID_MAX = 2**63 - 1


register_converter(IdConverter, "id")

# Under /api/ in the API's error shape (assistant/views/api.py), elsewhere Django's pages.
handler400 = "assistant.views.api.bad_request"
handler404 = "assistant.views.api.page_not_found"
handler500 = "assistant.views.api.server_error"

urlpatterns = [
    path("", pages.chat, name="chat"),
    path("c/<uuid:conversation_id>/", pages.conversation, name="conversation"),
    path(
        "c/<uuid:conversation_id>/export.md",
        exports.conversation_export_markdown,
        name="conversation_export_markdown",
    ),
    path(
        "c/<uuid:conversation_id>/export.json",
        exports.conversation_export_json_file,
        name="conversation_export_json",
    ),
    path("setup/", pages.setup, name="setup"),
    path("access-log/", pages.access_log, name="access_log"),
    path("settings/", pages.preferences, name="settings"),
    path("settings/tokens/", tokens.api_tokens, name="api_tokens"),
    path("settings/tokens/<id:token_id>/revoke/", tokens.api_token_revoke, name="api_token_revoke"),
    path("accounts/login/", pages.AssistantLoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("api/me/", me.me, name="api_me"),
    path("api/schema/", schema.schema, name="api_schema"),
    path("api/docs/", schema.docs, name="api_docs"),
    path("api/assistants/", api.assistants, name="api_assistants"),
    path("api/conversations/", api.conversations_api, name="api_conversations"),
    path(
        "api/conversations/<uuid:conversation_id>/next-phase/",
        api.phase_next,
        name="api_phase_next",
    ),
    path(
        "api/conversations/<uuid:conversation_id>/",
        api.conversation_api,
        name="api_conversation",
    ),
    path(
        "api/conversations/<uuid:conversation_id>/messages/",
        api.messages,
        name="api_messages",
    ),
    path(
        "api/conversations/<uuid:conversation_id>/events/",
        api.conversation_events,
        name="conversation_events",
    ),
    path(
        "api/conversations/<uuid:conversation_id>/documents/",
        documents.conversation_documents,
        name="api_conversation_documents",
    ),
    path("api/documents/<uuid:document_id>/", documents.document_api, name="api_document"),
    path("documents/<uuid:document_id>/file", documents.document_file, name="document_file"),
    path("api/messages/<id:message_id>/sources/", documents.message_sources, name="api_message_sources"),
    path("api/messages/<id:message_id>/cancel/", api.message_cancel, name="api_message_cancel"),
    path("api/messages/<id:message_id>/retry/", api.message_retry, name="api_message_retry"),
    path("api/messages/<id:message_id>/continue/", api.message_continue, name="api_message_continue"),
    path("api/messages/<id:message_id>/show/", api.message_show, name="api_message_show"),
    path("api/messages/<id:message_id>/edit/", api.message_edit, name="api_message_edit"),
    path("api/messages/<id:message_id>/feedback/", api.message_feedback, name="api_message_feedback"),
    # The OpenAI-compatible gateway (assistant/gateway; config/asgi.py routes /v1/ through
    # its handoff, so a completion runs on the event loop, not in a request thread).
    path("v1/models", gateway.models, name="gateway_models"),
    path("v1/models/<path:model>", gateway.model_detail, name="gateway_model"),
    path("v1/chat/completions", gateway.chat_completions, name="gateway_chat_completions"),
    re_path(r"^v1/", gateway.unknown_url),
    path("healthz", health_checks.healthz, name="healthz"),
    path("readyz", health_checks.readyz, name="readyz"),
    path("i18n/", include("django.conf.urls.i18n")),
    path("admin/", admin.site.urls),
]
