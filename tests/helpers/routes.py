"""Every URL the app answers as concrete paths, one request to any of them, alice's data
they are aimed at, and a fingerprint of everything stored.

The attack tests walk the URL resolver instead of listing endpoints by hand, so a new
endpoint is attacked the day it is added. A route with a URL parameter this module does
not know how to fill fails the suite until someone teaches it here.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
from django.apps import apps
from django.contrib.contenttypes.models import ContentType
from django.urls import URLPattern, URLResolver, get_resolver

from assistant.models import ApiToken, Conversation, Document, Message, ServerProcess

METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")
UNSAFE_METHODS = ("POST", "PUT", "PATCH", "DELETE")
# A body every JSON endpoint would accept from the owner: the attack is the ownership,
# not a malformed request that a form turns away before the ownership is checked.
ATTACK_BODY = {
    "content": "pwned",
    "title": "pwned",
    "archived": True,
    "rating": "down",
    "comment": "pwned",
    "model": "fake-model",
}
# What alice told the assistant and what it answered: never in anyone else's response.
SECRETS = ("Gehaltsverhandlung", "4711", "Antwort 0815", "geheimer 2906", "Abfindung 1618")
# Logging out ends the attacker's own session, nothing of alice's.
LOGOUT = {"logout", "admin:logout"}


@dataclass
class Hit:
    status: int
    headers: httpx.Headers
    body: bytes


def hit(client: httpx.Client, method: str, path: str, **kwargs) -> Hit:
    """One request; of an event stream only the first chunk is read (it never ends)."""
    if method not in ("GET", "HEAD", "OPTIONS"):
        kwargs.setdefault("json", ATTACK_BODY)
    with client.stream(method, path, **kwargs) as response:
        if response.headers.get("content-type", "").startswith("text/event-stream"):
            body = next(response.iter_bytes(), b"")
        else:
            body = response.read()
    return Hit(response.status_code, response.headers, body)


def leaked(body: bytes) -> list[str]:
    text = body.decode("utf-8", "replace")
    return [secret for secret in SECRETS if secret in text]


# Routes that answer anonymous clients on purpose (with their public page or a redirect).
PUBLIC = {
    "login",
    "logout",
    "setup",
    "healthz",
    "readyz",
    "set_language",
    "admin:login",
    "admin:logout",
}


@dataclass(frozen=True)
class Route:
    name: str  # "namespace:name", or the route itself for an unnamed one
    route: str  # the pattern as written, e.g. "api/messages/<int:message_id>/cancel/"
    parameters: tuple[str, ...]

    @property
    def is_admin(self) -> bool:
        return self.route.startswith("admin/")

    @property
    def owned_object(self) -> bool:
        """Names one of a user's own conversations, messages, documents or API tokens (the
        owner-only API and pages)."""
        return bool({"conversation_id", "message_id", "document_id", "token_id"} & set(self.parameters))

    def path(self, values: dict[str, object]) -> str:
        """The concrete path, with `values` filling the parameters."""
        missing = [name for name in self.parameters if name not in values]
        if missing:
            raise AssertionError(f"{self.route}: no value for {missing}; teach tests/helpers/routes.py")
        path = re.sub(r"<(?:\w+:)?(\w+)>", lambda m: str(values[m[1]]), self.route)
        path = re.sub(r"\(\?P<(\w+)>[^)]*\)", lambda m: str(values[m[1]]), path)
        return "/" + path.replace("^", "").replace("$", "")


def _walk(patterns, prefix: str = "", namespace: str = "") -> list[Route]:
    routes = []
    for pattern in patterns:
        if isinstance(pattern, URLResolver):
            inner = f"{namespace}{pattern.namespace}:" if pattern.namespace else namespace
            routes += _walk(pattern.url_patterns, prefix + str(pattern.pattern), inner)
        else:
            assert isinstance(pattern, URLPattern)
            route = prefix + str(pattern.pattern)
            names = re.findall(r"<(?:\w+:)?(\w+)>|\(\?P<(\w+)>", route)
            parameters = tuple(a or b for a, b in names)
            name = f"{namespace}{pattern.name}" if pattern.name else route
            routes.append(Route(name, route, parameters))
    return routes


def every_route() -> list[Route]:
    return _walk(get_resolver().url_patterns)


def admin_object(route: str):
    """The admin's `<path:object_id>` names an object of the model in the route's path."""
    match = re.match(r"admin/(\w+)/(\w+)/", route)
    assert match, route
    model = apps.get_model(match[1], match[2])
    instance = model.objects.order_by("pk").first()
    assert instance is not None, f"create a {model.__name__} before attacking {route}"
    return instance


NO_SUCH_ID = 2**62


def route_values(route: Route, *, conversation: Conversation, message: Message) -> dict[str, object]:
    """Values for every parameter of `route`, naming `conversation`, `message`, the
    conversation's document and its owner's API token where it asks (an id nothing has
    when there is none)."""
    document = Document.objects.filter(conversation=conversation).values_list("pk", flat=True).first()
    values: dict[str, object] = {
        "conversation_id": conversation.pk,
        "message_id": message.pk,
        "document_id": document or uuid.uuid4(),
        # The owner's API token (a number no token has when they hold none).
        "token_id": ApiToken.objects.filter(user_id=conversation.owner_id)
        .values_list("pk", flat=True)
        .first()
        or 2**62,
        "id": conversation.owner_id,  # admin/auth/user/<id>/password/
        "app_label": "assistant",
        "url": "no-such-admin-page/",
        "model": "fake-model",  # /v1/models/<model>
    }
    if "object_id" in route.parameters:
        if "content_type_id" in route.parameters:  # admin/r/<ct>/<object>/: "view on site"
            values["content_type_id"] = ContentType.objects.get_for_model(Conversation).pk
            values["object_id"] = conversation.pk
        elif route.route.startswith("admin/assistant/conversation/"):
            values["object_id"] = conversation.pk
        elif route.route.startswith("admin/assistant/message/"):
            values["object_id"] = message.pk
        elif route.route.startswith("admin/assistant/document/"):
            values["object_id"] = values["document_id"]
        else:
            values["object_id"] = admin_object(route.route).pk
    return values


def db_fingerprint() -> dict[str, list[tuple]]:
    """Every row of every model, so a test can prove an attack changed nothing at all.

    Server processes renew their heartbeat on their own; they are left out.
    """
    return {
        model._meta.label: list(model.objects.order_by("pk").values_list())
        for model in apps.get_models()
        if model is not ServerProcess
    }


@dataclass
class Victim:
    """Alice's data: a finished exchange, and a question whose answer is streaming."""

    done: Conversation
    streaming: Conversation
    answer: Message
    streaming_answer: Message

    def targets(self) -> Iterator[tuple[Conversation, Message]]:
        for conversation in (self.done, self.streaming):
            for message in conversation.messages.all():
                yield conversation, message
