"""The documented production environment (docs/deployment.md), run in subprocesses: settings
are read once per process. HOST is the public name; PROXIED, the headers of the TLS proxy."""

from __future__ import annotations

import secrets
import subprocess
import sys

from tests.helpers.live import ROOT, clean_env, database_url

ENV_FILE_MARKER = "# /etc/assistant/assistant.env"
HOST = "assistant.example.com"


def documented_environment() -> dict[str, str]:
    """The variables of the env file in docs/deployment.md, comments left out."""
    text = (ROOT / "docs" / "deployment.md").read_text(encoding="utf-8")
    block = text.split(ENV_FILE_MARKER + "\n", 1)[1].split("```", 1)[0]
    env = {}
    for line in block.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            name, _, value = line.partition("=")
            env[name] = value
    return env


def production_env(**overrides: str | None) -> dict[str, str]:
    """The documented production environment, with a fresh secret and the test database."""
    return clean_env(
        **{
            **documented_environment(),
            "DJANGO_SECRET_KEY": secrets.token_urlsafe(50),
            "DATABASE_URL": database_url(),
            **overrides,
        }
    )


def _python(args: list[str], env: dict[str, str], timeout: float) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, *args]
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def run_python(code: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return _python(["-c", code], env, timeout=60)


def manage(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return _python(["manage.py", *args], env, timeout=120)


PROXIED = {"Host": HOST, "X-Forwarded-Proto": "https"}
