"""ASGI entry point for daphne: Django first, then anything that imports models."""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

from django.core.asgi import get_asgi_application

django_application = get_asgi_application()

from django.conf import settings  # noqa: E402
from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler  # noqa: E402
from django.contrib.staticfiles.storage import ManifestFilesMixin, staticfiles_storage  # noqa: E402

from config.static_files import CollectedStaticFiles  # noqa: E402

# Static files at the ASGI layer: a sync middleware such as WhiteNoise would push every
# request, the event streams included, through a thread.
if isinstance(staticfiles_storage, ManifestFilesMixin):
    # Production (DJANGO_DEBUG off): templates name the hashed files collectstatic wrote.
    application = CollectedStaticFiles(
        django_application, root=Path(settings.STATIC_ROOT), url=settings.STATIC_URL
    )
else:
    # Development: straight from the app's own folders, no collectstatic needed.
    application = ASGIStaticFilesHandler(django_application)
