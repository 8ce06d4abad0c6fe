"""Production settings: check --deploy is clean with the documented environment, missing
secrets stop the start, static files are collected, hashed and cached for a year.

Settings are read once per process, so each production case runs in a subprocess with
the environment of docs/deployment.md (its env file block), the test database standing
in for PostgreSQL.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from config.static_files import CollectedStaticFiles
from tests.helpers.live import LiveServer, start_daphne, stop_daphne
from tests.helpers.production import HOST, PROXIED, manage, production_env, run_python

SHOW_SETTINGS = """
import json, django
from django.conf import settings
django.setup()
names = [
    "DEBUG", "SECURE_SSL_REDIRECT", "SECURE_PROXY_SSL_HEADER", "SECURE_HSTS_SECONDS",
    "SECURE_HSTS_INCLUDE_SUBDOMAINS", "SECURE_HSTS_PRELOAD", "SESSION_COOKIE_SECURE",
    "CSRF_COOKIE_SECURE", "CSRF_TRUSTED_ORIGINS", "SESSION_COOKIE_AGE", "SECURE_REDIRECT_EXEMPT",
    "ALLOWED_HOSTS", "STATIC_ROOT", "STORAGES",
]
print(json.dumps({name: getattr(settings, name) for name in names}, default=str))
"""


def production_settings(**overrides: str | None) -> dict:
    result = run_python(SHOW_SETTINGS, production_env(**overrides))
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


# --- settings --------------------------------------------------------------------------


def test_check_deploy_is_clean_with_the_documented_environment():
    result = manage("check", "--deploy", "--fail-level", "WARNING", env=production_env())

    assert result.returncode == 0, result.stdout + result.stderr
    # The one silenced: Django's CSRF check by name, which assistant.W001 replaces
    # (tests/test_api_tokens.py).
    assert "System check identified no issues (1 silenced)." in result.stdout


def test_production_settings_are_secure_by_default():
    values = production_settings()

    assert values["DEBUG"] is False
    assert values["SECURE_SSL_REDIRECT"] is True
    assert values["SECURE_PROXY_SSL_HEADER"] == ["HTTP_X_FORWARDED_PROTO", "https"]
    assert values["SECURE_HSTS_SECONDS"] == 31_536_000
    assert values["SECURE_HSTS_INCLUDE_SUBDOMAINS"] is True
    assert values["SECURE_HSTS_PRELOAD"] is True
    assert values["SESSION_COOKIE_SECURE"] is values["CSRF_COOKIE_SECURE"] is True
    assert values["SESSION_COOKIE_AGE"] == 14 * 24 * 3600
    assert values["SECURE_REDIRECT_EXEMPT"] == [r"^healthz$", r"^readyz$"]
    assert values["ALLOWED_HOSTS"] == [HOST]
    assert values["STORAGES"]["staticfiles"]["BACKEND"] == "config.storage.ManifestStaticFiles"


def test_production_settings_can_be_turned_down_for_a_proxy_that_does_the_job():
    values = production_settings(
        DJANGO_SECURE_SSL_REDIRECT="0",
        DJANGO_SECURE_PROXY_SSL_HEADER="X-Forwarded-Ssl=on",
        DJANGO_SECURE_HSTS_SECONDS="3600",
        DJANGO_SECURE_HSTS_INCLUDE_SUBDOMAINS="0",
        DJANGO_SECURE_HSTS_PRELOAD="0",
        DJANGO_CSRF_TRUSTED_ORIGINS="https://chat.example.com, https://assistant.example.com:8443",
        DJANGO_SESSION_COOKIE_AGE="28800",
    )

    assert values["SECURE_SSL_REDIRECT"] is False
    assert values["SECURE_PROXY_SSL_HEADER"] == ["HTTP_X_FORWARDED_SSL", "on"]
    assert values["SECURE_HSTS_SECONDS"] == 3600
    assert values["SECURE_HSTS_INCLUDE_SUBDOMAINS"] is values["SECURE_HSTS_PRELOAD"] is False
    assert values["CSRF_TRUSTED_ORIGINS"] == [
        "https://chat.example.com",
        "https://assistant.example.com:8443",
    ]
    assert values["SESSION_COOKIE_AGE"] == 28800


def test_development_settings_stay_plain_http():
    # This process runs with nothing set, like `make run`.
    assert settings.SECURE_SSL_REDIRECT is False
    assert settings.SECURE_HSTS_SECONDS == 0
    assert settings.SESSION_COOKIE_SECURE is settings.CSRF_COOKIE_SECURE is False
    assert settings.SECURE_PROXY_SSL_HEADER is None
    assert settings.STORAGES["staticfiles"]["BACKEND"].endswith(".StaticFilesStorage")
    assert settings.ASSISTANT_SSO_HEADER == ""


WEAK_KEY_MESSAGE = "DJANGO_SECRET_KEY is too weak for DJANGO_DEBUG off"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"DJANGO_SECRET_KEY": None}, "DJANGO_SECRET_KEY must be set when DJANGO_DEBUG is off"),
        ({"DJANGO_SECRET_KEY": ""}, "DJANGO_SECRET_KEY must be set when DJANGO_DEBUG is off"),
        ({"DJANGO_SECRET_KEY": "short-but-random-Q8x"}, WEAK_KEY_MESSAGE),
        ({"DJANGO_SECRET_KEY": "ab" * 40}, WEAK_KEY_MESSAGE),
        (
            {"DJANGO_SECRET_KEY": "django-insecure-development-only-key-do-not-use-in-production"},
            WEAK_KEY_MESSAGE,
        ),
        ({"DJANGO_ALLOWED_HOSTS": None}, "DJANGO_ALLOWED_HOSTS must be set when DJANGO_DEBUG is off"),
        ({"DJANGO_ALLOWED_HOSTS": " , "}, "DJANGO_ALLOWED_HOSTS must be set when DJANGO_DEBUG is off"),
        (
            {"OPENAI_API_KEY": None, "OPENAI_BASE_URL": None},
            "OPENAI_API_KEY (and OPENAI_BASE_URL for another OpenAI-compatible server) must be set",
        ),
        ({"DJANGO_SECURE_PROXY_SSL_HEADER": "X Forwarded Proto"}, "must be a header name"),
        ({"DJANGO_CSRF_TRUSTED_ORIGINS": "assistant.example.com"}, "origins with a scheme"),
        ({"DJANGO_SECURE_SSL_REDIRECT": "maybe"}, "DJANGO_SECURE_SSL_REDIRECT must be a boolean"),
    ],
)
def test_production_refuses_to_start_without_its_secrets(overrides, message):
    result = manage("check", env=production_env(**overrides))

    assert result.returncode != 0
    assert message in result.stderr
    assert "ImproperlyConfigured" in result.stderr.strip().splitlines()[-1]


def test_production_serves_the_demo_model_only_when_asked():
    env = production_env(OPENAI_API_KEY=None, OPENAI_BASE_URL=None, ASSISTANT_DEMO_IN_PRODUCTION="1")

    assert manage("check", env=env).returncode == 0


# --- static files ------------------------------------------------------------------------


def hashed_name(root: Path, original: str) -> str:
    return json.loads((root / "staticfiles.json").read_text())["paths"][original]


async def _not_static(scope, receive, send) -> None:
    await send({"type": "http.response.start", "status": 299, "headers": []})
    await send({"type": "http.response.body", "body": b"django"})


def serve(app: CollectedStaticFiles, path: str, method: str = "GET", **headers: str):
    """One request to the static layer: (status, headers, body)."""
    scope = {
        "type": "http",
        "method": method,
        "path": path,
        "headers": [
            (name.lower().replace("_", "-").encode(), value.encode()) for name, value in headers.items()
        ],
    }
    messages = []

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        messages.append(message)

    asyncio.run(app(scope, receive, send))
    start, body = messages
    return start["status"], {k.decode(): v.decode() for k, v in start["headers"]}, body["body"]


def test_static_hashed_file_is_served_for_a_year(collected):
    app = CollectedStaticFiles(_not_static, root=collected, url="/static/")
    name = hashed_name(collected, "assistant/app.css")

    status, headers, body = serve(app, f"/static/{name}")

    assert re.fullmatch(r"assistant/app\.[0-9a-f]{12}\.css", name)
    assert status == 200
    assert headers["cache-control"] == "public, max-age=31536000, immutable"
    assert headers["content-type"] == "text/css; charset=utf-8"
    assert headers["x-content-type-options"] == "nosniff"
    assert body == (collected / name).read_bytes()
    assert int(headers["content-length"]) == len(body)


def test_static_page_modules_import_each_other_by_hashed_name(collected):
    entry = (collected / hashed_name(collected, "assistant/chat/chat.js")).read_text()

    imported = re.findall(r'from "\./([^"]+)";', entry)

    assert imported, entry[:500]
    for name in imported:
        assert re.fullmatch(r"[a-z]+\.[0-9a-f]{12}\.js", name), name
        assert (collected / "assistant/chat" / name).is_file()


def test_static_unhashed_name_is_revalidated(collected):
    app = CollectedStaticFiles(_not_static, root=collected, url="/static/")

    status, headers, _ = serve(app, "/static/assistant/app.css")

    assert status == 200
    assert headers["cache-control"] == "no-cache"


def test_static_gzip_etag_and_head(collected):
    app = CollectedStaticFiles(_not_static, root=collected, url="/static/")
    path = "/static/" + hashed_name(collected, "assistant/chat/chat.js")
    plain = (collected / path.removeprefix("/static/")).read_bytes()

    _, identity_headers, identity = serve(app, path)
    status, headers, body = serve(app, path, Accept_Encoding="br, gzip;q=0.8")
    not_modified = serve(app, path, Accept_Encoding="gzip", If_None_Match=headers["etag"])
    head = serve(app, path, "HEAD")
    refused = serve(app, path, Accept_Encoding="gzip;q=0")

    assert identity == plain
    assert "content-encoding" not in identity_headers
    assert (status, headers["content-encoding"], headers["vary"]) == (200, "gzip", "Accept-Encoding")
    assert gzip.decompress(body) == plain
    assert headers["etag"] != identity_headers["etag"]
    assert not_modified[0] == 304
    assert not_modified[2] == b""
    assert (head[0], head[2], head[1]["content-length"]) == (200, b"", str(len(plain)))
    assert "content-encoding" not in refused[1]


def test_static_source_maps_follow_their_hashed_scripts(collected):
    app = CollectedStaticFiles(_not_static, root=collected, url="/static/")
    script = hashed_name(collected, "vendor/markdown-it/markdown-it.min.js")
    source_map = hashed_name(collected, "vendor/markdown-it/markdown-it.min.js.map")

    _, _, body = serve(app, f"/static/{script}")
    status, headers, _ = serve(app, f"/static/{source_map}")

    assert body.rstrip().endswith(f"//# sourceMappingURL={source_map.rsplit('/', 1)[1]}".encode())
    assert status == 200
    assert headers["content-type"].startswith("application/json")


@pytest.mark.parametrize(
    "path", ["/static/nothing.css", "/static/../config/settings.py", "/static/", "/static/staticfiles.json"]
)
def test_static_unknown_paths_are_404(collected, path):
    app = CollectedStaticFiles(_not_static, root=collected, url="/static/")

    assert serve(app, path)[0] == 404


def test_static_layer_passes_other_requests_on_and_refuses_writes(collected):
    app = CollectedStaticFiles(_not_static, root=collected, url="/static/")

    assert serve(app, "/accounts/login/")[2] == b"django"
    status, headers, _ = serve(app, "/static/assistant/app.css", "POST")
    assert (status, headers["allow"]) == (405, "GET, HEAD")


def test_static_layer_refuses_to_start_without_collectstatic(tmp_path):
    with pytest.raises(ImproperlyConfigured, match=r"manage\.py collectstatic --noinput"):
        CollectedStaticFiles(_not_static, root=tmp_path, url="/static/")


# --- a production daphne behind a pretend proxy --------------------------------------------


@pytest.fixture(scope="module")
def production_server(django_db_setup, django_db_blocker, collected, fake_upstream) -> Iterator[LiveServer]:
    env = production_env(
        DJANGO_STATIC_ROOT=str(collected),
        OPENAI_BASE_URL=fake_upstream.url,
        OPENAI_API_KEY="test-key-abc123",
        ASSISTANT_MODELS="fake-model",
    )
    server = start_daphne(env, "daphne-production")
    yield server
    stop_daphne(server)


@pytest.mark.live
def test_production_pages_reference_hashed_static_files(production_server, transactional_db):
    with httpx.Client(base_url=production_server.url, headers=PROXIED, timeout=10) as client:
        page = client.get("/accounts/login/", follow_redirects=True)
        assert page.status_code == 200
        stylesheet = re.search(r'href="(/static/assistant/app\.[0-9a-f]{12}\.css)"', page.text)
        assert stylesheet, page.text
        assert "/static/assistant/app.css" not in page.text

        css = client.get(stylesheet[1])

    assert css.status_code == 200
    assert css.headers["cache-control"] == "public, max-age=31536000, immutable"
    assert css.headers["content-type"] == "text/css; charset=utf-8"


@pytest.mark.live
def test_production_redirects_to_https_with_hsts_and_secure_cookies(production_server, transactional_db):
    with httpx.Client(base_url=production_server.url, timeout=10) as client:
        plain = client.get("/accounts/login/", headers={"Host": HOST})
        secure = client.get("/accounts/login/", headers=PROXIED, follow_redirects=True)

    assert plain.status_code == 301
    assert plain.headers["location"] == f"https://{HOST}/accounts/login/"
    assert secure.headers["strict-transport-security"] == "max-age=31536000; includeSubDomains; preload"
    csrf_cookie = next(c for c in secure.headers.get_list("set-cookie") if c.startswith("csrftoken="))
    assert "; Secure" in csrf_cookie
    assert "Content-Security-Policy" in secure.headers


@pytest.mark.live
def test_production_health_checks_answer_plain_http(production_server, transactional_db):
    with httpx.Client(base_url=production_server.url, headers={"Host": HOST}, timeout=10) as client:
        alive = client.get("/healthz")
        ready = client.get("/readyz")

    assert (alive.status_code, alive.json()) == (200, {"status": "ok"})
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"database": "ok", "events": "ok", "llm": "skipped"}
