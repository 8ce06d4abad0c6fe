"""The API tokens page: a user's personal tokens, made, shown once, revoked.

It sits under /settings/, so a single sign-on deployment keeps it behind the proxy's
sign-on; the tokens it makes are what native apps and scripts use instead
(docs/clients.md).
"""

from __future__ import annotations

import secrets

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core import signing
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.translation import gettext as _
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_http_methods, require_POST

from assistant import errors
from assistant.forms import TokenForm
from assistant.models import ApiToken
from assistant.tokens.service import token_create, token_revoke

# The page lists this many of the user's tokens, newest first (revoked ones included).
TOKENS_SHOWN = 50
# The tokens form's one-time numbers: signed with this salt, good for an hour; the
# session keeps the last numbers used (one form a minute is more than anyone sends).
FORM_SALT = "assistant.api_tokens.form"
FORM_MAX_AGE = 3600
FORM_USED = "api_token_forms_used"
FORM_USED_KEPT = 60


@require_http_methods(["GET", "POST"])
@login_required
@never_cache
def api_tokens(request: HttpRequest) -> HttpResponse:
    """The list and the form; a token made here is shown in the answer to its POST and
    never again (nothing keeps it: not the session, not a message).

    Each form carries a signed one-time number, so a POST sent again (a reload of the page
    that shows a new token) makes no second token: the session remembers the numbers used
    (a GET changes nothing).
    """
    if request.method == "POST" and not _first_use(request):
        messages.info(
            request, _("This form was sent already, or long ago. A token's secret is shown only once.")
        )
        return redirect(reverse("api_tokens"))
    form = TokenForm(request.POST or None)
    secret = None
    if request.method == "POST" and form.is_valid():
        try:
            token, secret = token_create(user=request.user, name=form.cleaned_data["name"], days=form.days())
        except errors.ServiceError as error:
            form.add_error(None, error.message)
        else:
            form = TokenForm()
            messages.success(request, _("Token “%(name)s” created.") % {"name": token.name})
    once = signing.dumps({"user": request.user.pk, "once": secrets.token_urlsafe(9)}, salt=FORM_SALT)
    tokens = ApiToken.objects.filter(user=request.user)[:TOKENS_SHOWN]
    return render(
        request,
        "assistant/api_tokens.html",
        {
            "form": form,
            "once": once,
            "secret": secret,
            "tokens": tokens,
            "gateway_url": request.build_absolute_uri("/v1"),
            "gateway_store": settings.ASSISTANT_GATEWAY_STORE,
        },
        status=400 if form.errors else 200,
    )


def _first_use(request: HttpRequest) -> bool:
    """Whether the POST's one-time number is this user's, recent and not used before;
    it is used now."""
    try:
        data = signing.loads(request.POST.get("once", ""), salt=FORM_SALT, max_age=FORM_MAX_AGE)
    except signing.BadSignature:
        return False
    used = request.session.get(FORM_USED, [])
    if data.get("user") != request.user.pk or data.get("once") in used:
        return False
    request.session[FORM_USED] = [*used, data["once"]][-FORM_USED_KEPT:]
    return True


@require_POST
@login_required
def api_token_revoke(request: HttpRequest, token_id: int) -> HttpResponse:
    """Revoke one of the user's tokens (another user's: 404); its open streams end."""
    token = ApiToken.objects.filter(pk=token_id, user=request.user).first()
    if token is None:
        raise Http404
    if token_revoke(token=token, by=request.user.get_username()):
        messages.success(
            request, _("Token “%(name)s” revoked. Apps using it are signed out.") % {"name": token.name}
        )
    return redirect(reverse("api_tokens"))
