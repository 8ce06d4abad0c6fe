"""Versions of questions and answers: each message names the one before it in its branch.

Before this, an edit or a retry marked what it replaced `superseded` and appended the new
question or answer at the end. The backfill gives every stored message its parent, so
that the old rows become earlier versions of what replaced them: a question follows the
answer shown before it (an edit's new question has the same parent as the question it
replaced), an answer follows the latest question before it. `superseded` keeps its
meaning: not in the shown branch.
"""

import django.db.models.deletion
from django.db import migrations, models

BATCH = 1000


def parents_backfill(apps, schema_editor):
    Message = apps.get_model("assistant", "Message")
    rows = Message.objects.order_by("conversation_id", "pk").values_list(
        "pk", "conversation_id", "role", "superseded"
    )
    changed = []
    conversation = object()
    # Read whole before writing: no statement runs while a cursor of the same connection reads.
    for pk, conversation_id, role, superseded in list(rows):
        if conversation_id != conversation:
            conversation, question, shown_answer = conversation_id, None, None
        if role == "user":
            parent, question = shown_answer, pk
        else:
            parent = question
            if not superseded:
                shown_answer = pk
        if parent is not None:
            changed.append(Message(pk=pk, parent_id=parent))
    Message.objects.bulk_update(changed, ["parent"], batch_size=BATCH)


class Migration(migrations.Migration):
    dependencies = [
        ("assistant", "0007_usage_record"),
    ]

    operations = [
        migrations.AddField(
            model_name="message",
            name="parent",
            field=models.ForeignKey(
                blank=True,
                db_constraint=False,
                null=True,
                on_delete=django.db.models.deletion.DO_NOTHING,
                related_name="+",
                to="assistant.message",
            ),
        ),
        migrations.RunPython(parents_backfill, migrations.RunPython.noop, elidable=True),
    ]
