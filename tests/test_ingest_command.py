"""manage.py ingest: a folder kept in step with a knowledge collection, run after run."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest
from django.core.management import CommandError, ManagementUtility, call_command

from assistant.models import Chunk, Collection, Document
from tests.helpers import documents as samples


class Terminal(io.StringIO):
    """A stderr that says it is a terminal."""

    def isatty(self) -> bool:
        return True


@pytest.fixture
def media(settings, tmp_path) -> Path:
    settings.MEDIA_ROOT = tmp_path / "media"
    return settings.MEDIA_ROOT


@pytest.fixture
def folder(tmp_path) -> Path:
    """A handbook: Markdown, a Word file in a subfolder, a CSV; hidden things, a picture."""
    root = tmp_path / "handbook"
    (root / "richtlinien").mkdir(parents=True)
    (root / "urlaub.md").write_bytes(b"# Urlaub\n\nDer Urlaubsantrag geht an die Personalabteilung.\n")
    (root / "richtlinien" / "ueberstunden.docx").write_bytes(
        samples.docx(["Überstunden werden monatlich erfasst."])
    )
    (root / "preise.csv").write_bytes(samples.csv_bytes())
    (root / ".git").mkdir()
    (root / ".git" / "notes.txt").write_bytes(b"Versteckte Notiz im Ordner")
    (root / ".entwurf.txt").write_bytes(b"Versteckter Entwurf")
    (root / "logo.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(64))
    return root


def ingest(*args: str, **options) -> tuple[str, str]:
    out, err = options.pop("stdout", io.StringIO()), options.pop("stderr", io.StringIO())
    call_command("ingest", *args, stdout=out, stderr=err, **options)
    return out.getvalue(), err.getvalue()


def paths(slug: str = "handbook") -> dict[str, Document]:
    return {d.path: d for d in Document.objects.filter(collection__slug=slug)}


def stored_files(media: Path) -> set[str]:
    return (
        {p.relative_to(media).as_posix() for p in media.rglob("*") if p.is_file()}
        if media.exists()
        else set()
    )


def passages_of(document: Document) -> str:
    return " ".join(
        Chunk.objects.filter(document=document).order_by("ordinal").values_list("text", flat=True)
    )


# --- the first run -----------------------------------------------------------------------------


def test_ingest_creates_the_collection_and_reads_every_supported_file(db, media, folder):
    out, _err = ingest(str(folder), "--collection", "handbook", "--name", "Handbuch")

    collection = Collection.objects.get(slug="handbook")
    assert collection.name == "Handbuch"
    assert not collection.everyone
    assert not collection.groups.exists()
    documents = paths()
    assert sorted(documents) == ["preise.csv", "richtlinien/ueberstunden.docx", "urlaub.md"]
    assert {d.status for d in documents.values()} == {"ready"}
    assert documents["richtlinien/ueberstunden.docx"].name == "ueberstunden.docx"
    assert "Überstunden werden monatlich erfasst" in passages_of(documents["richtlinien/ueberstunden.docx"])
    assert "Urlaubsantrag" in passages_of(documents["urlaub.md"])
    assert stored_files(media) == {d.file.name for d in documents.values()}
    assert "added        richtlinien/ueberstunden.docx" in out
    assert "Created collection 'handbook' (Handbuch); nobody may read it" in out
    assert "Done: collection 'handbook': 3 added, 0 updated, 0 moved, 0 unchanged, 0 removed, 0 failed" in out


def test_hidden_files_and_unsupported_types_are_passed_over(db, media, folder):
    out, _err = ingest(str(folder), "--collection", "handbook", "--name", "Handbuch", verbosity=2)

    assert not Document.objects.filter(path__contains="notes").exists()
    assert not Document.objects.filter(path__contains="entwurf").exists()
    assert ".git" not in out
    assert ".entwurf" not in out
    assert "skipped      logo.png (not a supported type)" in out
    assert "1 skipped" in out


def test_a_missing_collection_without_a_name_is_refused_with_the_existing_ones(db, media, folder):
    Collection.objects.create(slug="vertrieb", name="Vertrieb")

    with pytest.raises(
        CommandError, match=r"There is no collection 'handbuch' \(existing: vertrieb\)\. Add --name"
    ):
        ingest(str(folder), "--collection", "handbuch")

    assert list(Collection.objects.values_list("slug", flat=True)) == ["vertrieb"]
    assert not Document.objects.exists()
    assert stored_files(media) == set()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--collection", "Hand Buch", "--name", "x"], "--collection must be an identifier"),
        (["--collection", "handbook", "--name", "x" * 101], "--name is longer than 100 characters"),
    ],
)
def test_bad_arguments_are_refused_and_change_nothing(db, media, folder, args, message):
    with pytest.raises(CommandError, match=message):
        ingest(str(folder), *args)
    assert not Collection.objects.exists()


def test_a_path_that_does_not_exist_is_refused(db, media, tmp_path):
    Collection.objects.create(slug="handbook", name="Handbuch")
    with pytest.raises(CommandError, match="There is no file or folder"):
        ingest(str(tmp_path / "fehlt"), "--collection", "handbook")


# --- runs after the first -------------------------------------------------------------------------


@pytest.fixture
def ingested(db, media, folder) -> dict[str, Document]:
    ingest(str(folder), "--collection", "handbook", "--name", "Handbuch")
    return paths()


def test_a_second_run_finds_everything_unchanged(ingested, media, folder):
    out, _err = ingest(str(folder), "--collection", "handbook")

    assert {path: d.pk for path, d in paths().items()} == {path: d.pk for path, d in ingested.items()}
    assert "Done: collection 'handbook': 0 added, 0 updated, 0 moved, 3 unchanged, 0 removed, 0 failed" in out


def test_a_changed_file_is_read_again_and_replaces_its_document(
    ingested, media, folder, django_capture_on_commit_callbacks
):
    old = ingested["urlaub.md"]
    (folder / "urlaub.md").write_bytes(b"# Urlaub\n\nNeu: Der Urlaubsantrag geht an die Teamleitung.\n")

    with django_capture_on_commit_callbacks(execute=True):
        out, _err = ingest(str(folder), "--collection", "handbook")

    new = paths()["urlaub.md"]
    assert new.pk != old.pk
    assert not Document.objects.filter(pk=old.pk).exists()
    assert not Chunk.objects.filter(document_id=old.pk).exists()
    assert "Teamleitung" in passages_of(new)
    assert old.file.name not in stored_files(media)  # the old file left storage
    assert new.file.name in stored_files(media)
    assert "updated      urlaub.md" in out
    assert "0 added, 1 updated, 0 moved, 2 unchanged, 0 removed, 0 failed" in out


def test_a_removed_file_takes_its_document_and_file_with_it(
    ingested, media, folder, django_capture_on_commit_callbacks
):
    (folder / "preise.csv").unlink()

    with django_capture_on_commit_callbacks(execute=True):
        out, _err = ingest(str(folder), "--collection", "handbook")

    assert sorted(paths()) == ["richtlinien/ueberstunden.docx", "urlaub.md"]
    assert not Chunk.objects.filter(document_id=ingested["preise.csv"].pk).exists()
    assert stored_files(media) == {d.file.name for d in paths().values()}
    assert "removed      preise.csv" in out
    assert "0 added, 0 updated, 0 moved, 2 unchanged, 1 removed, 0 failed" in out


def test_a_moved_file_keeps_its_document_without_reading_it_again(ingested, media, folder):
    (folder / "archiv").mkdir()
    os.rename(folder / "urlaub.md", folder / "archiv" / "urlaub-2024.md")

    out, _err = ingest(str(folder), "--collection", "handbook")

    moved = paths()["archiv/urlaub-2024.md"]
    assert moved.pk == ingested["urlaub.md"].pk
    assert moved.name == "urlaub-2024.md"
    assert "urlaub.md" not in paths()
    assert "moved        archiv/urlaub-2024.md (from urlaub.md)" in out
    assert "0 added, 0 updated, 1 moved, 2 unchanged, 0 removed, 0 failed" in out


def test_documents_uploaded_in_the_admin_are_left_alone(ingested, media, folder):
    from assistant.documents.ingest import document_ingest_file

    collection = Collection.objects.get(slug="handbook")
    uploaded = document_ingest_file(
        collection=collection, path="", name="Betriebsvereinbarung.txt", file=io.BytesIO(samples.txt())
    )

    ingest(str(folder), "--collection", "handbook")

    assert Document.objects.filter(pk=uploaded.pk).exists()


def test_one_file_updates_its_document_and_removes_nothing(ingested, media, folder):
    (folder / "urlaub.md").write_bytes(b"# Urlaub\n\nGeaendert.\n")

    out, _err = ingest(str(folder / "urlaub.md"), "--collection", "handbook")

    assert sorted(paths()) == ["preise.csv", "richtlinien/ueberstunden.docx", "urlaub.md"]
    assert paths()["urlaub.md"].pk != ingested["urlaub.md"].pk
    assert "0 added, 1 updated, 0 moved, 0 unchanged, 0 removed, 0 failed" in out


def test_a_run_that_changes_the_collection_logs_who_ran_it(ingested, media, folder, caplog):
    caplog.set_level("INFO", logger="assistant.staff.collections")
    ingest(str(folder), "--collection", "handbook", "--actor", "cron@host")
    assert not caplog.records  # nothing changed: quiet

    (folder / "neu.txt").write_bytes(samples.txt())
    ingest(str(folder), "--collection", "handbook", "--actor", "cron@host")

    (record,) = caplog.records
    assert "into collection handbook by cron@host: 1 added, 0 updated" in record.getMessage()


def test_an_existing_collection_keeps_its_name(ingested, media, folder):
    _out, err = ingest(str(folder), "--collection", "handbook", "--name", "Anders")
    assert Collection.objects.get(slug="handbook").name == "Handbuch"
    assert "--name is ignored" in err


# --- the dry run ---------------------------------------------------------------------------------


def test_dry_run_reports_the_same_and_changes_nothing(ingested, media, folder):
    (folder / "urlaub.md").write_bytes(b"# Urlaub\n\nGeaendert.\n")
    (folder / "preise.csv").unlink()
    (folder / "neu.txt").write_bytes(samples.txt())
    (folder / "kaputt.pdf").write_bytes(samples.elf_executable())
    before = {d.pk: d.sha256 for d in Document.objects.all()}
    files = stored_files(media)

    buffer = io.StringIO()

    with pytest.raises(CommandError, match=r"1 file could not be read: kaputt\.pdf"):
        ingest(str(folder), "--collection", "handbook", "--dry-run", stdout=buffer)

    out = buffer.getvalue()

    assert {d.pk: d.sha256 for d in Document.objects.all()} == before
    assert stored_files(media) == files
    assert "would add    neu.txt" in out
    assert "would update urlaub.md" in out
    assert "would remove preise.csv" in out
    assert "would fail   kaputt.pdf:" in out
    assert "[unsupported_type]" in out
    assert (
        "Dry run, nothing was changed: collection 'handbook': 1 added, 1 updated, 0 moved, 1 unchanged" in out
    )
    assert "1 unchanged, 1 removed, 1 failed, 1 skipped." in out


def test_dry_run_of_a_new_collection_creates_nothing(db, media, folder):
    out, _err = ingest(str(folder), "--collection", "handbook", "--name", "Handbuch", "--dry-run")

    assert not Collection.objects.exists()
    assert not Document.objects.exists()
    assert stored_files(media) == set()
    assert "Would create collection 'handbook' (Handbuch)" in out
    assert "3 added" in out


# --- failures ------------------------------------------------------------------------------------


def test_a_file_that_cannot_be_read_is_named_with_its_reason_and_the_rest_goes_on(
    db, media, folder, django_capture_on_commit_callbacks
):
    (folder / "bericht.pdf").write_bytes(samples.elf_executable())  # an executable renamed
    (folder / "scan.pdf").write_bytes(samples.scanned_pdf())
    out = io.StringIO()

    with (
        django_capture_on_commit_callbacks(execute=True),
        pytest.raises(CommandError, match=r"2 files could not be read: bericht.pdf, scan.pdf\."),
    ):
        ingest(str(folder), "--collection", "handbook", "--name", "Handbuch", stdout=out)

    text = out.getvalue()
    assert "failed       bericht.pdf:" in text
    assert "[unsupported_type]" in text
    assert "failed       scan.pdf:" in text
    assert "[no_text]" in text
    assert "3 added, 0 updated, 0 moved, 0 unchanged, 0 removed, 2 failed" in text
    # Nothing half-done: no document and no stored file for either.
    assert sorted(paths()) == ["preise.csv", "richtlinien/ueberstunden.docx", "urlaub.md"]
    assert stored_files(media) == {d.file.name for d in paths().values()}


def test_a_failed_file_makes_the_exit_status_non_zero(db, media, folder, capsys):
    (folder / "bericht.pdf").write_bytes(samples.elf_executable())

    with pytest.raises(SystemExit) as exit_status:
        ManagementUtility(
            ["manage.py", "ingest", str(folder), "--collection", "handbook", "--name", "H"]
        ).execute()

    assert exit_status.value.code == 1
    captured = capsys.readouterr()
    assert "failed       bericht.pdf:" in captured.out
    assert "CommandError: 1 file could not be read: bericht.pdf." in captured.err


def test_a_changed_file_that_fails_keeps_the_previous_version(ingested, media, folder):
    (folder / "urlaub.md").write_bytes(b"\x00\x01\x02 not text at all \xff\xfe")
    out = io.StringIO()

    with pytest.raises(CommandError):
        ingest(str(folder), "--collection", "handbook", stdout=out)

    kept = paths()["urlaub.md"]
    assert kept.pk == ingested["urlaub.md"].pk
    assert "Urlaubsantrag" in passages_of(kept)
    assert "the previous version stays" in out.getvalue()


def test_a_file_over_the_size_limit_is_refused_unread(db, media, folder, settings):
    settings.ASSISTANT_UPLOAD_MAX_BYTES = 2048
    (folder / "gross.txt").write_bytes(b"Text " * 1000)
    out = io.StringIO()

    with pytest.raises(CommandError, match=r"gross\.txt"):
        ingest(str(folder), "--collection", "handbook", "--name", "Handbuch", stdout=out)

    assert (
        "failed       gross.txt: The file is larger than 2.0\xa0KB, the limit for documents. [too_large]"
        in (out.getvalue())
    )


# --- links ---------------------------------------------------------------------------------------


def test_links_outside_the_folder_are_not_followed(db, media, folder, tmp_path):
    outside = tmp_path / "privat"
    outside.mkdir()
    (outside / "gehalt.txt").write_bytes(b"Gehaltsliste, vertraulich")
    (folder / "gehalt.txt").symlink_to(outside / "gehalt.txt")
    (folder / "privat").symlink_to(outside, target_is_directory=True)
    (folder / "auch-urlaub.md").symlink_to(folder / "urlaub.md")

    out, _err = ingest(str(folder), "--collection", "handbook", "--name", "Handbuch", verbosity=2)

    assert "gehalt.txt" not in paths()
    assert not Chunk.objects.filter(text__contains="Gehaltsliste").exists()
    assert "skipped      gehalt.txt (a link to outside the folder (not followed))" in out
    assert "skipped      privat (a link to a folder (not followed))" in out
    assert "auch-urlaub.md" in paths()  # a link within the folder is read under its own path


# --- the progress bar ----------------------------------------------------------------------------


def test_the_progress_bar_is_drawn_on_a_terminal_only(db, media, folder):
    terminal = Terminal()
    ingest(str(folder), "--collection", "handbook", "--name", "Handbuch", stderr=terminal)
    drawn = terminal.getvalue()
    assert "\r\x1b[K[" in drawn
    assert "] 0/3 preise.csv" in drawn
    assert "] 2/3 urlaub.md" in drawn
    assert drawn.endswith("\r\x1b[K")  # the bar is gone once the run ends
    assert "\x1b[31" not in drawn  # not styled as an error

    _out, err = ingest(str(folder), "--collection", "handbook")
    assert "\r" not in err
