"""Documents through a real server: uploads in every format read in the background with
their events on the conversation's stream, every bad input refused with nothing stored,
other users' documents answering 404, the download, and a server killed mid-reading."""

from __future__ import annotations

import hashlib
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from django.conf import settings
from django.contrib.auth.models import Group
from django.core.files.base import ContentFile

from assistant.documents.ingest import document_ingest_file
from assistant.models import Chunk, Collection, Conversation, Document, Message
from tests.helpers import documents as samples
from tests.helpers.chat import create_conversation
from tests.helpers.live import live_env, session_client, start_daphne, stop_daphne, wait_until
from tests.helpers.sse import parse_sse, sse_lines

pytestmark = pytest.mark.live

UMLAUTS_START = samples.UMLAUTS[:20]
# A PDF that takes seconds to read (a few milliseconds a page): progress to see, a server
# to kill midway. Built once (text_pdf caches it).
LONG_PDF_PAGES = 1000


def long_pdf() -> bytes:
    return samples.text_pdf(LONG_PDF_PAGES, core_font=True)


def documents_url(conversation: dict) -> str:
    return f"/api/conversations/{conversation['id']}/documents/"


def upload(client: httpx.Client, conversation: dict, name: str, data: bytes) -> httpx.Response:
    return client.post(documents_url(conversation), files={"file": (name, data, "application/octet-stream")})


def stored_files() -> list[Path]:
    root = Path(settings.MEDIA_ROOT) / "documents"
    return sorted(path for path in root.rglob("*") if path.is_file()) if root.exists() else []


def reading_events(
    client: httpx.Client, conversation: dict, send: Callable[[], httpx.Response], deadline: float = 60
) -> tuple[httpx.Response, list[dict]]:
    """`send()` an upload while following the conversation's stream; its answer, and the
    `document` events of the document it made, up to ready or failed."""
    with client.stream("GET", conversation["events_url"], timeout=httpx.Timeout(30, read=30)) as stream:
        assert stream.status_code == 200
        events = parse_sse(sse_lines(stream))
        assert next(events).event == "stream-open"
        response = send()
        if response.status_code != 202:
            return response, []
        document_id = response.json()["id"]
        seen: list[dict] = []
        give_up = time.monotonic() + deadline
        for event in events:
            assert time.monotonic() < give_up, f"document {document_id} not read within {deadline} s: {seen}"
            if event.event == "document" and event.json()["document"] == document_id:
                seen.append(event.json())
                if seen[-1]["status"] in ("ready", "failed"):
                    return response, seen
    raise AssertionError(f"the stream ended before document {document_id} was read: {seen}")


FORMATS = {
    "pdf": ("Vertrag.pdf", lambda: samples.text_pdf(3)),
    "docx": ("Richtlinie.docx", lambda: samples.docx()),
    "odt": ("Richtlinie.odt", lambda: samples.odt()),
    "pptx": ("Folien.pptx", lambda: samples.pptx(3)),
    "xlsx": ("Tabelle.xlsx", lambda: samples.xlsx(2)),
    "csv": ("Adressen.csv", lambda: samples.csv_bytes()),
    "txt": ("Notiz.txt", lambda: samples.txt()),
    "md": ("Notiz.md", lambda: samples.markdown()),
    "html": ("Seite.html", lambda: samples.html_with_scripts()),
}
# A word of the sample's text, as each format carries it.
EXPECTED = {"csv": "Jürgen Müller", "xlsx": "Hauptstraße"}


@pytest.mark.parametrize("kind", list(FORMATS))
def test_an_upload_is_read_in_the_background_with_its_events(alice_http, alice, kind):
    name, build = FORMATS[kind]
    data = build()
    conversation = create_conversation(alice_http)

    response, events = reading_events(
        alice_http, conversation, lambda: upload(alice_http, conversation, name, data)
    )

    assert response.status_code == 202, response.text
    body = response.json()
    assert body | {"id": "", "created_at": "", "file_url": ""} == {
        "id": "",
        "name": name,
        "kind": kind,
        "size": len(data),
        "status": "queued",
        "pages_done": 0,
        "pages": None,
        "error": None,
        "file_url": "",
        "created_at": "",
    }
    assert body["file_url"] == f"/documents/{body['id']}/file"
    statuses = [event["status"] for event in events]
    assert statuses[0] in ("queued", "processing")
    assert "processing" in statuses
    assert statuses[-1] == "ready", events[-1]
    assert events[-1]["name"] == name
    assert events[-1]["pages"] >= 1
    assert events[-1]["pages_done"] == events[-1]["pages"]
    assert "error" not in events[-1]
    document = Document.objects.get(pk=body["id"])
    assert (document.owner, document.status, document.processed_by) == (alice, "ready", "")
    assert document.sha256 == hashlib.sha256(data).hexdigest()
    text = " ".join(document.chunks.values_list("text", flat=True))
    assert EXPECTED.get(kind, UMLAUTS_START) in text
    # Stored under its id, never under the name it came with.
    assert document.file.name.startswith("documents/")
    assert document.file.name.endswith(body["id"])
    assert (Path(settings.MEDIA_ROOT) / document.file.name).read_bytes() == data
    listed = alice_http.get(documents_url(conversation)).json()["documents"]
    assert [d["id"] for d in listed] == [body["id"]]
    assert alice_http.get(f"/api/documents/{body['id']}/").json()["status"] == "ready"


def test_a_long_pdf_reports_its_pages_as_it_reads(alice_http):
    conversation = create_conversation(alice_http)
    data = long_pdf()

    response, events = reading_events(
        alice_http, conversation, lambda: upload(alice_http, conversation, "Handbuch.pdf", data)
    )

    assert response.status_code == 202, response.text
    reading = [e for e in events if e["status"] == "processing"]
    # "Reading page 212 of 1000": a page count known, pages done in between, going up.
    between = [e for e in reading if 0 < e["pages_done"] < LONG_PDF_PAGES]
    assert between, events
    assert all(e["pages"] == LONG_PDF_PAGES for e in between)
    done = [e["pages_done"] for e in reading]
    assert done == sorted(done)
    assert events[-1] | {"document": ""} == {
        "document": "",
        "name": "Handbuch.pdf",
        "status": "ready",
        "pages_done": LONG_PDF_PAGES,
        "pages": LONG_PDF_PAGES,
    }
    document = Document.objects.get(pk=response.json()["id"])
    assert set(document.chunks.values_list("page", flat=True)) == set(range(1, LONG_PDF_PAGES + 1))


def test_a_pdf_without_text_fails_with_a_clear_message(alice_http):
    conversation = create_conversation(alice_http)

    response, events = reading_events(
        alice_http, conversation, lambda: upload(alice_http, conversation, "Scan.pdf", samples.scanned_pdf())
    )

    assert response.status_code == 202
    failed = events[-1]
    assert failed["status"] == "failed"
    assert failed["error"]["code"] == "no_text"
    assert "text" in failed["error"]["message"]
    document_id = response.json()["id"]
    assert alice_http.get(f"/api/documents/{document_id}/").json()["error"] == failed["error"]
    assert not Chunk.objects.filter(document_id=document_id).exists()


BAD_INPUT = {
    "executable renamed .pdf": ("report.pdf", samples.elf_executable, 415, "unsupported_type"),
    "windows executable renamed .pdf": ("rechnung.pdf", samples.pe_executable, 415, "unsupported_type"),
    "empty": ("leer.txt", lambda: b"", 400, "empty"),
    "encrypted pdf": ("geheim.pdf", lambda: samples.encrypted_pdf("geheim"), 400, "encrypted"),
    "zip bomb": ("bombe.docx", samples.ooxml_bomb, 400, "archive_bomb"),
    "zip bomb with lying sizes": ("bombe.docx", samples.lying_bomb, 400, "archive_bomb"),
    "truncated pdf": ("halb.pdf", lambda: samples.truncated(samples.text_pdf(3)), 400, "damaged"),
    "truncated docx": ("halb.docx", lambda: samples.truncated(samples.docx()), 400, "damaged"),
    "10,000 pages": ("dick.pdf", samples.many_pages_pdf, 400, "too_many_pages"),
}


@pytest.mark.parametrize("case", list(BAD_INPUT))
def test_bad_input_is_refused_with_nothing_stored(alice_http, case):
    name, build, status, code = BAD_INPUT[case]
    conversation = create_conversation(alice_http)
    before = stored_files()

    response = upload(alice_http, conversation, name, build())

    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code
    assert error["message"].endswith(".")  # a sentence for the person, not a code
    assert len(error["message"]) > len(code)
    assert not Document.objects.exists()
    assert stored_files() == before


def test_a_file_over_the_limit_is_refused_with_nothing_stored(alice_http):
    conversation = create_conversation(alice_http)
    before = stored_files()
    limit = settings.ASSISTANT_UPLOAD_MAX_BYTES

    # Within the body's limit (the file's plus its multipart framing): the service says so.
    just_over = upload(alice_http, conversation, "gross.txt", b"a" * (limit + 1))
    # Far over it: refused before the body is read.
    far_over = upload(alice_http, conversation, "riesig.txt", b"a" * (limit + 1024 * 1024))

    assert (just_over.status_code, just_over.json()["error"]["code"]) == (413, "too_large")
    assert "25" in just_over.json()["error"]["message"]  # names the limit
    assert (far_over.status_code, far_over.json()["error"]["code"]) == (413, "too_large")
    assert not Document.objects.exists()
    assert stored_files() == before


def test_the_same_file_twice_in_a_conversation_is_refused(alice_http):
    conversation = create_conversation(alice_http)
    data = samples.docx()
    first = upload(alice_http, conversation, "Richtlinie.docx", data)
    files = stored_files()

    again = upload(alice_http, conversation, "Kopie von Richtlinie.docx", data)

    assert first.status_code == 202
    assert again.status_code == 409
    assert again.json()["error"]["code"] == "duplicate_document"
    assert "Richtlinie.docx" in again.json()["error"]["message"]
    assert [str(pk) for pk in Document.objects.values_list("pk", flat=True)] == [first.json()["id"]]
    assert stored_files() == files
    # Another conversation may have it too.
    other = create_conversation(alice_http)
    assert upload(alice_http, other, "Richtlinie.docx", data).status_code == 202


def test_an_upload_without_a_file_is_refused(alice_http):
    conversation = create_conversation(alice_http)

    as_json = alice_http.post(documents_url(conversation), json={"file": "Vertrag.pdf"})
    wrong_field = alice_http.post(documents_url(conversation), files={"datei": ("a.txt", b"Hallo")})

    for response in (as_json, wrong_field):
        assert (response.status_code, response.json()["error"]["code"]) == (400, "no_file")
    assert not Document.objects.exists()


def ready_document(client: httpx.Client, conversation: dict, name: str, data: bytes) -> dict:
    response, events = reading_events(client, conversation, lambda: upload(client, conversation, name, data))
    assert events[-1]["status"] == "ready", events
    return response.json()


def test_another_users_documents_answer_404(alice_http, bob_http, alice):
    conversation = create_conversation(alice_http)
    document = ready_document(alice_http, conversation, "Gehalt.txt", samples.txt("Gehaltsverhandlung 4711"))
    sources = [{"n": 1, "text": "4711"}]
    answer = Message.objects.create(conversation_id=conversation["id"], role="assistant", sources=sources)
    before = list(Document.objects.values_list()), list(Chunk.objects.values_list())

    responses = [
        bob_http.get(f"/api/documents/{document['id']}/"),
        bob_http.delete(f"/api/documents/{document['id']}/"),
        bob_http.get(document["file_url"]),
        bob_http.get(documents_url(conversation)),
        upload(bob_http, conversation, "Fremd.txt", b"Von Bob"),
        bob_http.get(f"/api/messages/{answer.pk}/sources/"),
    ]

    for response in responses:
        assert response.status_code == 404, response.request.url
        assert b"4711" not in response.content
    assert (list(Document.objects.values_list()), list(Chunk.objects.values_list())) == before
    assert alice_http.get(f"/api/messages/{answer.pk}/sources/").json() == {"sources": sources}


def test_the_file_downloads_as_an_attachment(alice_http, bob_http, bob):
    conversation = create_conversation(alice_http)
    data = samples.text_pdf(2)
    document = ready_document(alice_http, conversation, 'Über "alles"; Vertrag.pdf', data)

    response = alice_http.get(document["file_url"])

    assert response.status_code == 200
    assert response.content == data
    assert response.headers["content-type"] == "application/pdf"
    assert response.headers["content-length"] == str(len(data))
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["cache-control"] == "private, no-store"
    disposition = response.headers["content-disposition"]
    assert disposition.startswith("attachment; ")
    assert disposition == "attachment; filename*=utf-8''%C3%9Cber%20%22alles%22%3B%20Vertrag.pdf"
    assert alice_http.head(document["file_url"]).status_code == 200


def test_an_html_file_downloads_as_bytes_never_a_page(alice_http):
    conversation = create_conversation(alice_http)
    document = ready_document(alice_http, conversation, "seite.html", samples.html_with_scripts())

    response = alice_http.get(document["file_url"])

    assert response.headers["content-type"] == "application/octet-stream"
    assert response.headers["content-disposition"] == 'attachment; filename="seite.html"'


def test_a_collections_file_downloads_for_its_readers_only(live, alice, bob):
    collection = Collection.objects.create(slug="handbuch", name="Handbuch")
    readers = Group.objects.create(name="Personal")
    collection.groups.add(readers)
    document = document_ingest_file(
        collection=collection, path="urlaub.md", name="urlaub.md", file=ContentFile(samples.markdown())
    )
    url = f"/documents/{document.pk}/file"
    with session_client(live, alice) as alice_http, session_client(live, bob) as bob_http:
        assert bob_http.get(url).status_code == 404
        alice.groups.add(readers)
        assert alice_http.get(url).content == samples.markdown()
        assert bob_http.get(url).status_code == 404
        collection.everyone = True
        collection.save()
        assert bob_http.get(url).status_code == 200
        # Not through the API of one's own documents, though.
        assert bob_http.get(f"/api/documents/{document.pk}/").status_code == 404
    anonymous = httpx.get(live.url + url, follow_redirects=False)
    assert anonymous.status_code == 302


def test_deleting_a_document_removes_it_its_passages_and_its_file(alice_http):
    conversation = create_conversation(alice_http)
    document = ready_document(alice_http, conversation, "Notiz.md", samples.markdown())
    path = Path(settings.MEDIA_ROOT) / Document.objects.get(pk=document["id"]).file.name

    response, deleted = None, []
    with alice_http.stream("GET", conversation["events_url"], timeout=httpx.Timeout(30, read=30)) as stream:
        events = parse_sse(sse_lines(stream))
        assert next(events).event == "stream-open"
        response = alice_http.delete(f"/api/documents/{document['id']}/")
        for event in events:
            if event.event == "document":
                deleted.append(event.json())
                break

    assert response.status_code == 204
    assert (deleted[0]["document"], deleted[0]["status"]) == (document["id"], "deleted")
    assert not Document.objects.exists()
    assert not Chunk.objects.exists()
    assert wait_until(lambda: not path.exists())
    assert alice_http.get(f"/api/documents/{document['id']}/").status_code == 404


def test_deleting_a_document_while_it_is_read_stops_the_reading(alice_http):
    conversation = create_conversation(alice_http)
    response = upload(alice_http, conversation, "Handbuch.pdf", long_pdf())
    document_id = response.json()["id"]
    assert wait_until(lambda: Document.objects.get(pk=document_id).pages_done > 0, timeout=30)
    path = Path(settings.MEDIA_ROOT) / Document.objects.get(pk=document_id).file.name

    assert alice_http.delete(f"/api/documents/{document_id}/").status_code == 204

    assert wait_until(lambda: not path.exists())
    # The reader stops at its next page: nothing comes back, no passage is stored.
    time.sleep(1)
    assert not Document.objects.filter(pk=document_id).exists()
    assert not Chunk.objects.exists()


def test_deleting_the_conversation_removes_its_files(alice_http):
    conversation = create_conversation(alice_http)
    document = ready_document(alice_http, conversation, "Notiz.md", samples.markdown())
    path = Path(settings.MEDIA_ROOT) / Document.objects.get(pk=document["id"]).file.name

    assert alice_http.delete(f"/api/conversations/{conversation['id']}/").status_code == 204

    assert not Document.objects.exists()
    assert wait_until(lambda: not path.exists())


# --- a server killed while it reads ---------------------------------------------------------


SHORT_LEASE = {"ASSISTANT_LEASE_SECONDS": "1.5", "ASSISTANT_HEARTBEAT_SECONDS": "0.3"}


def test_a_document_a_killed_server_was_reading_is_read_again_by_the_next(
    django_db_setup, transactional_db, upstream, alice
):
    conversation = Conversation.objects.create(owner=alice, model="fake-model")
    data = long_pdf()
    first = start_daphne(live_env(upstream, **SHORT_LEASE), "documents-killed")
    try:
        with session_client(first, alice, timeout=60) as client:
            response = upload(client, {"id": str(conversation.pk)}, "Handbuch.pdf", data)
        assert response.status_code == 202, response.text
        document_id = response.json()["id"]
        # Killed once it has read some pages, long before the last.
        assert wait_until(lambda: Document.objects.get(pk=document_id).pages_done > 0, timeout=30)
        os.kill(first.process.pid, signal.SIGKILL)
        first.process.wait()
    finally:
        stop_daphne(first)
    half = Document.objects.get(pk=document_id)
    assert half.status == "processing"
    assert 0 < half.pages_done < LONG_PDF_PAGES
    assert not Chunk.objects.filter(document_id=document_id).exists()

    second = start_daphne(live_env(upstream, **SHORT_LEASE), "documents-restarted")
    try:
        ended = Document.objects.filter(pk=document_id, status__in=["ready", "failed"])
        done = wait_until(ended.first, timeout=90)
    finally:
        stop_daphne(second)

    assert done is not None
    assert done.status == "ready", done.error_detail
    assert (done.pages, done.pages_done, done.processed_by) == (LONG_PDF_PAGES, LONG_PDF_PAGES, "")
    chunks = list(Chunk.objects.filter(document_id=document_id).order_by("ordinal"))
    assert [c.ordinal for c in chunks] == list(range(len(chunks)))
    assert {c.page for c in chunks} == set(range(1, LONG_PDF_PAGES + 1))
