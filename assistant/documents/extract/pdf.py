"""The pages of a PDF (pypdf), under limits tighter than pypdf's own: a protected PDF, a
scan or a broken file is refused."""

from __future__ import annotations

import re
from typing import BinaryIO

from assistant.documents.chunking import Page
from assistant.documents.extract.budget import Budget, Progress
from assistant.documents.extract.errors import (
    DAMAGED,
    NO_TEXT,
    PDF_NO_TEXT,
    PDF_PASSWORD,
    IngestError,
    too_many,
)
from assistant.documents.extract.text import normalise

# Below this many characters a page on average, a PDF is a scan (or pictures of text).
PDF_MIN_CHARS_PER_PAGE = 20
# pypdf's limits, tighter than its defaults (75 MB a stream, 2 million tokens a content
# stream): each stream it inflates and each page's drawing instructions. A dense page of
# text inflates to kilobytes and takes a few thousand tokens; pypdf spends some 50 µs a
# token, so its defaults let one crafted page of a 70 KB file take seconds of CPU.
PDF_LIMITS = {"zlib_maximum_output_length": 20 * 1024 * 1024, "stream_parsing_work_maximum_count": 250_000}
_WHITESPACE = re.compile(r"\s+")


def read_pdf(file: BinaryIO, max_pages: int, report: Progress, budget: Budget) -> list[Page]:
    from pypdf import apply_configuration

    # The limits hold for this thread's context only (a context variable).
    with apply_configuration(**PDF_LIMITS):
        return _read_pdf_pages(file, max_pages, report, budget)


def _read_pdf_pages(file: BinaryIO, max_pages: int, report: Progress, budget: Budget) -> list[Page]:
    from pypdf import PdfReader

    # pypdf raises whatever a hostile or broken file leads it to (its own errors, but also
    # KeyError, TypeError, ValueError, RecursionError, zlib.error...): all mean "damaged".
    try:
        reader = PdfReader(file)
        if reader.is_encrypted and not _decrypted_without_password(reader):
            raise IngestError("encrypted", PDF_PASSWORD)
        declared = reader.root_object["/Pages"].get_object().get("/Count")
        if isinstance(declared, int) and declared > max_pages:
            raise too_many("pdf", declared, max_pages)
        total = len(reader.pages)
    except IngestError:
        raise
    except Exception as error:
        raise IngestError("damaged", DAMAGED) from error
    if total > max_pages:
        raise too_many("pdf", total, max_pages)
    if total == 0:
        raise IngestError("empty", NO_TEXT)
    report(0, total)
    pages, unreadable = [], 0
    for index in range(total):
        try:
            text = reader.pages[index].extract_text()
        except Exception:
            # One broken page does not lose the others; a file of broken pages is damaged.
            text, unreadable = "", unreadable + 1
        pages.append(Page(index + 1, budget.take(normalise(text, join_hyphens=True))))
        report(index + 1, total)
    if unreadable == total:
        raise IngestError("damaged", DAMAGED)
    if sum(len(_WHITESPACE.sub("", page.text)) for page in pages) < PDF_MIN_CHARS_PER_PAGE * total:
        raise IngestError("no_text", PDF_NO_TEXT)
    return pages


def _decrypted_without_password(reader) -> bool:
    """Whether a protected PDF opens with the empty user password (its owner password
    restricts printing or copying only): viewers open those without asking."""
    try:
        return bool(reader.decrypt(""))
    except Exception:
        return False
