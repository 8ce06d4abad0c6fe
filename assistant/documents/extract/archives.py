"""Zip archives (OOXML, ODF): the guard every archive passes before a library opens it
(check_zip), then the reader of each kind, DOCX, ODT, PPTX and XLSX (ZIP_READERS)."""

from __future__ import annotations

import contextlib
import datetime
import io
import struct
import zipfile
import zlib
from collections.abc import Iterator
from typing import BinaryIO

from django.utils.formats import number_format
from django.utils.translation import gettext

from assistant.documents.chunking import Page, sections_of
from assistant.documents.extract.budget import Budget, Progress
from assistant.documents.extract.errors import (
    BOMB,
    DAMAGED,
    OFFICE_PASSWORD,
    UNSUPPORTED,
    IngestError,
    too_many,
)
from assistant.documents.extract.text import normalise

# Zip archives (OOXML, ODF). A real document's parts inflate a few times to a few dozen
# times their size; zeros, a bomb's payload, a thousand times.
ZIP_MAX_EXPANDED = 200 * 1024 * 1024
ZIP_MAX_RATIO = 100
ZIP_RATIO_FLOOR = 1024 * 1024  # small parts (styles, settings) may compress better
ZIP_MAX_ENTRIES = 10_000
ZIP_MAX_CENTRAL_DIRECTORY = 4 * 1024 * 1024
# Cells one workbook may give (each row's empty cells counted too: they cost as much).
MAX_SHEET_CELLS = 5_000_000


def _too_many_cells() -> IngestError:
    return IngestError(
        "too_large",
        gettext(
            "This workbook has more cells than Assistant reads (at most %(limit)s). "
            "Split it into smaller files and upload them one by one."
        )
        % {"limit": number_format(MAX_SHEET_CELLS, force_grouping=True)},
    )


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
        raise IngestError("damaged", DAMAGED)
    entries, directory_size = struct.unpack_from("<HI", tail, end + 10)
    locator = end - 20
    if (entries == 0xFFFF or directory_size == 0xFFFFFFFF) and tail[locator : locator + 4] == b"PK\x06\x07":
        # Zip64: the real figures are in the Zip64 end record the locator points to.
        file.seek(struct.unpack_from("<Q", tail, locator + 8)[0])
        record = file.read(56)
        if record[:4] != b"PK\x06\x06" or len(record) < 56:
            raise IngestError("damaged", DAMAGED)
        entries, directory_size = struct.unpack_from("<QQ", record, 32)
    return entries, directory_size


def check_zip(file: BinaryIO, kind: str) -> None:
    """Refuse an archive that is a bomb, damaged, or not of `kind`, before any library
    opens it: after this, every entry inflates to exactly its declared size."""
    entries, directory_size = _central_directory(file)
    if entries > ZIP_MAX_ENTRIES or directory_size > ZIP_MAX_CENTRAL_DIRECTORY:
        raise IngestError("archive_bomb", BOMB)
    file.seek(0)
    try:
        archive = zipfile.ZipFile(file)
        infos = archive.infolist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError, ValueError, struct.error) as error:
        raise IngestError("damaged", DAMAGED) from error
    if len(infos) > ZIP_MAX_ENTRIES:
        raise IngestError("archive_bomb", BOMB)
    expanded = 0
    for info in infos:
        expanded += info.file_size
        if expanded > ZIP_MAX_EXPANDED or (
            info.file_size > ZIP_RATIO_FLOOR and info.file_size > ZIP_MAX_RATIO * max(info.compress_size, 1)
        ):
            raise IngestError("archive_bomb", BOMB)
        if info.flag_bits & 0x1:
            raise IngestError("encrypted", OFFICE_PASSWORD)
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise IngestError("damaged", DAMAGED)
    names = {info.filename for info in infos}
    marker, folder = _REQUIRED_PARTS[kind]
    if marker not in names or not any(name.startswith(folder) for name in names):
        raise IngestError("unsupported_type", UNSUPPORTED)
    for info in infos:
        _check_entry(file, info)


def _check_entry(file: BinaryIO, info: zipfile.ZipInfo) -> None:
    """Inflate one entry in bounded steps: more than it declares is a bomb whose headers
    lie (zipfile trusts them and would inflate it whole into memory); less, or another
    checksum, is damage."""
    file.seek(info.header_offset)
    local = file.read(30)
    if len(local) < 30 or local[:4] != b"PK\x03\x04":
        raise IngestError("damaged", DAMAGED)
    name_length, extra_length = struct.unpack_from("<HH", local, 26)
    file.seek(info.header_offset + 30 + name_length + extra_length)
    left = info.compress_size
    inflater = zlib.decompressobj(-zlib.MAX_WBITS) if info.compress_type == zipfile.ZIP_DEFLATED else None
    produced, crc = 0, 0
    try:
        while left > 0:
            data = file.read(min(left, 1 << 16))
            if not data:
                raise IngestError("damaged", DAMAGED)
            left -= len(data)
            while data:
                out = inflater.decompress(data, 1 << 20) if inflater else data
                data = inflater.unconsumed_tail if inflater else b""
                produced += len(out)
                if produced > info.file_size:
                    raise IngestError("archive_bomb", BOMB)
                crc = zlib.crc32(out, crc)
                if inflater and inflater.eof:
                    break
            if inflater and inflater.eof:
                break
    except zlib.error as error:
        raise IngestError("damaged", DAMAGED) from error
    if produced != info.file_size or crc != info.CRC or (inflater and not inflater.eof):
        raise IngestError("damaged", DAMAGED)


@contextlib.contextmanager
def _library_errors_as_damage() -> Iterator[None]:
    # The office libraries raise what a broken file leads them to: KeyError for a missing
    # part, lxml's XMLSyntaxError, ValueError, zipfile's errors...: all mean "damaged".
    try:
        yield
    except IngestError:
        raise
    except Exception as error:
        raise IngestError("damaged", DAMAGED) from error


def _read_docx(file: BinaryIO, max_pages: int, report: Progress, budget: Budget) -> list[Page]:
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


def _read_odt(file: BinaryIO, max_pages: int, report: Progress, budget: Budget) -> list[Page]:
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
        raise too_many(kind, len(pages), max_pages)
    report(len(pages), len(pages))
    return pages


def _read_pptx(file: BinaryIO, max_pages: int, report: Progress, budget: Budget) -> list[Page]:
    from pptx import Presentation

    with _library_errors_as_damage():
        slides = list(Presentation(file).slides)
        if len(slides) > max_pages:
            raise too_many("pptx", len(slides), max_pages)
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


def _read_xlsx(file: BinaryIO, max_pages: int, report: Progress, budget: Budget) -> list[Page]:
    from openpyxl import load_workbook

    with _library_errors_as_damage():
        workbook = load_workbook(file, read_only=True, data_only=True)
        try:
            sheets = workbook.worksheets
            if len(sheets) > max_pages:
                raise too_many("xlsx", len(sheets), max_pages)
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


ZIP_READERS = {"docx": _read_docx, "odt": _read_odt, "pptx": _read_pptx, "xlsx": _read_xlsx}
