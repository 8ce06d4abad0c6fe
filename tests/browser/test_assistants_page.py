"""Company assistants and guided flows on the chat page (issue 21), in Chromium: the new
chat's gallery, a conversation naming its assistant, a flow's progress moving live and
after a reload, "next phase", a retired assistant, the settings page and its
instructions reaching the model, and axe-core on each."""

from __future__ import annotations

import json

import pytest
from django.contrib.auth.models import Group

from assistant.models import Assistant, Conversation, Preferences
from assistant.personas.versions import version_save
from tests.helpers.browser import (
    PHONE,
    message_id,
    only_conversation,
    screenshot,
    scroll_gap,
    send,
    serious_accessibility_violations,
    wait_status,
)
from tests.helpers.chat import fake, last_answer_request

pytestmark = pytest.mark.browser

PHASES = [
    ("Situation", "Die Lage ist klar."),
    ("Ziel", "Ein Ziel ist benannt."),
    ("Optionen", "Mehrere Wege liegen auf dem Tisch."),
    ("Nächste Schritte", "Der erste Schritt steht fest."),
]


def assistant_create(slug: str, name: str, *, phases=(), everyone: bool = True, groups=(), **values):
    assistant = Assistant.objects.create(slug=slug, everyone=everyone, position=len(slug))
    assistant.groups.set(groups)
    version_save(
        assistant,
        {
            "name": name,
            "description": values.pop("description", f"{name} hilft dir."),
            "icon": values.pop("icon", "sparkles"),
            "instructions": values.pop("instructions", f"Du bist {name}."),
            "starters": values.pop("starters", []),
            "phases": [
                {"title": title, "goal": goal, "instructions": f"Kläre: {title}."} for title, goal in phases
            ],
            **values,
        },
        by="test",
    )
    return assistant


def coaching():
    return assistant_create("coaching", "Coaching", phases=PHASES, icon="compass")


def complete_phase(summary: str, points=(), text: str = "Gut, das halte ich fest.", **behaviour) -> str:
    """A question the fake upstream answers with `text`, then a complete_phase call."""
    call = {"name": "complete_phase", "arguments": {"summary": summary, "points": list(points)}}
    return fake(text=text, tool_calls=[call], **behaviour)


def flow_status(page) -> str:
    return page.locator("#flow-status").text_content()


def wait_flow_status(page, text: str, timeout: float = 15_000) -> None:
    page.wait_for_function(
        "(text) => document.getElementById('flow-status').textContent === text", arg=text, timeout=timeout
    )


def wait_answers(page, count: int, timeout: float = 15_000):
    """Until `count` answers have ended (as done); the newest, pinned to its id."""
    page.wait_for_function(
        """(count) => document.querySelectorAll('.message.assistant[data-status="done"]').length === count
            && !document.querySelector('.message.assistant[data-status="streaming"]')""",
        arg=count,
        timeout=timeout,
    )
    newest = page.locator(".message.assistant").last
    return page.locator(f'[data-message-id="{newest.get_attribute("data-message-id")}"]')


def current_step(page) -> str:
    return page.locator('#flow-steps [aria-current="step"] .step-title').text_content()


# --- the gallery -----------------------------------------------------------------------------


def test_gallery_lists_only_the_assistants_the_user_may_use(pages, alice, bob):
    sales = Group.objects.create(name="Vertrieb")
    bob.groups.add(sales)
    assistant_create("lieblingskollege", "Lieblingskollege", icon="heart")
    coaching()
    assistant_create("angebote", "Angebotsprofi", everyone=False, groups=[sales], icon="briefcase")
    retired = assistant_create("alt", "Altes Werkzeug")
    retired.active = False
    retired.save()

    alice_page = pages.open(alice).page
    cards = alice_page.locator("#assistant-gallery .assistant-card")
    names = cards.locator(".assistant-card-name").all_text_contents()
    assert names == ["Standard", "Coaching", "Lieblingskollege"]
    # The model as it is is the default; the flow says how many phases it has.
    assert cards.first.get_attribute("aria-pressed") == "true"
    coaching_card = alice_page.get_by_role("button", name="Coaching")
    assert "Guided · 4 phases" in coaching_card.text_content()
    assert coaching_card.locator(".assistant-icon use").get_attribute("href") == "#icon-compass"

    bob_page = pages.open(bob).page
    assert bob_page.locator("#assistant-gallery .assistant-card-name").all_text_contents() == [
        "Standard",
        "Angebotsprofi",
        "Coaching",
        "Lieblingskollege",
    ]
    # ... and alice cannot start a chat with bob's group's assistant anyway.
    refused = alice_page.evaluate(
        """async () => {
            const token = document.cookie.match(/csrftoken=([^;]+)/)[1];
            const response = await fetch("/api/conversations/", {
                method: "POST", headers: {"Content-Type": "application/json", "X-CSRFToken": token},
                body: JSON.stringify({assistant: "angebote", content: "Hallo"}),
            });
            return response.status;
        }"""
    )
    assert refused == 404


def test_no_gallery_without_an_assistant_the_user_may_use(pages, alice):
    assistant_create("geheim", "Geheim", everyone=False)

    page = pages.open(alice).page

    assert page.locator("#assistant-gallery").count() == 0
    assert page.locator("#model-select").is_visible()


def test_choosing_an_assistant_starts_the_conversation_with_it(pages, alice, upstream):
    assistant_create(
        "lieblingskollege",
        "Lieblingskollege",
        icon="heart",
        instructions="Du bist der Lieblingskollege. Du duzt alle.",
        starters=["Hilf mir mit einer Absage.", "Sortier meine Woche."],
    )
    page = pages.open(alice).page
    general = page.locator("#starters .starter").all_text_contents()

    # By keyboard: Tab to the card, Space presses it.
    card = page.get_by_role("button", name="Lieblingskollege")
    card.focus()
    page.keyboard.press("Space")

    assert card.get_attribute("aria-pressed") == "true"
    assert page.get_by_role("button", name="Standard").get_attribute("aria-pressed") == "false"
    assert page.locator("#starters .starter").all_text_contents() == [
        "Hilf mir mit einer Absage.",
        "Sortier meine Woche.",
    ]
    assert page.locator("#model-select").is_hidden()  # the assistant names its model
    assert page.url.endswith("/?assistant=lieblingskollege")
    # Back to the model as it is: the general examples again.
    page.get_by_role("button", name="Standard").click()
    assert page.locator("#starters .starter").all_text_contents() == general
    assert page.locator("#model-select").is_visible()
    card.click()

    send(page, fake(text="Klar, mach ich!"))
    wait_status(page, "done")

    conversation = only_conversation(alice)
    assert conversation.assistant_version.assistant.slug == "lieblingskollege"
    system = last_answer_request(upstream)["body"]["messages"][0]
    assert system == {"role": "system", "content": "Du bist der Lieblingskollege. Du duzt alle."}
    assert page.locator("#conversation-assistant").is_visible()
    assert page.locator("#assistant-name").text_content() == "Lieblingskollege"
    assert page.locator("#flow").is_hidden()
    page.reload()
    assert page.locator("#assistant-name").text_content() == "Lieblingskollege"
    assert page.locator("#conversation-assistant use").get_attribute("href") == "#icon-heart"
    assert page.locator("#assistant-retired").is_hidden()
    screenshot(page, "assistant-conversation")


def test_the_address_chooses_an_assistant_for_a_reload_or_a_link(pages, alice):
    assistant_create("schreibhilfe", "Schreibhilfe", icon="pen", starters=["Kürze diesen Text."])

    page = pages.open(alice, "/?assistant=schreibhilfe").page

    assert page.get_by_role("button", name="Schreibhilfe").get_attribute("aria-pressed") == "true"
    assert page.locator("#starters .starter").all_text_contents() == ["Kürze diesen Text."]
    # A slug the user may not use chooses nothing.
    page.goto(pages.live.url + "/?assistant=unbekannt")
    assert page.get_by_role("button", name="Standard").get_attribute("aria-pressed") == "true"


# --- guided flows ----------------------------------------------------------------------------


def test_a_flow_moves_to_its_next_phase_live_when_the_model_completes_one(pages, alice, upstream):
    coaching()
    page = pages.open(alice, "/?assistant=coaching").page

    slowly = "Gut, das halte ich fest. Wir haben jetzt ein klares Bild deiner Lage und gehen weiter."
    send(
        page,
        complete_phase(
            "Es geht um zu viele Zusatzaufgaben.", ["Drei Projekte parallel"], text=slowly, tps=15
        ),
    )
    wait_status(page, "streaming")
    assert flow_status(page) == "1/4 Situation"
    assert current_step(page) == "Situation"
    assert page.locator("#next-phase").is_disabled()  # while the answer streams

    wait_flow_status(page, "2/4 Ziel")
    answer = wait_status(page, "done")
    assert current_step(page) == "Ziel"
    assert page.locator("#flow-goal").text_content() == "Goal: Ein Ziel ist benannt."
    divider = page.locator(".phase-divider")
    assert divider.count() == 1
    assert divider.get_attribute("data-after") == str(message_id(answer))
    assert divider.locator("summary").text_content().strip() == "Phase 1 Situation completed"
    assert divider.locator(".phase-summary p").text_content() == "Es geht um zu viele Zusatzaufgaben."
    assert divider.locator(".phase-summary li").all_text_contents() == ["Drei Projekte parallel"]
    # The new phase has no answer yet: nothing to move on from.
    assert page.locator("#next-phase").is_disabled()
    assert "Now phase 2 of 4: Ziel." in page.locator("#announcer").text_content()
    request = last_answer_request(upstream)["body"]
    assert "Guided flow, phase 1 of 4: Situation" in request["messages"][0]["content"]
    assert [tool["function"]["name"] for tool in request["tools"]] == ["complete_phase"]

    # The summary folds away, and out again.
    divider.locator("summary").click()
    assert divider.locator(".phase-summary").is_hidden()
    divider.locator("summary").click()
    assert divider.locator(".phase-summary").is_visible()

    page.reload()
    assert flow_status(page) == "2/4 Ziel"
    assert current_step(page) == "Ziel"
    assert page.locator("#flow-steps .flow-step.done .step-title").all_text_contents() == ["Situation"]
    reloaded = page.locator(".phase-divider")
    assert reloaded.count() == 1
    assert reloaded.locator(".phase-summary p").text_content() == "Es geht um zu viele Zusatzaufgaben."
    # The next answer is written in phase 2, with phase 1's summary in its context.
    send(page, fake(text="Was möchtest du erreichen?"))
    wait_answers(page, 2)
    system = last_answer_request(upstream)["body"]["messages"][0]["content"]
    assert "Guided flow, phase 2 of 4: Ziel" in system
    assert "- Situation: Es geht um zu viele Zusatzaufgaben." in system
    assert flow_status(page) == "2/4 Ziel"
    screenshot(page, "flow-phase-2")


def test_next_phase_moves_on_here_and_in_another_tab_until_the_flow_is_finished(pages, alice):
    coaching()
    page = pages.open(alice, "/?assistant=coaching").page
    send(page, fake(text="Erzähl mir von deiner Lage."))
    wait_status(page, "done")
    conversation = only_conversation(alice)
    other = pages.open(alice, f"/c/{conversation.pk}/").page
    assert flow_status(other) == "1/4 Situation"
    button = page.locator("#next-phase")
    assert button.is_enabled()

    button.click()

    wait_flow_status(page, "2/4 Ziel")
    wait_flow_status(other, "2/4 Ziel")  # the `phase` event reaches every open tab
    for tab in (page, other):
        divider = tab.locator(".phase-divider")
        assert divider.count() == 1
        words = " ".join(divider.text_content().split())
        assert words == "Phase 1 Situation completed You moved on to the next phase."
    assert button.is_disabled()
    assert page.evaluate("document.activeElement.id") == "composer-input"
    assert scroll_gap(page) <= 24  # the list follows to the new divider

    for phase, title in enumerate(["Ziel", "Optionen", "Nächste Schritte"], start=2):
        send(page, fake(text=f"Antwort in {title}."))
        wait_answers(page, phase)
        assert flow_status(page) == f"{phase}/4 {title}"
        button.click()

    wait_flow_status(page, "4/4 Finished")
    wait_flow_status(other, "4/4 Finished")
    assert button.is_hidden()
    assert page.locator('#flow-steps [aria-current="step"]').count() == 0
    assert page.locator("#flow-steps .flow-step.done").count() == 4
    assert page.locator("#flow-goal").text_content() == "All phases are done. You can go on talking."
    assert page.locator(".phase-divider").count() == 4
    page.reload()
    assert flow_status(page) == "4/4 Finished"
    assert page.locator(".phase-divider").count() == 4


def test_next_phase_errors_are_shown_in_the_page_words(pages, alice):
    coaching()
    page = pages.open(alice, "/?assistant=coaching").page
    send(page, fake(text="Erzähl mir von deiner Lage."))
    wait_status(page, "done")
    # Another tab moved on meanwhile, and its event has not arrived here.
    only_conversation(alice).messages.filter(role="assistant").update(
        phase_summary={"by": "user", "summary": "", "points": []}
    )

    page.locator("#next-phase").click()

    error = page.locator("#composer-error")
    error.wait_for()
    assert error.text_content() == "Write at least one message in this phase before moving on."


def test_regenerating_the_answer_that_ended_a_phase_opens_it_again(pages, alice, upstream):
    coaching()
    page = pages.open(alice, "/?assistant=coaching").page
    ending = {"name": "complete_phase", "arguments": {"summary": "Zu viele Aufgaben."}}
    upstream.set(text="Das halte ich fest.", tool_calls=[ending])
    send(page, "Ich habe zu viele Aufgaben.")
    wait_flow_status(page, "2/4 Ziel")
    answer = wait_answers(page, 1)
    first = message_id(answer)

    upstream.set(text="Erzähl mir mehr.", tool_calls=None)
    answer.get_by_role("button", name="Regenerate").click()

    wait_flow_status(page, "1/4 Situation")
    assert page.locator(".phase-divider").count() == 0
    page.wait_for_function(
        "(first) => { const a = document.querySelector('.message.assistant');"
        " return Number(a.dataset.messageId) !== first && a.dataset.status === 'done'; }",
        arg=first,
    )
    assert page.locator("#next-phase").is_enabled()
    page.reload()
    assert flow_status(page) == "1/4 Situation"
    assert page.locator(".phase-divider").count() == 0
    # Back to the version that ended the phase: it is ended again.
    page.get_by_role("button", name="Previous version").click()
    wait_flow_status(page, "2/4 Ziel")
    assert page.locator(".phase-divider").count() == 1


def test_a_retired_assistant_keeps_its_conversation_readable_but_closed(pages, alice):
    assistant = coaching()
    page = pages.open(alice, "/?assistant=coaching").page
    send(page, fake(text="Erzähl mir von deiner Lage."))
    wait_status(page, "done")
    assistant.active = False
    assistant.save()

    page.reload()

    assert page.locator("#assistant-retired").is_visible()
    assert page.locator("#assistant-retired").text_content() == "retired"
    composer = page.locator("#composer-input")
    assert composer.is_disabled()
    assert page.locator("#send-button").is_disabled()
    note = page.locator("#composer-note")
    assert note.is_visible()
    assert "no longer available" in note.text_content()
    assert "composer-note" in composer.get_attribute("aria-describedby")
    assert note.get_by_role("link", name="Start a new chat").get_attribute("href") == "/"
    assert page.locator("#next-phase").is_hidden()
    assert page.get_by_role("button", name="Regenerate").count() == 0
    assert page.locator(".message.assistant .text").text_content().strip() == "Erzähl mir von deiner Lage."
    screenshot(page, "assistant-retired")
    # The gallery of a new chat no longer offers it.
    page.goto(pages.live.url + "/")
    assert page.get_by_role("button", name="Coaching").count() == 0


def test_an_assistant_retired_while_the_page_is_open_closes_the_conversation(pages, alice):
    assistant = coaching()
    page = pages.open(alice, "/?assistant=coaching").page
    send(page, fake(text="Erzähl mir von deiner Lage."))
    wait_answers(page, 1)
    Assistant.objects.filter(pk=assistant.pk).update(active=False)

    send(page, "Noch eine Frage.")

    page.locator("#composer-note").wait_for()
    assert page.locator("#composer-input").is_disabled()
    assert page.locator("#composer-input").input_value() == "Noch eine Frage."  # kept, to copy
    assert page.locator("#assistant-retired").is_visible()
    assert page.locator("#composer-error").is_hidden()  # the note says it
    assert page.get_by_role("button", name="Regenerate").count() == 0
    assert page.locator("#next-phase").is_hidden()
    assert page.locator(".message.user").count() == 1


# --- settings --------------------------------------------------------------------------------


def test_settings_saved_reach_the_next_new_chat(pages, alice, upstream):
    page = pages.open(alice).page
    page.get_by_role("link", name="Settings").click()
    page.wait_for_url("**/settings/")
    about = page.get_by_label("About me")
    style = page.get_by_label("How should Assistant answer?")
    assert page.locator("#id_about_me-counter").text_content() == "0 of 1500 characters"

    about.fill("Ich arbeite im Einkauf in Köln.\nMein Team: fünf Leute.")
    assert page.locator("#id_about_me-counter").text_content() == "54 of 1500 characters"
    style.fill("Kurz, mit Beispielen.")
    page.get_by_role("button", name="Save").click()

    notice = page.locator(".notice")
    notice.wait_for()
    assert "apply to the chats you start from now on" in notice.text_content()
    assert about.input_value() == "Ich arbeite im Einkauf in Köln.\nMein Team: fünf Leute."
    preferences = Preferences.objects.get(user=alice)
    assert preferences.about_me == "Ich arbeite im Einkauf in Köln.\nMein Team: fünf Leute."
    assert preferences.answer_style == "Kurz, mit Beispielen."

    page.get_by_role("link", name="Back to the chat").click()
    send(page, fake(text="Gern."))
    wait_answers(page, 1)
    system = last_answer_request(upstream)["body"]["messages"][0]
    assert system["role"] == "system"
    assert "About the user: Ich arbeite im Einkauf in Köln.\nMein Team: fünf Leute." in system["content"]
    assert "How to answer: Kurz, mit Beispielen." in system["content"]


def test_settings_show_what_is_wrong_and_keep_the_text(pages, alice):
    page = pages.open(alice, "/settings/").page
    # The browser's maxlength stops typing at the limit; a longer text still gets an answer.
    page.evaluate("document.getElementById('id_about_me').removeAttribute('maxlength')")
    page.get_by_label("About me").fill("x" * 1501)
    page.get_by_role("button", name="Save").click()

    page.locator(".settings-page .form-error[role=alert]").wait_for()
    field = page.get_by_label("About me")
    assert field.get_attribute("aria-invalid") == "true"
    assert "at most 1500 characters" in page.locator("#id_about_me-error").text_content()
    assert field.input_value() == "x" * 1501
    assert not Preferences.objects.filter(user=alice).exists()


# --- accessibility ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "state",
    ["gallery", "gallery dark", "gallery phone", "flow", "flow dark", "flow phone", "retired", "settings"],
)
def test_no_serious_accessibility_violations(pages, alice, state):
    assistant_create("lieblingskollege", "Lieblingskollege", icon="heart", starters=["Hallo!"])
    coaching()
    options = {"color_scheme": "dark" if "dark" in state else "light", **(PHONE if "phone" in state else {})}
    if state.startswith("gallery"):
        page = pages.open(alice, "/?assistant=coaching", **options).page
    elif state.startswith("flow"):
        page = pages.open(alice, "/?assistant=coaching", **options).page
        # The send button, not Enter: on a touch screen Enter is a new line.
        page.fill("#composer-input", complete_phase("Es geht um zu viele Zusatzaufgaben.", ["Drei Projekte"]))
        page.locator("#send-button").click()
        wait_flow_status(page, "2/4 Ziel")
        wait_answers(page, 1)
        page.fill("#composer-input", fake(text="Was willst du erreichen?"))
        page.locator("#send-button").click()
        wait_answers(page, 2)
        page.locator("#next-phase").click()
        wait_flow_status(page, "3/4 Optionen")
    elif state == "retired":
        page = pages.open(alice, "/?assistant=coaching", **options).page
        send(page, fake(text="Erzähl mir von deiner Lage."))
        wait_answers(page, 1)
        Assistant.objects.filter(slug="coaching").update(active=False)
        page.reload()
    else:
        Preferences.objects.create(user=alice, about_me="Einkauf", answer_style="Kurz")
        page = pages.open(alice, "/settings/", **options).page
        page.get_by_role("button", name="Save").click()
        page.locator(".notice").wait_for()

    screenshot(page, "a11y-" + state.replace(" ", "-"))
    assert serious_accessibility_violations(page) == []


def test_the_conversation_page_data_names_its_assistant_and_flow(pages, alice):
    coaching()
    page = pages.open(alice, "/?assistant=coaching").page
    send(page, complete_phase("Lage geklärt."))
    wait_flow_status(page, "2/4 Ziel")
    wait_status(page, "done")
    page.reload()

    data = json.loads(page.locator("#page-data").text_content())

    conversation = Conversation.objects.get(owner=alice)
    assert data["conversation"]["assistant"]["slug"] == "coaching"
    assert data["conversation"]["flow"]["phase"] == 2
    answer = conversation.messages.get(role="assistant")
    assert data["phase_summaries"] == {
        str(answer.pk): {"by": "model", "summary": "Lage geklärt.", "points": []}
    }
