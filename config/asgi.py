"""ASGI entry point for daphne: Django first, then anything that imports models."""

from __future__ import annotations

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

from django.core.asgi import get_asgi_application

django_application = get_asgi_application()

from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler  # noqa: E402

# Static files from the app's own folders, at the ASGI layer: a sync middleware such as
# WhiteNoise would push every request, the event streams included, through a thread.
application = ASGIStaticFilesHandler(django_application)
