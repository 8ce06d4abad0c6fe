"""Text as retrieval and prompts want it (normalise), and the formats that are text:
plain text, Markdown, CSV and HTML, decoded by their bytes."""

from __future__ import annotations

import codecs
import csv
import io
import re
import unicodedata
from collections.abc import Callable
from html.parser import HTMLParser

# --- Text normalisation ------------------------------------------------------------------

_SURROGATES = re.compile("[\ud800-\udfff]")
_LINE_SEPARATORS = re.compile("\r\n|[\r\x0b\x0c\x1c-\x1e\x85\u2028]")
# Controls (but tab and line feed), and what only hides or breaks words: soft hyphen,
# zero-width space and joiners, word joiner, byte order mark.
_INVISIBLE = re.compile("[\x00-\x08\x0e-\x1f\x7f-\x84\x86-\x9f\u00ad\u200b-\u200d\u2060\ufeff]")
_SPACES = re.compile(r"[^\S\n]+")
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


# --- Text formats --------------------------------------------------------------------------


def decode(data: bytes) -> str:
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


READERS_OF_TEXT: dict[str, Callable[[str], str]] = {
    "txt": lambda text: text,
    "md": lambda text: text,
    "csv": _csv_text,
    "html": _html_text,
}
