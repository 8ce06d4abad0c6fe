"""The demo model's answer from the sources of documents (documents/sources.py).

Offline it cannot read a document, so it shows what a real model does with them: the
opening of the passages it was given, each cited as [n], and a note saying so.
"""

from __future__ import annotations

import re

from assistant.providers.demo_personas import first_sentence
from assistant.providers.demo_replies import LABEL

# "[n] name, page p:" then the passage, up to the next source or the end.
_SOURCE = re.compile(r"^\[(\d+)\] (.+?):\n(.*?)(?=\n\n\[\d+\] |\Z)", re.MULTILINE | re.DOTALL)
SOURCES_HEADING = "Sources: passages of documents"
SHOWN = 3

_TEXTS = {
    "de": (
        "Das steht in den Quellen dazu:\n\n",
        "\n\nDas Demo-Modell zitiert nur den Anfang der ersten Quellen; ein echtes Modell "
        "beantwortet die Frage aus ihnen.",
    ),
    "en": (
        "This is what the sources say:\n\n",
        "\n\nThe demo model only quotes the opening of the first sources; a real model "
        "answers the question from them.",
    ),
}


def sources_reply(system: str, language: str) -> str | None:
    """A reply citing the sources of `system`; None when it gives none."""
    if SOURCES_HEADING not in system:
        return None
    found = _SOURCE.findall(system.split(SOURCES_HEADING, 1)[1])
    if not found:
        return None
    opening, note = _TEXTS[language]
    lines = [f"- {first_sentence(' '.join(text.split()))} [{n}] ({name})" for n, name, text in found[:SHOWN]]
    return LABEL[language] + opening + "\n".join(lines) + note
