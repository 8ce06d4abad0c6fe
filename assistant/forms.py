"""Input parsing for the pages and the JSON API."""

from __future__ import annotations

import json
from typing import Any

from django import forms
from django.conf import settings
from django.contrib.admin.forms import AdminAuthenticationForm
from django.contrib.auth.forms import AuthenticationForm
from django.core.exceptions import RequestDataTooBig, ValidationError
from django.http import HttpRequest
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy, ngettext

from assistant import throttle
from assistant.errors import ServiceError
from assistant.models import FEEDBACK_RATINGS
from config.body_limits import body_limit


def validate_encodable(value: str) -> None:
    """Reject lone surrogates: they cannot be stored or sent as UTF-8."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValidationError(gettext_lazy("The text contains invalid characters."), code="invalid") from None


def json_body(request: HttpRequest) -> dict[str, Any]:
    """The request's JSON object, or a ServiceError that says what is wrong with it.

    A body is JSON only as `application/json` (UTF-8: a `charset` parameter may say
    only that); a request without a body needs no Content-Type. Its size is bounded by
    the path's limit (config/body_limits.py), which for the gateway's completions is
    above Django's DATA_UPLOAD_MAX_MEMORY_SIZE: such a body is read past Django's check,
    bounded before it arrived.
    """
    declared = request.content_type
    charset = request.content_params.get("charset", "utf-8").lower()
    if declared and (declared.lower() != "application/json" or charset not in ("utf-8", "utf8")):
        raise _unsupported_media_type()
    try:
        raw = (
            request.read()
            if body_limit(request.path) > settings.DATA_UPLOAD_MAX_MEMORY_SIZE
            else request.body
        )
    except RequestDataTooBig:
        raise ServiceError(413, "too_large", _("The request is too large.")) from None
    if not raw:
        return {}
    if not declared:
        raise _unsupported_media_type()
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        # RecursionError: nesting deeper than the parser's stack (e.g. 100,000 brackets).
        raise ServiceError(400, "invalid_json", _("The request body is not valid JSON.")) from None
    if not isinstance(data, dict):
        raise ServiceError(400, "invalid_json", _("The request body must be a JSON object."))
    return data


def _unsupported_media_type() -> ServiceError:
    return ServiceError(
        415, "unsupported_media_type", _("The request body must be JSON (Content-Type: application/json).")
    )


class JsonForm(forms.Form):
    """A form over a JSON object: text fields take strings only, never coerced numbers."""

    @classmethod
    def parse(cls, data: dict[str, Any]) -> dict[str, Any]:
        for name, value in data.items():
            if name in cls.base_fields and value is not None and not isinstance(value, str):
                raise ServiceError(400, "invalid", _("%(field)s must be a string.") % {"field": name})
        form = cls(data=data)
        if not form.is_valid():
            field, errors = next(iter(form.errors.items()))
            message = f"{field}: {errors[0]}" if field != "__all__" else errors[0]
            raise ServiceError(400, "invalid", message)
        return form.cleaned_data


def validate_not_blank(value: str) -> None:
    if not value.strip():
        raise ValidationError(gettext_lazy("The message is empty."), code="empty")


def question_field(*, required: bool = True) -> forms.CharField:
    """A question's text: kept as typed (no stripping), not only whitespace."""
    return forms.CharField(
        required=required,
        max_length=settings.ASSISTANT_MAX_MESSAGE_CHARS,
        strip=False,
        validators=[validate_encodable, validate_not_blank],
    )


class ConversationForm(JsonForm):
    title = forms.CharField(required=False, max_length=200, validators=[validate_encodable])
    model = forms.CharField(required=False, max_length=100)
    # The slug of the assistant it runs with; empty for the bare model.
    assistant = forms.CharField(required=False, max_length=50)
    # The first question, asked in the same request: one round trip to a new chat's answer.
    content = question_field(required=False)

    def clean_content(self) -> str:
        content = self.cleaned_data["content"]
        if self.data.get("content") is not None:
            validate_not_blank(content)  # given, it is a question: "" too
        return content


class MessageForm(JsonForm):
    content = question_field()
    model = forms.CharField(required=False, max_length=100)


class ConversationUpdateForm(JsonForm):
    """A rename (`title`) and/or (un)archiving (`archived`); a key left out changes nothing."""

    title = forms.CharField(required=False, max_length=200, validators=[validate_encodable])

    def clean_title(self) -> str:
        # A title is one line: runs of whitespace, line breaks included, become one space.
        return " ".join(self.cleaned_data["title"].split())

    @classmethod
    def parse(cls, data: dict[str, Any]) -> dict[str, Any]:
        archived = data.get("archived")
        if "archived" in data and not isinstance(archived, bool):
            raise ServiceError(400, "invalid", _("archived must be true or false."))
        cleaned = super().parse({key: value for key, value in data.items() if key != "archived"})
        if "title" in data and not cleaned["title"]:
            raise ServiceError(400, "invalid", _("title: The title is empty."))
        return {"title": cleaned["title"] if "title" in data else None, "archived": archived}


class ConversationSearchForm(JsonForm):
    """The query string of the conversation list.

    `q` to search, `archived=1` for the archive, `before` (a page's `next`) for the page after it.
    """

    q = forms.CharField(required=False, max_length=200)
    before = forms.CharField(required=False, max_length=100)
    archived = forms.TypedChoiceField(
        required=False, choices=[("0", "0"), ("1", "1")], coerce=lambda value: value == "1", empty_value=False
    )


class FeedbackForm(JsonForm):
    """A rating, "up" or "down", or null to clear it; an optional comment."""

    rating = forms.TypedChoiceField(
        required=False,
        choices=[(name, name) for name in FEEDBACK_RATINGS],
        coerce=FEEDBACK_RATINGS.get,
        empty_value=None,
    )
    comment = forms.CharField(required=False, max_length=2000, validators=[validate_encodable])

    @classmethod
    def parse(cls, data: dict[str, Any]) -> dict[str, Any]:
        if "rating" not in data:
            # Left out is not the same as null (which clears the rating).
            raise ServiceError(400, "invalid", _("rating: This field is required."))
        return super().parse(data)


class SetupForm(forms.Form):
    """The first administrator, created while no user exists."""

    username = forms.CharField(label=gettext_lazy("Username"), max_length=150)
    password1 = forms.CharField(label=gettext_lazy("Password"), widget=forms.PasswordInput, strip=False)
    password2 = forms.CharField(
        label=gettext_lazy("Password (again)"), widget=forms.PasswordInput, strip=False
    )

    def clean(self) -> dict[str, Any]:
        from django.contrib.auth.password_validation import validate_password

        data = super().clean()
        if data.get("password1") and data.get("password1") != data.get("password2"):
            raise ValidationError(gettext_lazy("The two passwords differ."))
        if data.get("password1"):
            validate_password(data["password1"])
        return data


class LoginThrottleMixin:
    """A login form whose password check goes through assistant.throttle.login_guard: too
    many failures (per account, per address) or too many checks at once refuse it before
    any password is hashed. `refusal` then says how (status, Retry-After) for the view."""

    refusal: throttle.LoginRefused | None = None

    def clean(self) -> dict[str, Any]:
        try:
            with throttle.login_guard(self.request, str(self.data.get("username", ""))):
                return super().clean()
        except throttle.LoginRefused as refusal:
            self.refusal = refusal
            raise ValidationError(refusal.message, code="throttled") from None


class LoginForm(LoginThrottleMixin, AuthenticationForm):
    """The login page's form."""


class AdminLoginForm(LoginThrottleMixin, AdminAuthenticationForm):
    """The admin's login form (admin.site.login_form)."""


# The longest personal instruction: each goes into every request of the user's new chats.
PREFERENCES_MAX_CHARS = 1500


class InstructionField(forms.CharField):
    """A text area's text with its line breaks as one character each, as the page counts
    them: browsers send a textarea's line breaks as CRLF."""

    def to_python(self, value: Any) -> str:
        return super().to_python(value).replace("\r\n", "\n").replace("\r", "\n")


class PreferencesForm(forms.Form):
    """The settings page: the user's personal instructions (models.Preferences)."""

    about_me = InstructionField(
        label=gettext_lazy("About me"),
        help_text=gettext_lazy("For example your role, your team and what you work on."),
        required=False,
        max_length=PREFERENCES_MAX_CHARS,
        validators=[validate_encodable],
        widget=forms.Textarea(attrs={"rows": 5}),
    )
    answer_style = InstructionField(
        label=gettext_lazy("How should Assistant answer?"),
        help_text=gettext_lazy("For example: briefly, with examples, in English."),
        required=False,
        max_length=PREFERENCES_MAX_CHARS,
        validators=[validate_encodable],
        widget=forms.Textarea(attrs={"rows": 5}),
    )


def token_lifetimes() -> list[tuple[str, str]]:
    """The lifetimes a new API token may get: fixed steps up to ASSISTANT_TOKEN_MAX_DAYS,
    and "never" where no maximum is set."""
    longest = settings.ASSISTANT_TOKEN_MAX_DAYS
    steps = sorted({7, 30, 90, 180, 365, settings.ASSISTANT_TOKEN_DEFAULT_DAYS})
    choices = [
        (str(days), ngettext("%(count)d day", "%(count)d days", days) % {"count": days})
        for days in steps
        if not longest or days <= longest
    ]
    if not longest:
        choices.append(("never", _("never")))
    return choices


class TokenForm(forms.Form):
    """A new personal API token: what it is for, how long it lasts (assistant/tokens)."""

    name = forms.CharField(
        label=gettext_lazy("Name"),
        help_text=gettext_lazy("What the token is for, e.g. the app or the script."),
        max_length=100,
        validators=[validate_encodable],
    )
    lifetime = forms.ChoiceField(label=gettext_lazy("Valid for"))

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["lifetime"].choices = token_lifetimes()
        default = min(settings.ASSISTANT_TOKEN_DEFAULT_DAYS, settings.ASSISTANT_TOKEN_MAX_DAYS or 10**6)
        self.fields["lifetime"].initial = str(default)

    def days(self) -> int | None:
        lifetime = self.cleaned_data["lifetime"]
        return None if lifetime == "never" else int(lifetime)
