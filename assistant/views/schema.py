"""The API describing itself: its OpenAPI document as JSON (/api/schema/) and as a page to
read (/api/docs/), for signed-in users (a session or a Bearer token) like the rest of it.
The document is assistant/api_schema/openapi.yaml."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from assistant.api_schema import document_json
from assistant.api_schema.page import page
from assistant.views.api import api_methods, api_view


@api_methods("GET")
@api_view
def schema(request: HttpRequest) -> HttpResponse:
    return HttpResponse(document_json(), content_type="application/json")


@api_methods("GET")
@login_required
def docs(request: HttpRequest) -> HttpResponse:
    return render(request, "assistant/api_docs.html", page())
