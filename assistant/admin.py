"""Review UI: conversations, feedback and the access log; content shows only for a reason.

- Conversations: a list of metadata (owner, start, figures computed in the list's one
  query), no title. A transcript is our own read-only page behind a "state your reason"
  form that writes the AccessLog (assistant/review.py).
- Messages: the feedback review (thumbs down, whether there is a comment); any message
  opens in its transcript, behind the same form.
- The content view of both lists (titles, comments, search in text) opens for a stated
  reason too; every conversation it shows or a search of it matches is logged first.
- Lists accept query-string lookups from an allowlist of metadata only: Django's admin
  would take any lookup on a local field (`?content__startswith=...`), and result
  counts would spell out content without a reason or a log entry.
- Access log: readable by staff with the view permission, exportable as CSV, changed
  by nobody (superusers included).
Superusers alone may delete conversations, always through Django's confirmation page.
Nothing names a conversation by `str()` (its title) before a reason: see
`review.conversation_label`.
"""

from __future__ import annotations

import contextlib
import uuid
from datetime import UTC, datetime
from urllib.parse import urlsplit

from django import forms
from django.contrib import admin
from django.contrib.admin import helpers
from django.contrib.admin.models import DELETION, LogEntry
from django.contrib.admin.options import IncorrectLookupParameters
from django.contrib.admin.utils import quote, unquote
from django.contrib.admin.views.main import ChangeList
from django.contrib.contenttypes.models import ContentType
from django.core.exceptions import PermissionDenied
from django.db.models import (
    Count,
    Exists,
    F,
    IntegerField,
    Max,
    OuterRef,
    Q,
    QuerySet,
    Subquery,
    Sum,
)
from django.db.models.functions import Coalesce
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect, QueryDict, StreamingHttpResponse
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.http import urlencode
from django.utils.text import Truncator, smart_split, unescape_string_literal
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _

from assistant import review
from assistant.forms import AdminLoginForm
from assistant.models import AccessLog, Conversation, Message
from assistant.staff import export

# The admin's login counts and limits failed logins like the login page (assistant.throttle).
admin.site.login_form = AdminLoginForm
# No page of the admin, its login included, announces the software behind it.
admin.site.site_header = _("Assistant administration")
admin.site.site_title = _("Assistant administration")
admin.site.index_title = _("Administration")

# An error shows as status "error", or as an error type on an answer that ended otherwise
# (interrupted, cut off upstream).
HAS_ERROR = Q(status=Message.Status.ERROR) | ~Q(error_type="")
NEGATIVE_FEEDBACK = Q(feedback=Message.Feedback.DOWN)


class ReviewReasonForm(forms.Form):
    """Why a transcript is opened (or exported): a purpose and a sentence of detail."""

    purpose = forms.ChoiceField(label=_("Purpose"), choices=review.PURPOSES)
    details = forms.CharField(
        label=_("Reason"),
        min_length=review.REASON_MIN_CHARS,
        max_length=review.REASON_MAX_CHARS,
        widget=forms.Textarea(attrs={"rows": 3, "cols": 60}),
        help_text=_("For example the ticket number or the request you are acting on. The owner can read it."),
    )

    def reason(self) -> str:
        return review.reason_compose(**self.cleaned_data)


def _message_anchor(request: HttpRequest) -> int | None:
    """The message a link wants to show within its transcript (`?message=<id>`)."""
    value = request.GET.get("message", "")
    return int(value) if value.isdecimal() and len(value) < 19 else None


def transcript_url(conversation_id: uuid.UUID, message_id: int | None = None) -> str:
    url = reverse("admin:assistant_conversation_change", args=[quote(conversation_id)])
    if message_id is None:
        return url
    return f"{url}?{urlencode({'message': message_id})}#message-{message_id}"


# --- metadata lists, and their content view for a reason -----------------------------------

# `?content_view=1` asks a list for titles, comments and search in text (a stated reason).
CONTENT_VIEW = "content_view"


class ContentViewFilter(admin.SimpleListFilter):
    """Keeps `content_view=1` in every link of a list (sorting, pages, filters, the search
    form) without showing up as a filter: a list filter's parameter is carried along, any
    other one would be dropped or refused as a lookup."""

    title = _("content view")
    parameter_name = CONTENT_VIEW

    def lookups(self, request, model_admin):
        return []

    def queryset(self, request, queryset):
        return queryset


def _date_lookups(*fields: str) -> set[str]:
    """What DateFieldListFilter puts in the query string."""
    return {f"{field}__{lookup}" for field in fields for lookup in ("gte", "lt", "isnull")}


def _value_lookups(*fields: str) -> set[str]:
    """What the choice, boolean and all-values filters put in the query string, and the field itself."""
    return {lookup for field in fields for lookup in (field, f"{field}__exact", f"{field}__isnull")}


class MetadataLookupsOnly(admin.ModelAdmin):
    """Query-string lookups only from `metadata_lookups`, refused like any disallowed lookup (400).

    Django's own rule allows every lookup on a local field and relational ones its filters
    use: `?content__startswith=Mein` would answer, by its result count, whether a message
    begins so, and a few hundred such requests spell the message out.
    """

    metadata_lookups: frozenset[str] = frozenset()

    def lookup_allowed(self, lookup, value, request):
        return lookup in self.metadata_lookups

    def to_field_allowed(self, request, to_field) -> bool:
        # Nothing picks these rows in a popup or an autocomplete widget, which name them by
        # str(): a conversation's title, a message's text.
        return False


def _search_words(search_term: str) -> list[str]:
    """The words of a search as Django's admin splits them (quotes keep phrases)."""
    words = []
    for bit in smart_split(search_term):
        if bit.startswith(('"', "'")) and bit[0] == bit[-1]:
            bit = unescape_string_literal(bit)
        words.append(bit)
    return words


def _uuid_or_none(word: str) -> uuid.UUID | None:
    with contextlib.suppress(ValueError):
        return uuid.UUID(word)
    return None


def content_view_target(next_url: str) -> tuple[type, str]:
    """The list a stated reason leads to, in its content view: `next` if it is one of the two
    review lists (never another site or page), else the conversations."""
    lists = {
        reverse("admin:assistant_conversation_changelist"): Conversation,
        reverse("admin:assistant_message_changelist"): Message,
    }
    parts = urlsplit(next_url)
    if parts.scheme or parts.netloc or parts.path not in lists:
        parts = urlsplit(reverse("admin:assistant_conversation_changelist"))
    query = QueryDict(parts.query, mutable=True)
    query[CONTENT_VIEW] = "1"
    return lists[parts.path], f"{parts.path}?{query.urlencode()}"


class ContentViewAdmin(MetadataLookupsOnly):
    """A list of metadata; for a reviewer who states a reason, its content view.

    The reason opens the content view of both review lists for `review.GRANT_SECONDS`
    (review.list_content_open). Before a page of it renders, every conversation whose
    title or comment it shows is logged ("list: <reason>"), and for a search every
    conversation it matches, on the page or not ("search “<term>”: <reason>"): a match
    says something about the text.
    """

    metadata_search_help_text = ""
    content_search_help_text = ""
    content_list_display: list[str] = []

    def content_grant(self, request: HttpRequest) -> review.ListContentGrant | None:
        """The grant this request shows content under, if it asks for the content view."""
        if request.GET.get(CONTENT_VIEW) != "1" or not review.can_review(request.user):
            return None
        return review.list_content_granted(session=request.session)

    def get_list_display(self, request):
        return self.content_list_display if self.content_grant(request) else self.list_display

    def get_list_filter(self, request):
        return [*self.list_filter, ContentViewFilter]

    def get_changelist_instance(self, request) -> ChangeList:
        changelist = super().get_changelist_instance(request)
        grant = self.content_grant(request)
        if grant is None:
            changelist.search_help_text = self.metadata_search_help_text
            return changelist
        changelist.search_help_text = self.content_search_help_text
        # Logged before anything is shown (actions and their pages included).
        if changelist.query.strip():
            review.list_content_record(
                reviewer=request.user,
                conversations=self.conversations_matched(changelist),
                reason=f"search “{changelist.query.strip()}”: {grant.reason}",
                grant=grant,
            )
        elif request.method in ("GET", "HEAD"):
            review.list_content_record(
                reviewer=request.user,
                conversations=self.conversations_shown(changelist),
                reason=f"list: {grant.reason}",
                grant=grant,
            )
        return changelist

    def conversations_matched(self, changelist: ChangeList) -> QuerySet[Conversation]:
        raise NotImplementedError

    def conversations_shown(self, changelist: ChangeList) -> QuerySet[Conversation]:
        raise NotImplementedError

    def row_label(self, obj) -> str:
        """A row named without content (for the action checkbox)."""
        raise NotImplementedError

    def action_checkbox(self, obj):
        # Django's labels the checkbox "Select this object for an action - <str(obj)>": a
        # conversation's title, a message's text, in every row of the list.
        label = format_html(gettext("Select this object for an action - {}"), self.row_label(obj))
        checkbox = forms.CheckboxInput({"class": "action-select", "aria-label": label}, lambda value: False)
        return checkbox.render(helpers.ACTION_CHECKBOX_NAME, str(obj.pk))

    def changelist_view(self, request, extra_context=None):
        wants_content = request.GET.get(CONTENT_VIEW) == "1"
        reviewer = review.can_review(request.user)
        if wants_content and not reviewer:
            raise PermissionDenied
        grant = review.list_content_granted(session=request.session) if wants_content else None
        if wants_content and grant is None:
            return redirect(self.content_reason_url(request.get_full_path()))
        without = request.GET.copy()
        without.pop(CONTENT_VIEW, None)
        with_content = request.GET.copy()
        with_content[CONTENT_VIEW] = "1"
        context = {
            "content_view": grant is not None,
            "content_view_ends": datetime.fromtimestamp(grant.expires, tz=UTC) if grant else None,
            "content_view_off_url": f"{request.path}?{without.urlencode()}" if without else request.path,
            "content_view_on_url": (
                self.content_reason_url(f"{request.path}?{with_content.urlencode()}")
                if reviewer and grant is None
                else None
            ),
            **(extra_context or {}),
        }
        return super().changelist_view(request, context)

    @staticmethod
    def content_reason_url(next_url: str) -> str:
        return f"{reverse('admin:assistant_conversation_content')}?{urlencode({'next': next_url})}"


# --- conversations -------------------------------------------------------------------------


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


@admin.register(Conversation)
class ConversationAdmin(ContentViewAdmin):
    list_display = [
        "label",
        "owner",
        "model",
        "message_count",
        "total_tokens",
        "last_activity",
        "has_negative_feedback",
        "has_error",
        "archived",
    ]
    # The title after the neutral label: the positions of the figures stay put (`?o=4`).
    content_list_display = [list_display[0], "conversation_title", *list_display[1:]]
    list_filter = [
        "created_at",
        "updated_at",
        "model",
        MessageStatusFilter,
        NegativeFeedbackFilter,
        HasErrorFilter,
        "archived",
        ("owner", admin.RelatedOnlyFieldListFilter),
    ]
    metadata_lookups = frozenset(
        {
            *_date_lookups("created_at", "updated_at"),
            *_value_lookups("model", "archived"),
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
        return conversations_with_review_columns(super().get_queryset(request).select_related("owner"))

    def get_search_results(self, request, queryset, search_term):
        # Every word must match the owner or the id; in the content view also the title or
        # some message (a subquery, so a conversation matching in many messages is listed
        # once).
        content = self.content_grant(request) is not None
        for word in _search_words(search_term):
            matches = Q(owner__username__icontains=word)
            if (pk := _uuid_or_none(word)) is not None:
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

    @admin.display(description=_("conversation"), ordering="created_at")
    def label(self, obj: Conversation) -> str:
        return review.conversation_label(obj)

    def row_label(self, obj: Conversation) -> str:
        return review.conversation_label(obj)

    # No ordering: sorting by title would tell how titles compare, page after page.
    @admin.display(description=_("title"))
    def conversation_title(self, obj: Conversation) -> str:
        return obj.title or "—"

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

    # Transcripts are records: nobody adds or edits them here; only superusers delete.

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

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
            return self._get_obj_does_not_exist_redirect(request, self.opts, object_id)
        expires = review.transcript_granted(session=request.session, conversation_id=conversation.pk)
        if expires is None:
            url = reverse("admin:assistant_conversation_review", args=[quote(conversation.pk)])
            anchor = _message_anchor(request)
            return redirect(url if anchor is None else f"{url}?{urlencode({'message': anchor})}")
        return self._page(
            request,
            "transcript.html",
            {
                "title": _("Transcript"),
                "subtitle": review.conversation_label(conversation),
                "conversation": conversation,
                "transcript_messages": conversation.messages.order_by("pk"),
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
            return self._get_obj_does_not_exist_redirect(request, self.opts, object_id)
        form = ReviewReasonForm(request.POST if request.method == "POST" else None)
        if form.is_bound and form.is_valid():
            review.transcript_open(
                reviewer=request.user,
                conversation=conversation,
                reason=form.reason(),
                session=request.session,
            )
            url = transcript_url(conversation.pk)
            anchor = _message_anchor(request)
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


# --- messages and the feedback review ------------------------------------------------------


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
        "has_comment",
        "context",
        "conversation_label",
        "owner",
        "model",
        "role",
        "status",
        "error_type",
    ]
    content_list_display = [
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
            *_value_lookups("role", "status", "model", "error_type", "superseded"),
            *_date_lookups("created_at"),
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
        for word in _search_words(search_term):
            matches = Q(conversation__owner__username__icontains=word)
            if (pk := _uuid_or_none(word)) is not None:
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

    @admin.display(description=_("comment"), boolean=True)
    def has_comment(self, obj: Message) -> bool:
        return bool(obj.feedback_comment)

    @admin.display(description=_("feedback comment"))
    def comment(self, obj: Message) -> str:
        return Truncator(obj.feedback_comment).chars(200)

    @admin.display(description=_("conversation"), ordering="conversation__created_at")
    def conversation_label(self, obj: Message) -> str:
        return review.conversation_label(obj.conversation)

    def row_label(self, obj: Message) -> str:
        return f"#{obj.pk} · {review.conversation_label(obj.conversation)}"

    @admin.display(description=_("conversation title"))
    def conversation_title(self, obj: Message) -> str:
        return obj.conversation.title or "—"

    @admin.display(description=_("context"))
    def context(self, obj: Message) -> str:
        return format_html(
            '<a href="{}">{}</a>', transcript_url(obj.conversation_id, obj.pk), _("transcript")
        )

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False

    def change_view(self, request, object_id, form_url="", extra_context=None):
        # A message's text is part of a transcript: shown there, after a reason.
        message = self.get_object(request, unquote(object_id))
        if message is None:
            return self._get_obj_does_not_exist_redirect(request, self.opts, object_id)
        if not self.has_view_permission(request, message):
            raise PermissionDenied
        return HttpResponseRedirect(transcript_url(message.conversation_id, message.pk))

    def history_view(self, request, object_id, extra_context=None):
        # Its title would be the message's text; there is no history to show anyway.
        return self.change_view(request, object_id)


# --- the access log ------------------------------------------------------------------------


@admin.register(AccessLog)
class AccessLogAdmin(MetadataLookupsOnly):
    """Append-only: readable (and exportable) with the view permission, changeable by nobody."""

    list_display = ["accessed_at", "reviewer_username", "owner_username", "conversation", "short_reason"]
    list_filter = ["accessed_at", "reviewer_username", "owner_username"]
    metadata_lookups = frozenset(
        {
            *_date_lookups("accessed_at"),
            *_value_lookups("reviewer_username", "owner_username", "conversation_id"),
        }
    )
    search_fields = ["reviewer_username", "owner_username", "reason"]
    readonly_fields = [
        "accessed_at",
        "reviewer",
        "reviewer_username",
        "owner",
        "owner_username",
        "conversation_id",
        "reason",
    ]
    fields = readonly_fields
    list_per_page = 100
    show_full_result_count = False
    actions = ["export_csv"]

    @admin.display(description=_("conversation"), ordering="conversation_id")
    def conversation(self, obj: AccessLog) -> str:
        # All accesses to the same conversation; the conversation itself may be gone.
        query = urlencode({"conversation_id": obj.conversation_id})
        return format_html('<a href="?{}">{}</a>', query, obj.conversation_id)

    @admin.display(description=_("reason"))
    def short_reason(self, obj: AccessLog) -> str:
        return Truncator(obj.reason).chars(200)

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False

    def get_urls(self):
        export_view = self.admin_site.admin_view(self.export_view)
        return [path("export/", export_view, name="assistant_accesslog_export"), *super().get_urls()]

    def export_view(self, request: HttpRequest) -> HttpResponse:
        """The whole list as it is filtered and searched on the page, as CSV."""
        if request.method not in ("GET", "HEAD") or not self.has_view_permission(request):
            raise PermissionDenied
        try:
            changelist = self.get_changelist_instance(request)
        except IncorrectLookupParameters:
            return redirect("admin:assistant_accesslog_changelist")
        return self._csv_response(changelist.get_queryset(request))

    @admin.action(permissions=["view"], description=_("Export selected entries as CSV"))
    def export_csv(self, request: HttpRequest, queryset: QuerySet[AccessLog]) -> HttpResponse:
        return self._csv_response(queryset)

    def _csv_response(self, queryset: QuerySet[AccessLog]) -> StreamingHttpResponse:
        response = StreamingHttpResponse(
            review.access_log_csv(queryset), content_type="text/csv; charset=utf-8"
        )
        filename = f"transcript-access-log-{timezone.now():%Y%m%d-%H%M%S}.csv"
        response["Content-Disposition"] = f'attachment; filename="{filename}"'
        return response
