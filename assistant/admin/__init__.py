"""Review UI: conversations, feedback and the access log; content shows only for a reason.

    lookups.py        the allowlist of query-string lookups (metadata only)
    content_view.py   the reason form; the content view of the lists, logged
    conversations.py  the conversation list, transcripts, the export, deletion
    messages.py       the message list and the feedback review
    access_log.py     the access log, append-only, exportable as CSV
    starters.py       the example prompts of a new chat, edited by administrators
    assistants.py     the company assistants and their versions (read-only once saved)
    collections.py    knowledge collections: who may read them, their documents, an upload
    documents.py      documents, a collection's and a user's (a user's behind a reason)
    tokens.py         personal API tokens: who holds which; revoked, never deleted

Importing the package registers the admins and names the site.
"""

from django.contrib import admin
from django.utils.translation import gettext_lazy as _

from assistant.admin import (  # noqa: F401 - registers the admins
    access_log,
    assistants,
    collections,
    conversations,
    documents,
    messages,
    starters,
    tokens,
)
from assistant.forms import AdminLoginForm

# The admin's login counts and limits failed logins like the login page (assistant.throttle).
admin.site.login_form = AdminLoginForm
# No page of the admin, its login included, announces the software behind it.
admin.site.site_header = _("Assistant administration")
admin.site.site_title = _("Assistant administration")
admin.site.index_title = _("Administration")
# The breadcrumbs lead back to the index; the side bar's 290 px are the review lists' room
# (the conversation list fits 1440 px, tests/browser/test_admin_layout.py).
admin.site.enable_nav_sidebar = False
