"""Personal API tokens (assistant/tokens): created and stored, Bearer on the JSON API and
the event stream without CSRF, cookies keeping CSRF, limits, revocation ending streams."""

from __future__ import annotations

import datetime
import json

import httpx
import pytest
from django.test import Client
from django.utils import timezone

from assistant.models import ApiToken, Conversation, Origin, UsageRecord
from assistant.tokens.service import digest_of, token_create, token_revoke
from tests.helpers.chat import fake, text_of
from tests.helpers.live import session_client
from tests.helpers.sse import answer_events
from tests.helpers.streams import events_url, open_then
from tests.helpers.tokens import bearer, token_for


def bearer_client(secret: str) -> Client:
    """A client with no cookie that checks CSRF as a browser's request would meet it."""
    return Client(enforce_csrf_checks=True, headers=bearer(secret))


# --- the token at rest ---------------------------------------------------------------------------


def test_a_token_is_stored_as_its_digest_and_a_prefix(alice):
    token, secret = token_create(user=alice, name="Handy-App", days=30)

    assert secret.startswith("ast_")
    assert len(secret) == 47
    stored = ApiToken.objects.get(pk=token.pk)
    assert stored.digest == digest_of(secret)
    assert stored.prefix == secret[:12]
    assert secret not in json.dumps(list(ApiToken.objects.values()), default=str)
    assert stored.expires_at - timezone.now() > datetime.timedelta(days=29)
    assert stored.state() == "active"


@pytest.mark.parametrize(
    ("name", "days", "code"),
    [
        ("", 30, "invalid_name"),
        ("x" * 101, 30, "invalid_name"),
        ("app", 0, "invalid_expiry"),
        ("app", 366, "invalid_expiry"),
        ("app", None, "invalid_expiry"),
    ],
)
def test_a_token_with_a_bad_name_or_lifetime_is_refused_and_nothing_stored(alice, name, days, code):
    from assistant.errors import ServiceError

    with pytest.raises(ServiceError) as refused:
        token_create(user=alice, name=name, days=days)

    assert refused.value.code == code
    assert not ApiToken.objects.exists()


def test_tokens_per_user_are_capped(alice, settings):
    from assistant.errors import ServiceError

    settings.ASSISTANT_TOKENS_PER_USER = 2
    first = token_create(user=alice, name="a", days=1)[0]
    token_create(user=alice, name="b", days=1)
    with pytest.raises(ServiceError) as refused:
        token_create(user=alice, name="c", days=1)
    token_revoke(token=first, by="alice")
    token_create(user=alice, name="c", days=1)

    assert refused.value.code == "too_many_tokens"
    assert ApiToken.objects.filter(user=alice).count() == 3


# --- Bearer on the JSON API ----------------------------------------------------------------------


def test_bearer_reads_and_writes_the_api_without_csrf(alice):
    client = bearer_client(token_for(alice))

    created = client.post("/api/conversations/", {"title": "per App"}, content_type="application/json")
    listed = client.get("/api/conversations/")

    assert created.status_code == 201, created.content
    assert [c["title"] for c in listed.json()["conversations"]] == ["per App"]
    conversation = Conversation.objects.get()
    assert (conversation.owner, conversation.origin) == (alice, Origin.API)
    assert "csrftoken" not in created.cookies
    assert "sessionid" not in created.cookies


def test_cookie_requests_keep_the_csrf_check(alice_client):
    alice_client.handler.enforce_csrf_checks = True

    refused = alice_client.post("/api/conversations/", {"title": "x"}, content_type="application/json")

    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "csrf_failed"
    assert not Conversation.objects.exists()


def test_a_bearer_token_is_the_user_whatever_cookie_comes_with_it(alice, bob, bob_client):
    secret = token_for(alice)

    listed = bob_client.get("/api/conversations/", headers=bearer(secret))
    Conversation.objects.create(owner=bob, model="fake-model", title="Bobs")

    assert listed.status_code == 200
    assert bob_client.get("/api/conversations/", headers=bearer(secret)).json()["conversations"] == []


@pytest.mark.parametrize("state", ["unknown", "revoked", "expired", "inactive user", "not a bearer"])
def test_an_unusable_token_is_401_and_never_falls_back_to_the_cookie(alice, alice_client, state):
    token, secret = token_create(user=alice, name="app", days=1)
    if state == "unknown":
        secret = "ast_" + "A" * 43
    elif state == "revoked":
        token_revoke(token=token, by="alice")
    elif state == "expired":
        ApiToken.objects.filter(pk=token.pk).update(expires_at=timezone.now())
    elif state == "inactive user":
        alice.is_active = False
        alice.save()
    else:
        secret = "not-a-token"

    response = alice_client.get("/api/conversations/", headers=bearer(secret))

    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_token"
    assert response["WWW-Authenticate"] == 'Bearer error="invalid_token"'


def test_a_token_opens_no_page_and_no_admin(alice):
    alice.is_staff = alice.is_superuser = True
    alice.save()
    client = bearer_client(token_for(alice))

    assert client.get("/").status_code == 302  # to the login page
    assert client.get("/admin/").status_code == 302
    assert client.get("/settings/").status_code == 302


def test_last_use_is_recorded_at_most_once_a_minute(alice):
    secret = token_for(alice)
    client = bearer_client(secret)

    client.get("/api/conversations/")
    first = ApiToken.objects.get().last_used_at
    client.get("/api/conversations/")

    assert first is not None
    assert ApiToken.objects.get().last_used_at == first


def test_a_tokens_requests_per_minute_are_limited(alice, settings):
    settings.ASSISTANT_TOKEN_REQUESTS_PER_MINUTE = 3
    client = bearer_client(token_for(alice))

    statuses = [client.get("/api/conversations/").status_code for _ in range(4)]
    refused = client.get("/api/conversations/")

    assert statuses == [200, 200, 200, 429]
    assert refused.json()["error"]["code"] == "rate_limited"
    assert 1 <= int(refused["Retry-After"]) <= 60
    # The user's session is a separate budget: the page goes on working.
    assert Client().get("/api/conversations/").status_code == 401


def test_guessing_tokens_meets_the_failed_login_limit_of_the_address(alice, settings):
    settings.ASSISTANT_LOGIN_FAILURES_PER_ADDRESS = 3
    good = token_for(alice)
    guesses = [bearer_client("ast_" + str(n) * 43).get("/api/conversations/").status_code for n in range(3)]

    refused = bearer_client(good).get("/api/conversations/")

    assert guesses == [401, 401, 401]
    assert refused.status_code == 429
    assert int(refused["Retry-After"]) > 0


def test_a_token_counts_against_the_users_answer_limit(alice, settings):
    """One budget per user: an answer asked for on the page leaves none for the app."""
    settings.ASSISTANT_RATE_LIMIT_PER_MINUTE = 1
    UsageRecord.objects.create(user=alice, model="demo", created_at=timezone.now())
    client = bearer_client(token_for(alice))

    refused = client.post("/api/conversations/", {"content": "Hallo"}, content_type="application/json")

    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "rate_limited"
    assert not Conversation.objects.exists()


# --- Bearer on the event stream ------------------------------------------------------------------


@pytest.mark.live
def test_an_app_sends_and_streams_an_answer_with_a_token_alone(live, alice):
    headers = bearer(token_for(alice))
    with httpx.Client(base_url=live.url, headers=headers, timeout=30) as app:
        created = app.post("/api/conversations/", json={"content": fake(text="Guten Tag")})
        assert created.status_code == 201, created.text
        conversation = created.json()
        answer = conversation["assistant_message"]
        with app.stream(
            "GET", conversation["events_url"], headers={"Last-Event-ID": answer["last_event_id"]}
        ) as response:
            events = list(answer_events(response, answer["id"]))

    assert response.status_code == 200
    assert "set-cookie" not in response.headers
    assert text_of(events) == "Guten Tag"
    assert events[-1].event == "done"
    assert Conversation.objects.get().origin == Origin.API
    assert UsageRecord.objects.get().origin == Origin.API


@pytest.mark.live
@pytest.mark.parametrize("secret", ["ast_" + "B" * 43, "garbage"])
def test_a_stream_with_an_unusable_token_is_401_json(live, alice, secret):
    conversation = Conversation.objects.create(owner=alice, model="fake-model")

    response = httpx.get(live.url + events_url(conversation), headers=bearer(secret), timeout=10)

    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_token"
    assert response.headers["www-authenticate"] == 'Bearer error="invalid_token"'


@pytest.mark.live
def test_another_users_conversation_is_404_with_a_token(live, alice, bob):
    conversation = Conversation.objects.create(owner=bob, model="fake-model")

    response = httpx.get(live.url + events_url(conversation), headers=bearer(token_for(alice)), timeout=10)

    assert response.status_code == 404


@pytest.mark.live
def test_revoking_on_the_settings_page_ends_the_tokens_open_stream_at_once(live, alice):
    """Revoked in the server process: the stream ends before the next keep-alive (3 s)."""
    token, secret = token_create(user=alice, name="app", days=30)
    conversation = Conversation.objects.create(owner=alice, model="fake-model")
    with (
        session_client(live, alice) as page,
        httpx.Client(base_url=live.url, headers=bearer(secret), timeout=30) as app,
    ):

        def revoke() -> None:
            assert page.post(f"/settings/tokens/{token.pk}/revoke/").status_code == 302

        seen = open_then(app, events_url(conversation), revoke)
        reconnect = app.get(events_url(conversation))

    assert [(e.event, e.json()) for e in seen] == [("unauthorized", {"reason": "token_revoked"})]
    assert reconnect.status_code == 401


@pytest.mark.live
@pytest.mark.parametrize("change", ["revoke", "expire"])
def test_a_token_revoked_or_expired_elsewhere_ends_its_stream_by_the_poll(live, alice, change):
    """Changed in this test process (a command's, say), not the server's: without Redis the
    server's poll finds it within a second, before the next keep-alive (3 s)."""
    token, secret = token_create(user=alice, name="app", days=30)
    conversation = Conversation.objects.create(owner=alice, model="fake-model")

    def act() -> None:
        if change == "revoke":
            token_revoke(token=token, by="staff")
        else:
            ApiToken.objects.filter(pk=token.pk).update(expires_at=timezone.now())

    with httpx.Client(base_url=live.url, headers=bearer(secret), timeout=30) as app:
        seen = open_then(app, events_url(conversation), act)

    assert [(e.event, e.json()) for e in seen] == [("unauthorized", {"reason": "token_revoked"})]


@pytest.mark.live
def test_a_password_change_leaves_token_streams_open(live, alice):
    conversation = Conversation.objects.create(owner=alice, model="fake-model")
    with (
        httpx.Client(base_url=live.url, headers=bearer(token_for(alice)), timeout=30) as app,
        app.stream("GET", events_url(conversation)) as response,
    ):
        from tests.helpers.sse import parse_sse, sse_lines

        events = parse_sse(sse_lines(response))
        assert next(events).event == "stream-open"
        alice.set_password("a-new-password-2")
        alice.save()
        assert next(events).event == "keep-alive"  # 3 s later, past the poll: still open


# --- the tokens page -----------------------------------------------------------------------------


def token_form_post(client: Client, data: dict):
    """The tokens form sent as the page sends it: with the one-time number of its page."""
    once = client.get("/settings/tokens/").context["once"]
    return client.post("/settings/tokens/", {**data, "once": once})


def test_the_page_shows_a_new_token_once_and_then_only_its_prefix(alice, alice_client):
    made = token_form_post(alice_client, {"name": "Handy-App", "lifetime": "30"})
    token = ApiToken.objects.get()
    secret = made.context["secret"]
    later = alice_client.get("/settings/tokens/")

    assert made.status_code == 200
    assert "no-store" in made["Cache-Control"]
    assert secret in made.content.decode()
    assert token.digest == digest_of(secret)
    assert secret not in later.content.decode()
    assert f"{token.prefix}…" in later.content.decode()
    assert bearer_client(secret).get("/api/conversations/").status_code == 200


@pytest.mark.parametrize(
    ("data", "field"),
    [({"name": "", "lifetime": "30"}, "name"), ({"name": "x", "lifetime": "999"}, "lifetime")],
)
def test_the_page_refuses_a_bad_token_form_and_stores_nothing(alice_client, data, field):
    response = token_form_post(alice_client, data)

    assert response.status_code == 400
    assert response.context["form"].errors[field]
    assert response.context["secret"] is None
    assert not ApiToken.objects.exists()


def test_the_same_form_sent_again_makes_no_second_token(alice_client):
    once = alice_client.get("/settings/tokens/").context["once"]
    data = {"name": "Handy-App", "lifetime": "30", "once": once}

    first = alice_client.post("/settings/tokens/", data)
    again = alice_client.post("/settings/tokens/", data, follow=True)
    forged = alice_client.post("/settings/tokens/", {**data, "once": "guessed"})

    assert first.context["secret"]
    assert again.redirect_chain == [("/settings/tokens/", 302)]
    assert "shown only once" in again.content.decode()
    assert alice_client.get("/settings/tokens/").context["once"] != once
    assert again.context["secret"] is None
    assert forged.status_code == 302
    assert ApiToken.objects.count() == 1


def test_the_page_revokes_the_users_own_token_and_another_users_is_404(alice, bob, alice_client):
    own = token_create(user=alice, name="mine", days=30)[0]
    other = token_create(user=bob, name="bobs", days=30)[0]

    revoked = alice_client.post(f"/settings/tokens/{own.pk}/revoke/")
    refused = alice_client.post(f"/settings/tokens/{other.pk}/revoke/")

    assert revoked.status_code == 302
    own.refresh_from_db()
    other.refresh_from_db()
    assert (own.state(), own.revoked_by) == ("revoked", "alice")
    assert refused.status_code == 404
    assert other.state() == "active"


@pytest.mark.parametrize("store", [True, False])
def test_the_settings_pages_say_whether_gateway_chats_are_stored(alice_client, settings, store):
    settings.ASSISTANT_GATEWAY_STORE = store

    pages = [alice_client.get(url).content.decode() for url in ("/settings/", "/settings/tokens/")]

    for page in pages:
        assert ("marked “API”" in page) is store
        assert ("not stored" in page) is not store


def test_the_tokens_page_speaks_german(alice_client):
    page = alice_client.get("/settings/tokens/", headers={"Accept-Language": "de"}).content.decode()

    assert "Neues Token" in page
    assert "API-Tokens" in page


# --- staff: the admin and the command --------------------------------------------------------------


def test_staff_revoke_any_token_in_the_admin_and_cannot_add_or_delete(alice, admin_client):
    token = token_create(user=alice, name="Scheidungsanwalt-Skript", days=30)[0]

    listed = admin_client.get("/admin/assistant/apitoken/")
    detail = admin_client.get(f"/admin/assistant/apitoken/{token.pk}/change/")
    acted = admin_client.post(
        "/admin/assistant/apitoken/", {"action": "revoke", "_selected_action": [token.pk]}
    )

    assert listed.status_code == 200
    assert token.prefix in listed.content.decode()
    # The name is the owner's free text: not shown without a reason, like a title.
    assert "Scheidungsanwalt" not in listed.content.decode() + detail.content.decode()
    assert acted.status_code == 302
    token.refresh_from_db()
    assert (token.state(), token.revoked_by) == ("revoked", "admin")
    assert admin_client.get("/admin/assistant/apitoken/add/").status_code == 403
    assert admin_client.get(f"/admin/assistant/apitoken/{token.pk}/delete/").status_code == 403


def test_the_command_creates_lists_and_revokes(alice, capsys):
    from django.core.management import call_command

    call_command("api_token", "create", "alice", "--name", "CI", "--days", "7")
    secret = capsys.readouterr().out.strip()
    token = ApiToken.objects.get()
    call_command("api_token", "list", "--user", "alice")
    listed = capsys.readouterr().out
    call_command("api_token", "revoke", token.prefix, "--actor", "ops")
    call_command("api_token", "list")
    after = capsys.readouterr().out

    assert token.digest == digest_of(secret)
    assert f"{token.pk}\talice\tCI\t{token.prefix}\t" in listed
    assert listed.rstrip().endswith("active")
    assert "Revoked 1 token." in after
    assert token.prefix not in after.split("Revoked 1 token.")[1]
    token.refresh_from_db()
    assert (token.state(), token.revoked_by) == ("revoked", "ops")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["create", "nobody", "--name", "x"], "No user named 'nobody'"),
        (["create", "alice", "--name", "x", "--days", "400"], "within 1 to 365 days"),
        (["revoke", "ast_missing"], "There is no token ast_missing"),
        (["revoke"], "Name one token"),
    ],
)
def test_the_command_refuses_bad_input_and_changes_nothing(alice, args, message):
    from django.core.management import call_command
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match=message):
        call_command("api_token", *args)

    assert not ApiToken.objects.exists()


def test_a_users_data_export_names_their_tokens_and_erasure_deletes_them(alice):
    from assistant.staff.user_data import user_data_delete, user_data_export

    token, secret = token_create(user=alice, name="app", days=30)

    exported = user_data_export(user=alice, actor="dpo")
    _summary, record = user_data_delete(user=alice, actor="dpo", keep_account=True)

    assert [t["prefix"] for t in exported["api_tokens"]] == [token.prefix]
    assert secret not in json.dumps(exported)
    assert token.digest not in json.dumps(exported)
    assert record.parameters["api_tokens_deleted"] == 1
    assert not ApiToken.objects.exists()


def test_a_missing_csrf_middleware_is_a_deploy_warning(settings):
    from django.core import checks

    settings.MIDDLEWARE = [name for name in settings.MIDDLEWARE if "Csrf" not in name]

    found = [m.id for m in checks.run_checks(include_deployment_checks=True) if m.id.startswith("assistant")]

    assert found == ["assistant.W001"]
