"""Pages: the chat, a conversation, the login and first-run setup, the owner's access log."""

from __future__ import annotations

import uuid
from typing import Any

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import get_user_model, login
from django.contrib.auth.decorators import login_required
from django.contrib.auth.views import LoginView
from django.core.paginator import Paginator
from django.db import transaction
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.template.defaultfilters import filesizeformat
from django.urls import reverse
from django.utils import timezone
from django.utils.translation import get_language
from django.utils.translation import gettext as _
from django.views.decorators.http import require_GET, require_http_methods

from assistant import errors, review, selectors
from assistant.documents.ingest import documents_of, too_large_message
from assistant.documents.sources import sources_json
from assistant.forms import PREFERENCES_MAX_CHARS, LoginForm, PreferencesForm, SetupForm
from assistant.models import Preferences
from assistant.personas.access import assistants_visible
from assistant.providers.errors import RETRYABLE_TYPES
from assistant.views.api import assistant_entry_json, conversation_json, search_result_json
from assistant.views.documents import EXTENSIONS as DOCUMENT_EXTENSIONS
from assistant.views.documents import document_json


class AssistantLoginView(LoginView):
    """Django's login view; before the first user exists it leads to the setup form.

    Its form refuses logins over the limits of assistant.throttle before any password is
    hashed: 429 with Retry-After (too many failures, or too many checks at once).
    """

    form_class = LoginForm

    def dispatch(self, request: HttpRequest, *args, **kwargs) -> HttpResponse:
        if not get_user_model().objects.exists():
            return redirect("setup")
        return super().dispatch(request, *args, **kwargs)

    def form_invalid(self, form: LoginForm) -> HttpResponse:
        response = super().form_invalid(form)
        if form.refusal is not None:
            response.status_code = form.refusal.status
            response["Retry-After"] = str(form.refusal.retry_after)
        return response


@require_http_methods(["GET", "POST"])
def setup(request: HttpRequest) -> HttpResponse:
    """One-time creation of the first administrator; gone once any user exists."""
    User = get_user_model()
    if User.objects.exists():
        raise Http404
    form = SetupForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        with transaction.atomic():
            if User.objects.select_for_update().exists():
                raise Http404
            user = User.objects.create_superuser(
                username=form.cleaned_data["username"], password=form.cleaned_data["password1"]
            )
        login(request, user, backend="django.contrib.auth.backends.ModelBackend")
        return redirect("chat")
    return render(request, "registration/setup.html", {"form": form})


# The sidebar shows the most recent ones; older ones come from the list API on request.
SIDEBAR_CONVERSATIONS = 50


# A message id no real route holds: reversed, then replaced by the `{id}` placeholder.
_ID_SENTINEL = 987_654_321_012


def message_url_template(name: str) -> str:
    """The URL of route `name` for a message, with `{id}` where the message's id goes."""
    return reverse(name, args=[_ID_SENTINEL]).replace(str(_ID_SENTINEL), "{id}")


# A conversation or document id no real route holds, for the same purpose.
_UUID_SENTINEL = uuid.UUID(int=0x5E171E1)


def conversation_url_template(name: str) -> str:
    """The URL of route `name` for a conversation (or another object with a UUID: a
    document), with `{id}` where its id goes."""
    return reverse(name, args=[_UUID_SENTINEL]).replace(str(_UUID_SENTINEL), "{id}")


# What the file input offers (the server checks the content, whatever the name says).
UPLOAD_ACCEPT = ",".join(f".{name}" for extensions in DOCUMENT_EXTENSIONS.values() for name in extensions)


def _page_context(request: HttpRequest, state: selectors.ConversationState | None) -> dict[str, Any]:
    page_data: dict[str, Any] = {
        "models": settings.ASSISTANT_MODELS,
        "create_url": reverse("api_conversations"),
        "home_url": reverse("chat"),
        # A guided flow's "next phase", per conversation (`{id}`).
        "phase_next_url": conversation_url_template("api_phase_next"),
        # Per message: the client puts the message's id in place of `{id}`.
        "message_urls": {
            action: message_url_template(f"api_message_{action}")
            for action in ("cancel", "retry", "continue", "edit", "show", "feedback", "sources")
        },
        # A conversation's documents (`{id}`: the conversation's), one document and its
        # file (`{id}`: the document's).
        "document_urls": {
            "list": conversation_url_template("api_conversation_documents"),
            "detail": conversation_url_template("api_document"),
            "file": conversation_url_template("document_file"),
        },
        # The page refuses a file over the limit before sending it, in the server's words.
        "upload": {"max_bytes": settings.ASSISTANT_UPLOAD_MAX_BYTES, "too_large": too_large_message()},
        "retryable_types": sorted(RETRYABLE_TYPES),
        "keepalive_seconds": settings.ASSISTANT_KEEPALIVE_SECONDS,
        "max_message_chars": settings.ASSISTANT_MAX_MESSAGE_CHARS,
        # A silent model is named after 5 s, or halfway to the read timeout when shorter.
        "stalled_after_ms": int(min(5.0, settings.OPENAI_TIMEOUT / 2) * 1000),
        "login_url": reverse("login"),
    }
    chosen = None
    if state is None:
        # The empty new chat offers them (set by the administrators, assistant/admin/starters.py).
        page_data["starter_prompts"] = selectors.starter_prompts(language=get_language())
        # ... and the assistants the user may start it with (the gallery); `?assistant=<slug>`
        # chooses one, as the page keeps its choice in the address.
        page_data["assistants"] = [assistant_entry_json(a) for a in assistants_visible(request.user)]
        slug = request.GET.get("assistant", "")
        chosen = next((a for a in page_data["assistants"] if a["slug"] == slug), None)
        page_data["assistant"] = chosen["slug"] if chosen else ""
    else:
        page_data.update(
            conversation=conversation_json(state.conversation, state.messages),
            last_event_id=state.last_event_id,
            # The versions of each shown message, by id (docs/protocol.md, "A message").
            versions={m.pk: state.versions[m.pk].json() for m in state.messages},
            # Raw text of answers still streaming: the page appends deltas to it.
            streaming={m.pk: m.content for m in state.messages if m.is_streaming},
            # In a guided flow: how each answer that ended its phase ended it (the dividers).
            phase_summaries={m.pk: m.phase_summary for m in state.messages if m.phase_summary},
            # The conversation's documents, oldest first, and the sources each answer cites.
            documents=[document_json(d) for d in documents_of(state.conversation)],
            sources={m.pk: sources_json(m.sources) for m in state.messages if m.sources},
        )
    query = request.GET.get("q", "").strip()[:200]
    archived = request.GET.get("archived") == "1"
    # A search finds archived conversations too (flagged), unless it searches the archive.
    listed = selectors.conversations_list(
        user=request.user,
        query=query,
        archived=True if archived else None if query else False,
        limit=SIDEBAR_CONVERSATIONS,
    )
    results = [search_result_json(c, listed.snippets[c.pk]) for c in listed.conversations] if query else []
    today = timezone.localdate()
    # "Show more" continues the list from the API, sorting what it gets into the same sections.
    page_data["sidebar"] = {
        "list_url": reverse("api_conversations"),
        "query": query,
        "archived": archived,
        "next": listed.next,
        # The list API's "archived" for a search; a ranked list goes on in its order, not in sections.
        "search": {"ranked": bool(query), "archived": "1" if archived else "all"},
        "groups": [
            {"label": label, "start": start and start.isoformat()}
            for label, start in selectors.recency_groups(today=today)
        ],
    }
    return {
        # The gallery's assistant chosen by the address, drawn pressed (chat.html), and
        # the example prompts shown: its own, else the administrators' general ones.
        "chosen_assistant": chosen,
        "starters": chosen["starters"] if chosen else page_data.get("starter_prompts", []),
        # A search shows its results in their order (the list API's items, snippets
        # included) under "Best matches" (templates/assistant/chat.html), the list in sections.
        "conversation_groups": [] if query else selectors.group_by_recency(listed.conversations, today=today),
        "search_results": results,
        "more_conversations": listed.next is not None,
        "usage": selectors.usage_get(user=request.user) if settings.ASSISTANT_DAILY_TOKEN_QUOTA else None,
        "query": query,
        "archived": archived,
        "state": state,
        "page_data": page_data,
        "models": settings.ASSISTANT_MODELS,
        "demo_mode": settings.ASSISTANT_DEMO_MODE,
        "upload_accept": UPLOAD_ACCEPT,
        "upload_max": filesizeformat(settings.ASSISTANT_UPLOAD_MAX_BYTES),
        "i18n": {
            "reconnecting": _("Connection lost, reconnecting…"),
            "resumed": _("Connected again; the answer continues."),
            "signed_out": _("You are signed out."),
            "sign_in_again": _("Sign in again"),
            "too_many_streams": _(
                "This conversation stopped updating here: it is open in too many other tabs "
                "(at most %(limit)s)."
            ),
            "reconnect": _("Reconnect"),
            "offline": _("You are offline. Your message is kept; send it again when you are back online."),
            "send_failed": _("Sending failed. Your message is kept; try again."),
            "untitled": _("Untitled"),
            "retry": _("Retry"),
            "copy": _("Copy"),
            "copied": _("Copied"),
            "waiting": _("Waiting for the first word… %(seconds)s s"),
            "answer_ready": _("The answer is complete."),
            "tokens": _("%(prompt)s → %(completion)s tokens"),
            "seconds": _("%(seconds)s s"),
            "edit": _("Edit"),
            "save_send": _("Save and send"),
            "cancel": _("Cancel"),
            "good": _("Good answer"),
            "bad": _("Bad answer"),
            "feedback_comment": _("What was wrong? (optional)"),
            "feedback_send": _("Send feedback"),
            "feedback_thanks": _("Thank you for the feedback."),
            "today": _("Today"),
            "results_for": _("Results for “%(query)s”"),
            "nothing_found": _("Nothing found."),
            "all_results": _("All results"),
            "archived": _("Archived"),
            # The label of a conversation an app, a script or the gateway started.
            "from_api": _("API"),
            "from_api_title": _("Created with an app or a script through the API"),
            "cut_off": _("The answer was cut off at the model's length limit."),
            "continue": _("Continue"),
            "regenerate": _("Regenerate"),
            "versions": _("Versions"),
            "version_of": _("%(index)s / %(count)s"),
            "previous_version": _("Previous version"),
            "next_version": _("Next version"),
            "you_said": _("You said:"),
            "assistant_said": _("Assistant said:"),
            "jump_to_latest": _("Jump to the latest message"),
            "stopped": _("Stopped"),
            "still_waiting": _("Still waiting for the model…"),
            "placeholder": _("Message Assistant… (Enter sends, Shift+Enter for a new line)"),
            "placeholder_touch": _("Message Assistant…"),
            "characters_left": _("%(left)s characters left"),
            "too_long": _(
                "Your message is too long: at most %(limit)s characters. Shorten it or split it into parts."
            ),
            "request_failed": _("Assistant could not be reached. Check your connection and try again."),
            # Guided flows (chat/flow.js).
            "flow_position": _("%(phase)s/%(total)s %(title)s"),
            "flow_finished": _("Finished"),
            "flow_goal": _("Goal: %(goal)s"),
            "flow_done_note": _("All phases are done. You can go on talking."),
            "phase_completed": _("Phase %(phase)s %(title)s completed"),
            "phase_completed_by_user": _("You moved on to the next phase."),
            "phase_now": _("Now phase %(phase)s of %(total)s: %(title)s."),
            "completed": _("completed"),
            # Documents (chat/documents.js).
            "upload_waiting": _("Waiting to upload"),
            "uploading": _("Uploading…"),
            "document_queued": _("Waiting to be read"),
            "document_reading": _("Reading…"),
            "document_reading_page": _("Reading page %(page)s of %(pages)s"),
            "document_ready": _("Ready"),
            "document_ready_named": _("%(name)s is ready."),
            "document_failed_named": _("%(name)s could not be added: %(reason)s"),
            "document_removed": _("%(name)s was removed."),
            "download_named": _("Download %(name)s"),
            "remove_named": _("Remove %(name)s"),
            "remove_document_text": _(
                "“%(name)s” is deleted from this conversation, its file included. Answers from now on "
                "no longer draw on it; earlier answers keep the passages they were given."
            ),
            # Sources of answers (chat/sources.js).
            "sources": _("Sources"),
            "source_label": _("Source %(n)s: %(name)s"),
            "source_label_where": _("Source %(n)s: %(name)s, %(where)s"),
            "source_title": _("Source %(n)s"),
            "source_where": _("%(name)s, %(where)s"),
            "source_loading": _("Loading the passage…"),
            "source_missing": _("This passage is no longer stored."),
        },
    }


@require_GET
@login_required
def chat(request: HttpRequest) -> HttpResponse:
    return render(request, "assistant/chat.html", _page_context(request, None))


@require_GET
@login_required
def conversation(request: HttpRequest, conversation_id: uuid.UUID) -> HttpResponse:
    try:
        state = selectors.conversation_state(user=request.user, conversation_id=conversation_id)
    except errors.ServiceError:
        raise Http404 from None
    return render(request, "assistant/chat.html", _page_context(request, state))


# --- settings ---------------------------------------------------------------------------------


@require_http_methods(["GET", "POST"])
@login_required
def preferences(request: HttpRequest) -> HttpResponse:
    """The user's personal instructions: about them, and how Assistant should answer.

    They apply to the chats the user starts from now on (each conversation keeps the
    instructions it started with, assistant.services.conversation_create).
    """
    stored = Preferences.objects.filter(user=request.user).first()
    initial = {"about_me": stored.about_me, "answer_style": stored.answer_style} if stored else {}
    form = PreferencesForm(request.POST or None, initial=initial)
    if request.method == "POST" and form.is_valid():
        Preferences.objects.update_or_create(user=request.user, defaults=form.cleaned_data)
        messages.success(request, _("Saved. Your instructions apply to the chats you start from now on."))
        return redirect("settings")
    return render(
        request,
        "assistant/settings.html",
        {
            "form": form,
            "max_chars": PREFERENCES_MAX_CHARS,
            "gateway_store": settings.ASSISTANT_GATEWAY_STORE,
            # The counter under each field as settings.js updates it (the template's words).
            "counter_text": _("%(count)s of %(limit)s characters"),
        },
    )


# --- who read my conversations --------------------------------------------------------------

ACCESS_LOG_PAGE_SIZE = 50


@require_GET
@login_required
def access_log(request: HttpRequest) -> HttpResponse:
    """The transcript access log of the user's own conversations: who, when, which, why."""
    entries = review.access_log_for_owner(user=request.user)
    page = Paginator(entries, ACCESS_LOG_PAGE_SIZE).get_page(request.GET.get("page"))
    return render(request, "assistant/access_log.html", {"page": page})
