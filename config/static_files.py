"""Production static files, served at the ASGI layer from `collectstatic`'s output.

Why not WhiteNoise: its middleware is synchronous, so under ASGI every request (the event
streams too) would pass through a thread, and 6.12 has no ASGI app. Why not Django's
ASGIStaticFilesHandler (what development uses): it looks files up through the finders,
in a thread per request, with no cache headers.

Everything under STATIC_ROOT is read once at start, with a gzip copy of text files, and
answered from memory without a thread. Names that ManifestStaticFilesStorage hashed
(`app.3f2a9c1e7b40.css`) never change content, so browsers keep them for a year; other
names are revalidated with their ETag. A path not collected is a 404: no file outside
the collected set can be reached. nginx may serve STATIC_ROOT itself instead
(docs/deployment.md); then requests never get here.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import mimetypes
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django.core.exceptions import ImproperlyConfigured

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

MANIFEST_NAME = "staticfiles.json"
IMMUTABLE = b"public, max-age=31536000, immutable"
REVALIDATE = b"no-cache"
COMPRESSIBLE_TYPES = ("text/", "application/javascript", "application/json", "image/svg+xml")
MIN_COMPRESS_BYTES = 512


@dataclass(frozen=True)
class StaticFile:
    body: bytes
    gzipped: bytes | None  # None when compressing does not pay
    etag: bytes
    content_type: bytes
    cache_control: bytes

    @classmethod
    def load(cls, path: Path, *, immutable: bool) -> StaticFile:
        body = path.read_bytes()
        content_type = mimetypes.guess_type(path.name)[0] or (
            "application/json" if path.suffix == ".map" else "application/octet-stream"
        )
        if content_type.startswith(("text/", "application/javascript", "application/json")):
            content_type += "; charset=utf-8"
        gzipped = None
        if content_type.startswith(COMPRESSIBLE_TYPES) and len(body) >= MIN_COMPRESS_BYTES:
            compressed = gzip.compress(body, compresslevel=9, mtime=0)
            if len(compressed) < len(body) * 0.9:
                gzipped = compressed
        return cls(
            body=body,
            gzipped=gzipped,
            etag=b'"' + hashlib.sha256(body).hexdigest()[:20].encode() + b'"',
            content_type=content_type.encode(),
            cache_control=IMMUTABLE if immutable else REVALIDATE,
        )


def accepts_gzip(accept_encoding: str) -> bool:
    for part in accept_encoding.split(","):
        coding, _, parameters = part.partition(";")
        if coding.strip().lower() in ("gzip", "*"):
            name, _, value = parameters.strip().partition("=")
            if name.strip() != "q":
                return True
            try:
                return float(value) > 0
            except ValueError:
                return False
    return False


def etag_matches(if_none_match: str, etag: bytes) -> bool:
    wanted = etag.decode()
    for candidate in if_none_match.split(","):
        candidate = candidate.strip().removeprefix("W/")
        if candidate in ("*", wanted):
            return True
    return False


class CollectedStaticFiles:
    """An ASGI app: GET and HEAD of collected static files under `url`; the rest to `app`."""

    def __init__(self, app: ASGIApp, *, root: Path, url: str) -> None:
        self.app = app
        self.prefix = url if url.endswith("/") else url + "/"
        manifest = root / MANIFEST_NAME
        if not manifest.is_file():
            raise ImproperlyConfigured(
                f"No static files collected in {root} (DJANGO_STATIC_ROOT). With DJANGO_DEBUG off, "
                "run `manage.py collectstatic --noinput` before starting the server."
            )
        hashed = set(json.loads(manifest.read_text(encoding="utf-8"))["paths"].values())
        self.files: dict[str, StaticFile] = {}
        for path in sorted(root.rglob("*")):
            name = path.relative_to(root).as_posix()
            if path.is_file() and name != MANIFEST_NAME:
                self.files[self.prefix + name] = StaticFile.load(path, immutable=name in hashed)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(self.prefix):
            await self.app(scope, receive, send)
            return
        if scope["method"] not in ("GET", "HEAD"):
            await _respond(send, 405, [(b"allow", b"GET, HEAD")], b"Method not allowed")
            return
        static = self.files.get(scope["path"])
        if static is None:
            await _respond(send, 404, [], b"Not found", head=scope["method"] == "HEAD")
            return
        request_headers = {key.lower(): value.decode("latin-1") for key, value in scope["headers"]}
        body, etag = static.body, static.etag
        headers = [
            (b"content-type", static.content_type),
            (b"cache-control", static.cache_control),
            (b"x-content-type-options", b"nosniff"),
        ]
        if static.gzipped is not None:
            headers.append((b"vary", b"Accept-Encoding"))
            if accepts_gzip(request_headers.get(b"accept-encoding", "")):
                body, etag = static.gzipped, etag[:-1] + b'-gzip"'
                headers.append((b"content-encoding", b"gzip"))
        headers.append((b"etag", etag))
        if etag_matches(request_headers.get(b"if-none-match", ""), etag):
            await _respond(send, 304, [h for h in headers if h[0] != b"content-type"], b"", head=True)
            return
        headers.append((b"content-length", str(len(body)).encode()))
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else body})


async def _respond(
    send: Send, status: int, headers: list[tuple[bytes, bytes]], body: bytes, *, head: bool = False
) -> None:
    if status != 304:
        headers = [
            *headers,
            (b"content-type", b"text/plain; charset=utf-8"),
            (b"content-length", str(len(body)).encode()),
        ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": b"" if head else body})
