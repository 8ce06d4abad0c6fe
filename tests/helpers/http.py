"""HTTP below the client: the ASGI scope daphne makes for a GET, and the security headers
every response carries."""

from __future__ import annotations


def asgi_get_scope(path: str, headers: list[tuple[bytes, bytes]], peer: tuple[str, int] | None) -> dict:
    """The scope of a GET as daphne makes it, from `peer` (None: a Unix socket)."""
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": headers,
        "client": list(peer) if peer else None,
        "server": ("testserver", 80),
    }


CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; font-src 'self'; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)


def assert_security_headers(response) -> None:
    assert response["Content-Security-Policy"] == CSP
    assert "unsafe" not in response["Content-Security-Policy"]
    assert response["Permissions-Policy"] == "camera=(), microphone=(), geolocation=()"
    assert response["Cross-Origin-Opener-Policy"] == "same-origin"
    assert response["X-Frame-Options"] == "DENY"
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["Referrer-Policy"] == "same-origin"
