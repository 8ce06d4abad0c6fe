"""The kind (Document.Kind) of an upload by its first bytes: sniff()."""

from __future__ import annotations

import codecs
import re
import struct
from pathlib import PurePosixPath

from assistant.documents.extract.errors import (
    EMPTY_FILE,
    LEGACY_OFFICE,
    OFFICE_PASSWORD,
    UNSUPPORTED,
    IngestError,
)

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
        raise IngestError("unsupported_type", UNSUPPORTED)
    names = _zip_names_in_head(head)
    for folder, kind in _OOXML_FOLDERS.items():
        if any(name.startswith(folder) for name in names):
            return kind
    # Parts in another order (or beyond the head): the extension picks among the zip
    # formats, and extract() checks the parts are there.
    if extension in {".docx", ".pptx", ".xlsx", ".odt"}:
        return extension[1:]
    raise IngestError("unsupported_type", UNSUPPORTED)


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
        raise IngestError("empty", EMPTY_FILE)
    if head.startswith(_EXECUTABLES) and not _looks_like_text(head):
        raise IngestError("unsupported_type", UNSUPPORTED)
    if b"%PDF-" in head[:1024]:
        return "pdf"
    if head.startswith(b"PK\x03\x04"):
        return _sniff_zip(head, extension)
    if head.startswith(_CFB):
        # An encrypted DOCX, XLSX or PPTX is an OLE2 file with an "EncryptedPackage" stream.
        if "EncryptedPackage".encode("utf-16-le") in head or extension in {".docx", ".xlsx", ".pptx"}:
            raise IngestError("encrypted", OFFICE_PASSWORD)
        raise IngestError("unsupported_type", LEGACY_OFFICE)
    if head.lstrip().startswith(b"{\\rtf") or not _looks_like_text(head):
        raise IngestError("unsupported_type", UNSUPPORTED)
    return _TEXT_FLAVOURS.get(extension, "txt")
