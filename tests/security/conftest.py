"""Fixtures of the attack suite: the live daphne with the fake upstream (tests/conftest.py),
alice and bob, rita the reviewer, their logged-in HTTP clients, an anonymous client,
alice's conversations as the target, an attacker's server that must receive nothing, and
a production daphne (DJANGO_DEBUG=0 with the documented environment) reached as through
the TLS proxy."""

from __future__ import annotations

import importlib
from collections.abc import Iterator

import httpx
import pytest
from django.apps import apps
from django.contrib.auth import get_user_model
from django.utils import timezone

from assistant import review
from assistant.models import (
    Assistant,
    Collection,
    Conversation,
    Document,
    Message,
    ServerProcess,
    StarterPrompt,
)
from assistant.personas.versions import version_save
from assistant.tokens.service import token_create
from tests.helpers.browser import chromium
from tests.helpers.chat import create_conversation, fake, send, wait_for_final
from tests.helpers.live import LiveServer, session_client, start_daphne, stop_daphne, wait_until
from tests.helpers.production import production_env
from tests.helpers.routes import Victim
from tests.helpers.servers import PASSWORD, FormSession, RecordingServer, form_login, with_password

REVIEWERS_MIGRATION = importlib.import_module("assistant.migrations.0006_reviewers_group")


@pytest.fixture
def rita(db):
    """A reviewer: staff in the Reviewers group (which a flushed live database has lost)."""
    REVIEWERS_MIGRATION.create_reviewers(apps, None)
    user = get_user_model().objects.create_user("rita", password="rita-password-1")
    review.reviewer_grant(user=user)
    return user


@pytest.fixture
def rita_http(live, rita) -> Iterator[httpx.Client]:
    with session_client(live, rita) as client:
        yield client


@pytest.fixture
def victim(alice_http, upstream, rita) -> Victim:
    done = create_conversation(alice_http, title="Gehaltsverhandlung", model="fake-model")
    sent = send(alice_http, done, "Mein Gehalt ist 4711 " + fake(text="Antwort 0815"))
    answer = wait_for_final(sent["assistant_message"]["id"])
    assert answer.status == Message.Status.DONE
    # An answer in flight on another server process (its lease fresh, as in a scale-out
    # deployment): unlike one this daphne generates, it stays exactly as it is while
    # the attacks run, so any change they make shows.
    streaming = Conversation.objects.create(owner=answer.conversation.owner, title="Gehaltsverhandlung 2")
    ServerProcess.objects.create(pk="other-process", heartbeat_at=timezone.now())
    Message.objects.create(conversation=streaming, role="user", content="Noch geheimer 2906?")
    streaming_answer = Message.objects.create(
        conversation=streaming, role="assistant", status="streaming", generated_by="other-process"
    )
    # The admin's access log routes name an entry (rita's fixture brings the Reviewers group).
    review.access_record(reviewer=rita, conversation=streaming, reason="Ticket 12 for alice")
    # The admin's example prompt routes name one (the shipped ones went with the flush).
    StarterPrompt.objects.get_or_create(text="Vergleiche zwei Tarife in einer Tabelle")
    # alice's document in her conversation (the document routes and the admin's), read
    # by the server; a company assistant and a knowledge collection for the admin's routes.
    uploaded = alice_http.post(
        f"/api/conversations/{done['id']}/documents/",
        files={"file": ("Abfindung 1618.txt", b"Die Abfindung 1618 bleibt vertraulich.", "text/plain")},
    )
    assert uploaded.status_code == 202, uploaded.text
    assert wait_until(lambda: Document.objects.filter(status=Document.Status.READY).exists())
    assistant = Assistant.objects.create(slug="helfer")
    version_save(assistant, {"name": "Helfer", "instructions": "Hilf."}, by="admin")
    Collection.objects.create(slug="handbuch", name="Handbuch")
    # alice's API token (the tokens page's routes and the admin's).
    token_create(user=answer.conversation.owner, name="Handy", days=30)
    upstream.requests.clear()
    return Victim(
        done=answer.conversation, streaming=streaming, answer=answer, streaming_answer=streaming_answer
    )


@pytest.fixture(scope="package")
def browser(django_db_setup):
    """Chromium for the browser attacks, closed when the attack suite ends."""
    with chromium() as browser:
        yield browser


@pytest.fixture
def anonymous_http(live) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=live.url, timeout=10) as client:
        yield client


@pytest.fixture
def attacker() -> Iterator[RecordingServer]:
    """Where an attacker would like the app to send requests: it must receive none."""
    with RecordingServer() as server:
        yield server


# --- production profile --------------------------------------------------------------------


@pytest.fixture(scope="module")
def production(django_db_setup, django_db_blocker, collected, fake_upstream) -> Iterator[LiveServer]:
    """A daphne with DJANGO_DEBUG=0 and the documented environment, on the fake upstream."""
    env = production_env(
        DJANGO_STATIC_ROOT=str(collected),
        OPENAI_BASE_URL=fake_upstream.url,
        OPENAI_API_KEY="test-key-abc123",
        ASSISTANT_MODELS="fake-model",
        ASSISTANT_RATE_LIMIT_PER_MINUTE="0",
    )
    server = start_daphne(env, "daphne-security-production")
    yield server
    stop_daphne(server)


@pytest.fixture
def alice_production(production, transactional_db, alice, upstream) -> Iterator[FormSession]:
    session = form_login(production, with_password(alice).username, PASSWORD)
    yield session
    session.client.close()
