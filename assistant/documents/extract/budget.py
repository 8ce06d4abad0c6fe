"""What extract() hands every reader besides the file and its page limit: whom to tell
how far it got (Progress), and the characters the document may still give (Budget); a
text file is read no further than that budget could take (read_bounded)."""

from __future__ import annotations

from collections.abc import Callable
from typing import BinaryIO

from django.utils.formats import number_format
from django.utils.translation import gettext

from assistant.documents.extract.errors import IngestError

Progress = Callable[[int, int | None], None]

# All the text one document may give (a 2,000-page book has about 5 million characters).
MAX_TEXT_CHARS = 10_000_000


def _too_much_text() -> IngestError:
    return IngestError(
        "too_large",
        gettext(
            "This document holds more text than Assistant reads (at most %(limit)s characters). "
            "Split it into smaller files and upload them one by one."
        )
        % {"limit": number_format(MAX_TEXT_CHARS, force_grouping=True)},
    )


class Budget:
    """The characters a document may still give."""

    def __init__(self) -> None:
        self.left = MAX_TEXT_CHARS

    def take(self, text: str) -> str:
        self.left -= len(text)
        if self.left < 0:
            raise _too_much_text()
        return text


def read_bounded(file: BinaryIO) -> bytes:
    # A character is at most 4 bytes of UTF-8: more bytes than that are too much text.
    data = file.read(4 * MAX_TEXT_CHARS + 1)
    if len(data) > 4 * MAX_TEXT_CHARS:
        raise _too_much_text()
    return data
