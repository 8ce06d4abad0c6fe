"""Conversations: a list of metadata, transcripts behind a reason, the export, deletion.

The list shows figures computed in its one query, never the title; a transcript is our
own read-only page behind a "state your reason" form that writes the AccessLog.
Superusers alone delete, always through Django's confirmation page, and nothing names a
conversation by `str()` (its title) before a reason: see `review.conversation_label`.
"""

from __future__ import annotations

from datetime import UTC, datetime
from urllib.parse import urlsplit

from django.contrib import admin
from django.contrib.admin import helpers
from django.contrib.admin.models import DELETION, LogEntry
from django.contrib.admin.utils import quote, unquote
from django.contrib.admin.views.main import ChangeList
from django.contrib.contenttypes.models import ContentType
from django.core.exceptions import PermissionDenied
from django.db.models import Count, Exists, F, IntegerField, Max, OuterRef, Q, QuerySet, Subquery, Sum
from django.db.models.functions import Coalesce
from django.http import Http404, HttpRequest, HttpResponse, QueryDict, StreamingHttpResponse
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.http import urlencode
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _

from assistant import review
from assistant.admin.content_view import (
    CONTENT_HIDDEN,
    CONTENT_VIEW,
    ContentViewAdmin,
    ReviewReasonForm,
    content_view_target,
    message_anchor,
    search_words,
    transcript_url,
    uuid_or_none,
)
from assistant.admin.lookups import date_lookups, value_lookups
from assistant.models import Conversation, Message
from assistant.personas.flows import phase_label
from assistant.staff import export

# An error shows as status "error", or as an error type on an answer that ended otherwise
# (interrupted, cut off upstream).
HAS_ERROR = Q(status=Message.Status.ERROR) | ~Q(error_type="")
NEGATIVE_FEEDBACK = Q(feedback=Message.Feedback.DOWN)


class _MessageExistsFilter(admin.SimpleListFilter):
    """Conversations with (or without) a message matching `condition`."""

    condition: Q

    def lookups(self, request, model_admin):
        return [("yes", _("Yes")), ("no", _("No"))]

    def queryset(self, request, queryset):
        matching = Exists(Message.objects.filter(self.condition, conversation=OuterRef("pk")))
        if self.value() == "yes":
            return queryset.filter(matching)
        if self.value() == "no":
            return queryset.filter(~matching)
        return queryset


class NegativeFeedbackFilter(_MessageExistsFilter):
    title = _("negative feedback")
    parameter_name = "negative_feedback"
    condition = NEGATIVE_FEEDBACK


class HasErrorFilter(_MessageExistsFilter):
    title = _("errors")
    parameter_name = "has_error"
    condition = HAS_ERROR


class MessageStatusFilter(admin.SimpleListFilter):
    title = _("has a message that is")
    parameter_name = "message_status"

    def lookups(self, request, model_admin):
        return Message.Status.choices

    def queryset(self, request, queryset):
        if self.value() not in Message.Status.values:
            return queryset
        return queryset.filter(
            Exists(Message.objects.filter(conversation=OuterRef("pk"), status=self.value()))
        )


def conversations_with_review_columns(queryset: QuerySet[Conversation]) -> QuerySet[Conversation]:
    """Per-conversation figures as correlated subqueries: one query for a page, any size."""
    of_row = Message.objects.filter(conversation=OuterRef("pk"))
    grouped = of_row.order_by().values("conversation")
    tokens = Coalesce("prompt_tokens", 0) + Coalesce("completion_tokens", 0)
    return queryset.annotate(
        message_count=Coalesce(Subquery(grouped.annotate(n=Count("pk")).values("n")), 0),
        total_tokens=Coalesce(
            Subquery(grouped.annotate(n=Sum(tokens, output_field=IntegerField())).values("n")), 0
        ),
        last_activity=Coalesce(Subquery(grouped.annotate(t=Max("updated_at")).values("t")), F("updated_at")),
        has_negative_feedback=Exists(of_row.filter(NEGATIVE_FEEDBACK)),
        has_error=Exists(of_row.filter(HAS_ERROR)),
    )


# Who ended a phase of a guided flow (Message.phase_summary["by"]).
PHASE_ENDED_BY = {"model": _("Ended by the model"), "user": _("Ended by the user (next phase)")}


def transcript_messages(conversation: Conversation) -> list[Message]:
    """The messages in order, each answer of a guided flow with `phase_label` ("Phase 2/4
    Goal") and, on the answer that ended its phase, `phase_ended` (who ended it, the
    summary, its points): read from the version the conversation ran with."""
    messages = list(conversation.messages.order_by("pk"))
    phases = conversation.assistant_version.phases if conversation.assistant_version else []
    for message in messages:
        message.phase_label = ""
        message.phase_ended = None
        if message.phase is not None:
            message.phase_label = phase_label(phases, message.phase)
        summary = message.phase_summary
        if isinstance(summary, dict):
            points = summary.get("points")
            message.phase_ended = {
                "by": PHASE_ENDED_BY.get(summary.get("by"), summary.get("by", "")),
                "summary": summary.get("summary", ""),
                "points": [str(point) for point in points] if isinstance(points, list) else [],
            }
    return messages


@admin.register(Conversation)
class ConversationAdmin(ContentViewAdmin):
    list_display = [
        "label",
        "conversation_title",
        "model",
        "message_count",
        "total_tokens",
        "last_activity",
        "has_negative_feedback",
        "has_error",
        "archived",
    ]
    content_columns = {"conversation_title": "title_hidden"}
    list_filter = [
        "created_at",
        "updated_at",
        "model",
        MessageStatusFilter,
        NegativeFeedbackFilter,
        HasErrorFilter,
        "archived",
        "origin",
        ("owner", admin.RelatedOnlyFieldListFilter),
    ]
    metadata_lookups = frozenset(
        {
            *date_lookups("created_at", "updated_at"),
            *value_lookups("model", "archived", "origin"),
            MessageStatusFilter.parameter_name,
            NegativeFeedbackFilter.parameter_name,
            HasErrorFilter.parameter_name,
            "owner__id__exact",
            "owner__isnull",
            CONTENT_VIEW,
        }
    )
    list_select_related = ["owner"]
    # Searched in get_search_results; declared so that the search box shows.
    search_fields = ["owner__username"]
    metadata_search_help_text = _(
        "Searches owners' usernames and conversation ids. Titles and message text: in the content view."
    )
    content_search_help_text = _(
        "Searches titles, owners' usernames and message text. Every conversation found is "
        "recorded in the access log with your reason and the search."
    )
    list_per_page = 50
    # The unfiltered total is one more COUNT over every conversation on each filtered page.
    show_full_result_count = False
    actions = ["export_jsonl"]

    def get_queryset(self, request):
        # The assistant version too: the transcript names it (a join, no query of its own).
        conversations = super().get_queryset(request).select_related("owner", "assistant_version__assistant")
        return conversations_with_review_columns(conversations)

    def get_search_results(self, request, queryset, search_term):
        # Every word must match the owner or the id; in the content view also the title or
        # some message (a subquery, so a conversation matching in many messages is listed
        # once).
        content = self.content_grant(request) is not None
        for word in search_words(search_term):
            matches = Q(owner__username__icontains=word)
            if (pk := uuid_or_none(word)) is not None:
                matches |= Q(pk=pk)
            if content:
                in_messages = Message.objects.filter(conversation=OuterRef("pk"), content__icontains=word)
                matches |= Q(title__icontains=word) | Exists(in_messages)
            queryset = queryset.filter(matches)
        return queryset, False

    def conversations_matched(self, changelist: ChangeList) -> QuerySet[Conversation]:
        return changelist.queryset

    def conversations_shown(self, changelist: ChangeList) -> QuerySet[Conversation]:
        return Conversation.objects.filter(
            pk__in=[conversation.pk for conversation in changelist.result_list]
        )

    # The label names the owner: no column of its own (the list fits 1440 px).
    @admin.display(description=_("conversation"), ordering="created_at")
    def label(self, obj: Conversation) -> str:
        return review.conversation_label(obj)

    def row_label(self, obj: Conversation) -> str:
        return review.conversation_label(obj)

    # No ordering: sorting by title would tell how titles compare, page after page.
    @admin.display(description=_("title"))
    def conversation_title(self, obj: Conversation) -> str:
        return obj.title or "—"

    @admin.display(description=_("title"))
    def title_hidden(self, obj: Conversation) -> str:
        return CONTENT_HIDDEN

    @admin.display(description=_("messages"), ordering="message_count")
    def message_count(self, obj: Conversation) -> int:
        return obj.message_count

    @admin.display(description=_("tokens"), ordering="total_tokens")
    def total_tokens(self, obj: Conversation) -> int:
        return obj.total_tokens

    @admin.display(description=_("last activity"), ordering="last_activity")
    def last_activity(self, obj: Conversation) -> datetime:
        return obj.last_activity

    @admin.display(description=_("negative feedback"), boolean=True, ordering="has_negative_feedback")
    def has_negative_feedback(self, obj: Conversation) -> bool:
        return obj.has_negative_feedback

    @admin.display(description=_("errors"), boolean=True, ordering="has_error")
    def has_error(self, obj: Conversation) -> bool:
        return obj.has_error

    # Transcripts are records (ReadOnlyRecords); only superusers delete them.

    def has_delete_permission(self, request, obj=None) -> bool:
        return request.user.is_active and request.user.is_superuser

    def has_review_permission(self, request) -> bool:
        return review.can_review(request.user)

    def get_urls(self):
        review_view = self.admin_site.admin_view(self.review_view)
        content_view = self.admin_site.admin_view(self.content_reason_view)
        return [
            # Before Django's `<path:object_id>/`, which would take "content" for an id.
            path("content/", content_view, name="assistant_conversation_content"),
            path("<path:object_id>/review/", review_view, name="assistant_conversation_review"),
            *super().get_urls(),
        ]

    def _reviewable(self, request: HttpRequest, object_id: str) -> Conversation | None:
        conversation = self.get_object(request, unquote(object_id))
        if conversation is not None and not (
            self.has_view_permission(request, conversation) and self.has_review_permission(request)
        ):
            raise PermissionDenied
        return conversation

    def _page(self, request: HttpRequest, template: str, context: dict) -> TemplateResponse:
        """One of this admin's own pages (templates/admin/assistant/conversation/)."""
        context = {**self.admin_site.each_context(request), "opts": self.opts, **context}
        return TemplateResponse(request, f"admin/assistant/conversation/{template}", context)

    def change_view(self, request, object_id, form_url="", extra_context=None):
        """The transcript, for a reviewer who stated a reason for it in the last 30 minutes."""
        if request.method not in ("GET", "HEAD"):
            raise PermissionDenied
        conversation = self._reviewable(request, object_id)
        if conversation is None:
            raise Http404
        expires = review.transcript_granted(session=request.session, conversation_id=conversation.pk)
        if expires is None:
            url = reverse("admin:assistant_conversation_review", args=[quote(conversation.pk)])
            anchor = message_anchor(request)
            return redirect(url if anchor is None else f"{url}?{urlencode({'message': anchor})}")
        return self._page(
            request,
            "transcript.html",
            {
                "title": _("Transcript"),
                "subtitle": review.conversation_label(conversation),
                "conversation": conversation,
                "assistant_version": conversation.assistant_version,
                "transcript_messages": transcript_messages(conversation),
                "access_ends": datetime.fromtimestamp(expires, tz=UTC),
                "access_log_url": reverse("admin:assistant_accesslog_changelist")
                + "?"
                + urlencode({"conversation_id": conversation.pk}),
                "has_delete_permission": self.has_delete_permission(request, conversation),
                **(extra_context or {}),
            },
        )

    def review_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """State a reason; it is logged, then the transcript opens for a while."""
        if request.method not in ("GET", "HEAD", "POST"):
            raise PermissionDenied
        conversation = self._reviewable(request, object_id)
        if conversation is None:
            raise Http404
        form = ReviewReasonForm(request.POST if request.method == "POST" else None)
        if form.is_bound and form.is_valid():
            review.transcript_open(
                reviewer=request.user,
                conversation=conversation,
                reason=form.reason(),
                session=request.session,
            )
            url = transcript_url(conversation.pk)
            anchor = message_anchor(request)
            return redirect(url if anchor is None else f"{url}#message-{anchor}")
        return self._page(
            request,
            "review_reason.html",
            {
                "title": _("Why do you open this transcript?"),
                "subtitle": review.conversation_label(conversation),
                "conversation": conversation,
                "form": form,
                "grant_minutes": review.GRANT_SECONDS // 60,
            },
        )

    def content_reason_view(self, request: HttpRequest) -> HttpResponse:
        """State a reason for the content view of the lists; then back to the list (`?next=`)."""
        if request.method not in ("GET", "HEAD", "POST"):
            raise PermissionDenied
        if not (self.has_view_permission(request) and self.has_review_permission(request)):
            raise PermissionDenied
        model, url = content_view_target(request.GET.get("next", ""))
        # From the feedback review, that is the purpose.
        from_feedback = "feedback_review" in QueryDict(urlsplit(url).query)
        form = ReviewReasonForm(
            request.POST if request.method == "POST" else None,
            initial={"purpose": "feedback"} if from_feedback else None,
        )
        if form.is_bound and form.is_valid():
            review.list_content_open(session=request.session, reason=form.reason())
            return redirect(url)
        return self._page(
            request,
            "content_reason.html",
            {
                "title": _("Why do you show titles and comments?"),
                "opts": model._meta,
                "form": form,
                "grant_minutes": review.GRANT_SECONDS // 60,
            },
        )

    def history_view(self, request, object_id, extra_context=None):
        if not self.has_review_permission(request):
            raise PermissionDenied
        conversation = self.get_object(request, unquote(object_id))
        if conversation is not None:
            # Django's title names the object by str(): the conversation's title.
            label = review.conversation_label(conversation)
            extra_context = {"title": gettext("Change history: %s") % label, **(extra_context or {})}
        return super().history_view(request, object_id, extra_context)

    def log_deletions(self, request, queryset):
        # Django's own would keep str(conversation), its title, in the admin's log (and show
        # it under "Recent actions") after the conversation is gone.
        content_type = ContentType.objects.get_for_model(Conversation)
        return LogEntry.objects.bulk_create(
            [
                LogEntry(
                    user_id=request.user.pk,
                    content_type_id=content_type.pk,
                    object_id=str(conversation.pk),
                    object_repr=review.conversation_label(conversation)[:200],
                    action_flag=DELETION,
                )
                for conversation in queryset
            ]
        )

    def response_delete(self, request, obj_display, obj_id):
        # obj_display is str(conversation), its title.
        return super().response_delete(request, str(obj_id), obj_id)

    def get_deleted_objects(self, objs, request):
        # Django's summary lists every message by its text; here only labels and counts
        # show (no reason was given to read anything), and messages go with their
        # conversation whatever MessageAdmin allows.
        if isinstance(objs, QuerySet):
            message_count = Message.objects.filter(conversation__in=objs.values("pk")).count()
            count = objs.count()
        else:
            message_count = Message.objects.filter(conversation__in=objs).count()
            count = len(objs)
        shown = [review.conversation_label(conversation) for conversation in objs[:100]]
        if count > len(shown):
            shown.append(_("… and %(count)d more") % {"count": count - len(shown)})
        model_count = {
            Conversation._meta.verbose_name_plural: count,
            Message._meta.verbose_name_plural: message_count,
        }
        return shown, model_count, set(), []

    @admin.action(permissions=["review"], description=_("Export selected conversations (JSON Lines)"))
    def export_jsonl(self, request: HttpRequest, queryset: QuerySet[Conversation]) -> HttpResponse:
        """Ask for a reason first; then stream the conversations, each logged as it goes out."""
        form = ReviewReasonForm(request.POST if "export_reason" in request.POST else None)
        if form.is_bound and form.is_valid():
            lines = export.conversations_jsonl_stream(
                reviewer=request.user, conversations=queryset, reason=form.reason()
            )
            response = StreamingHttpResponse(lines, content_type="application/x-ndjson; charset=utf-8")
            filename = f"conversations-{timezone.now():%Y%m%d-%H%M%S}.jsonl"
            response["Content-Disposition"] = f'attachment; filename="{filename}"'
            return response
        return self._page(
            request,
            "export_reason.html",
            {
                "title": _("Why do you export these conversations?"),
                "form": form,
                "count": queryset.count(),
                "select_across": request.POST.get("select_across") == "1",
                # Sent back as they came: Django handles a confirmed action only with some
                # selected ids, even when all matching rows (select_across) are meant.
                "selected": request.POST.getlist(helpers.ACTION_CHECKBOX_NAME),
                "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
            },
        )
