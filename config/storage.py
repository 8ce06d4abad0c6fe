"""Static files with hashed names, the page's ES modules included."""

from __future__ import annotations

from django.contrib.staticfiles.storage import ManifestStaticFilesStorage


class ManifestStaticFiles(ManifestStaticFilesStorage):
    """Django's manifest storage, also rewriting the `import … from "./x.js";` of the
    page's modules (static/assistant/chat/) to hashed names: a new release is never
    mixed with a browser's cached old module."""

    support_js_module_import_aggregation = True
