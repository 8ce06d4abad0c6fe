"""The JSON API: conversations, messages, feedback; its conventions and its error shape.

Errors that exist before a stream starts (not logged in, not yours) are non-200 answers,
so a browser's EventSource stops retrying; after the 200, errors are events.
"""

from __future__ import annotations

import functools
import uuid
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import reverse
from django.utils.translation import get_language
from django.utils.translation import gettext as _
from django.views import defaults
from django.views.csrf import csrf_failure as django_csrf_failure

from assistant import errors, selectors, services
from assistant.documents.sources import sources_json
from assistant.events.wire import channel_for, position_token
from assistant.forms import (
    ConversationForm,
    ConversationSearchForm,
    ConversationUpdateForm,
    FeedbackForm,
    MessageForm,
    json_body,
)
from assistant.models import Assistant, Conversation, Message, Origin
from assistant.personas import flows
from assistant.personas.access import assistants_visible, version_usable
from assistant.personas.flows import FlowState, flow_of, flow_state
from assistant.providers.errors import RETRYABLE_TYPES


def api_error(error: errors.ServiceError) -> JsonResponse:
    body = {"code": error.code, "message": error.message}
    if error.retry_after is not None:
        body["retry_after"] = error.retry_after
    response = JsonResponse({"error": body}, status=error.status)
    if error.retry_after is not None:
        response["Retry-After"] = str(error.retry_after)
    return response


def not_authenticated() -> JsonResponse:
    return api_error(errors.ServiceError(401, "not_authenticated", _("Log in first.")))


def _is_api(request: HttpRequest) -> bool:
    return request.path_info.startswith("/api/")


def csrf_failure(request: HttpRequest, reason: str = "") -> HttpResponse:
    """Django's CSRF refusal; on the JSON API in the API's error shape, so that a client
    reads it like every other error (settings.CSRF_FAILURE_VIEW)."""
    if _is_api(request):
        return api_error(
            errors.ServiceError(
                403, "csrf_failed", _("The request lacks a valid CSRF token. Reload the page and try again.")
            )
        )
    return django_csrf_failure(request, reason)


# Django's error views (config/urls.py: handler400, handler404, handler500), under /api/ in
# the API's error shape: a path that names nothing, a request Django refuses before any
# view (a Host not allowed) and a fault. With DJANGO_DEBUG on Django shows its debug pages.


def page_not_found(request: HttpRequest, exception: Exception) -> HttpResponse:
    if _is_api(request):
        return api_error(errors.ServiceError(404, "not_found", _("Nothing was found at this address.")))
    return defaults.page_not_found(request, exception)


def bad_request(request: HttpRequest, exception: Exception) -> HttpResponse:
    if _is_api(request):
        return api_error(errors.ServiceError(400, "bad_request", _("The server cannot take this request.")))
    return defaults.bad_request(request, exception)


def server_error(request: HttpRequest) -> HttpResponse:
    if _is_api(request):
        return api_error(
            errors.ServiceError(
                500, "internal", _("Something went wrong in this app. Please try again in a moment.")
            )
        )
    return defaults.server_error(request)


def api_methods(*methods: str):
    """Django's require_http_methods in the API's error shape: any other method answers
    405 `method_not_allowed` with the Allow header, before anything else is checked."""

    def decorator(view):
        @functools.wraps(view)
        def wrapper(request: HttpRequest, *args, **kwargs) -> HttpResponse:
            if request.method not in methods:
                response = api_error(
                    errors.ServiceError(
                        405,
                        "method_not_allowed",
                        _("This address does not take %(method)s requests, only %(allowed)s.")
                        % {"method": request.method, "allowed": ", ".join(methods)},
                    )
                )
                response["Allow"] = ", ".join(methods)
                return response
            return view(request, *args, **kwargs)

        wrapper.allowed_methods = methods  # what the API's description lists (tests/test_api_schema.py)
        return wrapper

    return decorator


def api_view(view):
    """JSON API conventions: logged-in users only, ServiceError -> JSON error answer."""

    @functools.wraps(view)
    def wrapper(request: HttpRequest, *args, **kwargs) -> HttpResponse:
        if not request.user.is_authenticated:
            return not_authenticated()
        try:
            return view(request, *args, **kwargs)
        except errors.ServiceError as error:
            return api_error(error)

    return wrapper


def message_json(message: Message, versions: selectors.Versions | None = None) -> dict[str, Any]:
    data: dict[str, Any] = {
        "id": message.pk,
        "role": message.role,
        "content": message.content,
        "status": message.status,
        "model": message.model,
        "created_at": message.created_at.isoformat(),
        "superseded": message.superseded,
    }
    if message.phase is not None:
        data["phase"] = message.phase
        data["phase_summary"] = message.phase_summary
    if versions is not None:
        data["versions"] = versions.json()
    if message.role == Message.Role.ASSISTANT:
        if message.sources:
            data["sources"] = sources_json(message.sources)
        data.update(
            finish_reason=message.finish_reason,
            usage={"prompt_tokens": message.prompt_tokens, "completion_tokens": message.completion_tokens},
            feedback=message.feedback_name,
            feedback_comment=message.feedback_comment,
        )
        if message.error_type:
            data["error"] = {
                "code": message.error_code,
                "type": message.error_type,
                "detail": message.error_detail,
                "retryable": message.error_type in RETRYABLE_TYPES,
            }
    return data


def assistant_json(conversation: Conversation, flow: FlowState | None) -> dict[str, Any]:
    """The conversation's assistant and where its flow stands (null for the bare model)."""
    if conversation.assistant_version_id is None:
        return {"assistant": None, "flow": None}
    version = conversation.assistant_version
    return {
        "assistant": {
            "slug": version.assistant.slug,
            "name": version.name,
            "icon": version.icon,
            "version": version.number,
            "retired": not version_usable(user=conversation.owner, version=version),
        },
        "flow": None if flow is None else flow.json(),
    }


def conversation_json(conversation: Conversation, messages: list[Message] | None = None) -> dict[str, Any]:
    """A conversation's own fields; `messages`, its shown branch when the caller has it,
    spares reading where its flow stands."""
    if messages is None or conversation.assistant_version_id is None:
        flow = flow_state(conversation)
    else:
        flow = flow_of(conversation.assistant_version, [m.phase_summary for m in messages if m.phase_summary])
    return {
        **assistant_json(conversation, flow),
        "id": str(conversation.pk),
        "title": conversation.title,
        "model": conversation.model,
        "url": reverse("conversation", args=[conversation.pk]),
        "events_url": reverse("conversation_events", args=[conversation.pk]),
        "messages_url": reverse("api_messages", args=[conversation.pk]),
        "detail_url": reverse("api_conversation", args=[conversation.pk]),
        "export_urls": {
            "markdown": reverse("conversation_export_markdown", args=[conversation.pk]),
            "json": reverse("conversation_export_json", args=[conversation.pk]),
        },
        "created_at": conversation.created_at.isoformat(),
        "updated_at": conversation.updated_at.isoformat(),
        "archived": conversation.archived,
        "origin": conversation.origin,
    }


# --- JSON API -----------------------------------------------------------------------------


@api_methods("POST")
@api_view
def conversations(request: HttpRequest) -> JsonResponse:
    data = ConversationForm.parse(json_body(request))
    # A token's client is an app or a script; the page signs in with a cookie.
    origin = Origin.API if request.api_token is not None else Origin.PAGE
    if not data["content"]:
        conversation = services.conversation_create(
            user=request.user,
            title=data["title"],
            model=data["model"] or None,
            assistant=data["assistant"],
            origin=origin,
        )
        return JsonResponse(conversation_json(conversation), status=201)
    exchange = services.conversation_start(
        user=request.user,
        title=data["title"],
        content=data["content"],
        model=data["model"] or None,
        language=get_language(),
        assistant=data["assistant"],
        origin=origin,
    )
    conversation = exchange.assistant_message.conversation
    return JsonResponse({**conversation_json(conversation), **_exchange_json(exchange)}, status=201)


@api_methods("GET")
@api_view
def conversation_detail(request: HttpRequest, conversation_id: uuid.UUID) -> JsonResponse:
    state = selectors.conversation_state(user=request.user, conversation_id=conversation_id)
    return JsonResponse(conversation_state_json(state))


def conversation_state_json(state: selectors.ConversationState) -> dict[str, Any]:
    """A conversation with its shown branch, each message with its versions."""
    return {
        **conversation_json(state.conversation, state.messages),
        "last_event_id": state.last_event_id,
        "messages": [message_json(m, state.versions[m.pk]) for m in state.messages],
    }


def _exchange_json(exchange: services.Exchange) -> dict[str, Any]:
    answer = exchange.assistant_message
    question_versions = exchange.versions.get(exchange.user_message.pk)
    answer_json = {
        "id": answer.pk,
        "status": answer.status,
        "model": answer.model,
        "last_event_id": position_token(channel_for(answer.conversation_id), answer.event_id),
    }
    if answer.pk in exchange.versions:
        answer_json["versions"] = exchange.versions[answer.pk].json()
    if exchange.continuation is not None:
        answer_json["continues"] = True
    return {
        "user_message": message_json(exchange.user_message, question_versions),
        "assistant_message": answer_json,
    }


def _accepted_answer(exchange: services.Exchange) -> JsonResponse:
    return JsonResponse(_exchange_json(exchange), status=202)


@api_methods("POST")
@api_view
def messages(request: HttpRequest, conversation_id: uuid.UUID) -> JsonResponse:
    data = MessageForm.parse(json_body(request))
    exchange = services.message_send(
        user=request.user,
        conversation_id=conversation_id,
        content=data["content"],
        model=data["model"] or None,
        language=get_language(),
    )
    return _accepted_answer(exchange)


@api_methods("POST")
@api_view
def message_retry(request: HttpRequest, message_id: int) -> JsonResponse:
    exchange = services.message_retry(user=request.user, message_id=message_id, language=get_language())
    return _accepted_answer(exchange)


@api_methods("POST")
@api_view
def message_continue(request: HttpRequest, message_id: int) -> JsonResponse:
    exchange = services.message_continue(user=request.user, message_id=message_id, language=get_language())
    return _accepted_answer(exchange)


@api_methods("POST")
@api_view
def message_show(request: HttpRequest, message_id: int) -> JsonResponse:
    conversation = services.message_show(user=request.user, message_id=message_id)
    state = selectors.conversation_state(user=request.user, conversation_id=conversation.pk)
    return JsonResponse(conversation_state_json(state))


@api_methods("POST")
@api_view
def message_cancel(request: HttpRequest, message_id: int) -> JsonResponse:
    message = services.message_cancel(user=request.user, message_id=message_id)
    return JsonResponse({"id": message.pk, "status": message.status}, status=202)


@api_methods("POST")
@api_view
def phase_next(request: HttpRequest, conversation_id: uuid.UUID) -> JsonResponse:
    """The user ends the current phase of a guided flow."""
    state = flows.phase_next(user=request.user, conversation_id=conversation_id)
    return JsonResponse({"flow": state.json()})


def assistant_entry_json(assistant: Assistant) -> dict[str, Any]:
    """An assistant as the gallery shows it: its current version's name, text and phases."""
    version = assistant.current
    return {
        "slug": assistant.slug,
        "name": version.name,
        "description": version.description,
        "icon": version.icon,
        "starters": version.starters,
        "flow": {"phases": [{"title": p["title"], "goal": p["goal"]} for p in version.phases]}
        if version.phases
        else None,
    }


@api_methods("GET")
@api_view
def assistants(request: HttpRequest) -> JsonResponse:
    """The assistants the user may start a chat with."""
    return JsonResponse({"assistants": [assistant_entry_json(a) for a in assistants_visible(request.user)]})


@api_methods("GET")
def conversation_events(request: HttpRequest, conversation_id: uuid.UUID) -> HttpResponse:
    """The event stream's URL, for reverse(); the stream is assistant.stream_endpoint.

    config.asgi answers every GET of this URL before Django's middleware chain, which
    would hold a thread per open stream. Django sees the other methods (405, from
    api_methods) and only a GET that bypassed config.asgi (Django's test client, a WSGI
    server): a setup that cannot stream.
    """
    raise ImproperlyConfigured("event streams are served by assistant.stream_endpoint through config.asgi")


# --- managing conversations, feedback, editing the last question --------------------------


@api_methods("GET", "POST")
def conversations_api(request: HttpRequest) -> HttpResponse:
    """`/api/conversations/`: the list (GET), a new conversation (POST)."""
    return conversation_list(request) if request.method == "GET" else conversations(request)


@api_methods("GET", "PATCH", "DELETE")
def conversation_api(request: HttpRequest, conversation_id: uuid.UUID) -> HttpResponse:
    """`/api/conversations/<id>/`: read (GET), rename or archive (PATCH), delete (DELETE)."""
    if request.method == "DELETE":
        return conversation_delete(request, conversation_id)
    view = conversation_update if request.method == "PATCH" else conversation_detail
    return view(request, conversation_id)


def conversation_summary_json(conversation: Conversation) -> dict[str, Any]:
    return {
        "id": str(conversation.pk),
        "title": conversation.title,
        "url": reverse("conversation", args=[conversation.pk]),
        "updated_at": conversation.updated_at.isoformat(),
        "archived": conversation.archived,
        "origin": conversation.origin,
    }


def search_result_json(conversation: Conversation, snippet: list[dict[str, Any]]) -> dict[str, Any]:
    """A conversation found by a search: its summary and the snippet of its first matching message."""
    return {**conversation_summary_json(conversation), "snippet": snippet}


@api_methods("GET")
@api_view
def conversation_list(request: HttpRequest) -> JsonResponse:
    params = request.GET.dict()
    # "archived=all": the archive and the rest together (a search as you type finds both).
    everywhere = params.get("archived") == "all"
    data = ConversationSearchForm.parse({**params, "archived": ""} if everywhere else params)
    listed = selectors.conversations_list(
        user=request.user,
        query=data["q"],
        archived=None if everywhere else data["archived"],
        before=data["before"],
    )
    if data["q"].strip():
        found = [search_result_json(c, listed.snippets[c.pk]) for c in listed.conversations]
    else:
        found = [conversation_summary_json(c) for c in listed.conversations]
    return JsonResponse({"conversations": found, "next": listed.next})


@api_view
def conversation_update(request: HttpRequest, conversation_id: uuid.UUID) -> JsonResponse:
    data = ConversationUpdateForm.parse(json_body(request))
    conversation = services.conversation_update(user=request.user, conversation_id=conversation_id, **data)
    return JsonResponse(conversation_json(conversation))


@api_view
def conversation_delete(request: HttpRequest, conversation_id: uuid.UUID) -> HttpResponse:
    services.conversation_delete(user=request.user, conversation_id=conversation_id)
    return HttpResponse(status=204)


@api_methods("POST")
@api_view
def message_feedback(request: HttpRequest, message_id: int) -> JsonResponse:
    data = FeedbackForm.parse(json_body(request))
    message = services.message_feedback(
        user=request.user, message_id=message_id, rating=data["rating"], comment=data["comment"]
    )
    return JsonResponse(
        {
            "id": message.pk,
            "feedback": message.feedback_name,
            "feedback_comment": message.feedback_comment,
        }
    )


@api_methods("POST")
@api_view
def message_edit(request: HttpRequest, message_id: int) -> JsonResponse:
    data = MessageForm.parse(json_body(request))
    exchange = services.message_edit(
        user=request.user,
        message_id=message_id,
        content=data["content"],
        model=data["model"] or None,
        language=get_language(),
    )
    return _accepted_answer(exchange)
