"""A kind's parameters as HTML form fields, made from its JSON Schema, and back.

The schema is the one ``GET /v1/kinds`` publishes (the params model's own). Each
property becomes one field: a select for an enum, a checkbox for a boolean, a number
box with the schema's bounds, a text box (or a text area for long text), a text area
of lines for a list of strings, and a text area of JSON for anything else. The
values come back as text; :func:`params_from_form` turns them into the types the
schema names and leaves validation to the service, which checks the params model.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from longplay.jobs import refusals

LONG_TEXT = frozenset({"text", "prompt", "question", "instructions", "message", "query"})
"""Parameter names that get a text area even without a long ``maxLength``."""


@dataclass
class Field:
    """One form field for one parameter."""

    name: str
    widget: str
    """select, checkbox, number, text, textarea, lines or json."""
    label: str
    description: str = ""
    required: bool = False
    value: str = ""
    checked: bool = False
    options: list[str] = field(default_factory=list)
    multiple: bool = False
    selected: list[str] = field(default_factory=list)
    minimum: float | None = None
    maximum: float | None = None
    step: str = "any"
    type: str = "string"
    """The JSON type the value is sent back as."""
    problem: str = ""
    """Why the value sent was refused, shown next to the field; "" when it was not."""


def _resolve(schema: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    """``node`` with a local ``$ref`` followed and an optional (``X | None``) unwrapped."""
    ref = node.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/$defs/"):
        target = schema.get("$defs", {}).get(ref.rsplit("/", 1)[-1], {})
        node = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
    for combiner in ("anyOf", "oneOf"):
        options = node.get(combiner)
        if isinstance(options, list):
            real = [o for o in options if o.get("type") != "null"]
            if len(real) == 1:
                rest = {k: v for k, v in node.items() if k != combiner}
                return {**_resolve(schema, real[0]), **rest}
    return node


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return json.dumps(value)


def fields_of(schema: dict[str, Any], values: dict[str, str] | None = None) -> list[Field]:
    """The form fields for a params schema; ``values`` (as sent) fill them again."""
    required = set(schema.get("required", []))
    made = []
    for name, raw in schema.get("properties", {}).items():
        node = _resolve(schema, raw)
        made.append(_field(name, node, name in required, values))
    return made


def _field(name: str, node: dict[str, Any], required: bool, values: dict[str, str] | None) -> Field:
    kind = node.get("type")
    default = node.get("default")
    sent = None if values is None else values.get(name)
    made = Field(
        name=name,
        widget="text",
        label=str(node.get("title") or name.replace("_", " ")),
        description=str(node.get("description", "")),
        required=required,
        type=kind if isinstance(kind, str) else "json",
    )
    if "enum" in node or "const" in node:
        made.widget = "select"
        made.options = [_text(o) for o in node.get("enum", [node.get("const")])]
        made.value = sent if sent is not None else _text(default)
        made.type = "enum"
        made.selected = [made.value]
    elif kind == "boolean" and default is None and not required:
        # Yes, no, or left to the kind: an unticked box would say "no".
        made.widget = "select"
        made.options = ["true", "false"]
        made.value = sent if sent is not None else ""
        made.type = "enum"
        made.selected = [made.value]
    elif kind == "boolean":
        made.widget = "checkbox"
        made.checked = (sent == "on") if values is not None else bool(default)
    elif kind in ("integer", "number"):
        made.widget = "number"
        made.minimum = node.get("minimum", node.get("exclusiveMinimum"))
        made.maximum = node.get("maximum", node.get("exclusiveMaximum"))
        made.step = "1" if kind == "integer" else "any"
        made.value = sent if sent is not None else _text(default)
    elif kind == "string":
        long = name in LONG_TEXT or int(node.get("maxLength", 0)) > 500
        made.widget = "textarea" if long else "text"
        made.value = sent if sent is not None else _text(default)
    elif kind == "array" and _resolve({}, node.get("items", {})).get("type") == "string":
        made.widget = "lines"
        made.type = "lines"
        made.value = sent if sent is not None else "\n".join(map(str, default or []))
    else:
        made.widget = "json"
        made.type = "json"
        made.value = sent if sent is not None else ("" if default is None else _text(default))
    return made


def params_from_form(schema: dict[str, Any], form: dict[str, str]) -> dict[str, Any]:
    """The parameters a submitted form gives: an empty field is left out (the model's
    default applies); values that are not of their fields' types are refused with a 422
    naming each, so one submit shows every one of them."""
    params: dict[str, Any] = {}
    problems: list[tuple[Field, str]] = []
    for made in fields_of(schema, form):
        raw = form.get(made.name, "")
        if made.widget == "checkbox":
            params[made.name] = raw == "on"
            continue
        if raw.strip() == "":
            continue
        try:
            params[made.name] = _typed(made, raw)
        except ValueError:
            said = _TYPE_WORDS.get(made.type, made.type)
            problems.append((made, f"{raw!r} is not a {said}"))
    if problems:
        raise refusals.Invalid(
            "; ".join(f"{made.label}: {problem}" for made, problem in problems),
            [
                {"loc": ["params", made.name], "msg": problem, "type": made.type}
                for made, problem in problems
            ],
        )
    return params


_TYPE_WORDS = {
    "integer": "whole number",
    "number": "number",
    "json": "JSON value",
    "enum": "JSON value",
}
"""A field's type as a problem with its value says it."""


def _typed(made: Field, raw: str) -> Any:
    """``raw`` as its field's type says; a ValueError where it is not one."""
    if made.type == "integer":
        return int(raw)
    if made.type == "number":
        return float(raw)
    if made.type == "lines":
        return [line.strip() for line in raw.splitlines() if line.strip()]
    if made.type in ("json", "enum") and made.widget != "select":
        return json.loads(raw)
    if made.widget == "select":
        return _option(raw)
    return raw


def _option(raw: str) -> Any:
    """A select's value: the enum's JSON value where it is one (a number, ``null``)."""
    try:
        value = json.loads(raw)
    except ValueError:
        return raw
    return value if not isinstance(value, str) else raw


FILES = "file"
"""The name the form's file input goes by, where a problem with the inputs is shown."""


def _number(value: float) -> str:
    return f"{value:g}"


def _allowed(made: Field) -> str:
    """What a field takes, in words, for a problem with it: "from -70 to 0"."""
    if made.minimum is not None and made.maximum is not None:
        return f"from {_number(made.minimum)} to {_number(made.maximum)}"
    if made.minimum is not None:
        return f"{_number(made.minimum)} or more"
    if made.maximum is not None:
        return f"{_number(made.maximum)} or less"
    if made.widget == "select" and made.options:
        return "one of " + ", ".join(o for o in made.options if o)
    return ""


def _field_named(error: dict[str, Any], by_name: dict[str, Field]) -> str | None:
    """The field a pydantic-style error is about: :data:`FILES` for the inputs, a
    parameter its ``loc`` names, or None when it names no one field (a check across
    fields, such as "bitrate applies to mp3 and ogg, not wav")."""
    names = [str(part) for part in error.get("loc", ())]
    if "inputs" in names:
        return FILES
    return next((n for n in names if n in by_name), None)


def mark_problems(fields: list[Field], errors: list[Any]) -> dict[str, str]:
    """Put each refused value's problem on its field, from the pydantic-style
    ``errors`` (their ``loc`` names the parameter: ``["loudness"]``, ``["params",
    "loudness"]``, ``["body", "params", "loudness"]``; ``["body", "inputs"]`` is the
    files). The problems by field name, the files' under :data:`FILES`, in form order."""
    by_name = {f.name: f for f in fields}
    found: dict[str, str] = {}
    for error in errors:
        if not isinstance(error, dict):
            continue
        name = _field_named(error, by_name)
        message = str(error.get("msg", "not valid"))
        if name == FILES:
            found.setdefault(FILES, message)
            continue
        made = by_name.get(name) if name else None
        if made is None or made.problem:
            continue
        allowed = _allowed(made)
        made.problem = f"{message} (allowed: {allowed})" if allowed else message
        found[made.name] = made.problem
    order = [FILES, *by_name]
    return {name: found[name] for name in order if name in found}


def unplaced_problems(fields: list[Field], errors: list[Any]) -> list[str]:
    """The messages of ``errors`` that no one field can show (see :func:`mark_problems`),
    each once, in order: the form's summary says them, so no reason is lost."""
    by_name = {f.name: f for f in fields}
    found = [
        str(error.get("msg", "not valid"))
        for error in errors
        if isinstance(error, dict) and _field_named(error, by_name) is None
    ]
    return list(dict.fromkeys(found))


def missing_reference(
    schema: dict[str, Any], form: dict[str, str], message: str
) -> refusals.Invalid:
    """A reference the form makes that is not there (``no collection col_x``, ``no
    document doc_x``: the service's :class:`~longplay.jobs.refusals.NotFound`) as a
    problem with the form, on the parameter whose value the message names; with none,
    the summary says it. The form is then shown again, as after any bad value."""
    # Each word a field was given (a list field's ids are one a line), to its field.
    by_value = {
        word: name
        for name in reversed(list(schema.get("properties", {})))
        for word in form.get(name, "").split()
    }
    said = re.findall(r"[\w.:-]+", message)
    named = next((by_value[word] for word in said if word in by_value), None)
    loc = ["body", "params", named] if named else ["body"]
    return refusals.Invalid(message, [{"loc": loc, "msg": message, "type": "not_found"}])
