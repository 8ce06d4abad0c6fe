"""The app's settings with one change, for the daphne of the login attacks: a password
hasher that logs each hash it starts with how many run at that moment, and takes long
enough (SECONDS) that a flood overlaps. The log is how the tests count hashes; the view,
the form, the throttle and Django's authentication run as in production.
"""

from __future__ import annotations

import logging
import threading
import time

from django.contrib.auth.hashers import PBKDF2PasswordHasher

from config.settings import *  # noqa: F403 - the app's settings, one changed below

SECONDS = 0.3
HASH_LOG_LINE = "counting hasher: hashing, at once:"

_lock = threading.Lock()
_running = 0
logger = logging.getLogger("tests.counting_hasher")


class CountingHasher(PBKDF2PasswordHasher):
    algorithm = "counting_pbkdf2"
    iterations = 1000

    def encode(self, password: str, salt: str, iterations: int | None = None) -> str:
        global _running
        with _lock:
            _running += 1
            at_once = _running
        logger.warning("%s %d", HASH_LOG_LINE, at_once)
        try:
            time.sleep(SECONDS)
            return super().encode(password, salt, iterations)
        finally:
            with _lock:
                _running -= 1


PASSWORD_HASHERS = ["tests.security.login_settings.CountingHasher"]
