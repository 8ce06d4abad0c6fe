"""Documents and sources on the chat page (issue 22), in Chromium: files added through the
attach button, dropped on the conversation and pasted; their reading shown live from the
`document` events, in other tabs too; refusals in the server's own words; removal; an
answer's citations opening the passage they came from, live and after a reload; axe-core
on each state."""

from __future__ import annotations

import base64
import re

import pytest
from playwright.sync_api import expect

from assistant.models import Assistant, Conversation, Document, Message
from assistant.personas.versions import version_save
from tests.helpers import documents as samples
from tests.helpers.browser import (
    ANSWER_TIMEOUT_MS,
    PHONE,
    last_assistant,
    only_conversation,
    screenshot,
    send,
    serious_accessibility_violations,
    wait_status,
)
from tests.helpers.chat import fake, last_answer_request
from tests.helpers.live import wait_until

pytestmark = pytest.mark.browser

# Reading a small file takes the server's reader thread well under a second.
READ_TIMEOUT_MS = 20_000
CONVERSATION_URL = re.compile(r"/c/[0-9a-f-]{36}/$")
NOTES = "Notiz: <b>fett</b> <img src=x onerror=alert(1)> Die Probezeit dauert sechs Monate."

# Every status text each document card shows, by the document's name, in order.
STATUS_RECORDER = """
() => {
  window.__statuses = {};
  const record = () => {
    document.querySelectorAll("#documents .document").forEach((card) => {
      const name = card.querySelector(".document-name").textContent;
      const status = card.querySelector(".document-status").textContent;
      const seen = (window.__statuses[name] = window.__statuses[name] || []);
      if (seen[seen.length - 1] !== status) seen.push(status);
    });
  };
  new MutationObserver(record).observe(document.getElementById("documents"), {
    subtree: true, childList: true, characterData: true, attributes: true,
  });
}
"""

# Files made in the page (from base64, or `size` zero bytes), carried in a DataTransfer
# as a drag from the file manager carries them, through the drag events named.
DRAG = """
([files, steps]) => {
  const data = new DataTransfer();
  for (const [name, type, content] of files) {
    const bytes = typeof content === "number"
      ? new Uint8Array(content)
      : Uint8Array.from(atob(content), (c) => c.charCodeAt(0));
    data.items.add(new File([bytes], name, { type }));
  }
  const target = document.getElementById("messages");
  for (const step of steps) {
    target.dispatchEvent(new DragEvent(step, { bubbles: true, cancelable: true, dataTransfer: data }));
  }
}
"""

# A file pasted into the question, as a copy in the file manager pastes it.
PASTE = """
([name, type, content]) => {
  const data = new DataTransfer();
  data.items.add(new File([Uint8Array.from(atob(content), (c) => c.charCodeAt(0))], name, { type }));
  const input = document.getElementById("composer-input");
  input.focus();
  input.dispatchEvent(new ClipboardEvent("paste", { bubbles: true, cancelable: true, clipboardData: data }));
}
"""


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def card(page, name: str):
    return page.locator("#documents .document").filter(has=page.locator(".document-name", has_text=name))


def wait_ready(page, name: str) -> None:
    expect(card(page, name).locator(".document-status")).to_have_text("Ready", timeout=READ_TIMEOUT_MS)


def statuses(page, name: str) -> list[str]:
    return page.evaluate("(name) => window.__statuses[name] || []", name)


def server_refusal(client, conversation: Conversation, name: str, data: bytes) -> tuple[int, dict]:
    """What the API answers for this upload (nothing is stored when it refuses)."""
    response = client.post(f"/api/conversations/{conversation.pk}/documents/", files={"file": (name, data)})
    return response.status_code, response.json()


def focused_label(page) -> str:
    """The focused element's name: its aria-label, else its text."""
    return page.evaluate(
        "() => document.activeElement.getAttribute('aria-label') || document.activeElement.textContent.trim()"
    )


def test_files_chosen_in_a_new_chat_are_read_and_their_passages_cited(pages, alice, upstream):
    page = pages.open(alice).page
    page.evaluate(STATUS_RECORDER)

    page.set_input_files(
        "#document-input",
        files=[
            {"name": "Vertrag.md", "mimeType": "text/markdown", "buffer": samples.markdown()},
            {"name": "Notizen.txt", "mimeType": "text/plain", "buffer": samples.txt(NOTES)},
        ],
    )

    # The new chat became a conversation first; both files went into it.
    page.wait_for_url(CONVERSATION_URL)
    wait_ready(page, "Vertrag.md")
    wait_ready(page, "Notizen.txt")
    screenshot(page, "documents-ready")
    conversation = only_conversation(alice)
    assert page.url.endswith(f"/c/{conversation.pk}/")
    stored = {d.name: d for d in Document.objects.filter(conversation=conversation)}
    assert set(stored) == {"Vertrag.md", "Notizen.txt"}
    # Upload, then the reading as the events told it, to the end.
    seen = statuses(page, "Vertrag.md")
    assert "Uploading…" in seen, seen
    assert any(s in ("Waiting to be read", "Reading…") or s.startswith("Reading page") for s in seen), seen
    assert seen[-1] == "Ready"
    assert card(page, "Vertrag.md").locator(".document-meta").text_content().startswith("Markdown · ")
    assert card(page, "Notizen.txt").locator(".document-meta").text_content().startswith("TXT · ")
    download = card(page, "Vertrag.md").locator("a.document-download")
    assert download.get_attribute("href") == f"/documents/{stored['Vertrag.md'].pk}/file"
    assert (
        page.request.get(page.url.split("/c/")[0] + download.get_attribute("href")).body()
        == samples.markdown()
    )

    send(page, fake(text="Laut Vertrag gilt das [1]. Die Probezeit steht in [2]; im Code bleibt `[1]` Text."))
    answer = wait_status(page, "done", timeout=ANSWER_TIMEOUT_MS)

    # The documents reached the model, and its citations became buttons (not in code).
    system = " ".join(str(m["content"]) for m in last_answer_request(upstream)["body"]["messages"])
    assert "Prüfungsbögen" in system
    assert answer.locator("button.citation").count() == 2
    assert answer.locator("code").text_content() == "[1]"
    citation = answer.locator(".text").get_by_role("button", name=re.compile(r"^Source 1: Vertrag\.md"))
    expect(citation).to_have_text("[1]")

    citation.click()
    dialog = page.locator("#source-dialog")
    expect(dialog).to_be_visible()
    expect(page.locator("#source-dialog-title")).to_have_text("Source 1")
    expect(page.locator("#source-passage")).to_contain_text("Prüfungsbögen")
    assert "Vertrag.md" in page.locator("#source-where").text_content()
    assert (
        page.locator("#source-download").get_attribute("href") == f"/documents/{stored['Vertrag.md'].pk}/file"
    )
    assert page.evaluate("() => document.getElementById('source-dialog').contains(document.activeElement)")
    screenshot(page, "documents-passage")
    page.keyboard.press("Escape")
    expect(dialog).to_be_hidden()
    assert focused_label(page).startswith("Source 1: Vertrag.md")

    # The list below the answer opens the same passages; a passage is text, never HTML.
    items = answer.locator(".sources .source-item")
    assert items.count() == 2
    items.nth(1).click()
    expect(page.locator("#source-dialog-title")).to_have_text("Source 2")
    expect(page.locator("#source-passage")).to_contain_text("<b>fett</b> <img src=x onerror=alert(1)>")
    assert page.locator("#source-passage b, #source-passage img").count() == 0
    page.get_by_role("button", name="Close").last.click()
    expect(dialog).to_be_hidden()

    # A reload shows the same documents and the same citations.
    page.reload()
    expect(card(page, "Vertrag.md").locator(".document-status")).to_have_text("Ready")
    expect(card(page, "Notizen.txt").locator(".document-status")).to_have_text("Ready")
    answer = last_assistant(page)
    assert answer.locator("button.citation").count() == 2
    answer.locator(".text").get_by_role("button", name=re.compile(r"^Source 2: Notizen\.txt")).click()
    expect(page.locator("#source-passage")).to_contain_text("Die Probezeit dauert sechs Monate.")
    page.keyboard.press("Escape")
    expect(dialog).to_be_hidden()
    assert Conversation.objects.filter(owner=alice).count() == 1


def test_dropped_files_show_their_reading_and_the_servers_refusals(pages, alice, alice_http):
    conversation = Conversation.objects.create(owner=alice, title="Unterlagen", model="fake-model")
    page = pages.open(alice, f"/c/{conversation.pk}/").page
    page.evaluate(STATUS_RECORDER)
    manual = ["Handbuch.pdf", "application/pdf", b64(samples.text_pdf(40))]

    # Dragging over the conversation shows where to drop; leaving hides it again.
    page.evaluate(DRAG, [[manual], ["dragenter", "dragover"]])
    expect(page.locator("#drop-zone")).to_be_visible()
    expect(page.locator("#drop-zone")).to_contain_text("Drop files to add them to this conversation")
    screenshot(page, "documents-drop-zone")
    page.evaluate(DRAG, [[manual], ["dragleave"]])
    expect(page.locator("#drop-zone")).to_be_hidden()

    page.evaluate(DRAG, [[manual], ["dragenter", "dragover", "drop"]])
    expect(page.locator("#drop-zone")).to_be_hidden()
    wait_ready(page, "Handbuch.pdf")
    seen = statuses(page, "Handbuch.pdf")
    assert any(re.fullmatch(r"Reading page \d+ of 40", s) for s in seen), seen
    assert card(page, "Handbuch.pdf").locator(".document-meta").text_content().startswith("PDF · ")

    # Refused by the server: each card says why, in the words the API gives.
    executable = samples.elf_executable()
    status, refusal = server_refusal(alice_http, conversation, "Bericht.pdf", executable)
    assert status == 415
    page.evaluate(DRAG, [[["Bericht.pdf", "application/pdf", b64(executable)]], ["dragenter", "drop"]])
    refused = card(page, "Bericht.pdf")
    expect(refused.locator(".document-status")).to_have_text(
        refusal["error"]["message"], timeout=READ_TIMEOUT_MS
    )
    assert refused.get_attribute("data-status") == "refused"

    page.evaluate(DRAG, [[manual], ["dragenter", "drop"]])
    again = card(page, "Handbuch.pdf").and_(page.locator('[data-status="refused"]'))
    expect(again.locator(".document-status")).to_have_text(
        "This file is in the conversation already, as “Handbuch.pdf”.", timeout=READ_TIMEOUT_MS
    )

    # Over the limit: refused before it is sent, with the message the server would give.
    limit = page.evaluate(
        "() => JSON.parse(document.getElementById('page-data').textContent).upload.max_bytes"
    )
    status, too_large = server_refusal(alice_http, conversation, "Riesig.txt", b"a" * (limit + 1))
    assert status == 413
    page.evaluate(DRAG, [[["Riesig.txt", "text/plain", limit + 1]], ["dragenter", "drop"]])
    expect(card(page, "Riesig.txt").locator(".document-status")).to_have_text(too_large["error"]["message"])
    screenshot(page, "documents-refused")
    assert list(Document.objects.filter(conversation=conversation).values_list("name", flat=True)) == [
        "Handbuch.pdf"
    ]

    # A refused file only leaves the list: nothing was stored, nothing to confirm.
    card(page, "Riesig.txt").get_by_role("button", name="Remove Riesig.txt").click()
    expect(card(page, "Riesig.txt")).to_have_count(0)
    expect(page.locator("#document-remove-dialog")).to_be_hidden()


def test_a_pasted_file_reaches_every_tab_and_its_removal_too(pages, alice):
    conversation = Conversation.objects.create(owner=alice, title="Unterlagen", model="fake-model")
    first = pages.open(alice, f"/c/{conversation.pk}/").page
    other = pages.open(alice, f"/c/{conversation.pk}/").page

    first.evaluate(PASTE, ["Protokoll.txt", "text/plain", b64(samples.txt())])

    wait_ready(first, "Protokoll.txt")
    assert first.locator("#composer-input").input_value() == ""  # the file, not its name
    # The other tab learns of it from the conversation's events, and asks for the rest.
    wait_ready(other, "Protokoll.txt")
    expect(card(other, "Protokoll.txt").locator(".document-meta")).to_have_text(re.compile(r"^TXT · "))
    document = Document.objects.get(conversation=conversation)
    assert card(other, "Protokoll.txt").locator("a.document-download").get_attribute("href") == (
        f"/documents/{document.pk}/file"
    )

    remove = card(first, "Protokoll.txt").get_by_role("button", name="Remove Protokoll.txt")
    remove.click()
    dialog = first.locator("#document-remove-dialog")
    expect(dialog).to_be_visible()
    expect(dialog).to_contain_text("“Protokoll.txt” is deleted from this conversation")
    dialog.get_by_role("button", name="Cancel").click()
    expect(dialog).to_be_hidden()
    assert focused_label(first) == "Remove Protokoll.txt"
    assert Document.objects.filter(pk=document.pk).exists()

    remove.click()
    dialog.get_by_role("button", name="Remove").click()
    expect(card(first, "Protokoll.txt")).to_have_count(0)
    expect(card(other, "Protokoll.txt")).to_have_count(0)
    expect(first.locator("#documents")).to_be_hidden()
    assert wait_until(lambda: not Document.objects.filter(pk=document.pk).exists())
    assert first.evaluate("() => document.activeElement.id") == "composer-input"


def test_a_new_chats_first_file_keeps_the_assistant_chosen(pages, alice):
    assistant = Assistant.objects.create(slug="kollege", everyone=True)
    version_save(assistant, {"name": "Kollege", "instructions": "Du bist ein Kollege."}, by="test")
    page = pages.open(alice, "/?assistant=kollege").page

    page.set_input_files(
        "#document-input",
        files=[{"name": "Plan.md", "mimeType": "text/markdown", "buffer": samples.markdown()}],
    )

    page.wait_for_url(CONVERSATION_URL)
    wait_ready(page, "Plan.md")
    conversation = only_conversation(alice)
    assert conversation.assistant_version.assistant.slug == "kollege"
    expect(page.locator("#assistant-name")).to_have_text("Kollege")
    expect(page.locator("#assistant-gallery")).to_have_count(0)
    send(page, fake(text="Gelesen."))
    wait_status(page, "done")
    assert only_conversation(alice).pk == conversation.pk
    expect(page.locator("#conversation-title")).not_to_have_text("Untitled")


def conversation_with_sources(alice) -> tuple[Conversation, Message]:
    """A conversation with a document in each state and an answer citing two passages,
    stored as the server stores them (no reading needed)."""
    conversation = Conversation.objects.create(owner=alice, title="Arbeitsvertrag", model="fake-model")

    def document(name: str, kind: str, **fields) -> Document:
        return Document.objects.create(
            owner=alice,
            conversation=conversation,
            name=name,
            kind=kind,
            size=fields.pop("size", 48_213),
            sha256=name,
            file=f"documents/{name}",
            **fields,
        )

    contract = document("Arbeitsvertrag Müller 2026 – unterschrieben.pdf", "pdf", status="ready", pages=12)
    document("Gehaltstabelle.xlsx", "xlsx", status="processing", pages=40, pages_done=11, size=2_400_000)
    document(
        "Scan.pdf",
        "pdf",
        status="failed",
        error_code="no_text",
        error_detail="This PDF has no text layer (a scan?). Upload a PDF with text.",
    )
    Message.objects.create(
        conversation=conversation, role="user", content="Wie lang ist die Kündigungsfrist?"
    )
    sources = [
        {"n": n, "document": str(contract.pk), "name": contract.name, "page": page, "chunk": n, "text": text}
        for n, page, text in [
            (1, 3, "§ 8 Kündigung\n\nDie Kündigungsfrist beträgt drei Monate zum Monatsende."),
            (2, 4, "§ 9 Probezeit: sechs Monate, Kündigung mit zwei Wochen Frist."),
        ]
    ]
    answer = Message.objects.create(
        conversation=conversation,
        role="assistant",
        status="done",
        finish_reason="stop",
        content="Drei Monate [1], in der Probezeit zwei Wochen [1, 2]. Nicht [9], nicht `[2]`.",
        sources=sources,
    )
    return conversation, answer


def test_stored_citations_link_only_known_sources_outside_code(pages, alice):
    conversation, answer = conversation_with_sources(alice)
    page = pages.open(alice, f"/c/{conversation.pk}/").page

    shown = page.locator(f'[data-message-id="{answer.pk}"]')
    labels = [b.get_attribute("aria-label") for b in shown.locator(".text button.citation").all()]
    name = "Arbeitsvertrag Müller 2026 – unterschrieben.pdf"
    assert labels == [f"Source 1: {name}, page 3", f"Source 1: {name}, page 3", f"Source 2: {name}, page 4"]
    assert shown.locator(".text").text_content().strip() == (
        "Drei Monate [1], in der Probezeit zwei Wochen [1][2]. Nicht [9], nicht [2]."
    )
    expect(shown.locator(".sources-heading")).to_have_text("Sources")
    expect(card(page, "Gehaltstabelle.xlsx").locator(".document-status")).to_have_text(
        "Reading page 12 of 40"
    )
    expect(card(page, "Scan.pdf").locator(".document-status")).to_have_text(
        "This PDF has no text layer (a scan?). Upload a PDF with text."
    )

    # Keyboard only: to the citation, Enter opens the passage, Escape goes back to it.
    shown.locator(".text button.citation").nth(2).focus()
    page.keyboard.press("Enter")
    expect(page.locator("#source-passage")).to_have_text(
        "§ 9 Probezeit: sechs Monate, Kündigung mit zwei Wochen Frist."
    )
    expect(page.locator("#source-where")).to_have_text(f"{name}, page 4")
    page.keyboard.press("Escape")
    expect(page.locator("#source-dialog")).to_be_hidden()
    assert focused_label(page) == f"Source 2: {name}, page 4"


@pytest.mark.parametrize("state", ["documents", "passage", "passage dark", "phone", "remove"])
def test_no_serious_accessibility_violations(pages, alice, state):
    conversation, answer = conversation_with_sources(alice)
    options = {"color_scheme": "dark" if "dark" in state else "light", **(PHONE if state == "phone" else {})}
    page = pages.open(alice, f"/c/{conversation.pk}/", **options).page
    expect(page.locator("#documents .document")).to_have_count(3)
    if state.startswith("passage"):
        page.locator(f'[data-message-id="{answer.pk}"] button.citation').first.click()
        expect(page.locator("#source-passage")).to_contain_text("Die Kündigungsfrist beträgt drei Monate")
    if state == "remove":
        page.get_by_role("button", name=re.compile(r"^Remove Scan\.pdf")).click()
        expect(page.locator("#document-remove-dialog")).to_be_visible()
    if state == "phone":
        assert page.evaluate("() => document.documentElement.scrollWidth") <= 390
        # The cards are one row that scrolls sideways; each one scrolled to fits the screen.
        box = page.locator("#documents").bounding_box()
        assert box["x"] >= 0, box
        assert box["x"] + box["width"] <= 390, box
        assert box["height"] < 140, box
        last = page.locator("#documents .document").last
        last.scroll_into_view_if_needed()
        box = last.bounding_box()
        assert box["x"] >= 0, box
        assert box["x"] + box["width"] <= 390, box
    screenshot(page, f"documents-axe-{state.replace(' ', '-')}")
    assert serious_accessibility_violations(page) == []
