"""CSV that spreadsheet programs show as text: every cell of every CSV the product writes.

A cell that starts like a formula (`=`, `+`, `-`, `@`, a tab or a carriage return) runs
as one when the file is opened in Excel, LibreOffice or Google Sheets, and much of what
an export holds is free text others wrote: model answers (which a prompt-injected page
can steer), titles, feedback, reasons, user names. So each cell is made inert:

- line breaks of every kind (CR, CRLF, VT, FF, the separators FS/GS/RS, NEL, U+2028,
  U+2029) become LF: a message's own line breaks stay, inside its quoted cell, and
  nothing a reader splits lines on differently can end a row early;
- every other control character (C0 but tab, DEL, C1) becomes U+FFFD: NUL and its kin
  cannot end a cell or hide what follows;
- each line of the cell that starts with a formula character, also after leading
  spaces, invisible or control characters, or with a tab, gets a `'` in front (the
  spreadsheets' own "this is text" mark): the cell's first line for spreadsheets, the
  others for tools that read the file line by line;
- the csv module quotes any cell with a comma, quote or line break, so each stays in
  its column.

The JSON Lines exports keep text exactly; CSV is for reading in a spreadsheet.
"""

from __future__ import annotations

import csv
import re
import unicodedata
from collections.abc import Iterable
from typing import Any

# Full-width forms too: spreadsheets with East Asian input take them as the ASCII ones.
FORMULA_STARTS = frozenset("=+-@\uff1d\uff0b\uff0d\uff20")
TEXT_MARK = "'"
_LINE_BREAKS = re.compile("\r\n|[\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029]")
_CONTROLS = re.compile("[\x00-\x08\x0e-\x1b\x1f\x7f-\x84\x86-\x9f]")
_INVISIBLE_CATEGORIES = frozenset({"Cc", "Cf", "Zs", "Zl", "Zp"})


def _invisible(char: str) -> bool:
    return char == "\ufffd" or unicodedata.category(char) in _INVISIBLE_CATEGORIES


def _line_safe(line: str) -> str:
    if line[:1] == "\t":
        return TEXT_MARK + line
    first = next((char for char in line if not _invisible(char)), "")
    return TEXT_MARK + line if first in FORMULA_STARTS else line


def cell(value: object) -> str:
    """`value` as a CSV cell a spreadsheet shows as text (None: empty)."""
    text = "" if value is None else str(value)
    text = _CONTROLS.sub("\ufffd", _LINE_BREAKS.sub("\n", text))
    return "\n".join(_line_safe(line) for line in text.split("\n"))


class Writer:
    """csv.writer whose every cell goes through `cell`: no column can be forgotten."""

    def __init__(self, file: Any, **options: Any) -> None:
        self._writer = csv.writer(file, **options)

    def writerow(self, row: Iterable[object]) -> Any:
        return self._writer.writerow([cell(value) for value in row])

    def writerows(self, rows: Iterable[Iterable[object]]) -> None:
        for row in rows:
            self.writerow(row)


def writer(file: Any, **options: Any) -> Writer:
    """A CSV writer on `file` (csv.writer's options) that makes every cell inert."""
    return Writer(file, **options)
