"""extract(): the pages of a sniffed file, read by the reader of its kind (pdf.py,
archives.py, text.py); page_label(): how a citation names one of them."""

from __future__ import annotations

from typing import BinaryIO

from django.utils.translation import gettext

from assistant.documents.chunking import Page, sections_of
from assistant.documents.extract.archives import ZIP_READERS, check_zip
from assistant.documents.extract.budget import Budget, Progress, read_bounded
from assistant.documents.extract.errors import NO_TEXT, UNSUPPORTED, IngestError, too_many
from assistant.documents.extract.pdf import read_pdf
from assistant.documents.extract.text import READERS_OF_TEXT, decode, normalise


def page_label(kind: str, number: int) -> str:
    """How a citation names where a passage is: "page 3", "slide 3", "sheet 3", "section 3"."""
    if kind == "pdf":
        return gettext("page %(number)s") % {"number": number}
    if kind == "pptx":
        return gettext("slide %(number)s") % {"number": number}
    if kind == "xlsx":
        return gettext("sheet %(number)s") % {"number": number}
    return gettext("section %(number)s") % {"number": number}


def extract(file: BinaryIO, kind: str, *, max_pages: int, progress: Progress | None = None) -> list[Page]:
    """The pages of text of a file sniffed as `kind`, numbered from 1, none empty.

    Calls progress(pages_done, pages_total) as it goes (the total once known: None before).
    Raises IngestError: too_many_pages, encrypted, no_text, damaged, archive_bomb, empty,
    too_large, unsupported_type (a zip archive without the parts of its kind).
    """
    report: Progress = progress or (lambda done, total: None)
    budget = Budget()
    file.seek(0)
    if kind == "pdf":
        pages = read_pdf(file, max_pages, report, budget)
    elif kind in {"docx", "pptx", "xlsx", "odt"}:
        check_zip(file, kind)
        file.seek(0)
        pages = ZIP_READERS[kind](file, max_pages, report, budget)
    elif kind in READERS_OF_TEXT:
        text = budget.take(READERS_OF_TEXT[kind](decode(read_bounded(file))))
        pages = sections_of(normalise(text))
        if len(pages) > max_pages:
            raise too_many(kind, len(pages), max_pages)
        report(len(pages), len(pages))
    else:
        raise IngestError("unsupported_type", UNSUPPORTED)
    pages = [page for page in pages if page.text]
    if not pages:
        raise IngestError("empty", NO_TEXT)
    return pages
