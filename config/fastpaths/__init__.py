"""Fast paths: the only code that reaches into private names of third-party libraries.

Each module here serves one library (`twisted`, `django`, `aiohttp`, and `daphne`, a
guard): what it changes is faster or tighter than the library's public API allows, and
it works only with the versions it was written for (Django's request flow, followed step
by step, counts as such code too). Before a module installs anything, `allowed` checks
two things and says in one log line why a fast path stays off:

- the switch, `ASSISTANT_FAST_PATHS` (settings): `on` (the default) or `off` for all of
  them, or a comma-separated list of the names that may install (`twisted,aiohttp`);
- the installed version of every library the fast path reaches into, against the release
  series it was written for.

A fast path that is off leaves the library's public path in place, which does the same
work at a measured cost (docs/architecture.md, "Fast paths"). So `pip install -U` of a
security release of aiohttp, Twisted or the openai SDK is safe: a changed version turns
the fast path off instead of breaking the server.
"""

from __future__ import annotations

import logging
from importlib import metadata

from django.conf import settings

logger = logging.getLogger(__name__)

# The names of the fast paths, for the switch. (`daphne` is a guard, not a fast path: it
# bounds request bodies and slow readers, so only its version fence turns it off.)
NAMES = ("twisted", "django", "aiohttp")
# Whether each fast path that was asked installed in this process: what /health and the
# benchmark report.
state: dict[str, bool] = {}


def switched_on(name: str) -> bool:
    """Whether the switch lets fast path `name` install."""
    value = settings.ASSISTANT_FAST_PATHS
    if value in ("on", "off"):
        return value == "on"
    return name in value


def written_for(library: str, series: tuple[str, ...]) -> bool:
    """Whether the installed `library` belongs to one of the release `series` ("3.14" is
    every 3.14.x, "26" every 26.x)."""
    try:
        installed = metadata.version(library)
    except metadata.PackageNotFoundError:
        return False
    return any(installed == prefix or installed.startswith(f"{prefix}.") for prefix in series)


def allowed(name: str, libraries: dict[str, tuple[str, ...]]) -> bool:
    """Whether fast path `name`, which reaches into `libraries` (name: release series it
    was written for), may install. Logs one line when it may not, and records the answer."""
    if not switched_on(name):
        logger.info("fast path %s is off (ASSISTANT_FAST_PATHS): the public path is used", name)
        state[name] = False
        return False
    return fenced(name, libraries)


def fenced(name: str, libraries: dict[str, tuple[str, ...]]) -> bool:
    """The version fence alone (for a guard the switch does not turn off): whether every
    library is at a release series the code was written for."""
    for library, series in libraries.items():
        if not written_for(library, series):
            version = _version(library)
            logger.warning(
                "fast path %s is off: %s %s is installed, it was written for %s; the public path is used",
                name,
                library,
                version,
                " or ".join(f"{prefix}.x" for prefix in series),
            )
            state[name] = False
            return False
    state[name] = True
    return True


def _version(library: str) -> str:
    try:
        return metadata.version(library)
    except metadata.PackageNotFoundError:
        return "(not installed)"
