"""Settings for Assistant: one file, every deployment value from the environment.

Defaults let `make run` and `make test` work with nothing set (SQLite, in-process
delivery, the offline demo model). Production-only values fail loudly when
DJANGO_DEBUG is off.
"""

from __future__ import annotations

import ipaddress
import json
import os
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent


def env_str(name: str, default: str = "") -> str:
    return os.environ.get(name, default)


def env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    if value.lower() in {"1", "true", "yes", "on"}:
        return True
    if value.lower() in {"0", "false", "no", "off"}:
        return False
    raise ImproperlyConfigured(f"{name} must be a boolean (1/0, true/false), got {value!r}")


def env_number(name: str, default: float, *, minimum: float = 0) -> float:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        number = float(value)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be a number, got {value!r}") from None
    if number < minimum:
        raise ImproperlyConfigured(f"{name} must be at least {minimum}, got {value!r}")
    return number


def env_int(name: str, default: int | None, *, minimum: int = 0) -> int | None:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        number = int(value)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be a whole number, got {value!r}") from None
    if number < minimum:
        raise ImproperlyConfigured(f"{name} must be at least {minimum}, got {value!r}")
    return number


def env_list(name: str, default: str) -> list[str]:
    return [item.strip() for item in env_str(name, default).split(",") if item.strip()]


def check_proxies(name: str, proxies: list[str]) -> None:
    """Each entry of a list of trusted proxies is an IP, a CIDR or `unix`."""
    for proxy in proxies:
        if proxy != "unix":
            try:
                ipaddress.ip_network(proxy, strict=False)
            except ValueError:
                raise ImproperlyConfigured(f"{name} takes IPs, CIDRs or `unix`, got {proxy!r}") from None


def env_json(name: str, default):
    value = os.environ.get(name)
    if value is None or value.strip() == "":
        return default
    try:
        return json.loads(value)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be JSON, got {value!r}") from None


DEBUG = env_bool("DJANGO_DEBUG", True)

DEVELOPMENT_SECRET_KEY = "django-insecure-development-only-key-do-not-use-in-production"  # noqa: S105
SECRET_KEY = env_str("DJANGO_SECRET_KEY") or (DEVELOPMENT_SECRET_KEY if DEBUG else "")
if not DEBUG:
    _make_key = "python3 -c 'import secrets; print(secrets.token_urlsafe(50))'"
    if not SECRET_KEY:
        raise ImproperlyConfigured(
            f"DJANGO_SECRET_KEY must be set when DJANGO_DEBUG is off. Make one with: {_make_key}"
        )
    # The same test as Django's check --deploy (security.W009), but at start.
    if len(SECRET_KEY) < 50 or len(set(SECRET_KEY)) < 5 or SECRET_KEY.startswith("django-insecure-"):
        raise ImproperlyConfigured(
            "DJANGO_SECRET_KEY is too weak for DJANGO_DEBUG off: it needs at least 50 random "
            f"characters and must not be the development key. Make one with: {_make_key}"
        )

ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS", "127.0.0.1,localhost" if DEBUG else "")
if not DEBUG and not ALLOWED_HOSTS:
    raise ImproperlyConfigured(
        "DJANGO_ALLOWED_HOSTS must be set when DJANGO_DEBUG is off: the host names the site "
        "is served under, comma-separated (e.g. assistant.example.com)."
    )

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "assistant",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "assistant.middleware.SecurityHeadersMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.locale.LocaleMiddleware",
    "django.middleware.common.CommonMiddleware",
    # Django's, but not for a request a Bearer token authenticates (no cookie involved).
    "assistant.tokens.middleware.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    # `Authorization: Bearer <token>` on /api/ and /v1/: the token's user (assistant/tokens).
    "assistant.tokens.middleware.BearerTokenMiddleware",
    # Logs in the user a trusted proxy names; not loaded unless ASSISTANT_SSO_HEADER is set.
    "assistant.sso.ProxyHeaderLoginMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

# Django's check for its CSRF middleware looks for it by name; settings.MIDDLEWARE names
# its subclass assistant.tokens.middleware.CsrfViewMiddleware, which a check of its own
# (assistant.W001) requires instead.
SILENCED_SYSTEM_CHECKS = ["security.W003"]

ROOT_URLCONF = "config.urls"
ASGI_APPLICATION = "config.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# SQLite by default (a file in the project); DATABASE_URL=postgres://... for scale-out.
# Requests run on a few long-lived threads (config/fastpaths/django.py), each keeping its
# connection open between requests for DATABASE_CONN_MAX_AGE seconds, checked before use.
DATABASES = {
    "default": dj_database_url.parse(
        env_str("DATABASE_URL", f"sqlite:///{BASE_DIR / 'db.sqlite3'}"),
        conn_max_age=int(env_number("DATABASE_CONN_MAX_AGE", 600)),
        conn_health_checks=True,
    )
}
# At most this many requests run synchronous code (pages, the admin, the API) at once,
# each on a thread of its own with its own database connection; more wait their turn.
ASSISTANT_REQUEST_THREADS = int(env_number("ASSISTANT_REQUEST_THREADS", 8, minimum=1))
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # The writers of one process take turns on a lock rather than in SQLite's busy handler.
    DATABASES["default"]["ENGINE"] = "config.sqlite"
    # WAL lets the page read while a generation writes; IMMEDIATE avoids lock upgrades
    # that fail instead of waiting.
    DATABASES["default"]["OPTIONS"] = {
        "timeout": 20,
        "transaction_mode": "IMMEDIATE",
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
    # Tests run a real daphne process next to the test runner: both must see one file.
    DATABASES["default"]["TEST"] = {"NAME": env_str("DJANGO_TEST_DB", str(BASE_DIR / ".test-db.sqlite3"))}

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "chat"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en"
LANGUAGES = [("en", "English"), ("de", "Deutsch")]
LOCALE_PATHS = [BASE_DIR / "locale"]
TIME_ZONE = env_str("DJANGO_TIME_ZONE", "Europe/Berlin")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
# Production serves `manage.py collectstatic`'s output from here: hashed names, cached for
# a year (config/asgi.py, or nginx). Development serves the source folders directly.
STATIC_ROOT = Path(env_str("DJANGO_STATIC_ROOT", str(BASE_DIR / "staticfiles")))
STORAGES = {
    # Uploaded documents (MEDIA_ROOT). An S3-compatible store is a backend of
    # django-storages here: docs/deployment.md, "Documents".
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"
        if DEBUG
        else "config.storage.ManifestStaticFiles"
    },
}

# Request bodies: a message is at most ASSISTANT_MAX_MESSAGE_CHARS; the body limit leaves
# room for JSON escaping of that many characters.
ASSISTANT_MAX_MESSAGE_CHARS = int(env_number("ASSISTANT_MAX_MESSAGE_CHARS", 32_000, minimum=1))
DATA_UPLOAD_MAX_MEMORY_SIZE = ASSISTANT_MAX_MESSAGE_CHARS * 12 + 4096

SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
CSRF_COOKIE_SAMESITE = "Lax"
# The API answers a CSRF refusal in its own error shape (JSON), pages with Django's page.
CSRF_FAILURE_VIEW = "assistant.views.api.csrf_failure"
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
# Set on every response by assistant.middleware. No inline script or style anywhere:
# page data goes to JS through json_script, model output is sanitized Markdown, and
# images only from our own origin or data: URLs (a model's Markdown never becomes an image).
CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "font-src 'self'",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "Permissions-Policy": "camera=(), microphone=(), geolocation=()",
}
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"  # Django's default, set by SecurityMiddleware

# --- Production: HTTPS, cookies, proxies (docs/deployment.md) ------------------------------
# All on when DJANGO_DEBUG is off, so `manage.py check --deploy` is clean; each can be
# turned off for a setup that does the job elsewhere.


def env_proxy_ssl_header(name: str) -> tuple[str, str] | None:
    """`X-Forwarded-Proto` (meaning its value is `https`) or `Header=value`, as Django wants it."""
    value = env_str(name).strip()
    if not value:
        return None
    header, _, secure_value = value.partition("=")
    header = header.strip()
    if not header or not all(c.isascii() and (c.isalnum() or c == "-") for c in header):
        raise ImproperlyConfigured(f"{name} must be a header name such as X-Forwarded-Proto, got {value!r}")
    return "HTTP_" + header.upper().replace("-", "_"), secure_value.strip() or "https"


# Behind a proxy that terminates TLS, the header in which it passes the original scheme.
# The proxy must always set it (nginx: proxy_set_header X-Forwarded-Proto $scheme).
SECURE_PROXY_SSL_HEADER = env_proxy_ssl_header("DJANGO_SECURE_PROXY_SSL_HEADER")
# Plain-HTTP requests are redirected to HTTPS, except the health checks: load balancers
# probe over HTTP.
SECURE_SSL_REDIRECT = env_bool("DJANGO_SECURE_SSL_REDIRECT", not DEBUG)
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$"]
SECURE_HSTS_SECONDS = env_int("DJANGO_SECURE_HSTS_SECONDS", 0 if DEBUG else 365 * 24 * 3600)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("DJANGO_SECURE_HSTS_INCLUDE_SUBDOMAINS", not DEBUG)
# Only the header's `preload` token; nothing is preloaded until someone submits the domain
# at hstspreload.org (which accepts registrable domains only, never assistant.example.com).
SECURE_HSTS_PRELOAD = env_bool("DJANGO_SECURE_HSTS_PRELOAD", not DEBUG)
SESSION_COOKIE_SECURE = env_bool("DJANGO_SECURE_COOKIES", not DEBUG)
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE
# Needed only when the browser's origin differs from the Host the proxy passes on.
CSRF_TRUSTED_ORIGINS = env_list("DJANGO_CSRF_TRUSTED_ORIGINS", "")
for _origin in CSRF_TRUSTED_ORIGINS:
    if not _origin.startswith(("https://", "http://")):
        raise ImproperlyConfigured(
            f"DJANGO_CSRF_TRUSTED_ORIGINS takes origins with a scheme (https://host), got {_origin!r}"
        )
# Two weeks, Django's default; with single sign-on the proxy's own session ends sooner.
SESSION_COOKIE_AGE = env_int("DJANGO_SESSION_COOKIE_AGE", 14 * 24 * 3600, minimum=60)

# --- Single sign-on from a trusted reverse proxy (assistant/sso.py) -------------------------
# Off unless ASSISTANT_SSO_HEADER names the header carrying the user name (e.g.
# X-Forwarded-User from oauth2-proxy). It is believed only from the direct peers listed in
# ASSISTANT_SSO_TRUSTED_PROXIES (IPs or CIDRs; `unix` for daphne on a Unix socket).
ASSISTANT_SSO_HEADER = env_str("ASSISTANT_SSO_HEADER").strip()
ASSISTANT_SSO_EMAIL_HEADER = env_str("ASSISTANT_SSO_EMAIL_HEADER").strip()
ASSISTANT_SSO_TRUSTED_PROXIES = env_list("ASSISTANT_SSO_TRUSTED_PROXIES", "")
# Unknown users get an account on their first request; off: they get 403 until an
# administrator adds them.
ASSISTANT_SSO_CREATE_USERS = env_bool("ASSISTANT_SSO_CREATE_USERS", True)
if ASSISTANT_SSO_HEADER and not ASSISTANT_SSO_TRUSTED_PROXIES:
    raise ImproperlyConfigured(
        "ASSISTANT_SSO_TRUSTED_PROXIES must list the proxy's address (IPs or CIDRs, comma-separated, "
        "or `unix`) when ASSISTANT_SSO_HEADER is set: the header is believed from nobody else."
    )
check_proxies("ASSISTANT_SSO_TRUSTED_PROXIES", ASSISTANT_SSO_TRUSTED_PROXIES)

# --- The client's address (assistant/throttle.py: login limits per address) ---------------
# The direct peers whose X-Forwarded-For names the client (its last entry, which the proxy
# wrote); from anybody else the header is ignored. `unix`: daphne on a Unix socket, which
# only nginx can open (docs/deployment.md); IPs or CIDRs for a proxy or balancer on TCP.
ASSISTANT_TRUSTED_PROXIES = env_list(
    "ASSISTANT_TRUSTED_PROXIES", ",".join(ASSISTANT_SSO_TRUSTED_PROXIES) or "unix"
)
check_proxies("ASSISTANT_TRUSTED_PROXIES", ASSISTANT_TRUSTED_PROXIES)

# --- LLM access (assistant/providers/ is the only client) ---------------------------------
OPENAI_API_KEY = env_str("OPENAI_API_KEY")
OPENAI_BASE_URL = env_str("OPENAI_BASE_URL")
# Offline demo model when neither is set: the app stays usable with no network.
ASSISTANT_DEMO_MODE = not (OPENAI_API_KEY or OPENAI_BASE_URL)
ASSISTANT_MODELS = env_list("ASSISTANT_MODELS", "demo" if ASSISTANT_DEMO_MODE else "gpt-4o-mini")
if not ASSISTANT_MODELS:
    raise ImproperlyConfigured("ASSISTANT_MODELS must name at least one model.")
if not DEBUG and ASSISTANT_DEMO_MODE and not env_bool("ASSISTANT_DEMO_IN_PRODUCTION", False):
    raise ImproperlyConfigured(
        "OPENAI_API_KEY (and OPENAI_BASE_URL for another OpenAI-compatible server) must be set when "
        "DJANGO_DEBUG is off; ASSISTANT_DEMO_IN_PRODUCTION=1 serves the offline demo model instead."
    )
OPENAI_TIMEOUT = env_number("OPENAI_TIMEOUT", 60, minimum=0.1)  # seconds between bytes
OPENAI_CONNECT_TIMEOUT = env_number("OPENAI_CONNECT_TIMEOUT", 5, minimum=0.1)
OPENAI_MAX_RETRIES = int(env_number("OPENAI_MAX_RETRIES", 2))
# Hard ceiling on one answer, whatever the upstream does.
ASSISTANT_MAX_ANSWER_SECONDS = env_number("ASSISTANT_MAX_ANSWER_SECONDS", 300, minimum=1)
# Demo model pace, tokens per second (a human reading pace by default).
ASSISTANT_DEMO_TOKENS_PER_SECOND = env_number("ASSISTANT_DEMO_TOKENS_PER_SECOND", 25, minimum=0)

# --- Limits per user (0 = none), checked before anything reaches the upstream --------------
ASSISTANT_RATE_LIMIT_PER_MINUTE = int(env_number("ASSISTANT_RATE_LIMIT_PER_MINUTE", 20))
ASSISTANT_DAILY_TOKEN_QUOTA = int(env_number("ASSISTANT_DAILY_TOKEN_QUOTA", 0))
# Cheap writes per user and minute (assistant/throttle.py; 0 = none): new conversations;
# renaming, archiving, deleting, feedback and stopping answers together. Far above what
# a person clicks; a script flooding the database meets them (429 rate_limited).
ASSISTANT_CONVERSATIONS_PER_MINUTE = env_int("ASSISTANT_CONVERSATIONS_PER_MINUTE", 30)
ASSISTANT_WRITES_PER_MINUTE = env_int("ASSISTANT_WRITES_PER_MINUTE", 120)

# --- Logins (assistant/throttle.py) --------------------------------------------------------
# Failed logins per account (the name as typed) and per client address within a window;
# beyond them logins are refused, before any password is checked, until the window ends.
ASSISTANT_LOGIN_FAILURES_PER_ACCOUNT = env_int("ASSISTANT_LOGIN_FAILURES_PER_ACCOUNT", 5)
ASSISTANT_LOGIN_FAILURES_PER_ADDRESS = env_int("ASSISTANT_LOGIN_FAILURES_PER_ADDRESS", 30)
ASSISTANT_LOGIN_WINDOW_SECONDS = env_int("ASSISTANT_LOGIN_WINDOW_SECONDS", 15 * 60, minimum=1)
# Password checks (hashing: tens of milliseconds of CPU each) running at once per process;
# more logins are refused at once, so a flood cannot take every request thread.
ASSISTANT_LOGIN_CONCURRENCY = env_int("ASSISTANT_LOGIN_CONCURRENCY", 2, minimum=1)

# --- Personal API tokens and the gateway (assistant/tokens, assistant/gateway) --------------
# Requests per token and minute (0 = none), over the per-user answer limits above: a
# script in a loop meets them (429 rate_limited). Failed Bearer attempts count with the
# failed logins per address.
ASSISTANT_TOKEN_REQUESTS_PER_MINUTE = env_int("ASSISTANT_TOKEN_REQUESTS_PER_MINUTE", 240)
# How long a new token lasts unless its owner chooses otherwise (days), and the longest
# a token may last (days; 0: tokens without expiry are allowed).
ASSISTANT_TOKEN_DEFAULT_DAYS = env_int("ASSISTANT_TOKEN_DEFAULT_DAYS", 90, minimum=1)
ASSISTANT_TOKEN_MAX_DAYS = env_int("ASSISTANT_TOKEN_MAX_DAYS", 365)
# Tokens per user that are not revoked (expired ones included until revoked).
ASSISTANT_TOKENS_PER_USER = env_int("ASSISTANT_TOKENS_PER_USER", 20, minimum=1)
# The gateway (/v1/chat/completions) stores each exchange as a conversation marked as
# coming from the API, under the same retention and review as the chat page; off, it
# stores only the usage record.
ASSISTANT_GATEWAY_STORE = env_bool("ASSISTANT_GATEWAY_STORE", True)
# The largest body of a gateway chat completion (bytes): the whole conversation so far,
# files an IDE plugin adds included (config/body_limits.py). 4 MiB is about a million
# tokens of text, past every model's context.
ASSISTANT_GATEWAY_MAX_BODY_BYTES = env_int("ASSISTANT_GATEWAY_MAX_BODY_BYTES", 4 * 1024 * 1024, minimum=1)

# --- Streaming -----------------------------------------------------------------------------
# Deltas arriving within this window go out as one event. The window grows with the
# answers this process generates (one more base window per 30 of them), up to the
# maximum: a busy process sends fewer, larger events rather than falling behind.
ASSISTANT_COALESCE_SECONDS = env_number("ASSISTANT_COALESCE_SECONDS", 0.03)
ASSISTANT_COALESCE_MAX_SECONDS = env_number("ASSISTANT_COALESCE_MAX_SECONDS", 0.1)
# Partial text reaches the database at most this often per answer.
ASSISTANT_PERSIST_SECONDS = env_number("ASSISTANT_PERSIST_SECONDS", 0.5, minimum=0.05)

# Each server process renews its lease on the answers it generates this often; answers
# of a process silent for ASSISTANT_LEASE_SECONDS are marked interrupted by the others.
ASSISTANT_HEARTBEAT_SECONDS = env_number("ASSISTANT_HEARTBEAT_SECONDS", 5, minimum=0.1)
ASSISTANT_LEASE_SECONDS = env_number("ASSISTANT_LEASE_SECONDS", 20, minimum=0.5)
# A stop request that reaches another process is seen by the generating one this fast.
ASSISTANT_CANCEL_POLL_SECONDS = env_number("ASSISTANT_CANCEL_POLL_SECONDS", 0.5, minimum=0.05)
# A comment line this often keeps proxies (nginx: 60 s by default) from closing idle streams.
ASSISTANT_KEEPALIVE_SECONDS = env_number("ASSISTANT_KEEPALIVE_SECONDS", 15, minimum=1)
# A stream whose client stops reading is closed once this much more waits in the
# server's full buffer for it (config/send_backlog.py); it resumes from the log.
ASSISTANT_STREAM_BACKLOG_BYTES = env_int("ASSISTANT_STREAM_BACKLOG_BYTES", 1024 * 1024, minimum=4096)
# Open event streams per user and server process; a new one past it ends the user's
# oldest with `stream-closed` (assistant/stream_endpoint.py).
ASSISTANT_MAX_STREAMS_PER_USER = env_int("ASSISTANT_MAX_STREAMS_PER_USER", 20, minimum=1)


# The fast paths, code that reaches into private names of Twisted, aiohttp, httpx2 and
# the openai SDK or follows Django's request flow (config/fastpaths/): `on`, `off`, or
# the names that may install (`twisted,aiohttp`). Off, the libraries' public paths do the
# same work at a measured cost (docs/architecture.md, "Fast paths").
def env_fast_paths(name: str) -> str | frozenset[str]:
    from config.fastpaths import NAMES

    value = env_str(name, "on").strip().lower()
    if value in ("on", "off"):
        return value
    names = frozenset(part.strip() for part in value.split(",") if part.strip())
    if not names or not names <= set(NAMES):
        raise ImproperlyConfigured(f"{name} takes on, off or names from {', '.join(NAMES)}; got {value!r}")
    return names


ASSISTANT_FAST_PATHS = env_fast_paths("ASSISTANT_FAST_PATHS")

# --- Governance (staff commands, docs/architecture.md "Staff commands") ------------------
# Conversations without activity for this many days are deleted by
# `manage.py purge_conversations`, run from cron. Unset: nothing is deleted automatically.
ASSISTANT_RETENTION_DAYS = env_int("ASSISTANT_RETENTION_DAYS", None, minimum=1)

# Documents (assistant/documents/): where files are stored, what an upload may be, and
# what an answer is given of them.
MEDIA_ROOT = Path(env_str("DJANGO_MEDIA_ROOT", str(BASE_DIR / "media")))
ASSISTANT_UPLOAD_MAX_BYTES = env_int("ASSISTANT_UPLOAD_MAX_BYTES", 25 * 1024 * 1024, minimum=1024)
ASSISTANT_UPLOAD_MAX_PAGES = env_int("ASSISTANT_UPLOAD_MAX_PAGES", 2000, minimum=1)
# A conversation's documents up to this many characters in all go into the prompt whole;
# beyond it, the passages retrieved for each question.
ASSISTANT_DOCUMENT_WHOLE_CHARS = env_int("ASSISTANT_DOCUMENT_WHOLE_CHARS", 16_000, minimum=0)
ASSISTANT_RETRIEVAL_PASSAGES = env_int("ASSISTANT_RETRIEVAL_PASSAGES", 6, minimum=1)
# An embeddings model of the upstream (/v1/embeddings) makes retrieval and the search of
# conversations hybrid: full text and vectors. Empty: full text alone.
ASSISTANT_EMBEDDINGS_MODEL = env_str("ASSISTANT_EMBEDDINGS_MODEL").strip()
# USD per million prompt and completion tokens, per model, for `manage.py usage_report`:
# {"gpt-4o-mini": [0.15, 0.60]}. Models left out get no cost.
ASSISTANT_MODEL_COSTS = env_json("ASSISTANT_MODEL_COSTS", {})
if not isinstance(ASSISTANT_MODEL_COSTS, dict) or not all(
    isinstance(prices, list)
    and len(prices) == 2
    and all(isinstance(p, int | float) and not isinstance(p, bool) and p >= 0 for p in prices)
    for prices in ASSISTANT_MODEL_COSTS.values()
):
    raise ImproperlyConfigured(
        "ASSISTANT_MODEL_COSTS must map each model to [prompt, completion] USD per million tokens, "
        'e.g. {"gpt-4o-mini": [0.15, 0.60]}'
    )

# --- Scale-out (docs/architecture.md "Scale-out") ------------------------------------------
# Unset: one server process, events in its memory. Set (redis://host:6379/0): any number
# of processes share one event log, wake-ups and stop requests through Redis, and
# DATABASE_URL must point all of them at one PostgreSQL (postgres://user@host:5432/name).
REDIS_URL = env_str("REDIS_URL")
# Every Redis key and pub/sub channel starts with this; deployments sharing one Redis
# database need different prefixes.
ASSISTANT_REDIS_PREFIX = env_str("ASSISTANT_REDIS_PREFIX", "assistant")

# django_eventstream.send_event(channel, ...) from any Django code goes into the replay
# log and reaches the conversation's open streams; its owner alone may read it.
EVENTSTREAM_STORAGE_CLASS = "assistant.events.eventstream.ReplayLogStorage"
EVENTSTREAM_CHANNELMANAGER_CLASS = "assistant.events.eventstream.ConversationChannels"

if not REDIS_URL:
    # One process: sessions are read from its memory and written through to the database
    # (Django's cached_db). Every request reads its session; a hit costs a fraction of the
    # query. Not with several processes: a logout in one would not reach the others'
    # memory, and a copy in Redis would make a Redis outage end every request.
    SESSION_ENGINE = "django.contrib.sessions.backends.cached_db"
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.locmem.LocMemCache",
            "OPTIONS": {"MAX_ENTRIES": 10_000},
        }
    }
else:
    # Shared by all processes: the login and write limits count in it (assistant/throttle.py).
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": ASSISTANT_REDIS_PREFIX,
            # One pool per process, not per request (config/cache.py).
            "OPTIONS": {
                "pool_class": "config.cache.ProcessConnectionPool",
                "client_name": f"{ASSISTANT_REDIS_PREFIX}-cache",
            },
        }
    }
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    # The tests' own database, which the daphne processes they start use too.
    DATABASES["default"]["TEST"] = {
        "NAME": env_str("DJANGO_TEST_DB_NAME", f"test_{DATABASES['default']['NAME']}")
    }

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env_str("DJANGO_LOG_LEVEL", "INFO")},
    "loggers": {
        # It logs every listener at INFO; that is noise at hundreds of streams.
        "django_eventstream": {"level": "WARNING"},
        "httpx": {"level": "WARNING"},
        "httpx2": {"level": "WARNING"},
    },
}
