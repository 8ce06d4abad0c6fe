"""Health checks: public, JSON, no secrets or addresses."""

from __future__ import annotations

from django.http import HttpRequest, JsonResponse
from django.views.decorators.http import require_GET

from assistant import health


@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    """The process is alive and answering; touches nothing else."""
    response = JsonResponse({"status": "ok"})
    response["Cache-Control"] = "no-store"
    return response


@require_GET
async def readyz(request: HttpRequest) -> JsonResponse:
    """Ready for traffic: database and event delivery; the upstream too with `?llm=1`.

    The one async view: its checks run on the event loop together, each with a timeout.
    """
    checks = await health.readiness(check_llm=request.GET.get("llm") == "1")
    ready = health.is_ready(checks)
    response = JsonResponse(
        {"status": "ok" if ready else "error", "checks": checks}, status=200 if ready else 503
    )
    response["Cache-Control"] = "no-store"
    return response
