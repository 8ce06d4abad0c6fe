"""The offline demo model: with no OpenAI settings the whole app works out of the box."""

from __future__ import annotations

import asyncio
import re
from io import StringIO
from pathlib import Path

import pytest
import yaml
from django.conf import settings
from django.core.management import call_command
from django.utils import translation

from assistant.models import AssistantVersion, Message
from assistant.personas import flows, prompt
from assistant.providers import demo_replies
from assistant.providers.demo import DemoProvider
from assistant.providers.values import Finish, ToolCall
from tests.helpers.chat import create_conversation, send, stream_answer, text_of
from tests.helpers.live import live_env, session_client, start_daphne, stop_daphne


@pytest.fixture(scope="module")
def demo_server(django_db_setup, django_db_blocker, fake_upstream):
    env = live_env(fake_upstream, ASSISTANT_DEMO_TOKENS_PER_SECOND="0")
    for name in ("OPENAI_BASE_URL", "OPENAI_API_KEY", "ASSISTANT_MODELS"):
        env.pop(name)
    server = start_daphne(env, "daphne-demo")
    yield server
    stop_daphne(server)


@pytest.mark.live
def test_demo_model_streams_a_labelled_answer(demo_server, transactional_db, alice, upstream):
    with session_client(demo_server, alice) as client:
        conversation = create_conversation(client)
        assert conversation["model"] == "demo"
        sent = send(client, conversation, "Wie spät ist es in Köln?")
        events = stream_answer(client, conversation, sent)
    text = text_of(events)
    assert events[-1].event == "done"
    assert "Offline-Demomodell" in text  # a question in German gets a German answer
    assert "Wie spät ist es in Köln?" in text
    assert "OPENAI_API_KEY" in text
    assert len([e for e in events if e.event == "delta"]) >= 1
    assert Message.objects.get(pk=sent["assistant_message"]["id"]).content == text
    assert upstream.requests == []


@pytest.mark.live
def test_demo_model_answers_in_german_for_german_users(demo_server, transactional_db, alice):
    with session_client(demo_server, alice, headers={"Accept-Language": "de"}) as client:
        conversation = create_conversation(client)
        text = text_of(stream_answer(client, conversation, send(client, conversation, "Hallo")))
    assert "Offline-Demomodell" in text


@pytest.mark.live
def test_demo_model_labels_an_english_answer_for_english_users(demo_server, transactional_db, alice):
    with session_client(demo_server, alice) as client:
        conversation = create_conversation(client)
        text = text_of(stream_answer(client, conversation, send(client, conversation, "Hello")))
    assert "Offline demo model" in text


def demo(messages: list[dict[str, str]], *, language: str = "en", **options) -> tuple[str, Finish]:
    """The demo model's text and Finish for `messages`, unpaced, under `language`."""

    async def run() -> list:
        return [item async for item in DemoProvider().stream(model="demo", messages=messages, **options)]

    with translation.override(language):
        items = asyncio.run(run())
    assert all(isinstance(item, str) for item in items[:-1])
    assert isinstance(items[-1], Finish)
    return "".join(items[:-1]), items[-1]


def ask(question: str, *, language: str = "en") -> tuple[str, Finish]:
    return demo([{"role": "user", "content": question}], language=language)


@pytest.fixture(autouse=True)
def _unpaced(settings) -> None:
    settings.ASSISTANT_DEMO_TOKENS_PER_SECOND = 0


def text_of_items(items: list) -> str:
    return "".join(item for item in items if isinstance(item, str))


def fenced_languages(text: str) -> list[str]:
    return re.findall(r"^```(\w+)\n.*?^```$", text, re.MULTILINE | re.DOTALL)


@pytest.mark.parametrize("question", ["Show me a table", "Compare two options", "Vergleiche zwei Angebote"])
def test_demo_table_question_gets_a_markdown_table(question):
    text, finish = ask(question)
    assert "|---" in text
    assert finish.finish_reason == "stop"


@pytest.mark.parametrize("question", ["Write some code", "Python please", "Schreib ein Programm"])
def test_demo_code_question_gets_python_and_javascript_blocks(question):
    text, _finish = ask(question)
    assert fenced_languages(text) == ["python", "javascript"]


@pytest.mark.parametrize(
    ("question", "language"), [("Explain it in a long answer", "en"), ("Erkläre das ausführlich", "de")]
)
def test_demo_long_question_gets_sections_and_lists_over_a_thousand_words(question, language):
    text, finish = ask(question)
    assert len(text.split()) > 1000
    assert len(re.findall(r"^## ", text, re.MULTILINE)) >= 5
    assert re.search(r"^- ", text, re.MULTILINE)
    assert re.search(r"^1\. ", text, re.MULTILINE)
    assert text.startswith(demo_replies.LABEL[language])
    assert finish.completion_tokens > 1000


@pytest.mark.parametrize(
    "question", ["Wie spät ist es in Köln?", "Zeig mir eine Tabelle", "Antworte auf Deutsch", "deutsch"]
)
def test_demo_german_question_gets_a_german_answer_whatever_the_page_language(question):
    text, _finish = ask(question, language="en")
    assert text.startswith("*Offline-Demomodell")
    assert re.search(r"\b(und|die|Sie)\b", text)


def test_demo_german_keyword_gets_the_german_sample():
    text, _finish = ask("Please answer in German")
    assert "Umlaute" in text


def test_demo_unclear_question_follows_the_page_language():
    assert ask("42", language="de")[0].startswith(demo_replies.LABEL["de"])
    assert ask("42", language="en")[0].startswith(demo_replies.LABEL["en"])


@pytest.mark.parametrize("question", ["Show me a cut answer", "Zeig eine abgeschnittene Antwort", "limit"])
def test_demo_cut_question_ends_for_length(question):
    text, finish = ask(question)
    assert finish.finish_reason == "length"
    assert not text.rstrip().endswith((".", "!", "?"))  # mid-sentence


def test_demo_other_questions_get_the_help_reply_with_the_examples_and_the_setup():
    text, finish = ask("Hello there")
    assert "Hello there" in text
    for example in ("Show me a table", "Write some code", "OPENAI_API_KEY", "OPENAI_BASE_URL"):
        assert example in text
    assert finish.finish_reason == "stop"


@pytest.mark.parametrize("question", ["Show me a table", "code", "long", "cut", "deutsch", "hi", "Hallo"])
def test_demo_every_reply_is_labelled_and_the_same_each_time(question):
    first, second = ask(question), ask(question)
    assert first == second
    assert first[0].startswith(tuple(demo_replies.LABEL.values()))


@pytest.mark.parametrize(("question", "language"), [("cut", "en"), ("abgeschnitten", "de")])
def test_demo_continuation_finishes_the_cut_answer(question, language):
    cut, finish = ask(question)
    assert finish.finish_reason == "length"
    history = [{"role": "user", "content": question}, {"role": "assistant", "content": cut}]

    rest, finish = demo(history)

    assert finish.finish_reason == "stop"
    assert cut + rest == demo_replies.LABEL[language] + demo_replies.CUT[language]
    assert demo(history) == (rest, finish)


def test_demo_continuation_of_another_answer_adds_a_note_and_stops():
    history = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "Something else"}]
    rest, finish = demo(history)
    assert finish.finish_reason == "stop"
    assert rest == demo_replies.NOTHING_TO_CONTINUE["en"]


# --- the shipped assistants (assistant/personas/examples), as the demo model plays them -------

EXAMPLES = Path(settings.BASE_DIR) / "assistant" / "personas" / "examples" / "assistants.yaml"


def shipped(slug: str) -> dict:
    return next(
        entry for entry in yaml.safe_load(EXAMPLES.read_text())["assistants"] if entry["slug"] == slug
    )


def version_of(slug: str) -> AssistantVersion:
    entry = shipped(slug)
    return AssistantVersion(name=entry["name"], instructions=entry["instructions"], phases=entry["phases"])


def persona(slug: str, question: str, *, summaries: list[dict] | None = None, **options) -> list:
    """What the demo model yields to `question` in a new chat with the shipped assistant
    `slug`, its system message and tools as assistant/personas/prompt.py makes them; in a
    flow, after the phases that `summaries` ended."""
    version = version_of(slug)
    state = flows.flow_of(version, summaries or [])
    if state is not None and not state.finished:
        options.setdefault("tools", [flows.COMPLETE_PHASE_TOOL])
    messages = [
        {"role": "system", "content": prompt.system_text(version, "", state, [])},
        {"role": "user", "content": question},
    ]

    async def run() -> list:
        return [item async for item in DemoProvider().stream(model="demo", messages=messages, **options)]

    items = asyncio.run(run())
    texts = [item for item in items if isinstance(item, str)]
    assert items[: len(texts)] == texts  # the text first,
    assert all(isinstance(item, ToolCall) for item in items[len(texts) : -1])  # then the calls,
    assert isinstance(items[-1], Finish)  # then the Finish
    return items


def calls_of(items: list) -> list[ToolCall]:
    return [item for item in items if isinstance(item, ToolCall)]


INFORMAL = re.compile(r"\b(?:du|dir|dich|dein\w*)\b", re.IGNORECASE)
FORMAL = re.compile(r"\b(?:Sie|Ihnen|Ihr\w*)\b")


@pytest.mark.parametrize(
    "question", [*shipped("lieblingskollege")["starters"], "Hallo!", "Danke dir", "Wetter?"]
)
def test_demo_colleague_answers_in_informal_german(question):
    items = persona("lieblingskollege", question)
    text = text_of_items(items)
    assert text.startswith(demo_replies.LABEL["de"])
    assert INFORMAL.search(text)
    assert not FORMAL.search(text)
    assert items[-1].finish_reason == "stop"
    assert not calls_of(items)
    assert len(items) > 20  # streamed a word at a time


def test_demo_colleague_replies_vary_with_the_question_and_stay_the_same_for_it():
    questions = [
        *shipped("lieblingskollege")["starters"],
        "Hallo!",
        "Danke dir",
        "Mein Kollege nervt.",
        "Was hältst du von Montagen?",
        "Welches Buch liest du gerade?",
        "Wie wird das Wetter am Wochenende?",
    ]
    replies = [text_of_items(persona("lieblingskollege", question)) for question in questions]
    assert len(set(replies)) >= 8
    assert replies == [text_of_items(persona("lieblingskollege", question)) for question in questions]
    assert "SVERWEIS(" in replies[2]  # the Excel question gets the formula


def test_demo_writing_help_revises_a_text_and_says_what_it_changed():
    question = (
        "Bitte überarbeiten: hallo zusammen ,\n\n"
        "ich  wollte eigentlich nur sagen ,dass wir vieleicht morgen kommen.das ist garnicht schlimm"
    )
    text = text_of_items(persona("schreibhilfe", question))
    assert "> Hallo zusammen," in text
    # After a greeting's comma a letter goes on in lower case: only a full stop capitalises.
    revised = (
        "> ich wollte eigentlich nur sagen, dass wir vielleicht morgen kommen. Das ist gar nicht schlimm."
    )
    assert revised in text
    assert "„vieleicht“ → „vielleicht“" in text
    assert "„garnicht“ → „gar nicht“" in text
    assert "„eigentlich“" in text  # a filler word
    assert "Sätze: 2." in text


def test_demo_writing_help_follows_the_language_of_the_text():
    text = text_of_items(
        persona("schreibhilfe", "Please proofread: i recieve the files untill friday.we basically need them")
    )
    assert text.startswith(demo_replies.LABEL["en"])
    assert "> I receive the files until friday. We basically need them." in text
    assert "“basically”" in text


def test_demo_writing_help_notes_a_long_sentence():
    sentence = " ".join(["Wort"] * 30)
    text = text_of_items(persona("schreibhilfe", f"Korrigiere bitte: {sentence}. Kurz."))
    assert "Satz 1 hat 30 Wörter" in text


@pytest.mark.parametrize(
    ("starter", "expected"),
    list(
        zip(
            shipped("schreibhilfe")["starters"],
            ["[Uhrzeit] verschieben", "## Protokoll", "Konjunktion **dass**"],
            strict=True,
        )
    ),
)
def test_demo_writing_help_answers_its_starters(starter, expected):
    text = text_of_items(persona("schreibhilfe", starter))
    assert expected in text
    assert text.startswith(demo_replies.LABEL["de"])


def test_demo_flow_ends_a_phase_with_a_reflection_and_a_complete_phase_call():
    question = (
        "Ich bekomme ständig Zusatzaufgaben von drei Abteilungen. "
        "Meine eigentlichen Projekte bleiben liegen! Das geht seit Januar so."
    )
    items = persona("coaching", question, max_tokens=500)
    text = text_of_items(items)
    assert "Phase 1 von 4, **Situation**" in text
    assert "> Ich bekomme ständig Zusatzaufgaben von drei Abteilungen." in text
    [call] = calls_of(items)
    assert call.name == "complete_phase"
    assert call.id.startswith("demo-call-1-")
    assert call.arguments == {
        "summary": "Ich bekomme ständig Zusatzaufgaben von drei Abteilungen.",
        "points": ["Meine eigentlichen Projekte bleiben liegen!", "Das geht seit Januar so."],
    }
    assert flows.phase_summary_from(call) == {"by": "model", **call.arguments}  # the flows module takes it
    assert items[-1].finish_reason == "tool_calls"
    assert persona("coaching", question, max_tokens=500) == items


def test_demo_flow_summary_is_the_first_sentence_at_most_200_characters():
    question = "Ich " + "arbeite sehr viel " * 20 + "und suche einen Weg."
    [call] = calls_of(persona("coaching", question))
    assert len(call.arguments["summary"]) <= 200
    assert call.arguments["summary"].endswith("…")
    assert call.arguments["points"] == [call.arguments["summary"]]


def test_demo_flow_asks_for_more_about_the_phase_goal_when_the_answer_is_short():
    phases = shipped("coaching")["phases"]
    items = persona(
        "coaching", "Zu viele Aufgaben.", summaries=[{"by": "model", "summary": "Viel los.", "points": []}]
    )
    text = text_of_items(items)
    assert not calls_of(items)
    assert items[-1].finish_reason == "stop"
    assert f"Phase 2 von 4, **{phases[1]['title']}**" in text
    assert phases[1]["goal"] in text


def test_demo_flow_in_its_last_phase_says_so():
    summaries = [{"by": "model", "summary": f"Ergebnis {n}.", "points": []} for n in range(3)]
    items = persona(
        "coaching", "Ich spreche am Montag mit meiner Chefin und schlage eine Regel vor.", summaries=summaries
    )
    assert "Phase 4 von 4, **Nächste Schritte**" in text_of_items(items)
    assert "letzte Phase" in text_of_items(items)
    assert calls_of(items)[0].id.startswith("demo-call-4-")


def test_demo_flow_finished_closes_with_the_finished_phases():
    summaries = [
        {"by": "model", "summary": "Zu viele Zusatzaufgaben.", "points": []},
        {"by": "model", "summary": "Zwei freie Abende pro Woche.", "points": []},
        {"by": "user", "summary": "", "points": []},
        {"by": "model", "summary": "Montag mit der Chefin sprechen.", "points": []},
    ]
    items = persona("coaching", "Und jetzt?", summaries=summaries)
    text = text_of_items(items)
    assert not calls_of(items)
    assert "- **Situation:** Zu viele Zusatzaufgaben." in text
    assert "- **Optionen**\n" in text  # ended by the user, without a summary
    assert "- **Nächste Schritte:** Montag mit der Chefin sprechen." in text


def test_demo_flow_without_the_tool_calls_nothing():
    question = "Ich bekomme ständig Zusatzaufgaben von drei Abteilungen, und meine Projekte leiden."
    items = persona("coaching", question, tools=[])
    assert not calls_of(items)
    assert items[-1].finish_reason == "stop"


def test_demo_keeps_to_max_tokens_and_a_cut_reply_calls_no_tool():
    question = "Ich bekomme ständig Zusatzaufgaben von drei Abteilungen, und meine Projekte leiden."
    items = persona("coaching", question, max_tokens=5)
    assert len(items) == 6
    assert (items[-1].finish_reason, items[-1].completion_tokens) == ("length", 5)
    text, finish = demo([{"role": "user", "content": "Explain it in a long answer"}], max_tokens=30)
    assert (len(text.split()), finish.finish_reason) == (30, "length")  # a token a word
    assert ask("Explain it in a long answer")[1].finish_reason == "stop"


@pytest.mark.live
def test_demo_model_runs_the_shipped_assistants_with_nothing_configured(demo_server, transactional_db, alice):
    """`make run` with no model: the shipped assistants, imported as it imports them, answer
    through the real server, and the coaching flow moves on to its next phase."""
    call_command("assistants", "import", str(EXAMPLES), stdout=StringIO())
    with session_client(demo_server, alice) as client:
        colleague = create_conversation(client, assistant="lieblingskollege")
        starter = shipped("lieblingskollege")["starters"][0]
        text = text_of(stream_answer(client, colleague, send(client, colleague, starter)))
        assert INFORMAL.search(text)
        assert "[Dein Name]" in text

        coaching = create_conversation(client, assistant="coaching")
        starter = shipped("coaching")["starters"][0]
        events = stream_answer(client, coaching, send(client, coaching, starter))
        assert [event.event for event in events][-2:] == ["phase", "done"]
        assert events[-1].json()["finish_reason"] == "tool_calls"
        assert events[-2].json()["completed"]["summary"] == starter
        assert "Phase 1 von 4, **Situation**" in text_of(events)
        flow = client.get(coaching["detail_url"]).json()["flow"]
        assert (flow["phase"], flow["completed"][0]["by"]) == (2, "model")


def test_demo_with_instructions_of_no_shipped_assistant_answers_as_ever():
    messages = [
        {"role": "system", "content": "Antworte knapp."},
        {"role": "user", "content": "Show me a table"},
    ]
    text, finish = demo(messages, temperature=0.2)
    assert (text, finish.finish_reason) == (ask("Show me a table")[0], "stop")
