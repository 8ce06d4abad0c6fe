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
"""

from __future__ import annotations

import codecs
import contextlib
import csv
import datetime
import io
import re
import struct
import unicodedata
import zipfile
import zlib
from collections.abc import Callable, Iterator
from html.parser import HTMLParser
from pathlib import PurePosixPath
from typing import BinaryIO

from django.utils.formats import number_format
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _

from assistant.documents.chunking import Page, sections_of

__all__ = [
    "IngestError",
    "Page",
    "extract",
    "normalise",
    "page_label",
    "sniff",
]

Progress = Callable[[int, int | None], None]

# Zip archives (OOXML, ODF). A real document's parts inflate a few times to a few dozen
# times their size; zeros, a bomb's payload, a thousand times.
ZIP_MAX_EXPANDED = 200 * 1024 * 1024
ZIP_MAX_RATIO = 100
ZIP_RATIO_FLOOR = 1024 * 1024  # small parts (styles, settings) may compress better
ZIP_MAX_ENTRIES = 10_000
ZIP_MAX_CENTRAL_DIRECTORY = 4 * 1024 * 1024
# Below this many characters a page on average, a PDF is a scan (or pictures of text).
PDF_MIN_CHARS_PER_PAGE = 20
# pypdf's limits, tighter than its defaults (75 MB a stream, 2 million tokens a content
# stream): each stream it inflates and each page's drawing instructions. A dense page of
# text inflates to kilobytes and takes a few thousand tokens; pypdf spends some 50 µs a
# token, so its defaults let one crafted page of a 70 KB file take seconds of CPU.
PDF_LIMITS = {"zlib_maximum_output_length": 20 * 1024 * 1024, "stream_parsing_work_maximum_count": 250_000}
# All the text one document may give (a 2,000-page book has about 5 million characters).
MAX_TEXT_CHARS = 10_000_000
# Cells one workbook may give (each row's empty cells counted too: they cost as much).
MAX_SHEET_CELLS = 5_000_000


class IngestError(Exception):
    """A file Assistant will not read: `code` for programs, `message` for the person."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(code)  # the message may be lazy: translated when shown
        self.code = code
        self.message = message


# --- Messages (each says what happened and what to do) -------------------------------------

_UNSUPPORTED = _(
    "This file type is not supported. Upload a PDF, Word (DOCX), OpenDocument text (ODT), "
    "PowerPoint (PPTX), Excel (XLSX), CSV, text, Markdown or HTML file."
)
_LEGACY_OFFICE = _(
    "Older Office files (DOC, XLS, PPT) are not supported. Save the file as DOCX, XLSX or PPTX "
    "and upload it again."
)
_OFFICE_PASSWORD = _(
    "This file is protected with a password. Save a copy without the password and upload that."
)
_PDF_PASSWORD = _(
    "This PDF is protected with a password. Save or print a copy without the password and upload that."
)
_DAMAGED = _(
    "This file is damaged or incomplete and cannot be read. Check that it opens on your "
    "computer, save it again and upload the new copy."
)
_BOMB = _(
    "This file unpacks to far more data than a document holds, so it was not read. If it is a "
    "genuine document, save it again in its office program and upload the new copy."
)
_EMPTY_FILE = _("This file is empty.")
_NO_TEXT = _("This file contains no text to read.")
_PDF_NO_TEXT = _(
    "This PDF has no text layer: it looks like a scan or photos of pages. Assistant does not "
    "recognise text in images (no OCR). Upload a PDF exported from the original document, or "
    "run text recognition (OCR) on it first."
)


def _too_many(kind: str, count: int, limit: int) -> IngestError:
    messages = {
        "pptx": gettext("This presentation has %(count)s slides; Assistant reads at most %(limit)s."),
        "xlsx": gettext("This workbook has %(count)s sheets; Assistant reads at most %(limit)s."),
    }
    message = messages.get(
        kind, gettext("This document has %(count)s pages; Assistant reads at most %(limit)s.")
    )
    split = gettext("Split it into smaller files and upload them one by one.")
    return IngestError("too_many_pages", f"{message % {'count': count, 'limit': limit}} {split}")


def _too_much_text() -> IngestError:
    return IngestError(
        "too_large",
        gettext(
            "This document holds more text than Assistant reads (at most %(limit)s characters). "
            "Split it into smaller files and upload them one by one."
        )
        % {"limit": number_format(MAX_TEXT_CHARS, force_grouping=True)},
    )


def _too_many_cells() -> IngestError:
    return IngestError(
        "too_large",
        gettext(
            "This workbook has more cells than Assistant reads (at most %(limit)s). "
            "Split it into smaller files and upload them one by one."
        )
        % {"limit": number_format(MAX_SHEET_CELLS, force_grouping=True)},
    )


def page_label(kind: str, number: int) -> str:
    """How a citation names where a passage is: "page 3", "slide 3", "sheet 3", "section 3"."""
    if kind == "pdf":
        return gettext("page %(number)s") % {"number": number}
    if kind == "pptx":
        return gettext("slide %(number)s") % {"number": number}
    if kind == "xlsx":
        return gettext("sheet %(number)s") % {"number": number}
    return gettext("section %(number)s") % {"number": number}


# --- Sniffing --------------------------------------------------------------------------

_EXECUTABLES = (
    b"MZ",  # Windows (PE), DOS
    b"\x7fELF",  # Linux, BSD
    b"\xfe\xed\xfa\xce",  # Mach-O, both byte orders, 32 and 64 bit, and fat binaries
    b"\xfe\xed\xfa\xcf",
    b"\xce\xfa\xed\xfe",
    b"\xcf\xfa\xed\xfe",
    b"\xca\xfe\xba\xbe",
)
_CFB = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"  # OLE2: DOC, XLS, PPT, and password-protected OOXML
_ODF_TEXT = b"application/vnd.oasis.opendocument.text"
_OOXML_FOLDERS = {"word/": "docx", "ppt/": "pptx", "xl/": "xlsx"}
_TEXT_FLAVOURS = {
    ".csv": "csv",
    ".tsv": "csv",
    ".md": "md",
    ".markdown": "md",
    ".html": "html",
    ".htm": "html",
    ".xhtml": "html",
}
# Control characters text may hold: tab, line feed, vertical tab, form feed, carriage
# return, escape (coloured logs). Any other is binary.
_BINARY_CONTROLS = re.compile("[\x00-\x08\x0e-\x1a\x1c-\x1f]")
# Bytes Windows-1252 leaves undefined: never in a text file of that encoding.
_CP1252_UNDEFINED = re.compile(b"[\x81\x8d\x8f\x90\x9d]")


def _extension(name: str) -> str:
    return PurePosixPath(name.replace("\\", "/")).suffix.lower()


def _zip_names_in_head(head: bytes) -> set[str]:
    """The entry names of the local headers within the first bytes of a zip archive."""
    names = set()
    for match in re.finditer(re.escape(b"PK\x03\x04"), head):
        start = match.start()
        if start + 30 > len(head):
            break
        name_length = struct.unpack_from("<H", head, start + 26)[0]
        name = head[start + 30 : start + 30 + name_length]
        if len(name) == name_length:
            names.add(name.decode("cp437"))
    return names


def _sniff_zip(head: bytes, extension: str) -> str:
    # ODF puts its type first, uncompressed: "mimetype" and its content right after.
    if head[30:38] == b"mimetype":
        content = head[38 + struct.unpack_from("<H", head, 28)[0] :]
        if content.startswith(_ODF_TEXT) and not content.startswith(_ODF_TEXT + b"-"):
            return "odt"
        raise IngestError("unsupported_type", _UNSUPPORTED)
    names = _zip_names_in_head(head)
    for folder, kind in _OOXML_FOLDERS.items():
        if any(name.startswith(folder) for name in names):
            return kind
    # Parts in another order (or beyond the head): the extension picks among the zip
    # formats, and extract() checks the parts are there.
    if extension in {".docx", ".pptx", ".xlsx", ".odt"}:
        return extension[1:]
    raise IngestError("unsupported_type", _UNSUPPORTED)


def _looks_like_text(head: bytes) -> bool:
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        decoded = codecs.getincrementaldecoder("utf-16")(errors="strict")
        try:
            text = decoded.decode(head, final=False)
        except UnicodeDecodeError:
            return False
        return not _BINARY_CONTROLS.search(text)
    if b"\0" in head:
        return False
    try:
        text = codecs.getincrementaldecoder("utf-8-sig")(errors="strict").decode(head, final=False)
    except UnicodeDecodeError:
        # Windows-1252: what German Excel and Notepad save CSV and text as by default.
        if _CP1252_UNDEFINED.search(head):
            return False
        text = head.decode("cp1252")
    return not _BINARY_CONTROLS.search(text)


def sniff(head: bytes, name: str) -> str:
    """The kind (Document.Kind) of a file by its first bytes (8 KiB or more); the name's
    extension only picks the text flavour (txt, md, csv, html) of a text file and, for a
    zip archive whose first entries do not tell, which office format it is (extract()
    then checks its parts). Raises IngestError: unsupported_type, encrypted, empty."""
    extension = _extension(name)
    if not head:
        raise IngestError("empty", _EMPTY_FILE)
    if head.startswith(_EXECUTABLES) and not _looks_like_text(head):
        raise IngestError("unsupported_type", _UNSUPPORTED)
    if b"%PDF-" in head[:1024]:
        return "pdf"
    if head.startswith(b"PK\x03\x04"):
        return _sniff_zip(head, extension)
    if head.startswith(_CFB):
        # An encrypted DOCX, XLSX or PPTX is an OLE2 file with an "EncryptedPackage" stream.
        if "EncryptedPackage".encode("utf-16-le") in head or extension in {".docx", ".xlsx", ".pptx"}:
            raise IngestError("encrypted", _OFFICE_PASSWORD)
        raise IngestError("unsupported_type", _LEGACY_OFFICE)
    if head.lstrip().startswith(b"{\\rtf") or not _looks_like_text(head):
        raise IngestError("unsupported_type", _UNSUPPORTED)
    return _TEXT_FLAVOURS.get(extension, "txt")


# --- Text normalisation ------------------------------------------------------------------

_SURROGATES = re.compile("[\ud800-\udfff]")
_LINE_SEPARATORS = re.compile("\r\n|[\r\x0b\x0c\x1c-\x1e\x85\u2028]")
# Controls (but tab and line feed), and what only hides or breaks words: soft hyphen,
# zero-width space and joiners, word joiner, byte order mark.
_INVISIBLE = re.compile("[\x00-\x08\x0e-\x1f\x7f-\x84\x86-\x9f\u00ad\u200b-\u200d\u2060\ufeff]")
_SPACES = re.compile(r"[^\S\n]+")
_WHITESPACE = re.compile(r"\s+")
_BLANK_LINES = re.compile(r"\n{3,}")
# A word broken at a line's end with a hyphen: "Daten-\nschutz". Not before a conjunction
# ("Daten- und Informationsschutz"), where the hyphen stands for a word.
_HYPHENATED = re.compile(r"(\w)-\n(?!(?:und|oder|bzw|sowie|bis|noch|als|and|or|nor|to)\b)(\w)")


def _join_hyphenated(match: re.Match[str]) -> str:
    before, after = match.group(1), match.group(2)
    # A lowercase letter goes on the word ("Daten-\nschutz" -> "Datenschutz"); anything
    # else starts the second part of a compound ("Datenschutz-\nBeauftragte").
    return f"{before}{after}" if before.isalpha() and after.islower() else f"{before}-{after}"


def normalise(text: str, *, join_hyphens: bool = False) -> str:
    """Text as retrieval and prompts want it: NFC, no NULs or invisible characters, lone
    surrogates replaced, every line break a line feed, space runs within a line collapsed,
    at most one blank line in a row; and, for text laid out in lines (PDF), words
    hyphenated at a line's end joined again."""
    text = _SURROGATES.sub("\ufffd", text)
    text = text.replace("\u2029", "\n\n")
    text = _LINE_SEPARATORS.sub("\n", text)
    text = _INVISIBLE.sub("", text)
    text = unicodedata.normalize("NFC", text)
    text = "\n".join(line.strip() for line in _SPACES.sub(" ", text).split("\n"))
    if join_hyphens:
        text = _HYPHENATED.sub(_join_hyphenated, text)
    return _BLANK_LINES.sub("\n\n", text).strip()


class _Budget:
    """The characters a document may still give."""

    def __init__(self) -> None:
        self.left = MAX_TEXT_CHARS

    def take(self, text: str) -> str:
        self.left -= len(text)
        if self.left < 0:
            raise _too_much_text()
        return text


# --- Extraction ----------------------------------------------------------------------------


def extract(file: BinaryIO, kind: str, *, max_pages: int, progress: Progress | None = None) -> list[Page]:
    """The pages of text of a file sniffed as `kind`, numbered from 1, none empty.

    Calls progress(pages_done, pages_total) as it goes (the total once known: None before).
    Raises IngestError: too_many_pages, encrypted, no_text, damaged, archive_bomb, empty,
    too_large, unsupported_type (a zip archive without the parts of its kind).
    """
    report: Progress = progress or (lambda done, total: None)
    budget = _Budget()
    file.seek(0)
    if kind == "pdf":
        pages = _read_pdf(file, max_pages, report, budget)
    elif kind in {"docx", "pptx", "xlsx", "odt"}:
        _check_zip(file, kind)
        file.seek(0)
        pages = _ZIP_READERS[kind](file, max_pages, report, budget)
    elif kind in _READERS_OF_TEXT:
        text = budget.take(_READERS_OF_TEXT[kind](_decode(_read_bounded(file))))
        pages = sections_of(normalise(text))
        if len(pages) > max_pages:
            raise _too_many(kind, len(pages), max_pages)
        report(len(pages), len(pages))
    else:
        raise IngestError("unsupported_type", _UNSUPPORTED)
    pages = [page for page in pages if page.text]
    if not pages:
        raise IngestError("empty", _NO_TEXT)
    return pages


def _read_bounded(file: BinaryIO) -> bytes:
    # A character is at most 4 bytes of UTF-8: more bytes than that are too much text.
    data = file.read(4 * MAX_TEXT_CHARS + 1)
    if len(data) > 4 * MAX_TEXT_CHARS:
        raise _too_much_text()
    return data


# --- PDF ---------------------------------------------------------------------------------


def _read_pdf(file: BinaryIO, max_pages: int, report: Progress, budget: _Budget) -> list[Page]:
    from pypdf import apply_configuration

    # The limits hold for this thread's context only (a context variable).
    with apply_configuration(**PDF_LIMITS):
        return _read_pdf_pages(file, max_pages, report, budget)


def _read_pdf_pages(file: BinaryIO, max_pages: int, report: Progress, budget: _Budget) -> list[Page]:
    from pypdf import PdfReader

    # pypdf raises whatever a hostile or broken file leads it to (its own errors, but also
    # KeyError, TypeError, ValueError, RecursionError, zlib.error...): all mean "damaged".
    try:
        reader = PdfReader(file)
        if reader.is_encrypted and not _decrypted_without_password(reader):
            raise IngestError("encrypted", _PDF_PASSWORD)
        declared = reader.root_object["/Pages"].get_object().get("/Count")
        if isinstance(declared, int) and declared > max_pages:
            raise _too_many("pdf", declared, max_pages)
        total = len(reader.pages)
    except IngestError:
        raise
    except Exception as error:
        raise IngestError("damaged", _DAMAGED) from error
    if total > max_pages:
        raise _too_many("pdf", total, max_pages)
    if total == 0:
        raise IngestError("empty", _NO_TEXT)
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
        raise IngestError("damaged", _DAMAGED)
    if sum(len(_WHITESPACE.sub("", page.text)) for page in pages) < PDF_MIN_CHARS_PER_PAGE * total:
        raise IngestError("no_text", _PDF_NO_TEXT)
    return pages


def _decrypted_without_password(reader) -> bool:
    """Whether a protected PDF opens with the empty user password (its owner password
    restricts printing or copying only): viewers open those without asking."""
    try:
        return bool(reader.decrypt(""))
    except Exception:
        return False


# --- Zip archives (OOXML, ODF) -------------------------------------------------------------

# Parts each kind must have: a zip of another kind sniffed by its extension stops here.
_REQUIRED_PARTS = {
    "docx": ("[Content_Types].xml", "word/"),
    "pptx": ("[Content_Types].xml", "ppt/"),
    "xlsx": ("[Content_Types].xml", "xl/"),
    "odt": ("mimetype", "content.xml"),
}


def _central_directory(file: BinaryIO) -> tuple[int, int]:
    """The entry count and central directory size an archive's end record declares,
    read before zipfile parses the directory (which costs time and memory per entry)."""
    file.seek(0, io.SEEK_END)
    size = file.tell()
    file.seek(max(0, size - 65_557))  # the end record (22 bytes) and the longest comment
    tail = file.read()
    end = tail.rfind(b"PK\x05\x06")
    if end < 0 or end + 22 > len(tail):
        raise IngestError("damaged", _DAMAGED)
    entries, directory_size = struct.unpack_from("<HI", tail, end + 10)
    locator = end - 20
    if (entries == 0xFFFF or directory_size == 0xFFFFFFFF) and tail[locator : locator + 4] == b"PK\x06\x07":
        # Zip64: the real figures are in the Zip64 end record the locator points to.
        file.seek(struct.unpack_from("<Q", tail, locator + 8)[0])
        record = file.read(56)
        if record[:4] != b"PK\x06\x06" or len(record) < 56:
            raise IngestError("damaged", _DAMAGED)
        entries, directory_size = struct.unpack_from("<QQ", record, 32)
    return entries, directory_size


def _check_zip(file: BinaryIO, kind: str) -> None:
    """Refuse an archive that is a bomb, damaged, or not of `kind`, before any library
    opens it: after this, every entry inflates to exactly its declared size."""
    entries, directory_size = _central_directory(file)
    if entries > ZIP_MAX_ENTRIES or directory_size > ZIP_MAX_CENTRAL_DIRECTORY:
        raise IngestError("archive_bomb", _BOMB)
    file.seek(0)
    try:
        archive = zipfile.ZipFile(file)
        infos = archive.infolist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError, ValueError, struct.error) as error:
        raise IngestError("damaged", _DAMAGED) from error
    if len(infos) > ZIP_MAX_ENTRIES:
        raise IngestError("archive_bomb", _BOMB)
    expanded = 0
    for info in infos:
        expanded += info.file_size
        if expanded > ZIP_MAX_EXPANDED or (
            info.file_size > ZIP_RATIO_FLOOR and info.file_size > ZIP_MAX_RATIO * max(info.compress_size, 1)
        ):
            raise IngestError("archive_bomb", _BOMB)
        if info.flag_bits & 0x1:
            raise IngestError("encrypted", _OFFICE_PASSWORD)
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise IngestError("damaged", _DAMAGED)
    names = {info.filename for info in infos}
    marker, folder = _REQUIRED_PARTS[kind]
    if marker not in names or not any(name.startswith(folder) for name in names):
        raise IngestError("unsupported_type", _UNSUPPORTED)
    for info in infos:
        _check_entry(file, info)


def _check_entry(file: BinaryIO, info: zipfile.ZipInfo) -> None:
    """Inflate one entry in bounded steps: more than it declares is a bomb whose headers
    lie (zipfile trusts them and would inflate it whole into memory); less, or another
    checksum, is damage."""
    file.seek(info.header_offset)
    local = file.read(30)
    if len(local) < 30 or local[:4] != b"PK\x03\x04":
        raise IngestError("damaged", _DAMAGED)
    name_length, extra_length = struct.unpack_from("<HH", local, 26)
    file.seek(info.header_offset + 30 + name_length + extra_length)
    left = info.compress_size
    inflater = zlib.decompressobj(-zlib.MAX_WBITS) if info.compress_type == zipfile.ZIP_DEFLATED else None
    produced, crc = 0, 0
    try:
        while left > 0:
            data = file.read(min(left, 1 << 16))
            if not data:
                raise IngestError("damaged", _DAMAGED)
            left -= len(data)
            while data:
                out = inflater.decompress(data, 1 << 20) if inflater else data
                data = inflater.unconsumed_tail if inflater else b""
                produced += len(out)
                if produced > info.file_size:
                    raise IngestError("archive_bomb", _BOMB)
                crc = zlib.crc32(out, crc)
                if inflater and inflater.eof:
                    break
            if inflater and inflater.eof:
                break
    except zlib.error as error:
        raise IngestError("damaged", _DAMAGED) from error
    if produced != info.file_size or crc != info.CRC or (inflater and not inflater.eof):
        raise IngestError("damaged", _DAMAGED)


@contextlib.contextmanager
def _library_errors_as_damage() -> Iterator[None]:
    # The office libraries raise what a broken file leads them to: KeyError for a missing
    # part, lxml's XMLSyntaxError, ValueError, zipfile's errors...: all mean "damaged".
    try:
        yield
    except IngestError:
        raise
    except Exception as error:
        raise IngestError("damaged", _DAMAGED) from error


def _read_docx(file: BinaryIO, max_pages: int, report: Progress, budget: _Budget) -> list[Page]:
    import docx
    from docx.table import Table

    report(0, None)
    blocks = []
    with _library_errors_as_damage():
        for block in docx.Document(file).iter_inner_content():
            if isinstance(block, Table):
                blocks.extend(_table_lines(row.cells for row in block.rows))
            else:
                blocks.append(block.text)
            budget.take(blocks[-1] if blocks else "")
    return _sectioned("docx", "\n\n".join(blocks), max_pages, report)


def _table_lines(rows) -> list[str]:
    """A table's rows as lines of cells (a merged cell, repeated per column, once)."""
    lines = []
    for cells in rows:
        values: list[str] = []
        for cell in cells:
            text = " ".join(cell.text.split())
            if not values or text != values[-1]:
                values.append(text)
        lines.append(" | ".join(values))
    return ["\n".join(lines)]


def _read_odt(file: BinaryIO, max_pages: int, report: Progress, budget: _Budget) -> list[Page]:
    from odfdo import Document

    report(0, None)
    with _library_errors_as_damage():
        document = Document(io.BytesIO(file.read()))
        # Child by child: the document's own formatted text runs a heading into the
        # paragraph after it.
        blocks = [budget.take(child.get_formatted_text()) for child in document.body.children]
    return _sectioned("odt", "\n\n".join(block.strip() for block in blocks), max_pages, report)


def _sectioned(kind: str, text: str, max_pages: int, report: Progress) -> list[Page]:
    pages = sections_of(normalise(text))
    if len(pages) > max_pages:
        raise _too_many(kind, len(pages), max_pages)
    report(len(pages), len(pages))
    return pages


def _read_pptx(file: BinaryIO, max_pages: int, report: Progress, budget: _Budget) -> list[Page]:
    from pptx import Presentation

    with _library_errors_as_damage():
        slides = list(Presentation(file).slides)
        if len(slides) > max_pages:
            raise _too_many("pptx", len(slides), max_pages)
        report(0, len(slides))
        pages = []
        for number, slide in enumerate(slides, start=1):
            blocks = [text for shape in slide.shapes for text in _shape_texts(shape)]
            notes = slide.notes_slide.notes_text_frame if slide.has_notes_slide else None
            if notes is not None:
                blocks.append(notes.text)
            pages.append(Page(number, budget.take(normalise("\n\n".join(blocks)))))
            report(number, len(slides))
    return pages


def _shape_texts(shape) -> Iterator[str]:
    """The text of a slide's shape: its text frame, its table's cells, a group's shapes."""
    from pptx.shapes.graphfrm import GraphicFrame
    from pptx.shapes.group import GroupShape

    if isinstance(shape, GroupShape):
        for child in shape.shapes:
            yield from _shape_texts(child)
    elif isinstance(shape, GraphicFrame):
        if shape.has_table:
            yield from _table_lines(row.cells for row in shape.table.rows)
    elif shape.has_text_frame:
        yield shape.text_frame.text


def _read_xlsx(file: BinaryIO, max_pages: int, report: Progress, budget: _Budget) -> list[Page]:
    from openpyxl import load_workbook

    with _library_errors_as_damage():
        workbook = load_workbook(file, read_only=True, data_only=True)
        try:
            sheets = workbook.worksheets
            if len(sheets) > max_pages:
                raise _too_many("xlsx", len(sheets), max_pages)
            report(0, len(sheets))
            pages, cells = [], 0
            for number, sheet in enumerate(sheets, start=1):
                # The declared dimensions can be anything ("A1:XFD1048576"); read_only
                # would pad every row to them.
                sheet.reset_dimensions()
                lines = [sheet.title]
                for row in sheet.iter_rows(values_only=True):
                    cells += len(row) + 1
                    if cells > MAX_SHEET_CELLS:
                        raise _too_many_cells()
                    values = [text for text in map(_cell_text, row) if text]
                    if values:
                        lines.append(budget.take(" | ".join(values)))
                pages.append(Page(number, normalise("\n".join(lines)) if len(lines) > 1 else ""))
                report(number, len(sheets))
        finally:
            workbook.close()
    return pages


def _cell_text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime.datetime) and value.time() == datetime.time(0):
        return value.date().isoformat()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return " ".join(str(value).split())


_ZIP_READERS = {"docx": _read_docx, "odt": _read_odt, "pptx": _read_pptx, "xlsx": _read_xlsx}


# --- Text formats --------------------------------------------------------------------------


def _decode(data: bytes) -> str:
    """Text by its byte order mark, else UTF-8, else Windows-1252 (what German Office and
    Notepad write). UTF-8 with a few broken bytes stays UTF-8."""
    if data.startswith(codecs.BOM_UTF8):
        return data[3:].decode("utf-8", errors="replace")
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return data.decode("utf-16", errors="replace")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        if re.search(rb"[\xc2-\xf4][\x80-\xbf]", data):
            return data.decode("utf-8", errors="replace")
        return data.decode("cp1252", errors="replace")


def _csv_text(text: str) -> str:
    """Rows as lines of their non-empty cells joined by " | " (the delimiter guessed:
    German Excel writes semicolons); a file the csv module cannot parse is plain text."""
    try:
        dialect = csv.Sniffer().sniff(text[:8192], delimiters=",;\t|")
    except csv.Error:
        dialect = csv.excel
    try:
        lines = []
        for row in csv.reader(io.StringIO(text, newline=""), dialect):
            lines.append(" | ".join(value for value in (" ".join(cell.split()) for cell in row) if value))
    except csv.Error:
        return text
    return "\n".join(lines)


def _tags(names: str) -> frozenset[str]:
    return frozenset(names.split())


# Elements a browser shows as paragraphs (a blank line around them) and as lines.
_PARAGRAPH_TAGS = _tags(
    "address article aside blockquote dl fieldset figure footer form h1 h2 h3 h4 h5 h6 header "
    "main nav ol p pre section table title ul"
)
_LINE_TAGS = _tags("br dd details dialog div dt figcaption hr li summary tr")
_HIDDEN_TAGS = frozenset({"script", "style", "template", "noscript", "svg", "math", "iframe", "object"})


class _HTMLText(HTMLParser):
    """The text a browser shows of a page: no scripts, styles, templates or comments;
    spaces collapsed as a browser does (but in <pre>), a line per block element, a blank
    line around paragraphs and headings, a table's cells joined by " | "."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.hidden = 0
        self.pre = 0
        self.breaks = 2  # line breaks at the end of the text so far (none at its start)
        self.cells = 0  # cells so far in the table row

    def _break(self, count: int) -> None:
        if self.breaks < count:
            self.parts.append("\n" * (count - self.breaks))
            self.breaks = count

    def handle_starttag(self, tag: str, attrs) -> None:
        if tag in _HIDDEN_TAGS:
            self.hidden += 1
        elif tag == "pre":
            self.pre += 1
        if tag in _PARAGRAPH_TAGS:
            self._break(2)
        elif tag in _LINE_TAGS:
            self._break(1)
            self.cells = 0
        elif tag in {"td", "th"}:
            if self.cells:
                self.parts.append(" | ")
                self.breaks = 0
            self.cells += 1

    def handle_endtag(self, tag: str) -> None:
        if tag in _HIDDEN_TAGS:
            self.hidden = max(0, self.hidden - 1)
        elif tag == "pre":
            self.pre = max(0, self.pre - 1)
        if tag in _PARAGRAPH_TAGS:
            self._break(2)
        elif tag in _LINE_TAGS:
            self._break(1)

    def handle_data(self, data: str) -> None:
        if self.hidden:
            return
        if not self.pre:
            data = " ".join(data.split()) if data.strip() else (" " if data and not self.breaks else "")
        if data.strip():
            self.parts.append(data)
            self.breaks = 0
        elif data and not self.breaks:
            self.parts.append(" ")


def _html_text(text: str) -> str:
    parser = _HTMLText()
    parser.feed(text)
    parser.close()
    return "".join(parser.parts)


_READERS_OF_TEXT: dict[str, Callable[[str], str]] = {
    "txt": lambda text: text,
    "md": lambda text: text,
    "csv": _csv_text,
    "html": _html_text,
}
