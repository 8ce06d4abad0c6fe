"""A document's text as pages, and pages as passages: what retrieval finds and answers cite.

A passage is about 1,000-1,500 characters: long enough to carry a statement with its
context, short enough that six of them fit a prompt beside the conversation. It is cut at
the largest boundary that makes it fit: a paragraph, else a line, else a sentence, else a
word; a few words (~150 characters) of the passage before it come first, so a statement
cut in two is still whole in one of them. A passage never spans two pages: it cites one.

Formats without pages (Word, OpenDocument, text, Markdown, HTML, CSV) are cut into
sections of about 3,000 characters at paragraph boundaries (sections_of), so a citation
of a long document still says where: "section 4" rather than "page 1" for everything.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

PASSAGE_MIN = 1000
PASSAGE_MAX = 1500
OVERLAP = 150
SECTION_CHARS = 3000


@dataclass(frozen=True, slots=True)
class Page:
    """One page of a document's text: a PDF page, a slide, a sheet, or a section (from 1)."""

    number: int
    text: str


@dataclass(frozen=True, slots=True)
class Passage:
    """A chunk of a page's text; ordinals count from 0 through the whole document."""

    ordinal: int
    page: int
    text: str


_PARAGRAPH_BREAK = re.compile(r"\n[ \t]*\n\s*")
_LINE_BREAK = re.compile(r"\n")
_SPACE = re.compile(r"\s+")
# A sentence ends with . ! ? or … (and closing quotes or brackets), then space, then
# something that can start one: a capital (with umlauts), a digit, an opening quote.
_SENTENCE_END = re.compile(r"(?<=[.!?…])[\"'»«“”’)\]]*\s+(?=[A-ZÄÖÜ0-9\"'„“»«(\[])")
# Words a German or English text abbreviates with a dot before a capital or a digit.
_ABBREVIATED = (
    "abs abb art bd bzw ca chr dr etc evtl fa fr gem ggf hr inkl jh kap mio mr mrs ms mrd nr "
    "prof rd s sog st str tel u.a usw vgl vs z.b zb zit ziff vol no fig e.g i.e"
)
_ABBREVIATIONS = frozenset(_ABBREVIATED.split())


def _is_abbreviation(text: str, end: int) -> bool:
    """Whether the dot before `end` ends an abbreviation (Nr., z. B., S. 12) or an initial."""
    start = end
    while start > 0 and not text[start - 1].isspace():
        start -= 1
    word = text[start:end].rstrip(".!?…\"'»«“”’)]").lower()
    return len(word) <= 1 or word in _ABBREVIATIONS or word.rstrip(".") in _ABBREVIATIONS


def _sentence_pieces(text: str) -> list[str]:
    pieces, start = [], 0
    for match in _SENTENCE_END.finditer(text):
        if _is_abbreviation(text, match.start()):
            continue
        pieces.append(text[start : match.start()])
        start = match.end()
    pieces.append(text[start:])
    return pieces


def _word_pieces(text: str, limit: int) -> list[str]:
    """Words, and any word longer than `limit` (a URL, a hash) cut into `limit` pieces."""
    pieces = []
    for word in _SPACE.split(text):
        pieces.extend(word[i : i + limit] for i in range(0, len(word), limit))
    return pieces


# Boundaries from the largest to the smallest, and what joins the pieces again.
_LEVELS = (
    (lambda text, _: _PARAGRAPH_BREAK.split(text), "\n\n"),
    (lambda text, _: _LINE_BREAK.split(text), "\n"),
    (lambda text, _: _sentence_pieces(text), " "),
    (_word_pieces, " "),
)


def _pack(text: str, limit: int, level: int = 0) -> list[str]:
    """`text` as pieces of at most `limit` characters, each filled greedily with whole
    paragraphs, else lines, else sentences, else words."""
    if len(text) <= limit:
        return [text] if text else []
    split, joiner = _LEVELS[level]
    pieces: list[str] = []
    current = ""
    for part in split(text, limit):
        part = part.strip()
        if not part:
            continue
        # A part too long is cut at the next smaller boundary; its first piece may still
        # join the pieces before it, its last the parts after it.
        for piece in [part] if len(part) <= limit else _pack(part, limit, level + 1):
            if current and len(current) + len(joiner) + len(piece) <= limit:
                current += joiner + piece
            else:
                if current:
                    pieces.append(current)
                current = piece
    if current:
        pieces.append(current)
    return pieces


def _tail(text: str, size: int) -> str:
    """The last words of `text`, about `size` characters: from a sentence's start when one
    starts among them and leaves enough, else from a word's."""
    if len(text) <= size:
        return ""
    tail = text[-size:]
    sentence = _SENTENCE_END.search(tail)
    if sentence and len(tail) - sentence.end() >= size // 3:
        return tail[sentence.end() :]
    space = re.search(r"\s", tail)
    return tail[space.end() :].lstrip() if space else ""


def _passages_of_page(text: str) -> Iterator[str]:
    previous = ""
    for piece in _pack(text.strip(), PASSAGE_MAX - OVERLAP - 1):
        overlap = _tail(previous, OVERLAP)
        yield f"{overlap} {piece}" if overlap else piece
        previous = piece


def chunks_of(pages: list[Page]) -> list[Passage]:
    """The passages of a document's pages, in order, none spanning two pages, none empty."""
    passages: list[Passage] = []
    for page in pages:
        for text in _passages_of_page(page.text):
            if text.strip():
                passages.append(Passage(ordinal=len(passages), page=page.number, text=text))
    return passages


def sections_of(text: str) -> list[Page]:
    """A text without pages as sections of about SECTION_CHARS characters, cut at paragraph
    boundaries (inside a paragraph longer than that, at the largest boundary that fits)."""
    return [Page(number, section) for number, section in enumerate(_pack(text.strip(), SECTION_CHARS), 1)]
