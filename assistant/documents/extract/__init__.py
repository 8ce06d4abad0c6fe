"""The text of an uploaded file, page by page, or a clear refusal: sniff, then extract.

`sniff(head, name)` names the kind by the bytes (the extension only tells text flavours
apart); `extract(file, kind, max_pages=...)` returns the pages of text. Uploaded files are
untrusted, so every step is bounded before a library sees the file:

- PDF (pypdf, pure Python): a password-protected PDF is refused (one that opens with an
  empty password, as viewers open it without asking, is read); the page count is checked
  against the limit before a page is read, the declared one first, so a 10,000-page file
  is refused at once; a PDF whose pages give almost no text is a scan, and says so (no
  OCR). pypdf's own limits bound every stream it inflates.
- DOCX, PPTX, XLSX, ODT (python-docx, python-pptx, openpyxl, odfdo) are zip archives:
  the entry count and the central directory's size are read from the archive's end, the
  declared sizes are added up and each entry's compression ratio is checked, and every
  entry is inflated once here, in bounded steps, to prove it holds exactly what it
  declares: the libraries then read each entry whole, trusting those headers.
- Spreadsheets stream (openpyxl read-only) under a cell budget; all text under a
  character budget.

Pages: a PDF page, a slide, a sheet; formats without pages are cut into sections
(chunking.sections_of). Text is normalised the same for every format (normalise).

Along the way:

    errors.py     IngestError and the messages of the refusals
    sniffing.py   the kind of a file by its first bytes: sniff()
    reading.py    extract(): the reader of each kind, the pages it gives; page_label()
    budget.py     what every reader is handed: whom to tell its progress, the characters left
    pdf.py        PDF pages (pypdf), under tighter limits than pypdf's own
    archives.py   the zip guard, then the DOCX, ODT, PPTX and XLSX readers
    text.py       normalise(), and the text formats: plain text, Markdown, CSV, HTML
"""

from assistant.documents.chunking import Page
from assistant.documents.extract.errors import IngestError
from assistant.documents.extract.reading import extract, page_label
from assistant.documents.extract.sniffing import sniff
from assistant.documents.extract.text import normalise

__all__ = [
    "IngestError",
    "Page",
    "extract",
    "normalise",
    "page_label",
    "sniff",
]
