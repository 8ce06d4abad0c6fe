"""The reviewer role: the review_conversation permission and the "Reviewers" group.

models.py stays as it is, so the permission is created here rather than in Conversation's
Meta. The view permissions the group needs are normally created after all migrations
(post_migrate), so on a fresh database they are created here too; post_migrate then
finds them and leaves them alone.
"""

from django.db import migrations

REVIEWERS_GROUP = "Reviewers"
PERMISSIONS = [
    # (model, codename, name)
    ("conversation", "review_conversation", "Can read conversation transcripts for review"),
    ("conversation", "view_conversation", "Can view conversation"),
    ("message", "view_message", "Can view message"),
    ("accesslog", "view_accesslog", "Can view transcript access"),
]


def create_reviewers(apps, schema_editor):
    ContentType = apps.get_model("contenttypes", "ContentType")
    Permission = apps.get_model("auth", "Permission")
    Group = apps.get_model("auth", "Group")
    group, _ = Group.objects.get_or_create(name=REVIEWERS_GROUP)
    for model, codename, name in PERMISSIONS:
        content_type, _ = ContentType.objects.get_or_create(app_label="assistant", model=model)
        permission, _ = Permission.objects.get_or_create(
            content_type=content_type, codename=codename, defaults={"name": name}
        )
        group.permissions.add(permission)


def remove_reviewers(apps, schema_editor):
    Permission = apps.get_model("auth", "Permission")
    Group = apps.get_model("auth", "Group")
    Group.objects.filter(name=REVIEWERS_GROUP).delete()
    Permission.objects.filter(
        content_type__app_label="assistant", codename="review_conversation"
    ).delete()


class Migration(migrations.Migration):

    dependencies = [
        ("assistant", "0005_access_log_and_deletion_records"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]

    operations = [migrations.RunPython(create_reviewers, remove_reviewers)]
