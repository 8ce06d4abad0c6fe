"""Example prompts for a new chat's empty page, editable in the admin, with a few to start.

The defaults show what answers can hold (a table, code, a list); administrators change,
deactivate or delete them. Taking the migration back removes the table with them.
"""

from django.db import migrations, models

import assistant.models

DEFAULTS = [
    # (position, language, text)
    (10, "en", "Compare PostgreSQL and SQLite in a table"),
    (20, "en", "Write a Python function that counts the words in a text, with a short example"),
    (30, "en", "Explain the difference between a process and a thread in five bullet points"),
    (40, "en", "Draft a polite email asking to move a meeting to next week"),
    (10, "de", "Vergleiche PostgreSQL und SQLite in einer Tabelle"),
    (20, "de", "Schreibe eine Python-Funktion, die die Wörter eines Textes zählt, mit einem kurzen Beispiel"),
    (30, "de", "Erkläre den Unterschied zwischen Prozess und Thread in fünf Stichpunkten"),
    (40, "de", "Formuliere eine höfliche E-Mail, die ein Treffen auf nächste Woche verschiebt"),
]


def defaults_create(apps, schema_editor):
    StarterPrompt = apps.get_model("assistant", "StarterPrompt")
    StarterPrompt.objects.bulk_create(
        StarterPrompt(position=position, language=language, text=text)
        for position, language, text in DEFAULTS
    )


class Migration(migrations.Migration):
    dependencies = [
        ("assistant", "0008_message_versions"),
    ]

    operations = [
        migrations.CreateModel(
            name="StarterPrompt",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("text", models.CharField(max_length=500, verbose_name="text")),
                (
                    "position",
                    models.PositiveSmallIntegerField(
                        default=0, help_text="Lower comes first.", verbose_name="position"
                    ),
                ),
                ("active", models.BooleanField(default=True, verbose_name="active")),
                (
                    "language",
                    models.CharField(
                        blank=True,
                        choices=assistant.models.starter_prompt_languages,
                        help_text="Shown to users of this language only; empty for everyone.",
                        max_length=10,
                        verbose_name="language",
                    ),
                ),
            ],
            options={
                "verbose_name": "example prompt",
                "verbose_name_plural": "example prompts",
                "ordering": ["position", "id"],
            },
        ),
        migrations.RunPython(defaults_create, migrations.RunPython.noop),
    ]
