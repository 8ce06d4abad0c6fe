# ruff: noqa: E501 -- Markdown prose, one paragraph a line as a model writes it
"""The offline demo model's replies as the shipped assistants (assistant/personas/examples):
data only (assistant/providers/demo_personas.py picks one and fills it in).

German, as the assistants are: the Lieblingskollege and the coaching flow say "du", the
Schreibhilfe says "Sie" and answers a text in English in English. Texts, not gettext
messages, for the reason demo_replies.py gives.
"""

from __future__ import annotations

# --- Lieblingskollege: the first kind whose words the question has picks the reply --------

COLLEAGUE = {
    "mail": (
        "Klar, das kriegen wir hin! Hier ein Entwurf, den du direkt anpassen kannst:\n\n"
        "> Hallo [Name],\n>\n"
        "> danke für die Einladung! Leider schaffe ich den Termin am [Datum] nicht, weil [kurzer Grund]. Schick mir gern die wichtigsten Punkte hinterher, oder wir suchen uns einen neuen Termin – wie passt dir [Vorschlag]?\n>\n"
        "> Viele Grüße  \n> [Dein Name]\n\n"
        "Kurz, freundlich und mit einem Vorschlag, wie es weitergeht: So kommt eine Absage gut an. Soll es förmlicher klingen oder noch lockerer?"
    ),
    "talk": (
        "Ah, ein Gespräch mit der Führungskraft – keine Sorge, mit ein bisschen Vorbereitung wird das gut. Meine wichtigsten Tipps:\n\n"
        "1. **Schreib dir vorher drei Punkte auf:** was gut lief, was schwierig war und was du dir wünschst.\n"
        "2. **Nimm Beispiele mit.** „Ich habe im März das Projekt X übernommen“ wirkt stärker als „Ich habe viel gemacht“.\n"
        "3. **Hör zu und frag nach**, wenn dir Feedback unklar ist: „Kannst du mir ein Beispiel geben?“ ist völlig in Ordnung.\n"
        "4. **Sprich über die Zukunft:** Welche Aufgaben reizen dich, welche Weiterbildung würde dir helfen?\n"
        "5. **Halt am Ende fest, was ihr vereinbart habt**, am besten kurz schriftlich.\n\n"
        "Und ganz ehrlich: Deine Führungskraft will auch, dass das Gespräch gut läuft. Was liegt dir dabei am meisten auf der Seele?"
    ),
    "excel": (
        "SVERWEIS ist einfacher, als er klingt – versprochen! Du hast eine Liste und suchst zu einem Wert die passende Angabe aus einer anderen Spalte.\n\n"
        "| | A: Personalnummer | B: Name | C: Abteilung |\n"
        "|---|---|---|---|\n"
        "| 1 | 1001 | Anna | Vertrieb |\n"
        "| 2 | 1002 | Ben | Einkauf |\n"
        "| 3 | 1003 | Cem | IT |\n\n"
        "Du willst wissen, in welcher Abteilung die 1002 arbeitet:\n\n"
        "```\n=SVERWEIS(1002; A1:C3; 3; FALSCH)\n```\n\n"
        "Auf gut Deutsch:\n\n"
        "- **1002:** Das suchst du.\n"
        "- **A1:C3:** Hier suchst du, und zwar immer in der **ersten** Spalte.\n"
        "- **3:** Aus der dritten Spalte kommt das Ergebnis.\n"
        "- **FALSCH:** Nur ein genauer Treffer zählt.\n\n"
        "Ergebnis: **Einkauf**. Der häufigste Stolperstein ist das FALSCH am Ende: Fehlt es, rät Excel manchmal munter drauflos. Und wenn du eine neuere Version hast, schau dir XVERWEIS an – der sucht sogar nach links."
    ),
    "stress": (
        "Puh, das klingt nach einer vollen Woche. Einmal durchatmen, wir sortieren das zusammen:\n\n"
        "1. **Alles raus aus dem Kopf:** Schreib jede Aufgabe auf, auch die kleinen. Auf Papier wirkt vieles gleich kleiner.\n"
        "2. **Was brennt wirklich?** Markier die zwei, drei Sachen, die diese Woche fertig sein müssen.\n"
        "3. **Was kann warten, und wer kann helfen?** Frag ruhig im Team nach – das ist kein Zeichen von Schwäche, sondern von Überblick.\n"
        "4. **Feste Zeiten im Kalender:** Gib den wichtigsten Aufgaben Blöcke, bevor die Woche sie dir wegnimmt.\n\n"
        "Und plan eine echte Pause ein, ehrlich. Wenn du magst, schick mir deine Liste, dann gehen wir sie gemeinsam durch."
    ),
    "team": (
        "Oh, das kenne ich. Im Team läuft nicht immer alles rund, und das ist auch normal. Mein Tipp: Sprich es direkt an, aber freundlich – am besten unter vier Augen und mit einem konkreten Beispiel. Sag, wie es bei dir ankommt, und frag dann, wie die andere Seite es sieht. Oft steckt weniger dahinter, als man denkt.\n\n"
        "Wenn es festgefahren ist, hol dir Unterstützung von deiner Führungskraft. Soll ich dir helfen, die ersten Sätze für das Gespräch zu formulieren?"
    ),
    "thanks": "Sehr gern! Dafür sind Kollegen doch da. Melde dich einfach, wenn wieder was ist – ich bin hier.",
    "hello": (
        "Hey, schön, dass du vorbeischaust! Wie läuft's bei dir? Erzähl mir einfach, woran du gerade sitzt: eine knifflige Mail, ein voller Kalender oder eine Excel-Formel, die nicht will. Ich bin ganz Ohr."
    ),
}

# Any other question: one of these, picked by the question (the same each time).
COLLEAGUE_OTHER = (
    "Gute Frage! Bei „{question}“ würde ich mit einem echten Sprachmodell im Rücken richtig loslegen – hier spiele ich den Lieblingskollegen aber nur mit vorbereiteten Antworten. Frag mich doch mal nach einer Mail, die du schreiben musst, nach Excel oder danach, wie du deine Woche sortierst.",
    "Hm, lass mich kurz überlegen … Bei „{question}“ sag ich dir ehrlich: Da müsste ich raten, und raten ist nicht mein Stil. Erzähl mir ein bisschen mehr, worum es geht, dann finden wir zusammen einen Weg.",
    "Da bin ich ganz bei dir! „{question}“ ist genau die Art Frage, die man am besten bei einem Kaffee bespricht. Was hast du denn schon ausprobiert, und wo hakt es gerade?",
)

# --- The coaching flow ----------------------------------------------------------------------

FLOW_MORE = "In Phase {phase} von {total}, **{title}**, geht es darum: {goal}"
FLOW_MORE_ASK = "Erzähl mir dazu noch etwas mehr – ein paar Sätze reichen. Dann fasse ich zusammen, was wir haben, und wir gehen weiter."
FLOW_REFLECTION = (
    "Danke, das ist eine gute Grundlage. Für Phase {phase} von {total}, **{title}**, halte ich fest:"
)
FLOW_POINTS = "Dazu notiere ich:"
FLOW_NEXT = "Damit ist das Ziel dieser Phase erreicht. Als Nächstes geht es um Phase {next} von {total}."
FLOW_LAST = "Damit ist auch die letzte Phase geschafft."
FLOW_CLOSING = "Geschafft: Wir haben alle Phasen abgeschlossen."
FLOW_CLOSING_LIST = "Hier noch einmal deine Ergebnisse:"
FLOW_CLOSING_END = "Nimm dir als Nächstes den ersten Schritt vor, den du festgehalten hast – am besten gleich mit einem Termin im Kalender. Viel Erfolg, du schaffst das!"

# --- Schreibhilfe ------------------------------------------------------------------------------

WRITING_RESCHEDULE = (
    "Gern, hier ein Entwurf. Passen Sie die Angaben in eckigen Klammern an:\n\n"
    "**Betreff:** Neuer Termin für [Thema]\n\n"
    "> Guten Tag [Name],\n>\n"
    "> leider muss ich unseren Termin am [Datum] um [Uhrzeit] verschieben. Passt Ihnen stattdessen [Wochentag], der [Datum], um [Uhrzeit], oder [Alternative] in der nächsten Woche?\n>\n"
    "> Entschuldigen Sie die Umstände, und vielen Dank für Ihr Verständnis.\n>\n"
    "> Freundliche Grüße  \n> [Ihr Name]\n\n"
    "**Warum so:** Der erste Satz sagt, worum es geht; zwei konkrete Vorschläge ersparen eine Runde Hin und Her; der Dank am Ende hält den Ton freundlich."
)

WRITING_MAIL = (
    "Gern. Damit der Entwurf passt, brauche ich drei Angaben: **an wen** die E-Mail geht, **was** sie erreichen soll und **bis wann**. Bis dahin ein Gerüst, das für die meisten beruflichen E-Mails trägt:\n\n"
    "> **Betreff:** [Worum es geht, in wenigen Wörtern]\n>\n"
    "> Guten Tag [Name],\n>\n"
    "> [Ein Satz: der Anlass der E-Mail.]\n>\n"
    "> [Zwei, drei Sätze: das Wichtigste, mit Fakten und Terminen.]\n>\n"
    "> [Ein Satz: was Sie vom Empfänger brauchen, und bis wann.]\n>\n"
    "> Freundliche Grüße  \n> [Ihr Name]"
)

WRITING_MINUTES = (
    "Gern, hier eine Vorlage für das Protokoll einer Teambesprechung:\n\n"
    "## Protokoll: [Teambesprechung, Thema]\n\n"
    "| Angabe | Eintrag |\n"
    "|---|---|\n"
    "| Datum | [TT.MM.JJJJ], [Uhrzeit] |\n"
    "| Ort | [Raum oder Videokonferenz] |\n"
    "| Teilnehmende | [Namen] |\n"
    "| Entschuldigt | [Namen] |\n"
    "| Protokoll | [Name] |\n\n"
    "### 1. [Tagesordnungspunkt]\n\n"
    "- **Ergebnis:** [Was besprochen oder entschieden wurde]\n"
    "- **Aufgabe:** [Was] – **wer:** [Name] – **bis:** [Datum]\n\n"
    "### 2. [Tagesordnungspunkt]\n\n"
    "- **Ergebnis:** [Was besprochen oder entschieden wurde]\n"
    "- **Aufgabe:** [Was] – **wer:** [Name] – **bis:** [Datum]\n\n"
    "### Nächster Termin\n\n"
    "[Datum, Uhrzeit, Ort]\n\n"
    "**Tipp:** Halten Sie Ergebnisse und Aufgaben fest, nicht den Gesprächsverlauf. Jede Aufgabe braucht einen Namen und ein Datum, sonst bleibt sie liegen."
)

WRITING_DASS = (
    "Die Faustregel: Lässt sich das Wort durch **dieses**, **jenes** oder **welches** ersetzen, schreibt man **das**. Sonst ist es die Konjunktion **dass**.\n\n"
    "| Wort | Was es ist | Beispiel | Ersatzprobe |\n"
    "|---|---|---|---|\n"
    "| das | Artikel | **Das** Protokoll liegt bei. | **Dieses** Protokoll liegt bei. ✓ |\n"
    "| das | Relativpronomen | Das Protokoll, **das** gestern kam, ist vollständig. | Das Protokoll, **welches** gestern kam, … ✓ |\n"
    "| das | Demonstrativpronomen | **Das** habe ich nicht gewusst. | **Dieses** habe ich nicht gewusst. ✓ |\n"
    "| dass | Konjunktion | Ich hoffe, **dass** der Termin passt. | Ich hoffe, **welches** der Termin passt. ✗ |\n\n"
    "**Noch ein Hinweis:** *dass* leitet einen Nebensatz ein, oft nach Verben wie *hoffen, glauben, wissen* oder *sagen*, und steht fast immer nach einem Komma."
)

# A revised text: the heading, the text (as a quote), then the notes.
WRITING_REVISED = {
    "de": {
        "heading": "Hier ist Ihr Text, überarbeitet:",
        "notes": "**Hinweise**",
        "size": "Wörter: {words}, Sätze: {sentences}.",
        "typos": "Korrigiert: {pairs}.",
        "spacing": "Leerzeichen und Satzzeichen aufgeräumt.",
        "capitals": "Satzanfänge großgeschrieben.",
        "long": "Satz {number} hat {count} Wörter: Teilen Sie ihn in zwei kürzere Sätze.",
        "fillers": "Füllwörter, die Sie streichen können: {words}.",
        "clean": "Der Text ist klar; ich habe nichts Wesentliches geändert.",
        "quote": "„{}“",
    },
    "en": {
        "heading": "Here is your text, revised:",
        "notes": "**Notes**",
        "size": "Words: {words}, sentences: {sentences}.",
        "typos": "Corrected: {pairs}.",
        "spacing": "Tidied spaces and punctuation.",
        "capitals": "Capitalised the starts of sentences.",
        "long": "Sentence {number} has {count} words: split it into two shorter ones.",
        "fillers": "Filler words you can cut: {words}.",
        "clean": "The text is clear; I changed nothing of substance.",
        "quote": "“{}”",
    },
}

WRITING_HELP = {
    "de": (
        "Ich bin die Schreibhilfe. Fügen Sie einen Text ein, den ich überarbeiten soll, am besten nach einem Doppelpunkt:\n\n"
        "> Bitte überarbeiten: [Ihr Text]\n\n"
        "Ich räume ihn auf (Leerzeichen, Satzanfänge, Satzzeichen, häufige Tippfehler) und weise auf lange Sätze und Füllwörter hin. "
        "Außerdem entwerfe ich eine **E-Mail**, liefere eine **Protokollvorlage** oder erkläre den Unterschied zwischen **das und dass**."
    ),
    "en": (
        "I am the writing assistant. Paste a text you want me to revise, ideally after a colon:\n\n"
        "> Please revise: [your text]\n\n"
        "I tidy it (spaces, sentence starts, punctuation, common typos) and point out long sentences and filler words."
    ),
}

# Misspellings the demo corrects, whole words; a capital first letter stays a capital.
TYPOS = {
    "vieleicht": "vielleicht",
    "seperat": "separat",
    "nähmlich": "nämlich",
    "wiederrum": "wiederum",
    "garnicht": "gar nicht",
    "bischen": "bisschen",
    "ausversehen": "aus Versehen",
    "addresse": "Adresse",
    "agressiv": "aggressiv",
    "rythmus": "Rhythmus",
    "reperatur": "Reparatur",
    "recieve": "receive",
    "seperate": "separate",
    "definately": "definitely",
    "occured": "occurred",
    "untill": "until",
    "adress": "address",
    "accomodate": "accommodate",
}

FILLERS = {
    "de": ("eigentlich", "halt", "quasi", "irgendwie", "sozusagen", "gewissermaßen", "grundsätzlich"),
    "en": ("basically", "actually", "really", "literally", "just", "very"),
}
