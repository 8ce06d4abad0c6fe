"""The fence around code that reaches into private names of libraries (config/fastpaths):
the switch and the version check decide, and a fast path that stays off says why."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from importlib import metadata

import pytest

from config import fastpaths

TWISTED = metadata.version("Twisted")


@pytest.fixture(autouse=True)
def _fresh_state(monkeypatch):
    monkeypatch.setattr(fastpaths, "state", {})


@pytest.mark.parametrize(
    ("switch", "expected"),
    [("on", True), ("off", False), (frozenset({"twisted"}), True), (frozenset({"aiohttp"}), False)],
)
def test_the_switch_decides_first(settings, switch, expected):
    settings.ASSISTANT_FAST_PATHS = switch

    assert fastpaths.allowed("twisted", {"Twisted": (TWISTED,)}) is expected
    assert fastpaths.state == {"twisted": expected}


def test_a_switched_off_fast_path_says_so(settings, caplog):
    settings.ASSISTANT_FAST_PATHS = "off"

    with caplog.at_level(logging.INFO, logger="config.fastpaths"):
        fastpaths.allowed("twisted", {"Twisted": (TWISTED,)})

    assert [r.getMessage() for r in caplog.records] == [
        "fast path twisted is off (ASSISTANT_FAST_PATHS): the public path is used"
    ]


def test_another_version_turns_the_fast_path_off_with_one_warning(settings, caplog):
    settings.ASSISTANT_FAST_PATHS = "on"

    with caplog.at_level(logging.INFO, logger="config.fastpaths"):
        allowed = fastpaths.allowed("twisted", {"Twisted": ("19.7", "20")})

    assert allowed is False
    assert fastpaths.state == {"twisted": False}
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        (
            "WARNING",
            f"fast path twisted is off: Twisted {TWISTED} is installed, it was written for "
            "19.7.x or 20.x; the public path is used",
        )
    ]


@pytest.mark.parametrize(
    ("installed", "series", "expected"),
    [
        ("3.14.5", ("3.14",), True),
        ("3.14", ("3.14",), True),
        ("3.140.1", ("3.14",), False),
        ("26.10.0", ("26",), True),
    ],
)
def test_a_release_series_is_matched_by_its_dotted_prefix(monkeypatch, installed, series, expected):
    monkeypatch.setattr(metadata, "version", lambda library: installed)

    assert fastpaths.written_for("anything", series) is expected


def test_the_fence_alone_ignores_the_switch(settings):
    settings.ASSISTANT_FAST_PATHS = "off"

    assert fastpaths.fenced("daphne", {"Twisted": (TWISTED,)}) is True
    assert fastpaths.fenced("daphne", {"Twisted": ("19.7",)}) is False


def test_a_library_not_installed_is_no_version_it_was_written_for():
    assert fastpaths.written_for("no-such-distribution-here", ("1",)) is False


@pytest.mark.parametrize("value", ["sometimes", "twisted,nginx", ","])
def test_a_switch_value_not_understood_stops_the_start(value):
    env = {**os.environ, "ASSISTANT_FAST_PATHS": value, "DJANGO_SETTINGS_MODULE": "config.settings"}

    result = subprocess.run(
        [sys.executable, "-c", "import django; django.setup()"], env=env, capture_output=True, text=True
    )

    assert result.returncode != 0
    assert "ASSISTANT_FAST_PATHS takes on, off or names from twisted, django, aiohttp" in result.stderr
