"""The reason form, and the content view of the review lists (titles, comments, search in text).

A transcript, an export or the content view opens only for a stated reason
(`ReviewReasonForm`); every conversation the content view shows or a search of it
matches is logged first (assistant/review.py).
"""

from __future__ import annotations

import contextlib
import uuid
from datetime import UTC, datetime
from urllib.parse import urlsplit

from django import forms
from django.contrib import admin
from django.contrib.admin import helpers
from django.contrib.admin.utils import quote
from django.contrib.admin.views.main import SEARCH_VAR, ChangeList
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest, QueryDict
from django.shortcuts import redirect
from django.urls import reverse
from django.utils.html import format_html
from django.utils.http import urlencode
from django.utils.text import smart_split, unescape_string_literal
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _

from assistant import review
from assistant.admin.lookups import MetadataLookupsOnly
from assistant.admin.records import ReadOnlyRecords
from assistant.models import Conversation, Message


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


def message_anchor(request: HttpRequest) -> int | None:
    """The message a link wants to show within its transcript (`?message=<id>`)."""
    value = request.GET.get("message", "")
    return int(value) if value.isdecimal() and len(value) < 19 else None


def transcript_url(conversation_id: uuid.UUID, message_id: int | None = None) -> str:
    url = reverse("admin:assistant_conversation_change", args=[quote(conversation_id)])
    if message_id is None:
        return url
    return f"{url}?{urlencode({'message': message_id})}#message-{message_id}"


# --- the content view of the lists ---------------------------------------------------------

# `?content_view=1` asks a list for titles, comments and search in text (a stated reason).
CONTENT_VIEW = "content_view"
# What a column of content (a title, a comment) shows outside the content view.
CONTENT_HIDDEN = _("— (content: state a reason to review)")


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


def search_words(search_term: str) -> list[str]:
    """The words of a search as Django's admin splits them (quotes keep phrases)."""
    words = []
    for bit in smart_split(search_term):
        if bit.startswith(('"', "'")) and bit[0] == bit[-1]:
            bit = unescape_string_literal(bit)
        words.append(bit)
    return words


def uuid_or_none(word: str) -> uuid.UUID | None:
    with contextlib.suppress(ValueError):
        return uuid.UUID(word)
    return None


def content_view_target(next_url: str, lists: dict[str, type] | None = None) -> tuple[type, str]:
    """The list a stated reason leads to, in its content view: `next` if it is one of
    `lists` (changelist path: model; by default the two review lists), never another site
    or page, else the first of them."""
    if lists is None:
        lists = {
            reverse("admin:assistant_conversation_changelist"): Conversation,
            reverse("admin:assistant_message_changelist"): Message,
        }
    parts = urlsplit(next_url)
    if parts.scheme or parts.netloc or parts.path not in lists:
        parts = urlsplit(next(iter(lists)))
    query = QueryDict(parts.query, mutable=True)
    query[CONTENT_VIEW] = "1"
    return lists[parts.path], f"{parts.path}?{query.urlencode()}"


class ContentViewAdmin(ReadOnlyRecords, MetadataLookupsOnly):
    """A list of metadata; for a reviewer who states a reason, its content view.

    The reason opens the content view of both review lists for `review.GRANT_SECONDS`
    (review.list_content_open). Before a page of it renders, every conversation whose
    title or comment it shows is logged ("list: <reason>"), and for a search every
    conversation it matches, on the page or not ("search “<term>”: <reason>"): a match
    says something about the text.
    """

    metadata_search_help_text = ""
    content_search_help_text = ""
    # Columns of content in `list_display`, each with the column that stands in for it
    # outside the content view (same header, CONTENT_HIDDEN): the columns, and the
    # positions `?o=` sorts by, are the same in both views.
    content_columns: dict[str, str] = {}

    def content_grant(self, request: HttpRequest) -> review.ListContentGrant | None:
        """The grant this request shows content under, if it asks for the content view."""
        if request.GET.get(CONTENT_VIEW) != "1" or not review.can_review(request.user):
            return None
        return review.list_content_granted(session=request.session)

    def get_list_display(self, request):
        if self.content_grant(request):
            return self.list_display
        return [self.content_columns.get(column, column) for column in self.list_display]

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
            # A search outside the content view matches owners and ids only, and says so
            # every time (whatever it finds: telling when text would have matched would
            # answer the search).
            "content_search_refused": grant is None and bool(request.GET.get(SEARCH_VAR, "").strip()),
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
