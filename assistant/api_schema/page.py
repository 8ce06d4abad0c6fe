"""The OpenAPI document as /api/docs/ shows it: operations by tag, the events of the
stream, and every schema as a table of its fields (nested fields as `a.b`, array items
as `a[].b`), each `$ref` a link to the schema it names. Rendered on the server
(templates/assistant/api_docs.html): no script of its own (the site's theme.js only),
nothing from elsewhere.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from typing import Any

from django.utils.html import escape, format_html, format_html_join
from django.utils.safestring import SafeString, mark_safe

from assistant.api_schema import document

METHODS = ("get", "post", "patch", "put", "delete")
_CODE = re.compile(r"`([^`]+)`")
_REF_PREFIX = "#/components/"


def text(value: str | None) -> SafeString:
    """Description text: escaped, `code` spans as <code>."""
    return mark_safe(_CODE.sub(r"<code>\1</code>", escape(value or "")))  # noqa: S308 - escaped first


def _resolved(node: dict[str, Any]) -> dict[str, Any]:
    """A parameter or response that is a `$ref` to components, followed."""
    ref = node.get("$ref", "")
    if not ref.startswith(_REF_PREFIX):
        return node
    kind, name = ref.removeprefix(_REF_PREFIX).split("/")
    return document()["components"][kind][name]


def _json(value: Any) -> str:
    return "null" if value is None else f'"{value}"' if isinstance(value, str) else str(value).lower()


def label(schema: dict[str, Any] | bool) -> SafeString:
    """What a schema allows, in a few words."""
    if schema is False:
        return mark_safe("never")
    if schema is True or not schema:
        return mark_safe("any")
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        return format_html('<a href="#schema-{}">{}</a>', name, name)
    for choice in ("oneOf", "anyOf"):
        if choice in schema:
            return format_html_join(" | ", "{}", ((label(option),) for option in schema[choice]))
    if "const" in schema:
        return format_html("<code>{}</code>", _json(schema["const"]))
    if "enum" in schema:
        return format_html_join(" | ", "<code>{}</code>", ((_json(value),) for value in schema["enum"]))
    types = schema.get("type", "object" if "properties" in schema else "any")
    return format_html_join(" | ", "{}", ((_type_label(kind, schema),) for kind in _listed(types)))


def _listed(value: str | list[str]) -> list[str]:
    return value if isinstance(value, list) else [value]


def _type_label(kind: str, schema: dict[str, Any]) -> SafeString | str:
    if kind == "array":
        return format_html("array of {}", label(schema.get("items", {})))
    if kind == "string" and "format" in schema:
        return format_html("string ({})", schema["format"])
    return kind


@dataclass
class Row:
    name: str
    label: SafeString
    required: bool
    description: SafeString


def _objects(schema: dict[str, Any], suffix: str = "") -> list[tuple[str, dict[str, Any]]]:
    """The inline objects inside `schema` whose fields get rows of their own, with what
    their names add ("" for the object itself, "[]" for array items)."""
    if not isinstance(schema, dict) or "$ref" in schema:
        return []
    if "properties" in schema:
        return [(suffix, schema)]
    found = []
    for option in schema.get("oneOf", []) + schema.get("anyOf", []):
        found += _objects(option, suffix)
    if "items" in schema:
        found += _objects(schema["items"], suffix + "[]")
    return found


def rows(schema: dict[str, Any], prefix: str = "") -> list[Row]:
    """A row per field of an object schema, nested fields after their parent."""
    result = []
    required = set(schema.get("required", []))
    for name, field_schema in schema.get("properties", {}).items():
        if field_schema is False:
            continue
        described = field_schema.get("description") if isinstance(field_schema, dict) else None
        result.append(Row(prefix + name, label(field_schema), name in required, text(described)))
        for suffix, inner in _objects(field_schema):
            result += rows(inner, f"{prefix}{name}{suffix}.")
    return result


@dataclass
class Schema:
    name: str
    description: SafeString
    label: SafeString
    includes: SafeString | None
    rows: list[Row]


def _schema(name: str, schema: dict[str, Any]) -> Schema:
    includes = label({"$ref": schema["$ref"]}) if "$ref" in schema else None
    return Schema(name, text(schema.get("description")), label(schema), includes, rows(schema))


@dataclass
class Operation:
    method: str
    path: str
    summary: str
    description: SafeString
    security: list[str]
    parameters: list[Row]
    request: list[tuple[str, SafeString, list[Row]]]
    responses: list[tuple[str, SafeString, SafeString]]
    events: list[tuple[str, bool, SafeString, SafeString]] = field(default_factory=list)

    @property
    def anchor(self) -> str:
        return f"{self.method.lower()}-{re.sub(r'[^a-z0-9]+', '-', self.path.lower()).strip('-')}"


def _parameter_row(parameter: dict[str, Any]) -> Row:
    parameter = _resolved(parameter)
    name = f"{parameter['name']} ({parameter['in']})"
    schema = parameter.get("schema", {})
    return Row(name, label(schema), parameter.get("required", False), text(parameter.get("description")))


def _response(status: str, response: dict[str, Any]) -> tuple[str, SafeString, SafeString]:
    response = _resolved(response)
    bodies = format_html_join(
        " · ",
        "{}: {}",
        (
            (content_type, label(body.get("schema", {})))
            for content_type, body in response.get("content", {}).items()
        ),
    )
    return status, text(response.get("description")), bodies


def _operation(path: str, method: str, item: dict[str, Any], default_security: list) -> Operation:
    operation = item[method]
    security = operation.get("security", default_security)
    request = []
    for content_type, body in operation.get("requestBody", {}).get("content", {}).items():
        schema = body.get("schema", {})
        request.append((content_type, label(schema), rows(schema)))
    events = [
        (
            name,
            event.get("id", False),
            text(event.get("description")),
            label(event["data"]) if "data" in event else "",
        )
        for name, event in operation.get("x-events", {}).items()
    ]
    return Operation(
        method=method.upper(),
        path=path,
        summary=operation.get("summary", ""),
        description=text(operation.get("description")),
        security=[" + ".join(requirement) for requirement in security],
        parameters=[_parameter_row(p) for p in item.get("parameters", []) + operation.get("parameters", [])],
        request=request,
        responses=[_response(status, response) for status, response in operation["responses"].items()],
        events=events,
    )


@functools.cache
def page() -> dict[str, Any]:
    """The template's context: the document's title and text, its operations by tag, its
    security schemes and its schemas (built once: the document does not change)."""
    doc = document()
    by_tag = {tag["name"]: {"tag": tag, "operations": []} for tag in doc.get("tags", [])}
    for path, item in doc["paths"].items():
        for method in METHODS:
            if method in item:
                operation = _operation(path, method, item, doc.get("security", []))
                by_tag[item[method]["tags"][0]]["operations"].append(operation)
    return {
        "info": doc["info"],
        "description": text(doc["info"].get("description")),
        "groups": [
            {"name": group["tag"]["name"], "description": text(group["tag"].get("description")), **group}
            for group in by_tag.values()
            if group["operations"]
        ],
        "security_schemes": [
            (name, scheme.get("type"), text(scheme.get("description")))
            for name, scheme in doc["components"].get("securitySchemes", {}).items()
        ],
        "schemas": [_schema(name, schema) for name, schema in doc["components"]["schemas"].items()],
    }
