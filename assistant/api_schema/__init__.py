"""The API's OpenAPI 3.1 description: openapi.yaml beside this module, the maintained file.

Read once per process; /api/schema/ sends it as JSON and /api/docs/ as a page
(assistant/views/schema.py, page.py here). tests/test_api_schema.py holds it to the
server's real answers and to config/urls.py.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import yaml

SCHEMA_FILE = Path(__file__).with_name("openapi.yaml")


@functools.cache
def document() -> dict[str, Any]:
    return yaml.safe_load(SCHEMA_FILE.read_text(encoding="utf-8"))


@functools.cache
def document_json() -> bytes:
    """The document as /api/schema/ sends it: UTF-8 JSON, encoded once."""
    return json.dumps(document(), ensure_ascii=False, indent=1).encode()
