"""The offline demo model as the shipped assistants: it reads the system message and the
offered tools as a model would (the shape assistant/personas/prompt.py writes), and
answers deterministically, so `make run` shows them with nothing configured.

The first rule that applies picks the reply:

- `Guided flow finished.` in the system message: a closing reply listing the finished
  phases;
- the tool complete_phase offered (`Guided flow, phase {k} of {n}: {title}` names the
  phase): a latest question of at least FLOW_WORDS words ends the phase, with a short
  reflection and a call of complete_phase (summary: the question's first sentence);
  a shorter one is asked for more about the phase's goal;
- "Lieblingskollege" in the system message: an informal German reply ("du"), picked by
  the question's words;
- "Schreibhilfe" in the system message: writing help, a revised text with notes for a
  text to revise, a draft or template for the kinds of request it knows;
- else no persona: demo.py's prepared replies.

The texts are in demo_persona_replies.py.
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass, field

from assistant.providers import demo_persona_replies as replies
from assistant.providers.demo_replies import LABEL
from assistant.providers.values import ToolCall, tool_names

COMPLETE_PHASE = "complete_phase"
# A question this long ends a phase of the flow; a shorter one gets asked for more.
FLOW_WORDS = 8
SUMMARY_MAX_CHARS = 200
POINTS_MAX = 3
# A sentence longer than this many words gets a note from the Schreibhilfe.
LONG_SENTENCE_WORDS = 25
# A question this long is a text to revise even without "revise:" before it.
REVISE_WORDS = 12

_PHASE = re.compile(r"^Guided flow, phase (\d+) of (\d+): (.*)$", re.MULTILINE)
_GOAL = re.compile(r"^Goal of this phase: (.*)$", re.MULTILINE)
_FINISHED = "Guided flow finished."
_SENTENCE_END = re.compile(r"(\b\w+)?([.!?…]+)\s+")
_ABBREVIATIONS = frozenset(
    ("usw", "bzw", "ggf", "evtl", "etc", "inkl", "ca", "vgl", "bspw", "sog", "nr", "dr", "vs", "mr", "mrs")
)


def _words(pattern: str) -> re.Pattern[str]:
    return re.compile(rf"(?:^|\b)(?:{pattern})", re.IGNORECASE)


# Lieblingskollege: the first kind whose words the question has.
_COLLEAGUE_KINDS = (
    ("mail", _words(r"e-?mails?\b|mail\b|absage|absagen|formulier|nachricht|anschreiben")),
    ("excel", _words(r"excel|sverweis|xverweis|formel|tabelle")),
    ("talk", _words(r"mitarbeitergespräch|jahresgespräch|feedback|chef|führungskraft|gehalt")),
    ("stress", _words(r"stress|kopf|sortier|aufgaben|überlast|zu viel|priorit|deadline|frist")),
    ("team", _words(r"team|kolleg|streit|konflikt|ärger")),
    ("thanks", _words(r"danke|merci|thx")),
    ("hello", _words(r"hallo|hi\b|hey|moin|servus|guten (?:morgen|tag|abend)")),
)

# Schreibhilfe: what the request asks for.
_REVISE = _words(
    r"überarbeit|korrigier|verbesser|prüf|lektorier|glätt|kürz|revise|correct|proofread|improve|edit"
)
_DASS = re.compile(r"\bdas\W{0,3}\s+(?:und|oder|vs\.?)\s+\W{0,3}dass\b", re.IGNORECASE)
_MINUTES = _words(r"protokoll|vorlage|template|minutes")
_MAIL = _words(r"e-?mails?\b|mail\b|brief|anschreiben")
_RESCHEDULE = _words(r"termin|verschieb|absag|reschedul|postpone")


@dataclass(frozen=True)
class PersonaReply:
    """A reply as one of the shipped assistants: its text, how it ends, the tools it calls."""

    text: str
    finish_reason: str = "stop"
    calls: list[ToolCall] = field(default_factory=list)


def persona_reply(
    messages: list[dict[str, str]], tools: list[dict] | None, *, language: str
) -> PersonaReply | None:
    """The reply of the assistant whose system message `messages` start with, to the
    latest question; None when no rule applies. `language` is the question's (de or en),
    which only the Schreibhilfe follows: the other assistants speak German."""
    system = "\n".join(m["content"] for m in messages if m["role"] == "system")
    question = next((m["content"] for m in reversed(messages) if m["role"] == "user"), "")
    if _FINISHED in system:
        return PersonaReply(LABEL["de"] + _flow_closing(system))
    if COMPLETE_PHASE in tool_names(tools):
        return _flow_phase(system, question)
    if "Lieblingskollege" in system:
        return PersonaReply(LABEL["de"] + _colleague(question))
    if "Schreibhilfe" in system:
        return PersonaReply(_writing_help(question, language))
    return None


def _stable_pick(text: str, count: int) -> int:
    """An index below `count` that `text` picks, the same in every process (unlike hash())."""
    return zlib.crc32(text.encode("utf-8", "surrogatepass")) % count


def _shown(question: str) -> str:
    flat = " ".join(question.split())
    return flat if len(flat) <= 200 else flat[:200] + "…"


def _abbreviated(word: str | None) -> bool:
    """Whether a full stop after `word` ends an abbreviation ("z. B.", "usw.", "3. Mai")."""
    return word is not None and (len(word) == 1 or word.lower() in _ABBREVIATIONS)


def sentences(text: str) -> list[str]:
    """The sentences of `text`, each on one line: split after . ! ? or …, not after an
    abbreviation."""
    flat = " ".join(text.split())
    found, start = [], 0
    for end in _SENTENCE_END.finditer(flat):
        if end[2] == "." and _abbreviated(end[1]):
            continue
        found.append(flat[start : end.end()].strip())
        start = end.end()
    return [*found, flat[start:]] if flat[start:] else found


# --- Lieblingskollege -----------------------------------------------------------------------


def _colleague(question: str) -> str:
    for kind, pattern in _COLLEAGUE_KINDS:
        if pattern.search(question):
            return replies.COLLEAGUE[kind]
    other = replies.COLLEAGUE_OTHER
    return other[_stable_pick(question, len(other))].format(question=_shown(question))


# --- The guided flow --------------------------------------------------------------------------


def first_sentence(text: str) -> str:
    """The first sentence of `text`, on one line, at most SUMMARY_MAX_CHARS characters."""
    sentence = next(iter(sentences(text)), "")
    if len(sentence) <= SUMMARY_MAX_CHARS:
        return sentence
    cut = sentence[: SUMMARY_MAX_CHARS - 1]
    return (cut.rsplit(" ", 1)[0] if " " in cut else cut) + "…"


def _points(text: str, summary: str) -> list[str]:
    """The sentences after the first, as key points (at most POINTS_MAX); the summary
    alone when there are none."""
    rest = sentences(text)[1 : 1 + POINTS_MAX]
    return [first_sentence(point) for point in rest] or [summary]


def _flow_phase(system: str, question: str) -> PersonaReply:
    found = _PHASE.search(system)
    phase, total, title = (int(found[1]), int(found[2]), found[3].strip()) if found else (1, 1, "")
    title = title or "diese Phase"
    if len(question.split()) < FLOW_WORDS:
        goal = _GOAL.search(system)
        parts = (
            [replies.FLOW_MORE.format(phase=phase, total=total, title=title, goal=goal[1].strip())]
            if goal
            else []
        )
        return PersonaReply(LABEL["de"] + "\n\n".join([*parts, replies.FLOW_MORE_ASK]))
    summary = first_sentence(question)
    points = _points(question, summary)
    parts = [replies.FLOW_REFLECTION.format(phase=phase, total=total, title=title), f"> {summary}"]
    if points != [summary]:
        parts += [replies.FLOW_POINTS, "\n".join(f"- {point}" for point in points)]
    parts.append(
        replies.FLOW_NEXT.format(next=phase + 1, total=total) if phase < total else replies.FLOW_LAST
    )
    call = ToolCall(
        id=f"demo-call-{phase}-{_stable_pick(question, 16**8):08x}",
        name=COMPLETE_PHASE,
        arguments={"summary": summary, "points": points},
    )
    return PersonaReply(LABEL["de"] + "\n\n".join(parts), "tool_calls", [call])


def _flow_closing(system: str) -> str:
    """The closing reply: the phases listed after `Guided flow finished.`, each
    `- {title}: {summary}` or `- {title}` (ended by the user, without a summary)."""
    after = system.split(_FINISHED, 1)[1]
    finished = []
    for line in after.splitlines():
        if not line.startswith("- "):
            continue
        title, colon, summary = line[2:].partition(": ")
        finished.append(f"- **{title.strip()}:** {summary.strip()}" if colon else f"- **{title.strip()}**")
    parts = [replies.FLOW_CLOSING]
    if finished:
        parts += [replies.FLOW_CLOSING_LIST, "\n".join(finished)]
    parts.append(replies.FLOW_CLOSING_END)
    return "\n\n".join(parts)


# --- Schreibhilfe -----------------------------------------------------------------------------


def _writing_help(question: str, language: str) -> str:
    first_line, _newline, _rest = question.strip().partition("\n")
    before, colon, after = question.partition(":")
    if colon and ":" in first_line and _REVISE.search(before) and after.split():
        return revised(after, language)
    if _DASS.search(question):
        return LABEL["de"] + replies.WRITING_DASS
    if _MINUTES.search(question):
        return LABEL["de"] + replies.WRITING_MINUTES
    if _MAIL.search(question):
        mail = replies.WRITING_RESCHEDULE if _RESCHEDULE.search(question) else replies.WRITING_MAIL
        return LABEL["de"] + mail
    if len(question.split()) >= REVISE_WORDS:
        return revised(question, language)
    return LABEL[language] + replies.WRITING_HELP[language]


_SPACES = re.compile(r"[ \t]+")
_SPACE_BEFORE_MARK = re.compile(r"\s+([,.;!?])")
_NO_SPACE_AFTER_MARK = re.compile(r"([,;!?])(?=[^\W\d_])")
# "Ende.Neu", "kommen.das ist": a full stop between words; not in "example.com" or "z.B.".
_NO_SPACE_AFTER_STOP = re.compile(
    r"(?<=[a-zäöüß]{2})\.(?=(?!(?:com|de|org|net|eu|at|ch|io)\b)[A-Za-zÄÖÜäöüß][a-zäöüß]+(?:[\s,;!?]|$))"
)
_LOWER_AFTER_STOP = re.compile(r"(\b\w+)?([.!?])(\s+)([a-zäöü])")
_ABBREVIATIONS = frozenset(
    {
        "usw",
        "bzw",
        "ggf",
        "evtl",
        "etc",
        "inkl",
        "ca",
        "vgl",
        "bspw",
        "sog",
        "nr",
        "dr",
        "eg",
        "ie",
        "vs",
        "mr",
        "mrs",
    }
)
_TYPO = re.compile(r"\b(?:" + "|".join(replies.TYPOS) + r")\b", re.IGNORECASE)


def _capitalised_after_stop(match: re.Match[str]) -> str:
    word, mark, space, letter = match.groups()
    if mark == "." and _abbreviated(word):
        return match[0]  # "z. B. weil", "usw. und"
    return f"{word or ''}{mark}{space}{letter.upper()}"


def _tidy_line(line: str) -> str:
    line = _SPACES.sub(" ", line).strip()
    line = _SPACE_BEFORE_MARK.sub(r"\1", line)
    line = _NO_SPACE_AFTER_MARK.sub(r"\1 ", line)
    return _NO_SPACE_AFTER_STOP.sub(". ", line)


def _typo_fixed(match: re.Match[str]) -> str:
    right = replies.TYPOS[match[0].lower()]
    return right[0].upper() + right[1:] if match[0][0].isupper() else right


def revised(text: str, language: str) -> str:
    """The Schreibhilfe's reply to a text to revise: the text tidied (spaces, punctuation,
    capitals after a full stop, a few common typos), then notes on what changed, long
    sentences and filler words."""
    strings = replies.WRITING_REVISED[language]
    paragraphs = [p for p in re.split(r"\n\s*\n", text.strip()) if p.strip()]
    spaced = []
    for paragraph in paragraphs:
        lines = [_tidy_line(line) for line in paragraph.splitlines() if line.strip()]
        if len(lines[-1].split()) >= 4 and lines[-1][-1].isalnum():
            lines[-1] += "."
        spaced.append("\n".join(lines))
    tidied = "\n\n".join(spaced)
    capitalised = _LOWER_AFTER_STOP.sub(_capitalised_after_stop, tidied)
    capitalised = capitalised[:1].upper() + capitalised[1:]
    typos = [(m[0], _typo_fixed(m)) for m in _TYPO.finditer(capitalised)]
    final = _TYPO.sub(_typo_fixed, capitalised)

    quote = strings["quote"].format
    found = sentences(final)
    notes = [strings["size"].format(words=len(final.split()), sentences=len(found))]
    if typos:
        pairs = ", ".join(f"{quote(wrong)} → {quote(right)}" for wrong, right in dict(typos).items())
        notes.append(strings["typos"].format(pairs=pairs))
    if tidied != "\n\n".join(paragraphs).strip():
        notes.append(strings["spacing"])
    if capitalised != tidied:
        notes.append(strings["capitals"])
    notes += [
        strings["long"].format(number=number, count=len(sentence.split()))
        for number, sentence in enumerate(found, start=1)
        if len(sentence.split()) > LONG_SENTENCE_WORDS
    ]
    fillers = [word for word in replies.FILLERS[language] if re.search(rf"\b{word}\b", final, re.IGNORECASE)]
    if fillers:
        notes.append(strings["fillers"].format(words=", ".join(quote(word) for word in fillers)))
    if len(notes) == 1:
        notes.append(strings["clean"])
    # Each line as written: two spaces before a line break are Markdown's hard break.
    quoted = "\n>\n".join("  \n".join(f"> {line}" for line in p.splitlines()) for p in final.split("\n\n"))
    return (
        LABEL[language]
        + "\n\n".join([strings["heading"], quoted, strings["notes"]])
        + "\n\n"
        + "\n".join(f"- {note}" for note in notes)
    )
