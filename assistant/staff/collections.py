"""Knowledge collections kept in step with a folder (`manage.py ingest`).

A collection mirrors one folder: each supported file below it is a document whose `path`
is the file's path relative to the folder. A run compares each file's SHA-256 with the
document stored under the same path: unchanged files are left alone, changed ones read
again (the old document stays until the new one is ready, then goes), new ones read, and
documents whose file is gone removed. A file that moved keeps its document (same content,
new path: nothing is read again). Reading goes through the same pipeline as uploads
(`document_ingest_file`), one file at a time and synchronously.

Documents uploaded in the admin have no path: a folder run leaves them alone. One PATH
that is a file updates that one document and removes nothing.

Hidden files and folders (a name starting with ".") are skipped, and so is anything that
is not a regular file. Symbolic links to files inside the folder are read under the
link's path; links that lead outside it, and links to folders, are not followed.
"""

from __future__ import annotations

import hashlib
import logging
import os
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.files import File
from django.core.validators import validate_slug
from django.db import transaction
from django.db.models import QuerySet
from django.template.defaultfilters import filesizeformat
from django.utils import timezone
from django.utils.translation import gettext as _

from assistant.documents.extract import IngestError, sniff
from assistant.documents.ingest import display_name, document_ingest_file
from assistant.documents.worker import UNFINISHED, document_queue
from assistant.models import Collection, Document
from assistant.processes import PROCESS_ID
from assistant.staff.common import StaffError

logger = logging.getLogger(__name__)

# What a folder run tries to read: the extensions of the supported kinds. The type is
# still decided by content when the file is read (extract.sniff): a `.pdf` that is no
# PDF fails with the reason.
SUPPORTED_SUFFIXES = frozenset(
    {".pdf", ".docx", ".odt", ".pptx", ".xlsx", ".csv", ".txt", ".text", ".md", ".markdown", ".html", ".htm"}
)
# Document.path's max_length.
PATH_MAX_CHARS = 500
HASH_BLOCK = 1024 * 1024
SNIFF_BYTES = 8192

# What a run did to a file (FileOutcome.action), in the order a summary names them.
ACTIONS = ("added", "updated", "moved", "unchanged", "removed", "failed", "skipped")


@dataclass(frozen=True)
class SourceFile:
    """A file of the folder: its path relative to the folder (POSIX) and where it is."""

    path: str
    location: Path
    size: int


@dataclass(frozen=True)
class FileOutcome:
    """What a run did (or would do) to one path; `detail` says why for failed and skipped,
    and where from for moved; `code` is the IngestError code of a failure."""

    path: str
    action: str
    detail: str = ""
    code: str = ""


@dataclass
class SyncReport:
    collection: Collection
    created: bool
    dry_run: bool
    outcomes: list[FileOutcome] = field(default_factory=list)

    def count(self, action: str) -> int:
        return sum(outcome.action == action for outcome in self.outcomes)

    @property
    def failed(self) -> list[FileOutcome]:
        return [outcome for outcome in self.outcomes if outcome.action == "failed"]


# Called before each file with (files done, files in all, the file's path), and at the end.
Progress = Callable[[int, int, str], None]


# --- the collection ------------------------------------------------------------------------


def collection_resolve(*, slug: str, name: str | None, dry_run: bool = False) -> tuple[Collection, bool]:
    """The collection `slug`, and whether it was (or, in a dry run, would be) created.

    A missing collection is created only with a `name`: a mistyped identifier would
    otherwise start a new collection quietly. The error lists the ones that exist. A new
    collection is readable by nobody until an administrator gives it groups (or
    everyone). An existing collection keeps its name.
    """
    try:
        validate_slug(slug)
    except ValidationError:
        raise StaffError(
            f"--collection must be an identifier of letters, digits, '-' and '_', got {slug!r}."
        ) from None
    if len(slug) > Collection._meta.get_field("slug").max_length:
        raise StaffError(f"--collection {slug!r} is longer than 50 characters.")
    collection = Collection.objects.filter(slug=slug).first()
    if collection is not None:
        return collection, False
    if name is None or not name.strip():
        existing = list(Collection.objects.order_by("slug").values_list("slug", flat=True))
        listed = ", ".join(existing) if existing else "none yet"
        raise StaffError(
            f"There is no collection {slug!r} (existing: {listed}). "
            f"Add --name to create it, e.g. --name {slug.replace('-', ' ').title()!r}."
        )
    name = name.strip()
    if len(name) > Collection._meta.get_field("name").max_length:
        raise StaffError(f"--name is longer than 100 characters: {name[:40]!r}...")
    collection = Collection(slug=slug, name=name)
    if not dry_run:
        collection.save()
    return collection, True


# --- the folder ----------------------------------------------------------------------------


def _hidden(name: str) -> bool:
    return name.startswith(".")


def source_files(root: Path) -> tuple[list[SourceFile], list[FileOutcome], bool]:
    """The supported files below `root` (or `root` itself if it is a file), sorted by path;
    the files passed over, with why; and whether `root` is a folder.

    Raises StaffError when `root` is neither a folder nor a file.
    """
    try:
        resolved = root.resolve(strict=True)
    except (FileNotFoundError, RuntimeError):
        raise StaffError(f"There is no file or folder {root}.") from None
    except OSError as error:
        raise StaffError(f"Cannot read {root}: {error.strerror or error}.") from None
    if resolved.is_file():
        found, skipped = _one_file(resolved, resolved.name)
        return found, skipped, False
    if not resolved.is_dir():
        raise StaffError(f"{root} is neither a folder nor a regular file.")
    found: list[SourceFile] = []
    skipped: list[FileOutcome] = []
    for dirpath, dirnames, filenames in os.walk(resolved, followlinks=False, onerror=_walk_error):
        folder = Path(dirpath)
        # Hidden folders are not entered; symlinked folders are not followed by os.walk.
        for name in list(dirnames):
            relative = (folder / name).relative_to(resolved).as_posix()
            if _hidden(name):
                dirnames.remove(name)
            elif (folder / name).is_symlink():
                skipped.append(FileOutcome(relative, "skipped", "a link to a folder (not followed)"))
        dirnames.sort()
        for name in sorted(filenames):
            if _hidden(name):
                continue
            location = folder / name
            relative = location.relative_to(resolved).as_posix()
            if location.is_symlink():
                try:
                    target = location.resolve(strict=True)
                except (OSError, RuntimeError):
                    skipped.append(FileOutcome(relative, "skipped", "a broken link"))
                    continue
                if not target.is_relative_to(resolved):
                    skipped.append(
                        FileOutcome(relative, "skipped", "a link to outside the folder (not followed)")
                    )
                    continue
                location = target
            one, passed = _one_file(location, relative)
            found += one
            skipped += passed
    found.sort(key=lambda source: source.path)
    return found, skipped, True


def _walk_error(error: OSError) -> None:
    raise StaffError(f"Cannot read {error.filename}: {error.strerror or error}.")


def _one_file(location: Path, relative: str) -> tuple[list[SourceFile], list[FileOutcome]]:
    try:
        info = location.stat()
    except OSError as error:
        return [], [
            FileOutcome(relative, "failed", f"cannot be read: {error.strerror or error}", "unreadable")
        ]
    if not stat.S_ISREG(info.st_mode):
        return [], [FileOutcome(relative, "skipped", "not a regular file")]
    if location.suffix.lower() not in SUPPORTED_SUFFIXES:
        return [], [FileOutcome(relative, "skipped", "not a supported type")]
    try:
        relative.encode("utf-8")
    except UnicodeEncodeError:
        return [], [FileOutcome(relative, "failed", "its name is not valid UTF-8", "bad_name")]
    if len(relative) > PATH_MAX_CHARS:
        return [], [
            FileOutcome(
                relative, "failed", f"its path is longer than {PATH_MAX_CHARS} characters", "bad_name"
            )
        ]
    return [SourceFile(relative, location, info.st_size)], []


def file_sha256(location: Path) -> str:
    digest = hashlib.sha256()
    with location.open("rb") as handle:
        while block := handle.read(HASH_BLOCK):
            digest.update(block)
    return digest.hexdigest()


# --- reading and removing ------------------------------------------------------------------


class ReadFailed(Exception):
    """A file that could not be read into a document: `code` (an IngestError code, or
    unreadable, too_large, empty, bad_name) and `message`, a sentence saying why."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


def _size_check(source: SourceFile) -> None:
    """Before the file is hashed: a file over the limit is refused unread (as uploads are)."""
    if source.size > settings.ASSISTANT_UPLOAD_MAX_BYTES:
        message = _("The file is larger than %(size)s, the limit for documents.") % {
            "size": filesizeformat(settings.ASSISTANT_UPLOAD_MAX_BYTES)
        }
        raise ReadFailed("too_large", message)


def _type_check(source: SourceFile) -> None:
    """The dry run's check of the content type (no reading of the text)."""
    with source.location.open("rb") as handle:
        head = handle.read(SNIFF_BYTES)
    try:
        sniff(head, source.location.name)
    except IngestError as error:
        raise ReadFailed(error.code, str(error.message)) from None


def collection_document_read(*, collection: Collection, path: str, name: str, file) -> Document:
    """Read `file` into a new document of `collection`, synchronously, through the upload
    pipeline; the document, ready. A failure leaves nothing behind and raises ReadFailed."""
    try:
        document = document_ingest_file(collection=collection, path=path, name=name, file=file)
    except IngestError as error:
        raise ReadFailed(error.code, str(error.message)) from None
    document.refresh_from_db()
    if document.status != Document.Status.READY:
        code, detail = document.error_code or "failed", document.error_detail or "it could not be read"
        # Nothing half-done stays in the collection: a failed file is reported, not kept.
        document.delete()
        raise ReadFailed(code, detail)
    return document


def documents_delete(documents) -> int:
    """Delete documents (their passages by cascade, their files after commit)."""
    with transaction.atomic():
        _total, deleted = Document.objects.filter(pk__in=[d.pk for d in documents]).delete()
    return deleted.get(Document._meta.label, 0)


def collection_document_replace(old: Document, *, file=None) -> Document:
    """Read `old`'s file again (or `file`, its new content) into a new document under the
    same path and name; `old` goes once the new one is ready, and stays if reading fails
    (raises ReadFailed)."""
    collection = old.collection
    if file is None:
        with old.file.open("rb") as stored:
            new = collection_document_read(collection=collection, path=old.path, name=old.name, file=stored)
    else:
        new = collection_document_read(collection=collection, path=old.path, name=old.name, file=file)
    documents_delete([old])
    return new


def upload_limit() -> int:
    return settings.ASSISTANT_UPLOAD_MAX_BYTES


def collection_upload(*, collection: Collection, upload) -> Document:
    """An administrator's file into `collection` (the admin's upload): checked (size, type
    by content, the same content not in the collection already) and stored, then read in
    the background; the document, queued. Refused with ReadFailed, nothing stored."""
    sha256 = hashlib.sha256()
    for block in upload.chunks():
        sha256.update(block)
    upload.seek(0)
    existing = Document.objects.filter(collection=collection, sha256=sha256.hexdigest()).first()
    if existing is not None:
        raise ReadFailed(
            "duplicate",
            _("This file is in the collection already, as “%(name)s”.")
            % {"name": existing.path or existing.name},
        )
    try:
        return document_ingest_file(
            collection=collection, path="", name=upload.name, file=upload, background=True
        )
    except IngestError as error:
        raise ReadFailed(error.code, str(error.message)) from None


def collection_documents_reread(documents: QuerySet[Document]) -> int:
    """Read collection documents again from their stored files, in the background of this
    process (e.g. once an embeddings model is configured, or after a failure). Each keeps
    its passages until the new ones are stored, in one transaction; a failure leaves it
    failed, without passages. Documents being read already are left to that reading.
    Returns how many were queued."""
    queued = []
    with transaction.atomic():
        for document in documents.filter(collection__isnull=False).exclude(status__in=UNFINISHED):
            taken = (
                Document.objects.filter(pk=document.pk)
                .exclude(status__in=UNFINISHED)
                .update(
                    status=Document.Status.QUEUED,
                    processed_by=PROCESS_ID,
                    pages_done=0,
                    updated_at=timezone.now(),
                )
            )
            if taken:
                document.status, document.processed_by = Document.Status.QUEUED, PROCESS_ID
                queued.append(document)
        transaction.on_commit(lambda: [document_queue(document) for document in queued])
    return len(queued)


# --- a run ---------------------------------------------------------------------------------


def collection_sync(
    *,
    collection: Collection,
    created: bool,
    root: Path,
    dry_run: bool = False,
    progress: Progress | None = None,
    actor: str = "",
) -> SyncReport:
    """Bring `collection` in step with the folder (or the one file) at `root`.

    See the module's docstring. Each file is its own step: a failure is reported with
    its reason and the run goes on. In a dry run nothing changes; a file's type is
    checked by its content, but its text is not read, so failures found only by reading
    (encrypted, no text layer) show in the real run.
    """
    report = SyncReport(collection=collection, created=created, dry_run=dry_run)
    sources, passed, whole_folder = source_files(root)
    report.outcomes += passed
    stored: dict[str, list[Document]] = {}
    if collection.pk is not None:
        for document in (
            Document.objects.filter(collection=collection).exclude(path="").order_by("path", "-created_at")
        ):
            stored.setdefault(document.path, []).append(document)
    present = {source.path for source in sources}
    # Documents whose path is gone: removed, unless a new path has their content (moved).
    gone = (
        {path: documents for path, documents in stored.items() if path not in present} if whole_folder else {}
    )
    total = len(sources)
    for done, source in enumerate(sources):
        if progress is not None:
            progress(done, total, source.path)
        report.outcomes.append(
            _sync_file(collection, source, stored.get(source.path, []), gone, dry_run=dry_run)
        )
    if progress is not None:
        progress(total, total, "")
    for path, documents in sorted(gone.items()):
        if not dry_run:
            documents_delete(documents)
        report.outcomes.append(FileOutcome(path, "removed"))
    changed = sum(report.count(action) for action in ("added", "updated", "moved", "removed", "failed"))
    if changed and not dry_run:
        # The record of who changed company knowledge (a run that changed nothing is quiet).
        logger.info(
            "ingest %s into collection %s by %s: %s",
            root,
            collection.slug,
            actor or "?",
            ", ".join(f"{report.count(action)} {action}" for action in ACTIONS),
        )
    return report


def _sync_file(
    collection: Collection,
    source: SourceFile,
    documents: list[Document],
    gone: dict[str, list[Document]],
    *,
    dry_run: bool,
) -> FileOutcome:
    try:
        _size_check(source)
        sha256 = file_sha256(source.location)
    except ReadFailed as failure:
        return FileOutcome(source.path, "failed", failure.message, failure.code)
    except OSError as error:
        return FileOutcome(source.path, "failed", f"cannot be read: {error.strerror or error}", "unreadable")
    # The same content: ready, or being read (by a server's reader, or the recovery of a
    # run that stopped); a failed one is read again.
    same = [d for d in documents if d.sha256 == sha256 and d.status != Document.Status.FAILED]
    current = next((d for d in same if d.status == Document.Status.READY), same[0] if same else None)
    if current is not None:
        # Others under the same path are left over from an interrupted run (once this
        # one is ready: until then, the previous version answers).
        leftovers = [d for d in documents if d.pk != current.pk]
        if leftovers and current.status == Document.Status.READY and not dry_run:
            documents_delete(leftovers)
        return FileOutcome(source.path, "unchanged")
    if not documents:
        moved = _moved_from(gone, sha256)
        if moved is not None:
            from_path, document = moved
            if not dry_run:
                Document.objects.filter(pk=document.pk).update(
                    path=source.path, name=display_name(source.path)
                )
                if len(gone[from_path]) > 1:
                    documents_delete([d for d in gone[from_path] if d.pk != document.pk])
            del gone[from_path]
            return FileOutcome(source.path, "moved", f"from {from_path}")
    action = "updated" if documents else "added"
    try:
        if dry_run:
            _type_check(source)
        else:
            with source.location.open("rb") as handle:
                file = File(handle, name=source.location.name)
                collection_document_read(
                    collection=collection, path=source.path, name=source.location.name, file=file
                )
            if documents:
                documents_delete(documents)
    except ReadFailed as failure:
        kept = "; the previous version stays" if documents else ""
        return FileOutcome(source.path, "failed", f"{failure.message}{kept}", failure.code)
    except OSError as error:
        return FileOutcome(source.path, "failed", f"cannot be read: {error.strerror or error}", "unreadable")
    return FileOutcome(source.path, action)


def _moved_from(gone: dict[str, list[Document]], sha256: str) -> tuple[str, Document] | None:
    for path, documents in sorted(gone.items()):
        for document in documents:
            if document.sha256 == sha256 and document.status == Document.Status.READY:
                return path, document
    return None


def sync_lines(report: SyncReport, *, verbosity: int) -> Iterator[str]:
    """The report as lines for a terminal: the files that changed (all at verbosity 2), then
    the failures with their reasons, then the counts."""
    verb = {
        "added": "would add" if report.dry_run else "added",
        "updated": "would update" if report.dry_run else "updated",
        "moved": "would move" if report.dry_run else "moved",
        "removed": "would remove" if report.dry_run else "removed",
        "unchanged": "unchanged",
        "skipped": "skipped",
        "failed": "would fail" if report.dry_run else "failed",
    }
    shown = {"added", "updated", "moved", "removed"} | ({"unchanged", "skipped"} if verbosity >= 2 else set())
    for outcome in report.outcomes:
        if outcome.action in shown:
            detail = f" ({outcome.detail})" if outcome.detail else ""
            yield f"  {verb[outcome.action]:<12} {outcome.path}{detail}"
    for outcome in report.failed:
        code = f" [{outcome.code}]" if outcome.code else ""
        yield f"  {verb['failed']:<12} {outcome.path}: {outcome.detail}{code}"
    collection = report.collection
    if report.created:
        created = "would create" if report.dry_run else "created"
        yield (
            f"{created.capitalize()} collection {collection.slug!r} ({collection.name}); nobody may "
            "read it until it has groups or 'everyone' in the admin."
        )
    counts = ", ".join(
        f"{report.count(action)} {action}"
        for action in ACTIONS
        if action != "skipped" or report.count("skipped")
    )
    prefix = "Dry run, nothing was changed" if report.dry_run else "Done"
    yield f"{prefix}: collection {collection.slug!r}: {counts}."
