"""Why a file is not read: IngestError, and the messages it carries to the person.

A refusal that names a limit is made beside its limit (budget.py, archives.py).
"""

from __future__ import annotations

from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _


class IngestError(Exception):
    """A file Assistant will not read: `code` for programs, `message` for the person."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(code)  # the message may be lazy: translated when shown
        self.code = code
        self.message = message


# --- Messages (each says what happened and what to do) -------------------------------------

UNSUPPORTED = _(
    "This file type is not supported. Upload a PDF, Word (DOCX), OpenDocument text (ODT), "
    "PowerPoint (PPTX), Excel (XLSX), CSV, text, Markdown or HTML file."
)
LEGACY_OFFICE = _(
    "Older Office files (DOC, XLS, PPT) are not supported. Save the file as DOCX, XLSX or PPTX "
    "and upload it again."
)
OFFICE_PASSWORD = _(
    "This file is protected with a password. Save a copy without the password and upload that."
)
PDF_PASSWORD = _(
    "This PDF is protected with a password. Save or print a copy without the password and upload that."
)
DAMAGED = _(
    "This file is damaged or incomplete and cannot be read. Check that it opens on your "
    "computer, save it again and upload the new copy."
)
BOMB = _(
    "This file unpacks to far more data than a document holds, so it was not read. If it is a "
    "genuine document, save it again in its office program and upload the new copy."
)
EMPTY_FILE = _("This file is empty.")
NO_TEXT = _("This file contains no text to read.")
PDF_NO_TEXT = _(
    "This PDF has no text layer: it looks like a scan or photos of pages. Assistant does not "
    "recognise text in images (no OCR). Upload a PDF exported from the original document, or "
    "run text recognition (OCR) on it first."
)


def too_many(kind: str, count: int, limit: int) -> IngestError:
    messages = {
        "pptx": gettext("This presentation has %(count)s slides; Assistant reads at most %(limit)s."),
        "xlsx": gettext("This workbook has %(count)s sheets; Assistant reads at most %(limit)s."),
    }
    message = messages.get(
        kind, gettext("This document has %(count)s pages; Assistant reads at most %(limit)s.")
    )
    split = gettext("Split it into smaller files and upload them one by one.")
    return IngestError("too_many_pages", f"{message % {'count': count, 'limit': limit}} {split}")
