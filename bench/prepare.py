"""Prepare a fresh benchmark database: migrate it, collect static files, log the users in.

Runs as ``python -m bench.prepare <users>`` in the server's environment (same
DATABASE_URL and DJANGO_SECRET_KEY, which signs the session's auth hash), so the load
generator itself never loads Django. Prints one JSON object: per user the ``Cookie``
header, the CSRF token to send as ``X-CSRFToken`` and a personal API token.
"""

from __future__ import annotations

import json
import sys

import django


def main(argv: list[str]) -> int:
    users = int(argv[0])
    django.setup()

    from django.conf import settings
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from django.test import Client
    from django.utils.crypto import get_random_string

    from assistant.tokens.service import token_create

    call_command("migrate", interactive=False, verbosity=0)
    call_command("collectstatic", interactive=False, verbosity=0)  # production settings need it
    logins = []
    for index in range(users):
        # No password: hashing one costs a noticeable fraction of a second, logging in none.
        user = get_user_model().objects.create_user(f"bench{index}")
        client = Client()
        client.force_login(user)
        session = client.cookies[settings.SESSION_COOKIE_NAME].value
        csrf = get_random_string(32)  # Django accepts any 32-character secret as cookie and header
        cookie = f"{settings.SESSION_COOKIE_NAME}={session}; {settings.CSRF_COOKIE_NAME}={csrf}"
        token = token_create(user=user, name="bench", days=1)[1]
        logins.append({"cookie": cookie, "csrf": csrf, "token": token})
    json.dump(logins, sys.stdout)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
