"""Messages and the feedback review: a list without text; each message opens in its transcript."""

from __future__ import annotations

from django.contrib import admin
from django.contrib.admin.utils import unquote
from django.contrib.admin.views.main import ChangeList
from django.core.exceptions import PermissionDenied
from django.db.models import Q, QuerySet
from django.http import Http404, HttpResponseRedirect
from django.utils.html import format_html
from django.utils.text import Truncator
from django.utils.translation import gettext_lazy as _

from assistant import review
from assistant.admin.content_view import (
    CONTENT_HIDDEN,
    CONTENT_VIEW,
    ContentViewAdmin,
    search_words,
    transcript_url,
    uuid_or_none,
)
from assistant.admin.conversations import NEGATIVE_FEEDBACK
from assistant.admin.lookups import date_lookups, value_lookups
from assistant.models import Conversation, Message


class FeedbackFilter(admin.SimpleListFilter):
    title = _("feedback")
    parameter_name = "feedback_review"

    def lookups(self, request, model_admin):
        return [
            ("down_comment", _("Thumbs down with a comment")),
            ("down", _("Thumbs down")),
            ("up", _("Thumbs up")),
            ("comment", _("Any rating with a comment")),
            ("none", _("No rating")),
        ]

    def queryset(self, request, queryset):
        with_comment = ~Q(feedback_comment="")
        conditions = {
            "down_comment": NEGATIVE_FEEDBACK & with_comment,
            "down": NEGATIVE_FEEDBACK,
            "up": Q(feedback=Message.Feedback.UP),
            "comment": Q(feedback__isnull=False) & with_comment,
            "none": Q(feedback__isnull=True),
        }
        condition = conditions.get(self.value() or "")
        return queryset if condition is None else queryset.filter(condition)


@admin.register(Message)
class MessageAdmin(ContentViewAdmin):
    """Messages as a list (no text in it); each one opens within its transcript.

    Whether there is a feedback comment shows here; the comment itself, and the title, in
    the content view.
    """

    # The feedback review's columns first: they are what a reviewer reads here.
    list_display = [
        "pk",
        "created_at",
        "feedback",
        "comment",
        "context",
        "conversation_label",
        "conversation_title",
        "owner",
        "model",
        "role",
        "status",
        "error_type",
    ]
    content_columns = {"comment": "comment_hidden", "conversation_title": "conversation_title_hidden"}
    list_filter = [
        FeedbackFilter,
        "role",
        "status",
        "model",
        "error_type",
        "superseded",
        "created_at",
    ]
    metadata_lookups = frozenset(
        {
            FeedbackFilter.parameter_name,
            *value_lookups("role", "status", "model", "error_type", "superseded"),
            *date_lookups("created_at"),
            # A conversation's or an owner's messages (links, the query-count tests).
            "conversation__id__exact",
            "conversation__owner__id__exact",
            CONTENT_VIEW,
        }
    )
    list_select_related = ["conversation__owner"]
    # Searched in get_search_results; declared so that the search box shows.
    search_fields = ["conversation__owner__username"]
    metadata_search_help_text = _(
        "Searches owners' usernames and conversation ids. Comments, titles and message text: "
        "in the content view."
    )
    content_search_help_text = _(
        "Searches feedback comments, conversation titles, owners' usernames and message text. "
        "Every conversation found is recorded in the access log with your reason and the search."
    )
    ordering = ["-pk"]
    list_per_page = 50
    show_full_result_count = False

    def get_search_results(self, request, queryset, search_term):
        content = self.content_grant(request) is not None
        for word in search_words(search_term):
            matches = Q(conversation__owner__username__icontains=word)
            if (pk := uuid_or_none(word)) is not None:
                matches |= Q(conversation_id=pk)
            if content:
                matches |= (
                    Q(feedback_comment__icontains=word)
                    | Q(conversation__title__icontains=word)
                    | Q(content__icontains=word)
                )
            queryset = queryset.filter(matches)
        return queryset, False

    def conversations_matched(self, changelist: ChangeList) -> QuerySet[Conversation]:
        return Conversation.objects.filter(pk__in=changelist.queryset.values("conversation_id"))

    def conversations_shown(self, changelist: ChangeList) -> QuerySet[Conversation]:
        return Conversation.objects.filter(
            pk__in={message.conversation_id for message in changelist.result_list}
        )

    @admin.display(description=_("owner"), ordering="conversation__owner__username")
    def owner(self, obj: Message) -> str:
        return obj.conversation.owner.get_username()

    @admin.display(description=_("feedback comment"))
    def comment(self, obj: Message) -> str | None:
        return Truncator(obj.feedback_comment).chars(200) if obj.feedback_comment else None

    # Whether there is a comment is metadata (the feedback review's filter says it too).
    @admin.display(description=_("feedback comment"))
    def comment_hidden(self, obj: Message) -> str | None:
        return CONTENT_HIDDEN if obj.feedback_comment else None

    @admin.display(description=_("conversation"), ordering="conversation__created_at")
    def conversation_label(self, obj: Message) -> str:
        return review.conversation_label(obj.conversation)

    def row_label(self, obj: Message) -> str:
        return f"#{obj.pk} · {review.conversation_label(obj.conversation)}"

    @admin.display(description=_("conversation title"))
    def conversation_title(self, obj: Message) -> str:
        return obj.conversation.title or "—"

    @admin.display(description=_("conversation title"))
    def conversation_title_hidden(self, obj: Message) -> str:
        return CONTENT_HIDDEN

    @admin.display(description=_("context"))
    def context(self, obj: Message) -> str:
        return format_html(
            '<a href="{}">{}</a>', transcript_url(obj.conversation_id, obj.pk), _("transcript")
        )

    def change_view(self, request, object_id, form_url="", extra_context=None):
        # A message's text is part of a transcript: shown there, after a reason.
        message = self.get_object(request, unquote(object_id))
        if message is None:
            raise Http404
        if not self.has_view_permission(request, message):
            raise PermissionDenied
        return HttpResponseRedirect(transcript_url(message.conversation_id, message.pk))

    def history_view(self, request, object_id, extra_context=None):
        # Its title would be the message's text; there is no history to show anyway.
        return self.change_view(request, object_id)
