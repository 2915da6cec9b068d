"""``longplay kinds [KIND]``: the job kinds the service runs, and one kind's inputs,
steps and parameters, read from ``GET /v1/kinds`` (plugins' kinds included)."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich import box
from rich.markup import escape
from rich.table import Column, Table

from longplay.cli.app import app, console
from longplay.cli.jobs import _client, _fail, _one_line_errors
from longplay.client import KindPublic


@app.command()
@_one_line_errors
def kinds(
    kind: Annotated[str | None, typer.Argument(help="Show this kind's parameters.")] = None,
    json_: Annotated[bool, typer.Option("--json", help="As the API's JSON.")] = False,
) -> None:
    """List the job kinds; with KIND, its inputs, steps and parameters.

    A parameter goes to submit as -p NAME=VALUE or --NAME VALUE."""
    every = _client().kinds()
    if kind is None:
        if json_:
            print("[" + ",".join(k.model_dump_json() for k in every) + "]")
        else:
            _kinds_table(every)
        return
    found = next((k for k in every if k.name == kind), None)
    if found is None:
        _fail(f"no job kind {kind!r}; the kinds are: {', '.join(k.name for k in every)}")
        return
    if json_:
        print(found.model_dump_json())
    else:
        _show_kind(found)


def _kinds_table(every: list[KindPublic]) -> None:
    table = Table(Column("kind", no_wrap=True), "what it does", box=box.SIMPLE_HEAD, pad_edge=False)
    for kind in every:
        table.add_row(kind.name, escape(_first_sentence(kind.description)))
    console.print(table)
    console.print("longplay kinds KIND: its inputs, steps and parameters", markup=False)


def _show_kind(kind: KindPublic) -> None:
    console.print(f"[bold]{kind.name}[/]: {escape(kind.description)}", soft_wrap=False)
    console.print(f"inputs: {_inputs(kind)}", markup=False)
    console.print(f"steps: {' → '.join(step.name for step in kind.steps)}", markup=False)
    if kind.resource != "cpu":
        console.print(f"runs on: a {kind.resource} worker", markup=False)
    schema = kind.params_schema
    fields: dict[str, Any] = schema.get("properties", {})
    if not fields:
        console.print("parameters: none")
        return
    table = Table(
        Column("parameter", no_wrap=True),
        Column("takes"),
        Column("default"),
        "",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
    )
    required = set(schema.get("required", []))
    models = schema.get("$defs", {})
    for name, field in fields.items():
        default = "required" if name in required else _value(field.get("default"))
        table.add_row(
            name,
            escape(_takes(field, models)),
            escape(default),
            escape(field.get("description", "")),
        )
    console.print(table)


def _inputs(kind: KindPublic) -> str:
    """``1 file: audio/*, video/*``, ``none``, ``0 or 1 file: text/*``."""
    low, high = kind.min_inputs, kind.max_inputs
    if high == 0:
        return "none"
    if high is None:
        count = f"{low} or more files"
    elif low == high:
        count = f"{low} file" + ("s" if low > 1 else "")
    elif high == low + 1:
        count = f"{low} or {high} file" + ("s" if high > 1 else "")
    else:
        count = f"{low} to {high} files"
    types = ", ".join(t + "*" if t.endswith("/") else t for t in kind.accepts)
    return f"{count}: {types}" if types else count


def _first_sentence(text: str) -> str:
    head, stop, _ = text.partition(". ")
    return head + ("." if stop else "")


def _takes(field: dict[str, Any], models: dict[str, Any]) -> str:
    """What a parameter's JSON schema takes, in a few words: ``number 1 to 60``,
    ``wav | mp3 | ogg``, ``text up to 300, or null``, ``list of Speaker (name, role)``;
    ``models``: the schema's ``$defs``, the nested models by name."""
    options = [_one_type(option, models) for option in field.get("anyOf", [field])]
    nullable = "null" in options
    described = " or ".join(o for o in options if o != "null") or "null"
    return f"{described}, or null" if nullable and described != "null" else described


def _one_type(schema: dict[str, Any], models: dict[str, Any]) -> str:
    if "enum" in schema:
        return " | ".join(_value(v) for v in schema["enum"])
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        inside = models.get(name, {}).get("properties", {})
        return f"{name} ({', '.join(inside)})" if inside else name
    kind = schema.get("type", "any")
    if kind == "array":
        return f"list of {_one_type(schema.get('items', {}), models)}"
    if kind == "string":
        most = schema.get("maxLength")
        return "text" if most is None else f"text up to {most}"
    if kind in ("number", "integer"):
        low, high = schema.get("minimum"), schema.get("maximum")
        if low is not None and high is not None:
            return f"{kind} {_value(low)} to {_value(high)}"
        if low is not None:
            return f"{kind} from {_value(low)}"
        if high is not None:
            return f"{kind} up to {_value(high)}"
        return str(kind)
    return "true | false" if kind == "boolean" else str(kind)


def _value(value: Any) -> str:
    """A default or a choice as it is written on the command line (JSON)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return value if isinstance(value, str) else json.dumps(value)
