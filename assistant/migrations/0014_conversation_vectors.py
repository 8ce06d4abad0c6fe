"""Conversation vectors for the sidebar search by meaning (assistant/documents/conversation_vectors.py)."""

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("assistant", "0013_chunk_search"),
    ]

    operations = [
        migrations.CreateModel(
            name="ConversationVector",
            fields=[
                (
                    "conversation",
                    models.OneToOneField(
                        on_delete=django.db.models.deletion.CASCADE,
                        primary_key=True,
                        related_name="vector",
                        serialize=False,
                        to="assistant.conversation",
                    ),
                ),
                ("last_message_id", models.BigIntegerField(default=0)),
                ("model", models.CharField(max_length=200)),
                ("embedding", models.BinaryField()),
                ("updated_at", models.DateTimeField(auto_now=True)),
            ],
            options={
                "verbose_name": "conversation vector",
                "verbose_name_plural": "conversation vectors",
            },
        ),
    ]
