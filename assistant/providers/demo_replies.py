# ruff: noqa: E501 -- Markdown prose, one paragraph a line as a model writes it
"""The offline demo model's replies, in English and German: data only (assistant/providers/demo.py
picks one). Each starts with the short label that says it comes from the demo model.

Texts, not gettext messages: the demo answers in the language of the question, which need
not be the page's, and a reply is one piece of Markdown that a translator's catalogue
would only cut into sentences.
"""

from __future__ import annotations

LABEL = {
    "en": "*Offline demo model: a prepared answer, not a real language model.*\n\n",
    "de": "*Offline-Demomodell: eine vorbereitete Antwort, kein echtes Sprachmodell.*\n\n",
}

HELP = {
    "en": (
        "No language model is connected, so I answer with prepared examples that show what "
        "the app can do: streaming, Markdown, code, long answers, stop, retry and reload.\n\n"
        "You wrote: “{question}”\n\n"
        "Try one of these questions:\n\n"
        "- **Show me a table** comparing two options (Markdown table)\n"
        "- **Write some code** in Python and JavaScript (code blocks with highlighting)\n"
        "- **Explain in a long answer** how to work with the assistant (headings, lists, "
        "about 1,500 words)\n"
        "- **Antworte auf Deutsch** (an answer in German)\n"
        "- **Show an answer that gets cut** off at the length limit (and continue it)\n\n"
        "To connect a real model, set `OPENAI_API_KEY` (and `OPENAI_BASE_URL` for any "
        "OpenAI-compatible server) and restart the server."
    ),
    "de": (
        "Es ist kein Sprachmodell angeschlossen, daher antworte ich mit vorbereiteten "
        "Beispielen, die zeigen, was die App kann: Streaming, Markdown, Code, lange "
        "Antworten, Stopp, Wiederholen und Neuladen.\n\n"
        "Sie schrieben: „{question}“\n\n"
        "Probieren Sie eine dieser Fragen:\n\n"
        "- **Zeig mir eine Tabelle**, die zwei Möglichkeiten vergleicht (Markdown-Tabelle)\n"
        "- **Schreib Code** in Python und JavaScript (Codeblöcke mit Hervorhebung)\n"
        "- **Erkläre ausführlich**, wie man mit dem Assistenten arbeitet (Überschriften, "
        "Listen, etwa 1.500 Wörter)\n"
        "- **Answer in English** (eine Antwort auf Englisch)\n"
        "- **Zeig eine abgeschnittene Antwort**, die an der Längengrenze endet (und setze "
        "sie fort)\n\n"
        "Für ein echtes Modell `OPENAI_API_KEY` setzen (und `OPENAI_BASE_URL` für jeden "
        "OpenAI-kompatiblen Server) und den Server neu starten."
    ),
}

TABLE = {
    "en": (
        "Here is a comparison of two ways to reach a language model:\n\n"
        "| | Hosted API | Model on your own server |\n"
        "|---|---|---|\n"
        "| Setup | An API key | A GPU server and an inference server |\n"
        "| Data leaves the company | Yes, to the provider | No |\n"
        "| Cost | Per token used | Hardware and operation |\n"
        "| Answer quality | The largest models | Depends on the model you run |\n"
        "| Configuration here | `OPENAI_API_KEY` | `OPENAI_BASE_URL` (and a key if needed) |\n\n"
        "**In short:** a hosted API is the quickest start; your own server keeps every "
        "question in the house."
    ),
    "de": (
        "Hier ein Vergleich zweier Wege zu einem Sprachmodell:\n\n"
        "| | Gehostete API | Modell auf eigenem Server |\n"
        "|---|---|---|\n"
        "| Einrichtung | Ein API-Schlüssel | Ein GPU-Server und ein Inferenzserver |\n"
        "| Daten verlassen das Unternehmen | Ja, zum Anbieter | Nein |\n"
        "| Kosten | Je verbrauchtem Token | Hardware und Betrieb |\n"
        "| Qualität der Antworten | Die größten Modelle | Hängt vom betriebenen Modell ab |\n"
        "| Einstellung hier | `OPENAI_API_KEY` | `OPENAI_BASE_URL` (und ggf. ein Schlüssel) |\n\n"
        "**Kurz gesagt:** Eine gehostete API ist der schnellste Start; ein eigener Server "
        "behält jede Frage im Haus."
    ),
}

_PYTHON = (
    "```python\n"
    "def word_counts(text: str) -> dict[str, int]:\n"
    '    """How often each word occurs, ignoring case."""\n'
    "    counts: dict[str, int] = {}\n"
    "    for word in text.lower().split():\n"
    "        counts[word] = counts.get(word, 0) + 1\n"
    "    return counts\n"
    "\n"
    "\n"
    "print(word_counts(\"the cat and the hat\"))  # {'the': 2, 'cat': 1, 'and': 1, 'hat': 1}\n"
    "```"
)
_JAVASCRIPT = (
    "```javascript\n"
    "function wordCounts(text) {\n"
    "  const counts = new Map();\n"
    "  for (const word of text.toLowerCase().split(/\\s+/).filter(Boolean)) {\n"
    "    counts.set(word, (counts.get(word) ?? 0) + 1);\n"
    "  }\n"
    "  return counts;\n"
    "}\n"
    "\n"
    'console.log(wordCounts("the cat and the hat")); // Map { "the" => 2, ... }\n'
    "```"
)

CODE = {
    "en": (
        "The same small function in two languages: it counts how often each word occurs.\n\n"
        "**Python**\n\n" + _PYTHON + "\n\n**JavaScript**\n\n" + _JAVASCRIPT + "\n\n"
        "Both lower-case the text first, so “The” and “the” count as one word."
    ),
    "de": (
        "Dieselbe kleine Funktion in zwei Sprachen: Sie zählt, wie oft jedes Wort vorkommt.\n\n"
        "**Python**\n\n" + _PYTHON + "\n\n**JavaScript**\n\n" + _JAVASCRIPT + "\n\n"
        "Beide schreiben den Text zuerst klein, damit „Der“ und „der“ als ein Wort zählen."
    ),
}

GERMAN = {
    "de": (
        "Gern antworte ich auf Deutsch. Umlaute und das ß kommen so an, wie sie geschrieben "
        "wurden: Grüße aus Köln, Übermorgen, Äpfel und Öl.\n\n"
        "Ein paar Dinge, die Sie mit einem angeschlossenen Modell auf Deutsch tun können:\n\n"
        "1. E-Mails und Briefe entwerfen oder kürzen\n"
        "2. Texte zusammenfassen, übersetzen oder in einfache Sprache bringen\n"
        "3. Tabellen, Listen und Code erklären lassen\n\n"
        "Die Oberfläche folgt der Spracheinstellung Ihres Browsers."
    ),
}

# The answer that stops at the length limit (finish_reason "length"): CUT[language] is the
# whole text; the first CUT_WORDS tokens are sent, and a continuation sends the rest.
CUT_WORDS = 60
CUT = {
    "en": (
        "This answer shows what happens when a model reaches its length limit. A real model "
        "stops writing when the answer uses up the tokens it may produce, often in the "
        "middle of a sentence, and reports the finish reason “length”. The app marks such "
        "an answer as cut off, so you know that something is missing, and you can ask it to "
        "continue exactly where it stopped, without repeating the part you have already "
        "read. The continuation picks up the last sentence, finishes it, and adds what was "
        "still to come:\n\n"
        "- the answer is stored as one message, before and after the continuation;\n"
        "- stop, retry and reload work on it as on any other answer;\n"
        "- the usage figures count both parts.\n\n"
        "That is the whole demonstration: this sentence is the end of the continued answer."
    ),
    "de": (
        "Diese Antwort zeigt, was geschieht, wenn ein Modell seine Längengrenze erreicht. Ein "
        "echtes Modell hört auf zu schreiben, sobald die Antwort die Tokens aufbraucht, die "
        "es erzeugen darf, oft mitten im Satz, und meldet den Endgrund „length“. Die App "
        "kennzeichnet eine solche Antwort als abgeschnitten, damit Sie wissen, dass etwas "
        "fehlt, und Sie können sie genau dort fortsetzen lassen, wo sie aufhörte, ohne den "
        "schon gelesenen Teil zu wiederholen. Die Fortsetzung nimmt den letzten Satz auf, "
        "beendet ihn und ergänzt, was noch fehlte:\n\n"
        "- die Antwort bleibt eine Nachricht, vor und nach der Fortsetzung;\n"
        "- Stopp, Wiederholen und Neuladen wirken wie bei jeder anderen Antwort;\n"
        "- die Verbrauchszahlen zählen beide Teile.\n\n"
        "Das ist die ganze Vorführung: Dieser Satz ist das Ende der fortgesetzten Antwort."
    ),
}

# What a continuation says when the answer it continues is not the demo's cut answer.
NOTHING_TO_CONTINUE = {
    "en": "\n\n*(The offline demo model has nothing to add to this answer.)*",
    "de": "\n\n*(Das Offline-Demomodell hat dieser Antwort nichts hinzuzufügen.)*",
}

LONG = {
    "en": """# Working with the assistant: a guide

This long answer shows how the app renders headings, paragraphs, lists and quotes while they stream in. Its content is real advice, though: how to get good answers from a language model at work, and what to do when something goes wrong.

## 1. What a language model is good at

A language model writes text that fits the text it was given. That makes it good at drafting, rewording, summarising, translating, explaining and brainstorming. It is much weaker at facts it has never seen, at exact arithmetic over many steps, and at anything that happened after its training ended.

- **Drafting:** a first version of an e-mail, a report, a job advert or a meeting agenda.
- **Rewording:** the same message shorter, friendlier, more formal or in plain language.
- **Summarising:** the main points of a long document, with the decisions and open questions.
- **Explaining:** a concept, a regulation or a piece of code, at the level you ask for.

Treat every answer as the work of a quick, well-read colleague who has not checked anything: useful, often right, never guaranteed.

## 2. Asking good questions

The model only knows what you tell it in the conversation. A short question gets a general answer; a question with a purpose, an audience and a format gets an answer you can use.

1. **Say what you need it for.** “A summary for the board” is different from “a summary for new staff”.
2. **Say who will read it.** Experts, customers, colleagues in another department.
3. **Say what form you want.** A table, five bullet points, a paragraph, a draft e-mail.
4. **Say what to leave out.** No jargon, no more than 200 words, no marketing tone.

A good question often reads like a short brief to a colleague. If the first answer is not right, do not start again from scratch: say what to change. “Shorter, and start with the deadline” works better than asking the same question again.

## 3. Giving context

Paste the material the answer should be based on: the text to summarise, the figures to compare, the draft to improve. The model works with what is in the conversation, so an answer built on your own material is more accurate than one built on the model's general knowledge.

> Rule of thumb: if a new colleague would need a document to do the task, the model needs it too.

Keep in mind that everything you paste is sent to the model service. The next section says what that means for confidential data.

## 4. Confidential and personal data

Before you paste anything, ask whether you would be allowed to send it by e-mail to an outside service provider. Your organisation decides which model service this app uses and what may be sent to it.

- Leave out names, addresses and identifiers when the task does not need them.
- Replace customer names with placeholders such as “Customer A”.
- Do not paste passwords, access keys or other secrets, ever.
- When in doubt, ask your data protection officer or your administrator.

Conversations are stored so that you can come back to them. You can delete a conversation at any time; deleting it removes its messages.

## 5. Checking answers

A model can state wrong things with great confidence. The better the answer sounds, the easier it is to miss a mistake, so check in proportion to what is at stake.

- **Facts, figures and dates:** compare them with the source.
- **Quotes and references:** look them up; a model may invent a plausible one.
- **Calculations:** redo them, or ask the model to show each step and check the steps.
- **Legal, medical or financial statements:** have them checked by someone responsible.

You remain the author of what you send on. An answer that you pass to a customer or a colleague is your answer.

## 6. Long texts, tables and code

For long documents, work in steps: first ask for an outline, then for each part. Ask for a table when you compare several options along the same criteria; the app renders Markdown tables as real tables. Code comes in blocks with a label for its language and can be copied with one click.

When an answer stops because it reached the length limit, the app tells you so. You can then ask the model to continue where it stopped, instead of asking for everything again.

## 7. Stop, retry and edit

While an answer is being written you can stop it at any time: the text so far is kept. If an answer is not what you wanted, you have three options:

1. **Retry** asks the same question again and gets a new answer; the old one is kept but no longer sent to the model.
2. **Edit** changes your last question and starts a new answer from there.
3. **Reply** with a correction, so the model sees both its answer and what was wrong with it.

Reloading the page, or opening the conversation on another device, shows the answer as far as it has come, and continues while it is still being written.

## 8. When something goes wrong

Error messages say what happened and what to do. Most problems are temporary: the model service is busy, took too long, or the connection broke off. Wait a moment and press Retry; the text that had already arrived is kept. When the message says that the model service is busy, it also says how long to wait.

Some problems cannot be solved by trying again: the app's access to the model service was refused, or the selected model is not available. The message then asks you to contact your administrator. Tell them the time and the message you saw; they can find the details in the server's log.

## 9. A short checklist

- Purpose, audience and format in the question.
- The material the answer should use, without secrets.
- A correction instead of a new start when the answer is close.
- Facts, figures and quotes checked before they leave your desk.
- Retry for temporary errors, your administrator for the others.

## 10. Examples of good questions

- “Summarise the attached minutes for colleagues who missed the meeting: decisions first, then open tasks with names and dates, at most ten bullet points.”
- “Rewrite this reply to a customer complaint in a friendly, plain tone. Keep the offer of a refund, remove the internal reference numbers.”
- “Compare these three offers in a table: price, delivery time, warranty and support hours. Then say in two sentences which one fits a small team best, and why.”
- “Explain what this spreadsheet formula does, step by step, for someone who rarely uses spreadsheets.”
- “Draft an agenda for a one-hour workshop on the new travel policy, with time slots and one question for discussion per slot.”
- “Translate this paragraph into English for a partner company; keep the legal terms exact and mark any term you are unsure about.”

Each of these says what the text is for, who reads it and what shape it should have. None of them needs special words or tricks: a clear request in everyday language is what works best.

## Summary

A language model is a fast and patient drafting partner. It is at its best with a clear brief and your own material, and it needs your judgement before its work goes anywhere that matters. This demo model only plays back prepared answers; connect a real model (`OPENAI_API_KEY`, and `OPENAI_BASE_URL` for other servers) to try all of this with your own questions.""",
    "de": """# Mit dem Assistenten arbeiten: ein Leitfaden

Diese lange Antwort zeigt, wie die App Überschriften, Absätze, Listen und Zitate darstellt, während sie hereinströmen. Der Inhalt ist trotzdem ernst gemeint: wie man im Arbeitsalltag gute Antworten von einem Sprachmodell bekommt und was zu tun ist, wenn etwas schiefgeht.

## 1. Wofür ein Sprachmodell gut ist

Ein Sprachmodell schreibt Text, der zu dem Text passt, den es bekommen hat. Deshalb ist es gut im Entwerfen, Umformulieren, Zusammenfassen, Übersetzen, Erklären und im Sammeln von Ideen. Deutlich schwächer ist es bei Fakten, die es nie gesehen hat, bei genauen Rechnungen über viele Schritte und bei allem, was nach dem Ende seines Trainings geschehen ist.

- **Entwerfen:** eine erste Fassung einer E-Mail, eines Berichts, einer Stellenanzeige oder einer Tagesordnung.
- **Umformulieren:** dieselbe Botschaft kürzer, freundlicher, förmlicher oder in einfacher Sprache.
- **Zusammenfassen:** die Kernpunkte eines langen Dokuments, mit Entscheidungen und offenen Fragen.
- **Erklären:** einen Begriff, eine Vorschrift oder ein Stück Code, auf dem Niveau, das Sie wünschen.

Behandeln Sie jede Antwort wie die Arbeit einer schnellen, belesenen Kollegin, die nichts nachgeprüft hat: nützlich, oft richtig, nie garantiert.

## 2. Gute Fragen stellen

Das Modell weiß nur, was Sie ihm im Gespräch sagen. Eine kurze Frage bekommt eine allgemeine Antwort; eine Frage mit Zweck, Zielgruppe und Form bekommt eine Antwort, mit der Sie arbeiten können.

1. **Sagen Sie, wofür Sie es brauchen.** „Eine Zusammenfassung für die Geschäftsführung“ ist etwas anderes als „eine Zusammenfassung für neue Mitarbeitende“.
2. **Sagen Sie, wer es liest.** Fachleute, Kundschaft, Kolleginnen und Kollegen aus einer anderen Abteilung.
3. **Sagen Sie, welche Form Sie wünschen.** Eine Tabelle, fünf Stichpunkte, ein Absatz, ein E-Mail-Entwurf.
4. **Sagen Sie, was wegbleiben soll.** Kein Fachjargon, höchstens 200 Wörter, kein Werbeton.

Eine gute Frage liest sich oft wie ein kurzer Auftrag an eine Kollegin. Passt die erste Antwort nicht, fangen Sie nicht von vorn an, sondern sagen Sie, was sich ändern soll. „Kürzer, und beginne mit der Frist“ wirkt besser, als dieselbe Frage noch einmal zu stellen.

## 3. Zusammenhang mitgeben

Fügen Sie das Material ein, auf dem die Antwort beruhen soll: den Text zum Zusammenfassen, die Zahlen zum Vergleichen, den Entwurf zum Verbessern. Das Modell arbeitet mit dem, was im Gespräch steht; eine Antwort auf Grundlage Ihres eigenen Materials ist daher genauer als eine aus dem allgemeinen Wissen des Modells.

> Faustregel: Wenn eine neue Kollegin für die Aufgabe ein Dokument bräuchte, braucht das Modell es auch.

Bedenken Sie, dass alles, was Sie einfügen, an den Modelldienst geschickt wird. Der nächste Abschnitt sagt, was das für vertrauliche Daten bedeutet.

## 4. Vertrauliche und personenbezogene Daten

Bevor Sie etwas einfügen, fragen Sie sich, ob Sie es per E-Mail an einen externen Dienstleister schicken dürften. Ihre Organisation entscheidet, welchen Modelldienst diese App nutzt und was dorthin gehen darf.

- Lassen Sie Namen, Anschriften und Kennungen weg, wenn die Aufgabe sie nicht braucht.
- Ersetzen Sie Namen von Kundinnen und Kunden durch Platzhalter wie „Kunde A“.
- Fügen Sie niemals Passwörter, Zugangsschlüssel oder andere Geheimnisse ein.
- Im Zweifel fragen Sie Ihre Datenschutzbeauftragte oder Ihren Administrator.

Gespräche werden gespeichert, damit Sie zu ihnen zurückkehren können. Sie können ein Gespräch jederzeit löschen; damit sind seine Nachrichten entfernt.

## 5. Antworten prüfen

Ein Modell kann Falsches mit großer Überzeugung sagen. Je besser eine Antwort klingt, desto leichter übersieht man einen Fehler; prüfen Sie daher im Verhältnis zu dem, was auf dem Spiel steht.

- **Fakten, Zahlen und Daten:** mit der Quelle vergleichen.
- **Zitate und Quellenangaben:** nachschlagen; ein Modell erfindet mitunter eine glaubwürdige.
- **Rechnungen:** nachrechnen oder das Modell jeden Schritt zeigen lassen und die Schritte prüfen.
- **Rechtliche, medizinische oder finanzielle Aussagen:** von einer verantwortlichen Person prüfen lassen.

Sie bleiben die Urheberin oder der Urheber dessen, was Sie weitergeben. Eine Antwort, die Sie an Kundschaft oder Kollegen schicken, ist Ihre Antwort.

## 6. Lange Texte, Tabellen und Code

Arbeiten Sie bei langen Dokumenten in Schritten: erst eine Gliederung, dann jeden Teil. Bitten Sie um eine Tabelle, wenn Sie mehrere Möglichkeiten nach denselben Kriterien vergleichen; die App stellt Markdown-Tabellen als echte Tabellen dar. Code kommt in Blöcken mit einer Angabe seiner Sprache und lässt sich mit einem Klick kopieren.

Endet eine Antwort, weil sie die Längengrenze erreicht hat, sagt Ihnen die App das. Sie können das Modell dann dort weiterschreiben lassen, wo es aufgehört hat, statt alles noch einmal zu erfragen.

## 7. Stoppen, wiederholen und bearbeiten

Während eine Antwort geschrieben wird, können Sie sie jederzeit stoppen: Der Text bis dahin bleibt erhalten. Ist eine Antwort nicht, was Sie wollten, haben Sie drei Möglichkeiten:

1. **Wiederholen** stellt dieselbe Frage noch einmal und liefert eine neue Antwort; die alte bleibt gespeichert, geht aber nicht mehr an das Modell.
2. **Bearbeiten** ändert Ihre letzte Frage und beginnt von dort eine neue Antwort.
3. **Antworten** Sie mit einer Korrektur, damit das Modell seine Antwort und den Fehler darin sieht.

Wenn Sie die Seite neu laden oder das Gespräch auf einem anderen Gerät öffnen, sehen Sie die Antwort so weit, wie sie gekommen ist, und sie läuft weiter, solange sie geschrieben wird.

## 8. Wenn etwas schiefgeht

Fehlermeldungen sagen, was passiert ist und was zu tun ist. Die meisten Probleme sind vorübergehend: Der Modelldienst ist ausgelastet, hat zu lange gebraucht, oder die Verbindung ist abgebrochen. Warten Sie einen Moment und drücken Sie auf Wiederholen; der schon angekommene Text bleibt erhalten. Meldet der Modelldienst, dass er ausgelastet ist, steht in der Meldung auch, wie lange Sie warten sollten.

Manche Probleme löst ein neuer Versuch nicht: Der Zugang der App zum Modelldienst wurde abgelehnt, oder das gewählte Modell ist nicht verfügbar. Die Meldung bittet Sie dann, sich an Ihren Administrator zu wenden. Nennen Sie ihm die Uhrzeit und die Meldung, die Sie gesehen haben; die Einzelheiten findet er im Protokoll des Servers.

## 9. Eine kurze Checkliste

- Zweck, Zielgruppe und Form in der Frage.
- Das Material, auf dem die Antwort beruhen soll, ohne Geheimnisse.
- Eine Korrektur statt eines Neuanfangs, wenn die Antwort fast passt.
- Fakten, Zahlen und Zitate geprüft, bevor sie Ihren Schreibtisch verlassen.
- Wiederholen bei vorübergehenden Fehlern, Ihr Administrator bei den anderen.

## 10. Beispiele für gute Fragen

- „Fasse das angehängte Protokoll für Kolleginnen und Kollegen zusammen, die nicht dabei waren: zuerst die Entscheidungen, dann offene Aufgaben mit Namen und Terminen, höchstens zehn Stichpunkte.“
- „Formuliere diese Antwort auf eine Kundenbeschwerde freundlich und verständlich. Das Angebot einer Erstattung bleibt, die internen Aktenzeichen fallen weg.“
- „Vergleiche diese drei Angebote in einer Tabelle: Preis, Lieferzeit, Gewährleistung und Supportzeiten. Sage dann in zwei Sätzen, welches am besten zu einem kleinen Team passt, und warum.“
- „Erkläre Schritt für Schritt, was diese Tabellenformel tut, für jemanden, der selten mit Tabellen arbeitet.“
- „Entwirf eine Tagesordnung für einen einstündigen Workshop zur neuen Reiserichtlinie, mit Zeitfenstern und einer Diskussionsfrage je Abschnitt.“
- „Übersetze diesen Absatz ins Englische für ein Partnerunternehmen; die Rechtsbegriffe bleiben genau, und markiere jeden Begriff, bei dem du unsicher bist.“

Jede dieser Fragen sagt, wofür der Text ist, wer ihn liest und welche Form er haben soll. Keine braucht besondere Wörter oder Tricks: Eine klare Bitte in Alltagssprache wirkt am besten.

## Zusammenfassung

Ein Sprachmodell ist ein schneller und geduldiger Partner für Entwürfe. Am besten arbeitet es mit einem klaren Auftrag und Ihrem eigenen Material, und es braucht Ihr Urteil, bevor seine Arbeit irgendwohin geht, wo es darauf ankommt. Dieses Demomodell spielt nur vorbereitete Antworten ab; schließen Sie ein echtes Modell an (`OPENAI_API_KEY`, und `OPENAI_BASE_URL` für andere Server), um all das mit Ihren eigenen Fragen auszuprobieren.""",
}
