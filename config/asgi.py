"""ASGI entry point for daphne: Django first, then anything that imports models."""

from __future__ import annotations

import asyncio
import gc
import os
import sys
from pathlib import Path

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

import django

django.setup(set_prefix=False)

from config.fastpaths import django as django_requests  # noqa: E402

# Django's ASGI app: one thread trip per request on long-lived threads where the fast
# path is allowed (config/fastpaths/django.py), else Django's own handler.
django_application = django_requests.handler()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.conf import settings  # noqa: E402
from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler  # noqa: E402
from django.contrib.staticfiles.storage import ManifestFilesMixin, staticfiles_storage  # noqa: E402
from django.urls import re_path  # noqa: E402

from assistant import stream_endpoint  # noqa: E402
from assistant.gateway import handoff as gateway_handoff  # noqa: E402
from assistant.generation import leases, running  # noqa: E402
from config.body_limits import RequestBodyLimit  # noqa: E402
from config.fastpaths import aiohttp as fast_aiohttp  # noqa: E402
from config.fastpaths import daphne as daphne_requests  # noqa: E402
from config.fastpaths import twisted as twisted_writes  # noqa: E402
from config.head_requests import HeadResponses  # noqa: E402
from config.static_files import CollectedStaticFiles  # noqa: E402

# Event streams go to their channels consumer before Django's middleware chain, which
# would hold a thread per open stream; everything else goes to Django
# (assistant/stream_endpoint.py). Under /v1/ a chat completion leaves Django's thread
# once the view has accepted it, and runs on the event loop (assistant/gateway/handoff.py).
streams_and_django = ProtocolTypeRouter(
    {
        "http": URLRouter(
            [
                stream_endpoint.route(django_application),
                gateway_handoff.route(django_application),
                re_path(r"", django_application),
            ]
        )
    }
)

# Static files at the ASGI layer: a sync middleware such as WhiteNoise would push every
# request through a thread.
if isinstance(staticfiles_storage, ManifestFilesMixin):
    # Production (DJANGO_DEBUG off): templates name the hashed files collectstatic wrote.
    application = CollectedStaticFiles(
        streams_and_django, root=Path(settings.STATIC_ROOT), url=settings.STATIC_URL
    )
else:
    # Development: straight from the app's own folders, no collectstatic needed.
    application = ASGIStaticFilesHandler(streams_and_django)

# A HEAD answer ends with its headers (config/head_requests.py: daphne would write the rest).
application = HeadResponses(application)

# Bodies over their limit are refused before they are read (config/body_limits.py);
# under daphne already where Twisted receives them (config/fastpaths/daphne.py), which
# also lets event streams see a client that stopped reading (config/send_backlog.py).
application = RequestBodyLimit(application)
daphne_requests.install()

# Daphne sends a turn's writes at the end of the loop's turn, not via the selector
# (config/fastpaths/twisted.py).
twisted_writes.install()

# Answers read from aiohttp itself, their connection held between paced reads, where the
# fast path is allowed (config/fastpaths/aiohttp.py): decided now, so the log says so at start.
fast_aiohttp.installed()

# Under daphne's reactor: heartbeat and restart recovery from the loop's first turn, not
# from the first chat request (answers a crashed process left `streaming` are marked at
# once; not callWhenRunning, whose callbacks run before the asyncio loop does); before it
# stops its event loop, which cancels what runs, this process's answers store themselves
# `interrupted` and it gives up its lease (assistant/generation/leases.py).
if "twisted.internet.reactor" in sys.modules:
    from twisted.internet import defer, reactor

    reactor.callLater(0, lambda: running.follow_up(leases.ensure_supervisor()))
    reactor.addSystemEventTrigger(
        "before", "shutdown", lambda: defer.Deferred.fromFuture(asyncio.ensure_future(leases.shutdown()))
    )

# The server's garbage collection (docs/architecture.md, "Garbage collection"): the objects
# of start-up live as long as the process, out of the collector's sight; a young generation
# of 50,000 lets the short-lived objects of streaming tokens die young.
gc.freeze()
gc.set_threshold(50_000, 20, 10)
