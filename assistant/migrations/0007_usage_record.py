"""The usage record, filled from the assistant messages that exist.

Without the backfill, upgrading would reset everyone's per-minute limit, daily quota and
usage report to zero. Answers whose conversations were deleted before this migration are
gone and cannot be counted.
"""

import django.db.models.deletion
import django.utils.timezone
from django.conf import settings
from django.db import migrations, models


def backfill(apps, schema_editor):
    """One row per assistant message, in one INSERT ... SELECT (no rows through Python)."""
    quote = schema_editor.quote_name
    Usage, Message, Conversation = (
        apps.get_model("assistant", name) for name in ("UsageRecord", "Message", "Conversation")
    )

    def names(model, *fields):
        return (quote(model._meta.db_table), *(quote(model._meta.get_field(f).column) for f in fields))

    usage, user, model, created_at, answers, prompt, completion, message_id = names(
        Usage, "user", "model", "created_at", "answers", "prompt_tokens", "completion_tokens", "message_id"
    )
    messages, m_id, m_conversation, m_role, m_model, m_created, m_prompt, m_completion = names(
        Message, "id", "conversation", "role", "model", "created_at", "prompt_tokens", "completion_tokens"
    )
    conversations, c_id, c_owner = names(Conversation, "id", "owner")
    schema_editor.execute(
        f"INSERT INTO {usage} ({user}, {model}, {created_at}, {answers}, {prompt}, {completion}, {message_id}) "
        f"SELECT c.{c_owner}, m.{m_model}, m.{m_created}, 1, COALESCE(m.{m_prompt}, 0), "
        f"COALESCE(m.{m_completion}, 0), m.{m_id} "
        f"FROM {messages} m INNER JOIN {conversations} c ON m.{m_conversation} = c.{c_id} "
        f"WHERE m.{m_role} = %s",
        ["assistant"],
    )


class Migration(migrations.Migration):

    dependencies = [
        ('assistant', '0006_reviewers_group'),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.CreateModel(
            name='UsageRecord',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('model', models.CharField(blank=True, max_length=100)),
                ('created_at', models.DateTimeField(default=django.utils.timezone.now)),
                ('answers', models.PositiveIntegerField(default=1)),
                ('prompt_tokens', models.PositiveBigIntegerField(default=0)),
                ('completion_tokens', models.PositiveBigIntegerField(default=0)),
                ('message_id', models.BigIntegerField(blank=True, null=True, unique=True)),
                ('user', models.ForeignKey(null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='+', to=settings.AUTH_USER_MODEL)),
            ],
            options={
                'verbose_name': 'usage record',
                'verbose_name_plural': 'usage records',
                'ordering': ['created_at', 'id'],
                'indexes': [models.Index(fields=['user', 'created_at'], name='usage_user_recent'), models.Index(fields=['created_at'], name='usage_period')],
            },
        ),
        # Reversing drops the table with the model: nothing to undo here.
        migrations.RunPython(backfill, migrations.RunPython.noop),
    ]
