"""Text extraction and chunking (assistant/documents/extract/, chunking.py): every format
Assistant reads gives its German text on the right pages; every bad file is refused with
its code and a sentence for the person, quickly and in bounded memory."""

from __future__ import annotations

import io
import itertools
import re
import zipfile

import pytest
from django.utils import translation

from assistant.documents.chunking import OVERLAP, PASSAGE_MAX, PASSAGE_MIN, SECTION_CHARS, Page, chunks_of
from assistant.documents.extract import IngestError, extract, normalise, page_label, sniff
from assistant.documents.extract import budget as extract_module
from tests.helpers import documents as samples

SNIFF_BYTES = 8192  # what the upload shows sniff() (assistant/documents/ingest.py)


def read(data: bytes, name: str, *, max_pages: int = 2000) -> tuple[str, list[Page], list[tuple]]:
    """The kind, pages and progress calls of a file as an upload is read."""
    kind = sniff(data[:SNIFF_BYTES], name)
    calls: list[tuple] = []
    with samples.deadline(10):
        pages = extract(
            io.BytesIO(data),
            kind,
            max_pages=max_pages,
            progress=lambda done, total: calls.append((done, total)),
        )
    return kind, pages, calls


def refusal(data: bytes, name: str, *, max_pages: int = 2000) -> IngestError:
    with pytest.raises(IngestError) as raised:
        read(data, name, max_pages=max_pages)
    assert str(raised.value.message)  # a sentence for the person, never empty
    return raised.value


# --- Every format: its text, umlauts intact, on the right page -------------------------------


@pytest.mark.parametrize("core_font", [False, True], ids=["embedded-font", "core-font"])
def test_pdf_gives_each_page_its_text(core_font):
    kind, pages, calls = read(samples.text_pdf(3, core_font=core_font), "Vertrag.pdf")

    assert kind == "pdf"
    assert [page.number for page in pages] == [1, 2, 3]
    for page in pages:
        assert page.text.startswith(f"Seite {page.number}. {samples.UMLAUTS}")
    assert calls == [(0, 3), (1, 3), (2, 3), (3, 3)]


def test_docx_gives_paragraphs_and_table_rows():
    data = samples.docx(
        ["Erster Absatz über Größe.", "Zweiter Absatz: Maß und Übel."],
        table=[["Kopf", "Wert"], ["Größe", "5"]],
    )

    kind, pages, calls = read(data, "Richtlinie.docx")

    assert kind == "docx"
    assert [page.number for page in pages] == [1]
    assert pages[0].text == (
        "Richtlinie für Überstunden\n\nErster Absatz über Größe.\n\nZweiter Absatz: Maß und Übel.\n\n"
        "Kopf | Wert\nGröße | 5"
    )
    assert calls[-1] == (1, 1)


def test_odt_gives_heading_and_paragraphs_apart():
    kind, pages, _calls = read(samples.odt(["Erster Absatz über Größe.", "Zweiter: Maß."]), "Richtlinie.odt")

    assert kind == "odt"
    assert pages == [Page(1, "Richtlinie für Überstunden\n\nErster Absatz über Größe.\n\nZweiter: Maß.")]


def test_pptx_gives_each_slide_as_a_page_with_its_notes():
    kind, pages, calls = read(samples.pptx(3), "Vortrag.pptx")

    assert kind == "pptx"
    assert [page.number for page in pages] == [1, 2, 3]
    for page in pages:
        assert page.text.startswith(f"Folie {page.number}: Übersicht\n\n{samples.page_text(page.number)}")
    assert pages[0].text.endswith("Notiz: Bitte die Fußnoten prüfen.")
    assert "Notiz" not in pages[1].text
    assert calls == [(0, 3), (1, 3), (2, 3), (3, 3)]


def test_xlsx_gives_each_sheet_as_a_page_of_rows():
    kind, pages, calls = read(samples.xlsx(2, rows=2), "Zahlen.xlsx")

    assert kind == "xlsx"
    assert pages[1] == Page(
        2,
        "Blatt 2\nStraße | Größe | Preis (€)\nHauptstraße 1 | Seite 2 Übergröße 1 | 10.5\n"
        "Hauptstraße 2 | Seite 2 Übergröße 2 | 21\nSumme",  # a formula never calculated has no value
    )
    assert pages[0].text.startswith("Blatt 1\n")
    assert calls == [(0, 2), (1, 2), (2, 2)]


@pytest.mark.parametrize(
    ("data", "name"),
    [
        (samples.csv_bytes(), "Adressen.csv"),
        (samples.csv_bytes(delimiter=";", encoding="cp1252"), "Adressen.csv"),  # German Excel's own
        (samples.csv_bytes(delimiter="\t", encoding="utf-8-sig"), "Adressen.tsv"),
    ],
    ids=["comma-utf8", "semicolon-cp1252", "tab-bom"],
)
def test_csv_gives_rows_of_cells(data, name):
    kind, pages, _calls = read(data, name)

    assert kind == "csv"
    assert pages == [
        Page(1, "Name | Straße | Ort\nJürgen Müller | Hauptstraße 5 | Köln\nÄrzte | Ölweg 1 | Süd")
    ]


@pytest.mark.parametrize(
    "encoding", ["utf-8", "utf-8-sig", "utf-16", "cp1252"], ids=["utf8", "utf8-bom", "utf16-bom", "cp1252"]
)
def test_text_in_each_encoding_windows_writes(encoding):
    kind, pages, _calls = read(samples.txt(encoding=encoding), "notiz.txt")

    assert kind == "txt"
    assert pages == [Page(1, samples.UMLAUTS)]


def test_markdown_keeps_its_markup():
    kind, pages, _calls = read(samples.markdown(), "LIESMICH.md")

    assert kind == "md"
    assert pages[0].text.startswith(f"# Überschrift\n\n{samples.UMLAUTS}\n\n- Punkt eins: Größe")


def test_html_gives_what_a_browser_shows_without_scripts_styles_or_comments():
    kind, pages, _calls = read(samples.html_with_scripts(), "seite.html")

    assert kind == "html"
    text = pages[0].text
    assert text == (
        f"Übersicht\n\nWillkommen\n\n{samples.UMLAUTS}\n\nZweiter Absatz mit ä, ü und ß.\n\nEins\nZwei"
    )
    for hidden in ("Skriptinhalt", "geheim", "color", "Kommentar"):
        assert hidden not in text


def test_long_text_without_pages_is_cut_into_sections_at_paragraphs():
    paragraphs = samples.german_paragraphs(30)
    data = samples.docx(paragraphs)

    _kind, pages, calls = read(data, "lang.docx")

    assert len(pages) > 3
    assert [page.number for page in pages] == list(range(1, len(pages) + 1))
    assert all(len(page.text) <= SECTION_CHARS for page in pages)
    # Each paragraph whole in one section, in order.
    text = "\n\n".join(page.text for page in pages)
    assert text == "\n\n".join(["Richtlinie für Überstunden", *paragraphs])
    assert calls[-1] == (len(pages), len(pages))


@pytest.mark.parametrize(
    ("kind", "number", "label"),
    [
        ("pdf", 3, "page 3"),
        ("pptx", 3, "slide 3"),
        ("xlsx", 2, "sheet 2"),
        ("docx", 4, "section 4"),
        ("txt", 1, "section 1"),
    ],
)
def test_page_label_names_the_unit_of_each_kind(kind, number, label):
    with translation.override("en"):
        assert page_label(kind, number) == label


# --- Sniffing: by content, whatever the name ----------------------------------------------


@pytest.mark.parametrize(
    ("build", "kind"),
    [
        (lambda: samples.text_pdf(1), "pdf"),
        (samples.docx, "docx"),
        (samples.odt, "odt"),
        (lambda: samples.pptx(1), "pptx"),
        (lambda: samples.xlsx(1), "xlsx"),
    ],
    ids=["pdf", "docx", "odt", "pptx", "xlsx"],
)
@pytest.mark.parametrize("name", ["upload.bin", "bericht.txt", "ohne-endung"])
def test_sniff_knows_each_format_by_its_bytes(build, kind, name):
    assert sniff(build()[:SNIFF_BYTES], name) == kind


@pytest.mark.parametrize(
    ("name", "kind"),
    [("a.txt", "txt"), ("a.log", "txt"), ("a", "txt"), ("A.CSV", "csv"), ("a.md", "md"), ("a.HTM", "html")],
)
def test_sniff_lets_the_extension_choose_only_the_text_flavour(name, kind):
    # An .html whose content is plain text is still read as HTML: nothing is lost by that.
    assert sniff(samples.txt(), name) == kind


def test_sniff_takes_the_office_format_from_the_extension_when_the_head_does_not_tell():
    # LibreOffice and others write the parts in other orders: the first 8 KiB may show no
    # word/ part. A big first entry pushes them all out of the head.
    source = zipfile.ZipFile(io.BytesIO(samples.docx()))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("docProps/vorschau.bin", bytes(range(256)) * 64)  # stored, 16 KiB
        for info in source.infolist():
            archive.writestr(info.filename, source.read(info), zipfile.ZIP_DEFLATED)
    data = out.getvalue()

    kind, pages, _calls = read(data, "Richtlinie.docx")

    assert kind == "docx"
    assert samples.UMLAUTS in pages[0].text
    # Named otherwise, it is a zip of unknown kind.
    assert refusal(data, "Richtlinie.zip").code == "unsupported_type"


def test_a_zip_named_docx_without_word_parts_is_refused_when_read():
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("bild.png", b"\x89PNG")

    assert refusal(out.getvalue(), "Bericht.docx").code == "unsupported_type"


def test_a_presentation_read_as_word_document_is_refused():
    with pytest.raises(IngestError) as raised:
        extract(io.BytesIO(samples.pptx(1)), "docx", max_pages=10)

    assert raised.value.code == "unsupported_type"


@pytest.mark.parametrize("build", [samples.elf_executable, samples.pe_executable], ids=["elf", "pe"])
@pytest.mark.parametrize("name", ["Rechnung.pdf", "notiz.txt", "Bericht.docx"])
def test_an_executable_is_refused_whatever_its_name(build, name):
    error = refusal(build(), name)

    assert error.code == "unsupported_type"
    assert "PDF" in str(error.message)  # says what is supported


def test_an_executable_read_as_pdf_anyway_is_damaged():
    # If the sniffing were skipped, the PDF reader still refuses it.
    with pytest.raises(IngestError) as raised:
        extract(io.BytesIO(samples.elf_executable()), "pdf", max_pages=10)

    assert raised.value.code == "damaged"


@pytest.mark.parametrize(
    "head",
    [
        b"\x89PNG\r\n\x1a\n" + bytes(100),
        b"\xff\xd8\xff\xe0\x00\x10JFIF\x00",
        b"GIF89a\x01\x00\x01\x00\x00\x00\x00",
        bytes(range(256)),
        b"{\\rtf1\\ansi Gr\\'f6\\'dfe}",
        b"text with a NUL\x00 inside",
        b"Text mit Steuerzeichen \x01\x02\x03",
    ],
    ids=["png", "jpeg", "gif", "binary", "rtf", "nul", "controls"],
)
def test_other_files_are_refused(head):
    assert refusal(head, "datei.txt").code == "unsupported_type"


@pytest.mark.parametrize(
    "text", [b"MZ-Verfahren: Gr\xc3\xb6\xc3\x9fe", b"#!/bin/sh\necho Gr\xc3\xb6\xc3\x9fe\n"]
)
def test_text_that_starts_like_an_executable_is_still_text(text):
    assert sniff(text, "notiz.txt") == "txt"


def test_other_opendocument_types_are_refused():
    from odfdo import Document

    out = io.BytesIO()
    Document("spreadsheet").save(out)

    assert refusal(out.getvalue(), "Tabelle.ods").code == "unsupported_type"


def test_old_office_files_are_refused_with_the_advice_to_save_as_docx():
    cfb = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(512)

    error = refusal(cfb, "Alt.doc")

    assert error.code == "unsupported_type"
    assert "DOCX" in str(error.message)


def test_password_protected_office_files_are_refused_as_encrypted():
    cfb = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(512) + "EncryptedPackage".encode("utf-16-le")

    assert refusal(cfb, "Gehalt.xlsx").code == "encrypted"


# --- Bad input: refused with its code, quickly, in bounded memory ------------------------------


def test_empty_file_is_refused():
    assert refusal(b"", "leer.pdf").code == "empty"


@pytest.mark.parametrize(
    ("data", "name"),
    [
        (b" \r\n\t\n", "leer.txt"),
        (samples.docx([" "]), "leer.docx"),
        (b"<html><script>x()</script></html>", "a.html"),
    ],
    ids=["whitespace", "docx-heading-only", "html-script-only"],
)
def test_a_file_without_text_is_refused_as_empty(data, name):
    if name.endswith(".docx"):
        # The sample's heading is text: a document of spaces alone has none.
        source = zipfile.ZipFile(io.BytesIO(data))
        xml = source.read("word/document.xml")
        xml = re.sub(rb"<w:t[^>]*>[^<]*</w:t>", b"", xml)
        out = io.BytesIO()
        with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
            for info in source.infolist():
                archive.writestr(
                    info.filename, xml if info.filename == "word/document.xml" else source.read(info)
                )
        data = out.getvalue()

    assert refusal(data, name).code == "empty"


def test_encrypted_pdf_is_refused():
    error = refusal(samples.encrypted_pdf("geheim"), "Gehalt.pdf")

    assert error.code == "encrypted"
    assert "password" in str(error.message)


def test_pdf_protected_only_by_its_owner_is_read_like_a_viewer_reads_it():
    _kind, pages, _calls = read(samples.encrypted_pdf(""), "Handbuch.pdf")

    assert pages[1].text.startswith(f"Seite 2. {samples.UMLAUTS}")


def test_scanned_pdf_is_refused_saying_there_is_no_text_layer():
    error = refusal(samples.scanned_pdf(2), "Scan.pdf")

    assert error.code == "no_text"
    assert "no text layer" in str(error.message)
    assert "OCR" in str(error.message)


def test_10000_page_pdf_is_refused_before_any_page_is_read():
    data = samples.many_pages_pdf(10_000)
    calls: list[tuple] = []

    with samples.deadline(5), pytest.raises(IngestError) as raised:
        extract(io.BytesIO(data), "pdf", max_pages=2000, progress=lambda *call: calls.append(call))

    assert raised.value.code == "too_many_pages"
    assert "10000" in str(raised.value.message)
    assert calls == []


def test_pdf_whose_page_tree_understates_its_pages_is_still_refused():
    data = samples.many_pages_pdf(300, declared=1)
    calls: list[tuple] = []

    with pytest.raises(IngestError) as raised:
        extract(io.BytesIO(data), "pdf", max_pages=200, progress=lambda *call: calls.append(call))

    assert raised.value.code == "too_many_pages"
    assert calls == []


def test_pdf_drawing_text_is_read():
    # The hand-made page the next test inflates: its text does come out.
    pages = extract(
        io.BytesIO(
            samples.pdf_drawing(b"BT /F1 12 Tf 72 720 Td (Hallo Welt, " + b"gro\\337e " * 5 + b") Tj ET")
        ),
        "pdf",
        max_pages=10,
    )

    assert pages[0].text.startswith("Hallo Welt, große große")


@pytest.mark.parametrize(
    "content",
    [
        b"BT /F1 12 Tf 72 720 Td (Hallo Welt) Tj ET\n" + b" " * (70 << 20),  # inflates to 70 MB
        b"BT /F1 12 Tf 72 720 Td " + b"(a) Tj " * 600_000 + b"ET",  # 1.2 million tokens
    ],
    ids=["inflating", "instructions"],
)
def test_pdf_page_that_inflates_far_beyond_a_page_is_not_read(content):
    data = samples.pdf_drawing(content)
    assert len(data) < 100_000

    with samples.deadline(8), pytest.raises(IngestError) as raised:
        extract(io.BytesIO(data), "pdf", max_pages=10)

    # The one page cannot be read: a document of unreadable pages is damaged.
    assert raised.value.code == "damaged"


def test_page_limit_admits_exactly_the_limit():
    assert len(read(samples.text_pdf(3), "a.pdf", max_pages=3)[1]) == 3
    assert refusal(samples.text_pdf(4), "a.pdf", max_pages=3).code == "too_many_pages"
    assert refusal(samples.pptx(4), "a.pptx", max_pages=3).code == "too_many_pages"
    assert refusal(samples.xlsx(4), "a.xlsx", max_pages=3).code == "too_many_pages"
    assert (
        refusal(samples.docx(samples.german_paragraphs(30)), "a.docx", max_pages=3).code == "too_many_pages"
    )


@pytest.mark.parametrize(
    ("build", "name"),
    [
        (lambda: samples.text_pdf(3), "a.pdf"),
        (samples.docx, "a.docx"),
        (samples.odt, "a.odt"),
        (lambda: samples.pptx(2), "a.pptx"),
        (lambda: samples.xlsx(2), "a.xlsx"),
    ],
    ids=["pdf", "docx", "odt", "pptx", "xlsx"],
)
@pytest.mark.parametrize("keep", [0.3, 0.9, 0.99])
def test_truncated_file_is_refused_as_damaged(build, name, keep):
    assert refusal(samples.truncated(build(), keep=keep), name).code == "damaged"


def test_zip_part_with_flipped_bytes_is_refused_as_damaged():
    data = bytearray(samples.docx())
    start = data.index(b"word/document.xml") + 200  # inside the compressed part
    data[start : start + 64] = bytes(64)

    assert refusal(bytes(data), "a.docx").code == "damaged"


def test_ooxml_zip_bomb_is_refused_in_bounded_memory():
    data = samples.ooxml_bomb()  # declares 300 MB
    assert len(data) < 512 * 1024

    assert refusal(data, "Bombe.docx").code == "archive_bomb"
    measured = samples.extract_in_child(data, "docx")
    assert measured["code"] == "archive_bomb"
    assert measured["grown_kib"] < 32 * 1024


def test_zip_entry_compressed_far_beyond_any_document_is_refused():
    assert refusal(samples.ooxml_dense_entry(), "dicht.docx").code == "archive_bomb"


def test_zip_entry_whose_headers_understate_it_is_refused_in_bounded_memory():
    # zipfile trusts the declared size and would inflate the 64 MB part whole before
    # noticing (python-docx reading it grows the process by about 128 MB).
    data = samples.lying_bomb()

    assert refusal(data, "Lüge.docx").code == "archive_bomb"
    measured = samples.extract_in_child(data, "docx")
    assert measured["code"] == "archive_bomb"
    assert measured["grown_kib"] < 32 * 1024


def test_zip_of_too_many_entries_is_refused():
    assert refusal(samples.zip_of_many_entries(), "viele.docx").code == "archive_bomb"


def test_xml_entity_expansion_is_refused_without_expanding():
    assert refusal(samples.xml_entity_bomb(), "lachen.docx").code == "damaged"


@pytest.mark.parametrize(
    ("build", "name"),
    [
        (lambda: samples.txt("Wort " * 400), "a.txt"),
        (lambda: samples.docx(samples.german_paragraphs(4)), "a.docx"),
        (lambda: samples.text_pdf(["Wort " * 100] * 4), "a.pdf"),
        (lambda: samples.xlsx(1, rows=100), "a.xlsx"),
    ],
    ids=["txt", "docx", "pdf", "xlsx"],
)
def test_text_beyond_the_character_budget_is_refused(monkeypatch, build, name):
    monkeypatch.setattr(extract_module, "MAX_TEXT_CHARS", 1000)

    error = refusal(build(), name)

    assert error.code == "too_large"
    assert "1,000 characters" in str(error.message)


def test_sparse_workbook_is_refused_by_its_cell_budget():
    # 1,000 rows of one cell in the last column: 16 million cells once padded.
    assert refusal(samples.sparse_xlsx(), "leer.xlsx").code == "too_large"


# --- Normalisation ---------------------------------------------------------------------------


def test_normalise_removes_nuls_controls_and_invisible_characters():
    assert normalise("A\x00B\x07C\u00adD\u200bE\ufeffF") == "ABCDEF"


def test_normalise_replaces_lone_surrogates():
    assert normalise("Gr\ud800ße") == "Gr\ufffdße"


def test_normalise_composes_umlauts():
    assert normalise("Gro\u0308\u00dfe") == "Größe"


def test_normalise_collapses_spaces_within_lines_and_blank_lines():
    assert (
        normalise("  Ein  \t Satz\u00a0 hier.  \r\n\r\n\r\n\n Zweiter\r Satz ")
        == "Ein Satz hier.\n\nZweiter\nSatz"
    )


@pytest.mark.parametrize(
    ("text", "joined"),
    [
        ("Daten-\nschutz", "Datenschutz"),
        ("Datenschutz-\nBeauftragte", "Datenschutz-Beauftragte"),
        ("Daten- \n und Informationsschutz", "Daten-\nund Informationsschutz"),
        ("Seite 3-\n4", "Seite 3-4"),
    ],
)
def test_normalise_joins_words_hyphenated_at_line_ends(text, joined):
    assert normalise(text, join_hyphens=True) == joined


def test_normalise_leaves_hyphens_at_line_ends_of_other_formats():
    assert normalise("Daten-\nschutz") == "Daten-\nschutz"


# --- Chunking --------------------------------------------------------------------------------


def sentences(count: int, page: int = 1) -> str:
    return " ".join(
        f"Satz {n} auf Seite {page}: Die Kündigungsfrist beträgt z. B. drei Monate zum Monatsende, "
        f"sofern nichts anderes vereinbart ist."
        for n in range(1, count + 1)
    )


def test_passages_are_sized_ordered_and_never_span_pages():
    pages = [Page(1, sentences(40, 1)), Page(2, "Kurz."), Page(3, ""), Page(4, sentences(25, 4))]

    passages = chunks_of(pages)

    assert [passage.ordinal for passage in passages] == list(range(len(passages)))
    assert {passage.page for passage in passages} == {1, 2, 4}
    assert [passage.page for passage in passages] == sorted(passage.page for passage in passages)
    for passage in passages:
        assert passage.text.strip()
        assert len(passage.text) <= PASSAGE_MAX
        assert f"Seite {passage.page}" in passage.text or passage.text == "Kurz."
    for page in (1, 4):
        on_page = [passage for passage in passages if passage.page == page]
        assert len(on_page) > 1
        assert all(len(passage.text) >= PASSAGE_MIN for passage in on_page[:-1])


def test_passages_cut_at_sentences_and_overlap_by_a_sentence_or_words():
    passages = chunks_of([Page(1, sentences(40))])

    for before, passage in itertools.pairwise(passages):
        # Each starts with a sentence ("z. B." is no sentence end) and ends with one.
        assert passage.text.startswith("Satz ")
        assert passage.text.endswith("vereinbart ist.")
        overlap = passage.text[: passage.text.index(" Satz ", 1)]
        assert overlap in before.text
        assert 0 < len(overlap) <= OVERLAP


def test_passages_cover_all_text():
    text = sentences(60)

    passages = chunks_of([Page(7, text)])

    for n in range(1, 61):
        assert any(f"Satz {n} auf" in passage.text for passage in passages)


def test_passages_prefer_paragraph_boundaries():
    paragraphs = [f"Absatz {n}. " + "Wort " * 80 for n in range(1, 11)]  # 410 characters each

    passages = chunks_of([Page(1, "\n\n".join(paragraphs))])

    # Three paragraphs fit in a passage (with room for the overlap), a fourth does not.
    assert passages[0].text == "\n\n".join(paragraph.strip() for paragraph in paragraphs[:3])
    for passage in passages[1:]:
        overlap, rest = passage.text.split(" Absatz ", 1)
        assert set(overlap.split()) == {"Wort"}
        assert re.fullmatch(r"\d+\. (Wort ?)+(\n\nAbsatz \d+\. (Wort ?)+)*", rest)


def test_a_word_longer_than_a_passage_is_cut():
    url = "https://example.org/" + "x" * 5000

    passages = chunks_of([Page(1, f"Siehe {url} dort.")])

    assert all(0 < len(passage.text) <= PASSAGE_MAX for passage in passages)
    assert "".join(passage.text for passage in passages).count("x") >= 5000


def test_no_pages_no_passages():
    assert chunks_of([]) == []
    assert chunks_of([Page(1, "  \n ")]) == []
