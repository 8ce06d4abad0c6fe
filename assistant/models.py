"""Conversations and their messages: fields, constraints and indexes; logic lives in services."""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import connection, models
from django.db.models import Q
from django.utils import timezone
from django.utils.translation import gettext_lazy as _


def sql_names(model: type[models.Model], *fields: str) -> tuple[str, ...]:
    """`model`'s table, then the columns of `fields`, quoted for the database.

    For the few statements on the hot path that the ORM takes longer to build and compile
    than the database takes to run: identifiers come from the model's metadata, every
    value stays a parameter.
    """
    quote, meta = connection.ops.quote_name, model._meta
    return (quote(meta.db_table), *(quote(meta.get_field(name).column) for name in fields))


ICONS = [
    ("sparkles", _("sparkles")),
    ("chat", _("speech bubble")),
    ("compass", _("compass")),
    ("pen", _("pen")),
    ("heart", _("heart")),
    ("book", _("book")),
    ("lightbulb", _("light bulb")),
    ("briefcase", _("briefcase")),
]


class Assistant(models.Model):
    """A company assistant: its name in files (`slug`), who may use it, and its versions.

    What it says and how (name, instructions, model, phases ...) lives in its versions:
    editing it adds a version, and a conversation keeps the version it started with, so a
    reviewer sees the instructions behind every answer. A retired assistant is offered to
    nobody; its conversations stay readable.
    """

    slug = models.SlugField(_("identifier"), max_length=50, unique=True)
    active = models.BooleanField(
        _("active"), default=True, help_text=_("Retired assistants are offered to nobody.")
    )
    position = models.PositiveSmallIntegerField(_("position"), default=0, help_text=_("Lower comes first."))
    everyone = models.BooleanField(_("everyone may use it"), default=True)
    groups = models.ManyToManyField("auth.Group", blank=True, related_name="+", verbose_name=_("groups"))
    users = models.ManyToManyField(
        settings.AUTH_USER_MODEL, blank=True, related_name="+", verbose_name=_("users")
    )
    # The knowledge collections its answers may draw on (only those the user may read).
    collections = models.ManyToManyField(
        "assistant.Collection", blank=True, related_name="assistants", verbose_name=_("knowledge collections")
    )
    # The latest version: what a new conversation runs with.
    current = models.ForeignKey(
        "AssistantVersion", null=True, blank=True, editable=False, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["position", "slug"]
        verbose_name = _("assistant")
        verbose_name_plural = _("assistants")

    def __str__(self) -> str:
        return self.current.name if self.current else self.slug


class AssistantVersion(models.Model):
    """One version of an assistant, as it was saved: never changed afterwards.

    `phases` makes it a guided flow: a list of {"title", "goal", "instructions"}, in order.
    """

    assistant = models.ForeignKey(Assistant, on_delete=models.CASCADE, related_name="versions")
    number = models.PositiveIntegerField(_("version"))
    name = models.CharField(_("name"), max_length=100)
    description = models.CharField(_("description"), max_length=300, blank=True)
    icon = models.CharField(_("icon"), max_length=20, choices=ICONS, default="sparkles")
    instructions = models.TextField(_("instructions"), help_text=_("The system prompt."))
    model = models.CharField(
        _("model"), max_length=100, blank=True, help_text=_("One of ASSISTANT_MODELS; empty for the default.")
    )
    temperature = models.FloatField(_("temperature"), null=True, blank=True)
    max_tokens = models.PositiveIntegerField(_("maximum answer tokens"), null=True, blank=True)
    starters = models.JSONField(_("example prompts"), default=list, blank=True)
    phases = models.JSONField(_("phases"), default=list, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    created_by = models.CharField(_("saved by"), max_length=150, blank=True)

    class Meta:
        ordering = ["assistant", "-number"]
        constraints = [
            models.UniqueConstraint(fields=["assistant", "number"], name="assistantversion_number_unique")
        ]
        verbose_name = _("assistant version")
        verbose_name_plural = _("assistant versions")

    def __str__(self) -> str:
        return f"{self.name} v{self.number}"

    @property
    def is_flow(self) -> bool:
        return bool(self.phases)


class Preferences(models.Model):
    """A user's personal instructions, for the conversations they start from now on."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="preferences"
    )
    about_me = models.TextField(_("about me"), blank=True)
    answer_style = models.TextField(_("how to answer"), blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = _("personal instructions")
        verbose_name_plural = _("personal instructions")

    def __str__(self) -> str:
        return str(self.user)


class Origin(models.TextChoices):
    """Where a conversation, or an answer's usage, came from."""

    PAGE = "page", _("chat page")
    # A client of the JSON API with a personal token (a native app, a script).
    API = "api", _("API client")
    # The OpenAI-compatible gateway (/v1/chat/completions).
    GATEWAY = "gateway", _("OpenAI-compatible gateway")


class Conversation(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="conversations"
    )
    title = models.CharField(_("title"), max_length=200, blank=True)
    # Set when the user named the conversation: an automatic title never overwrites it.
    title_chosen = models.BooleanField(default=False)
    model = models.CharField(_("model"), max_length=100)
    archived = models.BooleanField(_("archived"), default=False)
    # The assistant version it runs with, for good (None: the bare model). PROTECT: a
    # version with conversations stays; an assistant is retired, not deleted.
    assistant_version = models.ForeignKey(
        AssistantVersion, null=True, blank=True, on_delete=models.PROTECT, related_name="conversations"
    )
    # The user's personal instructions as they were when it started.
    personal_instructions = models.TextField(blank=True)
    origin = models.CharField(_("origin"), max_length=10, choices=Origin.choices, default=Origin.PAGE)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-updated_at"]
        indexes = [models.Index(fields=["owner", "-updated_at"], name="conversation_owner_recent")]
        verbose_name = _("conversation")
        verbose_name_plural = _("conversations")

    def __str__(self) -> str:
        return self.title or str(self.id)

    @property
    def channel(self) -> str:
        """The event stream channel of this conversation."""
        return f"conversation-{self.id}"


class Message(models.Model):
    class Role(models.TextChoices):
        USER = "user", _("user")
        ASSISTANT = "assistant", _("assistant")

    class Feedback(models.IntegerChoices):
        UP = 1, _("up")
        DOWN = -1, _("down")

    class Status(models.TextChoices):
        STREAMING = "streaming", _("streaming")
        DONE = "done", _("done")
        ERROR = "error", _("error")
        CANCELLED = "cancelled", _("cancelled")
        INTERRUPTED = "interrupted", _("interrupted")

    conversation = models.ForeignKey(Conversation, on_delete=models.CASCADE, related_name="messages")
    role = models.CharField(max_length=16, choices=Role.choices)
    content = models.TextField(blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.DONE)
    finish_reason = models.CharField(max_length=32, blank=True)
    error_code = models.PositiveSmallIntegerField(null=True, blank=True)
    error_type = models.CharField(max_length=40, blank=True)
    error_detail = models.CharField(max_length=500, blank=True)
    model = models.CharField(max_length=100, blank=True)
    prompt_tokens = models.PositiveIntegerField(null=True, blank=True)
    completion_tokens = models.PositiveIntegerField(null=True, blank=True)
    time_to_first_token_ms = models.PositiveIntegerField(null=True, blank=True)
    duration_ms = models.PositiveIntegerField(null=True, blank=True)
    # The server process generating this answer (see ServerProcess), while it streams.
    generated_by = models.CharField(max_length=100, blank=True)
    # Stop asked for while another process generates it; that process polls for this.
    cancel_requested = models.BooleanField(default=False)
    # The message before this one in its branch: a question's is the answer it follows
    # (None for a first question), an answer's is its question. Messages with the same
    # parent and role are versions of each other: edits of a question, regenerations of
    # an answer. No constraint: messages go only with their whole conversation.
    parent = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.DO_NOTHING, db_constraint=False, related_name="+"
    )
    # Not in the conversation's shown branch: an earlier (or later) version, or what
    # follows one. Stored, shown in review and exports, never sent upstream.
    superseded = models.BooleanField(default=False)
    # An answer's content rendered (rendering.answer_html), and the key of the text and
    # renderer it was rendered from: a page of many answers renders none of them again.
    html = models.TextField(blank=True, editable=False)
    html_key = models.CharField(max_length=32, blank=True, editable=False)
    # Stream position of `content`: the id of the last event on the conversation's channel
    # whose text `content` includes. A page that renders `content` resumes from here.
    event_id = models.BigIntegerField(default=0)
    # In a guided flow: the phase (from 1) an answer was written in, and, on the answer
    # that ended it, how: {"by": "model" | "user", "summary": str, "points": [str]}.
    phase = models.PositiveSmallIntegerField(null=True, blank=True)
    phase_summary = models.JSONField(null=True, blank=True)
    # What retrieval gave the model for this answer, in the order it cites them ([1] is
    # the first): [{"n", "document", "name", "page", "chunk", "text"}]; the passages are
    # copied, so a reviewer sees what the model was shown whatever became of the file.
    sources = models.JSONField(null=True, blank=True)
    # The user's rating of an answer, with an optional comment.
    feedback = models.SmallIntegerField(choices=Feedback.choices, null=True, blank=True)
    feedback_comment = models.TextField(blank=True)
    feedback_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["id"]
        indexes = [
            models.Index(fields=["conversation", "id"], name="message_conversation_order"),
            # Restart recovery looks up in-flight answers only.
            models.Index(fields=["status"], condition=Q(status="streaming"), name="message_streaming"),
        ]
        verbose_name = _("message")
        verbose_name_plural = _("messages")

    def __str__(self) -> str:
        return f"{self.role}: {self.content[:60]}"

    @property
    def is_streaming(self) -> bool:
        return self.status == self.Status.STREAMING

    @property
    def feedback_name(self) -> str | None:
        """The rating as the API, the page and exports name it: "up", "down" or None."""
        return FEEDBACK_NAMES.get(self.feedback)


# The names of the ratings on the wire (API, page data, exports), and back.
FEEDBACK_NAMES = {Message.Feedback.UP: "up", Message.Feedback.DOWN: "down"}
FEEDBACK_RATINGS = {name: value for value, name in FEEDBACK_NAMES.items()}


class ServerProcess(models.Model):
    """A live server process and its heartbeat: the lease on the answers it generates.

    An answer still `streaming` whose process stopped heartbeating was orphaned by a
    crash or restart; any process marks it `interrupted`.
    """

    id = models.CharField(primary_key=True, max_length=100)
    started_at = models.DateTimeField(auto_now_add=True)
    heartbeat_at = models.DateTimeField()

    def __str__(self) -> str:
        return self.id


class AccessLog(models.Model):
    """A reviewer opened someone's transcript: who, whose, when and why. Append-only.

    It outlives the conversation (the id is kept, not a foreign key) and names people
    by their username at the time, so the record stays readable after deletions.
    """

    accessed_at = models.DateTimeField(auto_now_add=True, db_index=True)
    reviewer = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    reviewer_username = models.CharField(max_length=150)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    owner_username = models.CharField(max_length=150)
    conversation_id = models.UUIDField(db_index=True)
    reason = models.TextField()

    class Meta:
        ordering = ["-accessed_at"]
        indexes = [models.Index(fields=["owner", "-accessed_at"], name="accesslog_owner_recent")]
        verbose_name = _("transcript access")
        verbose_name_plural = _("transcript access log")

    def __str__(self) -> str:
        return f"{self.reviewer_username} → {self.owner_username} ({self.accessed_at:%Y-%m-%d %H:%M})"


class DeletionRecord(models.Model):
    """That content was deleted, and how much: counts and ranges, never the content."""

    class Kind(models.TextChoices):
        RETENTION = "retention", _("retention policy")
        USER_DATA = "user_data", _("deletion of a user's data")

    created_at = models.DateTimeField(auto_now_add=True)
    kind = models.CharField(max_length=20, choices=Kind.choices)
    actor = models.CharField(max_length=150, help_text=_("Who ran it (user or system account)."))
    conversations = models.PositiveIntegerField(default=0)
    messages = models.PositiveIntegerField(default=0)
    oldest = models.DateTimeField(null=True, blank=True)
    newest = models.DateTimeField(null=True, blank=True)
    parameters = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-created_at"]
        verbose_name = _("deletion record")
        verbose_name_plural = _("deletion records")

    def __str__(self) -> str:
        return f"{self.get_kind_display()} {self.created_at:%Y-%m-%d}: {self.conversations} conversations"


class UsageRecord(models.Model):
    """What answers cost: one row per answer, written when it starts, its tokens when it ends.

    It is not content and outlives it: `message_id` is a plain number, not a foreign key,
    so deleting a conversation (API, admin, retention) never touches a row, and the
    per-minute limit, the daily quota and `usage_report` all read it. Only erasing a
    person's data (GDPR Art. 17) changes it: their rows become one row per day, model and assistant,
    without user or message, carrying the count of answers in `answers` and their tokens.
    """

    user = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    model = models.CharField(max_length=100, blank=True)
    # The assistant's identifier (its slug), empty for the bare model: kept as text, like
    # the model, so the record outlives the assistant.
    assistant = models.CharField(max_length=50, blank=True)
    origin = models.CharField(max_length=10, choices=Origin.choices, default=Origin.PAGE)
    # Set explicitly (not auto_now_add): the answer's own moment, or a day's start once anonymised.
    created_at = models.DateTimeField(default=timezone.now)
    # How many answers the row stands for: 1, or the count of an anonymised day.
    answers = models.PositiveIntegerField(default=1)
    prompt_tokens = models.PositiveBigIntegerField(default=0)
    completion_tokens = models.PositiveBigIntegerField(default=0)
    # The answer's Message id while the person is known; None once anonymised.
    message_id = models.BigIntegerField(null=True, blank=True, unique=True)

    class Meta:
        ordering = ["created_at", "id"]
        indexes = [
            # The limits: a user's answers of the last minute and tokens of the day.
            models.Index(fields=["user", "created_at"], name="usage_user_recent"),
            # usage_report: a period of everyone's answers.
            models.Index(fields=["created_at"], name="usage_period"),
        ]
        verbose_name = _("usage record")
        verbose_name_plural = _("usage records")

    def __str__(self) -> str:
        return f"{self.model or '-'} {self.created_at:%Y-%m-%d}: {self.answers}"


def starter_prompt_languages() -> list[tuple[str, str]]:
    """Any language, or one the site speaks (settings.LANGUAGES)."""
    return [("", _("any language")), *settings.LANGUAGES]


class StarterPrompt(models.Model):
    """An example prompt on a new chat's empty page, chosen by the administrators."""

    text = models.CharField(_("text"), max_length=500)
    position = models.PositiveSmallIntegerField(_("position"), default=0, help_text=_("Lower comes first."))
    active = models.BooleanField(_("active"), default=True)
    language = models.CharField(
        _("language"),
        max_length=10,
        blank=True,
        choices=starter_prompt_languages,
        help_text=_("Shown to users of this language only; empty for everyone."),
    )

    class Meta:
        ordering = ["position", "id"]
        verbose_name = _("example prompt")
        verbose_name_plural = _("example prompts")

    def __str__(self) -> str:
        return self.text


# Documents, collections and conversation vectors (assistant/documents/), registered with
# this app.
from assistant.documents.conversation_vectors import ConversationVector  # noqa: E402, F401
from assistant.documents.models import Chunk, Collection, Document  # noqa: E402, F401
from assistant.tokens.models import ApiToken  # noqa: E402, F401
