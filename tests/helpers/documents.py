"""Sample files for the document tests, built in memory: every format Assistant reads, with
German text, and every kind of bad input it must refuse.

Each builder returns the file's bytes. The good ones carry umlauts and ß so a test sees
the text come out intact; page-like units (PDF pages, slides, sheets) carry their number
("Seite 3") so a test sees it come out on the right page. The bad ones are small: the
zip bomb is a few hundred kilobytes that declare hundreds of megabytes, the 10,000-page
PDF is a hand-written page tree of under a megabyte.

fpdf2 writes the PDFs (a dev requirement); python-docx, odfdo, python-pptx and openpyxl,
which read the formats at run time, write them too.
"""

from __future__ import annotations

import contextlib
import csv
import functools
import io
import json
import logging
import signal
import struct
import subprocess
import sys
import zipfile
from collections.abc import Iterator, Sequence
from pathlib import Path

# German with every umlaut, ß and typographic quotes: what must survive extraction.
# (Latin-1 only, so PDFs can carry it in a core font too.)
UMLAUTS = "Größenänderung der übermäßigen Prüfungsbögen: »Äußerst schön«, sagte Jürgen."

# Debian's fonts-dejavu-core, in the machines' base image: a PDF with an embedded subset
# font and a ToUnicode map, as office suites export them. Without it, a core font.
DEJAVU = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")


def page_text(number: int) -> str:
    """The text a sample page, slide or sheet carries: its number and the umlauts."""
    return f"Seite {number}. {UMLAUTS} Die Kündigungsfrist beträgt {number} Monate."


def german_paragraphs(count: int, *, words: int = 60) -> list[str]:
    """Paragraphs of plausible German prose, each numbered so a test can find it."""
    sentence = (
        "Der Arbeitgeber prüft die Überstunden monatlich und übermittelt das Ergebnis "
        "an die Personalabteilung, die es fristgerecht dokumentiert."
    )
    paragraphs = []
    for n in range(1, count + 1):
        body = []
        while len(" ".join(body).split()) < words:
            body.append(sentence)
        paragraphs.append(f"Absatz {n}: Größe und Maß. " + " ".join(body))
    return paragraphs


# --- PDF -------------------------------------------------------------------------------


def text_pdf(pages: int | Sequence[str] = 3, *, core_font: bool = False) -> bytes:
    """A PDF with a text layer: one page per text (or `pages` pages of page_text(n)), in
    DejaVu Sans embedded (or Helvetica, a core font with WinAnsi encoding)."""
    texts = [page_text(n) for n in range(1, pages + 1)] if isinstance(pages, int) else pages
    return _text_pdf(tuple(texts), core_font)


@functools.cache  # embedding the font costs a few tenths of a second
def _text_pdf(texts: tuple[str, ...], core_font: bool) -> bytes:
    from fpdf import FPDF

    logging.getLogger("fontTools").setLevel(logging.WARNING)  # a line per table it subsets
    pdf = FPDF(format="A4")
    pdf.set_auto_page_break(auto=False)
    font = "Helvetica"
    if not core_font and DEJAVU.exists():
        pdf.add_font("DejaVu", fname=str(DEJAVU))
        font = "DejaVu"
    for text in texts:
        pdf.add_page()
        pdf.set_font(font, size=11)
        pdf.multi_cell(0, 5, text)
    return bytes(pdf.output())


def scanned_pdf(pages: int = 2) -> bytes:
    """A PDF as a scanner makes it: each page one image, no text layer at all."""
    from fpdf import FPDF
    from PIL import Image, ImageDraw

    image = Image.new("L", (400, 560), 255)
    draw = ImageDraw.Draw(image)
    for y in range(40, 520, 24):
        draw.rectangle((40, y, 360, y + 10), fill=0)  # lines of "text" as a scan shows them
    pdf = FPDF(format="A4")
    for _ in range(pages):
        pdf.add_page()
        pdf.image(image, x=10, y=10, w=190)
    return bytes(pdf.output())


def encrypted_pdf(user_password: str) -> bytes:
    """A text PDF encrypted with AES-256. With user_password="" any reader opens it (only
    the owner's permissions are restricted), as PDF viewers do without asking."""
    from pypdf import PdfReader, PdfWriter

    owner_password = "Eigentümer"
    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(text_pdf(2))))
    writer.encrypt(user_password=user_password, owner_password=owner_password, algorithm="AES-256")
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def _pdf_from_objects(objects: Sequence[bytes]) -> bytes:
    """A PDF file of the given objects (numbered from 1; object 1 is the catalog), with a
    correct cross-reference table."""
    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(out)


def many_pages_pdf(count: int = 10_000, *, declared: int | None = None) -> bytes:
    """A PDF of `count` blank pages (under a megabyte for 10,000). Its page tree declares
    `declared` pages (default: the truth): a lying /Count must not get past the limit."""
    first_page = 3
    kids = b" ".join(b"%d 0 R" % (first_page + i) for i in range(count))
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Count %d /Kids [%s] >>" % (count if declared is None else declared, kids),
    ]
    objects += [b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] >>"] * count
    return _pdf_from_objects(objects)


def pdf_drawing(content: bytes) -> bytes:
    """A one-page PDF whose page draws `content` (its content stream, deflated): a few
    kilobytes can inflate to megabytes of instructions."""
    import zlib

    deflated = zlib.compress(content, 9)
    return _pdf_from_objects(
        [
            b"<< /Type /Catalog /Pages 2 0 R >>",
            b"<< /Type /Pages /Count 1 /Kids [3 0 R] >>",
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Contents 4 0 R "
            b"/Resources << /Font << /F1 5 0 R >> >> >>",
            b"<< /Length %d /Filter /FlateDecode >>\nstream\n%s\nendstream" % (len(deflated), deflated),
            b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
        ]
    )


def truncated(data: bytes, *, keep: float = 0.5) -> bytes:
    """The first part of a file, as an interrupted download or copy leaves it."""
    return data[: int(len(data) * keep)]


# --- Office formats --------------------------------------------------------------------


def docx(paragraphs: Sequence[str] = (), *, table: Sequence[Sequence[str]] = ()) -> bytes:
    """A Word document: a heading, the paragraphs (default: one with the umlauts), a table."""
    import docx as python_docx

    document = python_docx.Document()
    document.add_heading("Richtlinie für Überstunden", level=1)
    for text in paragraphs or [UMLAUTS]:
        document.add_paragraph(text)
    if table:
        grid = document.add_table(rows=len(table), cols=len(table[0]))
        for r, row in enumerate(table):
            for c, value in enumerate(row):
                grid.cell(r, c).text = value
    out = io.BytesIO()
    document.save(out)
    return out.getvalue()


def odt(paragraphs: Sequence[str] = ()) -> bytes:
    """An OpenDocument text: a heading and the paragraphs (default: one with the umlauts)."""
    from odfdo import Document, Header, Paragraph

    document = Document("text")
    body = document.body
    body.clear()
    body.append(Header(1, "Richtlinie für Überstunden"))
    for text in paragraphs or [UMLAUTS]:
        body.append(Paragraph(text))
    out = io.BytesIO()
    document.save(out)
    return out.getvalue()


def pptx(slides: int | Sequence[str] = 3) -> bytes:
    """A presentation: one slide per text (or `slides` slides of page_text(n)), each with
    a title and a body, and speaker notes on the first."""
    from pptx import Presentation

    texts = [page_text(n) for n in range(1, slides + 1)] if isinstance(slides, int) else list(slides)
    presentation = Presentation()
    layout = presentation.slide_layouts[1]  # title and content
    for n, text in enumerate(texts, start=1):
        slide = presentation.slides.add_slide(layout)
        slide.shapes.title.text = f"Folie {n}: Übersicht"
        slide.placeholders[1].text = text
        if n == 1:
            slide.notes_slide.notes_text_frame.text = "Notiz: Bitte die Fußnoten prüfen."
    out = io.BytesIO()
    presentation.save(out)
    return out.getvalue()


def xlsx(sheets: int = 2, *, rows: int = 3) -> bytes:
    """A workbook of `sheets` sheets ("Blatt 1", ...), each with a header row and `rows`
    rows of German text, numbers and a formula (whose cached value is what a reader sees)."""
    from openpyxl import Workbook

    workbook = Workbook()
    workbook.remove(workbook.active)
    for s in range(1, sheets + 1):
        sheet = workbook.create_sheet(f"Blatt {s}")
        sheet.append(["Straße", "Größe", "Preis (€)"])
        for r in range(1, rows + 1):
            sheet.append([f"Hauptstraße {r}", f"Seite {s} Übergröße {r}", r * 10.5])
        sheet.append(["Summe", "", f"=SUM(C2:C{rows + 1})"])
    out = io.BytesIO()
    workbook.save(out)
    return out.getvalue()


# --- Text formats ----------------------------------------------------------------------


def csv_bytes(
    rows: Sequence[Sequence[str]] | None = None, *, delimiter: str = ",", encoding: str = "utf-8"
) -> bytes:
    """A CSV file (German Excel writes `;` and cp1252)."""
    rows = rows or [
        ["Name", "Straße", "Ort"],
        ["Jürgen Müller", "Hauptstraße 5", "Köln"],
        ["Ärzte", "Ölweg 1", "Süd"],
    ]
    out = io.StringIO()
    csv.writer(out, delimiter=delimiter, lineterminator="\r\n").writerows(rows)
    return out.getvalue().encode(encoding)


def txt(text: str = UMLAUTS, *, encoding: str = "utf-8") -> bytes:
    return text.encode(encoding)


def markdown() -> bytes:
    return f"# Überschrift\n\n{UMLAUTS}\n\n- Punkt eins: Größe\n- Punkt zwei: Maß\n".encode()


def html_with_scripts() -> bytes:
    """A web page whose script, style and comments must not come out as text."""
    return (
        "<!doctype html><html><head><title>Übersicht</title>"
        "<style>body { color: red; } .geheim { display: none }</style>"
        "<script>var geheim = 'Skriptinhalt';</script></head>"
        f"<body><h1>Willkommen</h1><p>{UMLAUTS}</p>"
        "<!-- Kommentar: nicht zeigen -->"
        "<p>Zweiter Absatz mit &auml;, &#252; und &szlig;.</p>"
        "<script type='module'>document.write('Skriptinhalt')</script>"
        "<ul><li>Eins</li><li>Zwei</li></ul></body></html>"
    ).encode()


# --- Archives that lie -----------------------------------------------------------------


@functools.cache
def ooxml_bomb(*, expanded_mb: int = 300) -> bytes:
    """A DOCX with one more part whose zeros expand to `expanded_mb` megabytes: a few
    hundred kilobytes on disk (deflate's ratio is about 1000:1 on zeros)."""
    base = zipfile.ZipFile(io.BytesIO(docx()))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as bomb:
        for info in base.infolist():
            bomb.writestr(info, base.read(info))
        with bomb.open("word/media/image1.bin", "w", force_zip64=True) as entry:
            block = bytes(1 << 20)
            for _ in range(expanded_mb):
                entry.write(block)
    return out.getvalue()


def ooxml_dense_entry() -> bytes:
    """A DOCX whose extra part is small on disk but compresses 1000:1 (a few megabytes of
    zeros): no real document part does that, a bomb's building block does."""
    return ooxml_bomb(expanded_mb=4)


def with_lying_sizes(data: bytes, member: str, *, declared: int = 1000) -> bytes:
    """The zip `data` with `member`'s uncompressed size declared as `declared` bytes in
    both its local and its central header: a reader trusting the headers is fooled."""
    out = bytearray(data)
    archive = zipfile.ZipFile(io.BytesIO(data))
    info = archive.getinfo(member)
    # Local header: uncompressed size at offset 22.
    struct.pack_into("<I", out, info.header_offset + 22, declared)
    # Central directory: find this member's record by its name and header offset.
    start = archive.start_dir
    while True:
        start = out.index(b"PK\x01\x02", start)
        name_length = struct.unpack_from("<H", out, start + 28)[0]
        name = bytes(out[start + 46 : start + 46 + name_length]).decode()
        if name == member:
            struct.pack_into("<I", out, start + 24, declared)
            return bytes(out)
        start += 46


def lying_bomb() -> bytes:
    """A DOCX whose word/document.xml declares a kilobyte but inflates to megabytes."""
    base = zipfile.ZipFile(io.BytesIO(docx()))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        for info in base.infolist():
            if info.filename == "word/document.xml":
                archive.writestr(info.filename, base.read(info) + b" " * (64 << 20))
            else:
                archive.writestr(info, base.read(info))
    return with_lying_sizes(out.getvalue(), "word/document.xml")


def xml_entity_bomb() -> bytes:
    """A DOCX whose document.xml declares nested entities ("billion laughs")."""
    base = zipfile.ZipFile(io.BytesIO(docx()))
    lol = (
        b'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
        b'<!DOCTYPE w:document [<!ENTITY a "Hahaha">'
        + b"".join(
            b'<!ENTITY %s "%s">' % (bytes([98 + i]), (b"&%s;" % bytes([97 + i])) * 10) for i in range(9)
        )
        + b"]>"
        b'<w:document xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main">'
        b"<w:body><w:p><w:r><w:t>&j;</w:t></w:r></w:p></w:body></w:document>"
    )
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        for info in base.infolist():
            archive.writestr(info.filename, lol if info.filename == "word/document.xml" else base.read(info))
    return out.getvalue()


# --- Not documents at all ----------------------------------------------------------------


def elf_executable() -> bytes:
    """The start of a 64-bit Linux executable (an ELF header), as renamed to report.pdf."""
    header = b"\x7fELF\x02\x01\x01" + bytes(9) + struct.pack("<HHI", 2, 0x3E, 1)
    return header + bytes(4096 - len(header))


def pe_executable() -> bytes:
    """The start of a Windows executable (DOS stub and PE header), as renamed to a .pdf."""
    stub = bytearray(b"MZ" + bytes(0x3A) + struct.pack("<I", 0x80))
    stub += b"This program cannot be run in DOS mode.\r\r\n$".ljust(0x80 - len(stub), b"\0")
    return bytes(stub) + b"PE\0\0" + bytes(4096)


def sparse_xlsx(rows: int = 1000) -> bytes:
    """A workbook of `rows` rows, each with one cell in the last column (XFD): a reader
    padding every row to its width makes 16,384 cells of each."""
    from openpyxl import Workbook

    workbook = Workbook()
    sheet = workbook.active
    for row in range(1, rows + 1):
        sheet.cell(row=row, column=16_384, value="x")
    out = io.BytesIO()
    workbook.save(out)
    return out.getvalue()


def zip_of_many_entries(count: int = 10_001) -> bytes:
    """A DOCX padded with `count` empty entries."""
    base = zipfile.ZipFile(io.BytesIO(docx()))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        for info in base.infolist():
            archive.writestr(info, base.read(info))
        for n in range(count):
            archive.writestr(f"padding/{n}.xml", b"")
    return out.getvalue()


# --- Running hostile input --------------------------------------------------------------


class Hung(BaseException):
    """Extraction ran past its deadline. A BaseException, like KeyboardInterrupt: the
    readers turn every Exception of a library into "damaged", and would hide it."""


@contextlib.contextmanager
def deadline(seconds: float) -> Iterator[None]:
    """Raise Hung in the block after `seconds` (main thread only): a hang fails the test
    instead of stalling the run. A guard, not a measurement."""

    def expire(signum, frame):
        raise Hung(f"still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


_MEASURE = """
import importlib, io, json, re, sys
from django.conf import settings
settings.configure()  # the messages stay untranslated: only the code is looked at
from assistant.documents.extract import IngestError, extract
# The kind's library imported before the baseline: its code is not the file's cost.
libraries = {"docx": "docx", "odt": "odfdo", "pptx": "pptx", "xlsx": "openpyxl"}
importlib.import_module(libraries.get(sys.argv[1], "pypdf"))


def peak_kib():
    status = open("/proc/self/status").read()
    return int(re.search(r"VmHWM:\\s+(\\d+)", status).group(1))


data = sys.stdin.buffer.read()
before = peak_kib()
try:
    extract(io.BytesIO(data), sys.argv[1], max_pages=2000)
    code = None
except IngestError as error:
    code = error.code
print(json.dumps({"code": code, "grown_kib": peak_kib() - before}))
"""


def extract_in_child(data: bytes, kind: str, *, timeout: float = 30) -> dict:
    """extract() of `data` in a fresh Python process: its error code and how far its peak
    resident memory grew meanwhile (KiB). The peak is the process's own (VmHWM, Linux):
    getrusage's ru_maxrss carries the parent's peak over fork and exec, so a large test
    process would hide the child's growth."""
    result = subprocess.run(
        [sys.executable, "-c", _MEASURE, kind],
        input=data,
        capture_output=True,
        timeout=timeout,
        check=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    return json.loads(result.stdout.decode().strip().splitlines()[-1])
