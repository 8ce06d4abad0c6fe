"""Admin: knowledge collections with their documents and an upload; a user's document
opens (name, passages, file) only for a stated reason, on the access log its owner reads;
a collection's document opens without one; assistants bound to collections."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from asgiref.sync import async_to_sync
from django.contrib.admin.models import LogEntry
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group, Permission
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.urls import reverse

from assistant import review
from assistant.documents.ingest import document_ingest_file, document_upload
from assistant.documents.worker import document_read
from assistant.models import AccessLog, Assistant, Chunk, Collection, Conversation, Document
from assistant.personas.versions import version_save
from assistant.processes import PROCESS_ID
from tests.helpers import documents as samples
from tests.helpers.live import logged_in, session_client, wait_until

REASON = {"purpose": "support", "details": "Ticket 4711: alice asked for help"}


@pytest.fixture
def media(settings, tmp_path) -> Path:
    settings.MEDIA_ROOT = tmp_path / "media"
    return settings.MEDIA_ROOT


@pytest.fixture
def ada(db):
    return get_user_model().objects.create_superuser("ada", password="ada-password-1")


@pytest.fixture
def ada_client(ada) -> Client:
    return logged_in(ada)


@pytest.fixture
def rita(db):
    user = get_user_model().objects.create_user("rita", password="rita-password-1")
    review.reviewer_grant(user=user)
    return user


@pytest.fixture
def rita_client(rita) -> Client:
    return logged_in(rita)


def staff_with(*codenames: str) -> Client:
    """A staff user with just these permissions on the assistant app."""
    user = get_user_model().objects.create_user("sam", password="sam-password-1", is_staff=True)
    user.user_permissions.set(
        Permission.objects.filter(content_type__app_label="assistant", codename__in=codenames)
    )
    return logged_in(user)


def user_document(user, conversation: Conversation, name: str, data: bytes) -> Document:
    """A user's upload, read to the end in this thread (the pipeline a reader thread runs)."""
    document = document_upload(
        user=user, conversation_id=conversation.pk, upload=SimpleUploadedFile(name, data)
    )
    # Outside a test's transaction the upload's commit handed it to a reader thread already.
    read = document_read(document.pk) or wait_until(
        lambda: Document.objects.filter(pk=document.pk, status="ready").first(), timeout=30
    )
    assert read is not None
    assert read.status == "ready", read.error_detail
    return read


@pytest.fixture
def contract(alice, media) -> Document:
    conversation = Conversation.objects.create(owner=alice, title="Vertragsfrage", model="demo")
    return user_document(
        alice, conversation, "Arbeitsvertrag Müller.txt", b"Probezeit sechs Monate, Gehalt 4200 Euro."
    )


@pytest.fixture
def handbook(db, media) -> Collection:
    collection = Collection.objects.create(slug="handbook", name="Handbuch", everyone=True)
    document_ingest_file(
        collection=collection,
        path="urlaub/antrag.md",
        name="antrag.md",
        file=io.BytesIO(b"# Urlaub\n\nDer Urlaubsantrag geht an die Personalabteilung.\n"),
    )
    return collection


def change_url(document: Document) -> str:
    return reverse("admin:assistant_document_change", args=[document.pk])


def review_url(document: Document) -> str:
    return reverse("admin:assistant_document_review", args=[document.pk])


def file_url(document: Document) -> str:
    return reverse("admin:assistant_document_file", args=[document.pk])


def documents_url(**query: str) -> str:
    url = reverse("admin:assistant_document_changelist")
    return url + ("?" + "&".join(f"{k}={v}" for k, v in query.items()) if query else "")


def streamed(response) -> bytes:
    async def collect() -> bytes:
        return b"".join([chunk async for chunk in response.streaming_content])

    return async_to_sync(collect)()


# --- collections ---------------------------------------------------------------------------------


def test_collection_is_created_with_the_groups_that_read_it(ada_client):
    sales = Group.objects.create(name="Vertrieb")

    response = ada_client.post(
        reverse("admin:assistant_collection_add"),
        {"name": "Preislisten", "slug": "preise", "description": "Aktuelle Preise", "groups": [sales.pk]},
    )

    assert response.status_code == 302
    collection = Collection.objects.get(slug="preise")
    assert collection.name == "Preislisten"
    assert list(collection.groups.all()) == [sales]
    assert not collection.everyone
    listing = ada_client.get(reverse("admin:assistant_collection_changelist")).content.decode()
    assert "Vertrieb" in listing


def test_collection_page_lists_its_documents_read_only(ada_client, handbook):
    document = handbook.documents.get()

    page = ada_client.get(reverse("admin:assistant_collection_change", args=[handbook.pk])).content.decode()

    assert "urlaub/antrag.md" in page
    assert change_url(document) in page
    assert "ready" in page
    assert "1 document" in page
    assert reverse("admin:assistant_collection_upload", args=[handbook.pk]) in page
    assert 'name="documents-' not in page  # no inline forms: read-only


def test_upload_in_the_admin_reads_the_files_in_the_background(transactional_db, media, client):
    ada = get_user_model().objects.create_superuser("ada", password="ada-password-1")
    client.force_login(ada)
    collection = Collection.objects.create(slug="handbook", name="Handbuch")

    response = client.post(
        reverse("admin:assistant_collection_upload", args=[collection.pk]),
        {
            "files": [
                SimpleUploadedFile(
                    "Überstunden.docx", samples.docx(["Überstunden werden monatlich erfasst."])
                ),
                SimpleUploadedFile("preise.csv", samples.csv_bytes()),
            ]
        },
    )

    assert response.status_code == 302
    assert response.url == reverse("admin:assistant_collection_change", args=[collection.pk])
    documents = wait_until(
        lambda: (
            list(collection.documents.order_by("name"))
            if set(collection.documents.values_list("status", flat=True)) == {"ready"}
            and collection.documents.count() == 2
            else None
        ),
        timeout=30,
    )
    assert documents, list(collection.documents.values_list("name", "status", "error_detail"))
    assert [(d.name, d.path, d.kind) for d in documents] == [
        ("preise.csv", "", "csv"),
        ("Überstunden.docx", "", "docx"),
    ]
    assert Chunk.objects.filter(document=documents[1], text__contains="monatlich erfasst").exists()
    assert {(media / d.file.name).is_file() for d in documents} == {True}


def test_upload_refuses_an_executable_and_a_duplicate_and_stores_nothing(ada_client, handbook, media):
    before = {p for p in media.rglob("*") if p.is_file()}

    response = ada_client.post(
        reverse("admin:assistant_collection_upload", args=[handbook.pk]),
        {
            "files": [
                SimpleUploadedFile("bericht.pdf", samples.elf_executable()),
                SimpleUploadedFile(
                    "kopie.md", b"# Urlaub\n\nDer Urlaubsantrag geht an die Personalabteilung.\n"
                ),
            ]
        },
        follow=True,
    )

    page = response.content.decode()
    assert "“bericht.pdf” was not added: This file type is not supported." in page
    assert "“kopie.md” was not added: This file is in the collection already, as “urlaub/antrag.md”." in page
    assert handbook.documents.count() == 1
    assert {p for p in media.rglob("*") if p.is_file()} == before


def test_upload_needs_the_permissions_to_change_the_collection_and_add_documents(handbook):
    url = reverse("admin:assistant_collection_upload", args=[handbook.pk])
    file = SimpleUploadedFile("notiz.txt", b"Notiz")

    assert staff_with("view_collection", "change_collection").post(url, {"files": [file]}).status_code == 403
    assert handbook.documents.count() == 1


# --- a collection's document: company knowledge ---------------------------------------------------


def test_collection_document_opens_and_downloads_without_a_reason(ada_client, handbook):
    document = handbook.documents.get()

    page = ada_client.get(change_url(document))
    assert page.status_code == 200
    assert "Der Urlaubsantrag geht an die Personalabteilung." in page.content.decode()
    response = ada_client.get(file_url(document))
    assert response.status_code == 200
    assert streamed(response) == b"# Urlaub\n\nDer Urlaubsantrag geht an die Personalabteilung.\n"
    assert response["Content-Disposition"] == 'attachment; filename="antrag.md"'
    assert not AccessLog.objects.exists()


def test_collection_documents_are_not_open_to_reviewers_without_the_view_permission(rita_client, handbook):
    document = handbook.documents.get()

    assert rita_client.get(change_url(document)).status_code == 404
    assert rita_client.get(file_url(document)).status_code == 404
    assert "antrag.md" not in rita_client.get(documents_url()).content.decode()


def test_read_again_queues_collection_documents_only(
    ada_client, handbook, contract, django_capture_on_commit_callbacks
):
    document = handbook.documents.get()

    with django_capture_on_commit_callbacks() as callbacks:
        response = ada_client.post(
            documents_url(),
            {"action": "read_again", "_selected_action": [str(document.pk), str(contract.pk)]},
            follow=True,
        )

    document.refresh_from_db()
    contract.refresh_from_db()
    assert (document.status, document.processed_by) == ("queued", PROCESS_ID)
    assert contract.status == "ready"
    assert len(callbacks) == 1
    page = response.content.decode()
    assert "1 document is read again in the background." in page
    assert "1 document of a user was left alone" in page


# --- a user's document: personal content ----------------------------------------------------------


def test_the_list_shows_users_documents_without_their_names(rita_client, contract):
    page = rita_client.get(documents_url()).content.decode()

    assert "alice" in page
    assert "Arbeitsvertrag" not in page
    assert "content: state a reason to review" in page


def test_a_users_document_opens_only_for_a_reason_which_is_logged(rita_client, rita, alice, contract):
    assert rita_client.get(change_url(contract)).url == review_url(contract)
    form = rita_client.get(review_url(contract)).content.decode()
    assert "Arbeitsvertrag" not in form
    assert not AccessLog.objects.exists()

    response = rita_client.post(review_url(contract), REASON)

    assert response.status_code == 302
    assert response.url == change_url(contract)
    entry = AccessLog.objects.get()
    assert (entry.reviewer, entry.owner, entry.conversation_id) == (rita, alice, contract.conversation_id)
    assert entry.reason == f"document {contract.pk}: User support request: Ticket 4711: alice asked for help"
    page = rita_client.get(change_url(contract)).content.decode()
    assert "Arbeitsvertrag Müller.txt" in page
    assert "Probezeit sechs Monate, Gehalt 4200 Euro." in page
    assert AccessLog.objects.count() == 1  # reading again within the grant is the same access


def test_a_short_reason_is_refused_and_opens_nothing(rita_client, contract):
    response = rita_client.post(review_url(contract), {"purpose": "support", "details": "kurz"})

    assert response.status_code == 200
    assert "errorlist" in response.content.decode()
    assert not AccessLog.objects.exists()
    assert rita_client.get(change_url(contract)).status_code == 302


def test_each_download_of_a_users_file_is_logged_for_the_owner(rita_client, rita, alice, contract):
    assert rita_client.get(file_url(contract)).url == review_url(contract)  # no reason yet
    rita_client.post(review_url(contract), REASON)

    response = rita_client.get(file_url(contract))

    assert response.status_code == 200
    assert streamed(response) == b"Probezeit sechs Monate, Gehalt 4200 Euro."
    assert response["Content-Type"] == "application/octet-stream"
    assert response["Content-Disposition"].startswith("attachment;")
    assert response["X-Content-Type-Options"] == "nosniff"
    reasons = list(AccessLog.objects.order_by("accessed_at", "pk").values_list("reason", flat=True))
    assert reasons == [
        f"document {contract.pk}: User support request: Ticket 4711: alice asked for help",
        f"document {contract.pk} downloaded: User support request: Ticket 4711: alice asked for help",
    ]
    # The owner reads both.
    own_log = logged_in(alice).get(reverse("access_log")).content.decode()
    assert f"document {contract.pk} downloaded" in own_log
    assert "rita" in own_log


def test_staff_without_the_review_permission_cannot_open_a_users_document(contract):
    client = staff_with("view_document")

    assert client.get(change_url(contract)).status_code == 403
    assert client.get(review_url(contract)).status_code == 403
    assert client.get(file_url(contract)).status_code == 403
    assert "Arbeitsvertrag" not in client.get(documents_url()).content.decode()
    assert not AccessLog.objects.exists()


def test_lookups_on_content_are_refused(ada_client, contract):
    assert ada_client.get(documents_url(name__startswith="Arbeit")).status_code == 400
    assert ada_client.get(documents_url(chunks__text__contains="Probezeit")).status_code == 400


def test_a_metadata_search_does_not_match_the_names_of_users_documents(rita_client, contract):
    response = rita_client.get(documents_url(q="Arbeitsvertrag"))

    assert response.context["cl"].result_count == 0
    assert rita_client.get(documents_url(q="alice")).context["cl"].result_count == 1
    assert "were not searched" in response.content.decode()
    assert not AccessLog.objects.exists()


def test_the_content_view_shows_names_and_logs_each_conversation(rita_client, rita, contract):
    content = reverse("admin:assistant_document_content")
    response = rita_client.post(f"{content}?next={documents_url()}", REASON)
    assert response.status_code == 302
    assert "content_view=1" in response.url

    page = rita_client.get(response.url).content.decode()

    assert "Arbeitsvertrag Müller.txt" in page
    entry = AccessLog.objects.get()
    assert entry.conversation_id == contract.conversation_id
    assert entry.reason == "list: User support request: Ticket 4711: alice asked for help"
    found = rita_client.get(documents_url(content_view="1", q="Arbeitsvertrag")).content.decode()
    assert "Arbeitsvertrag Müller.txt" in found
    assert AccessLog.objects.filter(reason__startswith="search “Arbeitsvertrag”: ").count() == 1


def test_only_superusers_delete_a_users_document(
    contract, ada_client, media, django_capture_on_commit_callbacks
):
    delete_url = reverse("admin:assistant_document_delete", args=[contract.pk])
    assert staff_with("view_document", "delete_document").get(delete_url).status_code == 403

    confirmation = ada_client.get(delete_url).content.decode()
    assert "Arbeitsvertrag" not in confirmation
    assert "alice · " in confirmation
    with django_capture_on_commit_callbacks(execute=True):
        response = ada_client.post(delete_url, {"post": "yes"}, follow=True)

    assert response.status_code == 200
    assert "Arbeitsvertrag" not in response.content.decode()
    assert not Document.objects.filter(pk=contract.pk).exists()
    assert not (media / contract.file.name).exists()
    assert "Arbeitsvertrag" not in LogEntry.objects.get().object_repr


def test_staff_with_the_delete_permission_delete_collection_documents(
    handbook, media, django_capture_on_commit_callbacks
):
    document = handbook.documents.get()
    client = staff_with("view_document", "delete_document")

    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(
            reverse("admin:assistant_document_delete", args=[document.pk]), {"post": "yes"}
        )

    assert response.status_code == 302
    assert not handbook.documents.exists()
    assert not (media / document.file.name).exists()


# --- through a real server -------------------------------------------------------------------------


def test_a_users_file_downloads_through_the_server_after_a_reason(live, alice, settings):
    conversation = Conversation.objects.create(owner=alice, title="Vertragsfrage", model="demo")
    document = user_document(alice, conversation, "Vertrag.pdf", samples.text_pdf(2))
    data = (Path(settings.MEDIA_ROOT) / document.file.name).read_bytes()
    # A superuser (the live tests' database is flushed, the Reviewers group with it): a
    # reason all the same.
    root = get_user_model().objects.create_superuser("root", password="root-password-1")

    with session_client(live, root) as http:
        assert http.get(file_url(document)).status_code == 302
        assert http.post(review_url(document), data=REASON).status_code == 302
        response = http.get(file_url(document))

    assert response.status_code == 200
    assert response.content == data
    assert response.headers["content-disposition"] == 'attachment; filename="Vertrag.pdf"'
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["content-type"] == "application/octet-stream"
    assert AccessLog.objects.filter(reason__startswith=f"document {document.pk} downloaded: ").count() == 1


# --- assistants ------------------------------------------------------------------------------------


def test_an_assistant_is_bound_to_collections_in_its_form(ada_client, handbook):
    other = Collection.objects.create(slug="preise", name="Preislisten")
    assistant = Assistant.objects.create(slug="hr", everyone=True)
    version_save(assistant, {"name": "Personal", "instructions": "Du hilfst bei Personalfragen."}, by="setup")
    url = reverse("admin:assistant_assistant_change", args=[assistant.pk])
    page = ada_client.get(url)
    assert 'name="collections"' in page.content.decode()
    # The form as a browser sends it (its inline's management form too), with the binding.
    forms = [page.context["adminform"].form]
    for inline in page.context["inline_admin_formsets"]:
        forms += [inline.formset.management_form, *inline.formset.forms]
    data = {}
    for form in forms:
        for name in form.fields:
            value = form[name].value()
            if value is not False and value is not None:
                data[form.add_prefix(name)] = "on" if value is True else value
    data["collections"] = [handbook.pk]

    response = ada_client.post(url, data)

    assert response.status_code == 302, response.context["adminform"].form.errors
    assert list(assistant.collections.all()) == [handbook]
    assert other not in assistant.collections.all()


# --- queries ---------------------------------------------------------------------------------------


def _queries(client: Client, url: str) -> int:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as queries:
        assert client.get(url).status_code == 200
    return len(queries)


def test_the_lists_take_the_same_queries_for_one_document_and_for_many(ada_client, alice, handbook):
    conversation = Conversation.objects.create(owner=alice, title="Vertragsfrage", model="demo")
    user_document(alice, conversation, "eins.txt", b"Erste Notiz")
    one = (
        _queries(ada_client, documents_url()),
        _queries(ada_client, reverse("admin:assistant_collection_changelist")),
    )

    for n in range(3):
        user_document(
            alice, Conversation.objects.create(owner=alice, model="demo"), f"{n}.txt", f"Notiz {n}".encode()
        )
        collection = Collection.objects.create(slug=f"c{n}", name=f"Sammlung {n}")
        collection.groups.add(Group.objects.create(name=f"Gruppe {n}"))
        document_ingest_file(
            collection=collection, path=f"{n}.txt", name=f"{n}.txt", file=io.BytesIO(b"Wissen")
        )
    many = (
        _queries(ada_client, documents_url()),
        _queries(ada_client, reverse("admin:assistant_collection_changelist")),
    )

    assert many == one


def test_deleting_a_collection_takes_its_documents_passages_and_files(
    ada_client, handbook, media, django_capture_on_commit_callbacks
):
    document = handbook.documents.get()
    url = reverse("admin:assistant_collection_delete", args=[handbook.pk])
    confirmation = ada_client.get(url).content.decode()
    assert "urlaub/antrag.md" in confirmation
    assert "Passages: 1" in confirmation

    with django_capture_on_commit_callbacks(execute=True):
        assert ada_client.post(url, {"post": "yes"}).status_code == 302

    assert not Collection.objects.exists()
    assert not Document.objects.exists()
    assert not Chunk.objects.exists()
    assert not (media / document.file.name).exists()


def test_an_upload_larger_than_one_file_may_be_is_refused_whole(ada_client, handbook, settings):
    settings.ASSISTANT_UPLOAD_MAX_BYTES = 2048
    files = [SimpleUploadedFile(f"teil{n}.txt", b"Text " * 300) for n in range(2)]

    response = ada_client.post(
        reverse("admin:assistant_collection_upload", args=[handbook.pk]), {"files": files}
    )

    assert response.status_code == 200
    assert "larger than 2.0\xa0KB together" in response.content.decode()
    assert handbook.documents.count() == 1


def test_an_upload_in_the_admin_passes_the_servers_body_limit(live, settings):
    root = get_user_model().objects.create_superuser("root", password="root-password-1")
    collection = Collection.objects.create(slug="handbook", name="Handbuch")
    text = ("Der Urlaubsantrag geht an die Personalabteilung. " * 20_000).encode()  # about 1 MB
    assert len(text) > settings.DATA_UPLOAD_MAX_MEMORY_SIZE

    with session_client(live, root) as http:
        response = http.post(
            reverse("admin:assistant_collection_upload", args=[collection.pk]),
            files={"files": ("urlaub.txt", text, "text/plain")},
        )

    assert response.status_code == 302
    assert wait_until(lambda: collection.documents.filter(status="ready").exists(), timeout=30)
