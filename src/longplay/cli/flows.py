"""``longplay flow FILE.json``: submit a flow; with ``--wait``, follow it with one
progress bar per stage and save every stage's results."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from longplay.cli.app import app, console
from longplay.cli.jobs import Overwrite, _check_out, _client, _follow_flow, _one_line_errors


def _read_flow(path: Path) -> dict[str, Any]:
    try:
        body = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise typer.BadParameter(f"not a JSON file: {exc}", param_hint="FILE") from None
    if not isinstance(body, dict) or not isinstance(body.get("stages"), dict):
        raise typer.BadParameter('write {"stages": {"name": {...}, ...}}', param_hint="FILE")
    return body


@app.command()
@_one_line_errors
def flow(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="The flow as JSON.")],
    wait: Annotated[bool, typer.Option(help="Follow it live and save the results.")] = False,
    out: Annotated[Path, typer.Option(help="Where --wait saves results, by stage.")] = Path("."),
    overwrite: Overwrite = False,
) -> None:
    """Submit a flow of named stages (the body of POST /v1/flows).

    With --wait, follow every stage and save its results in OUT/STAGE/."""
    if wait:
        _check_out(out)
    client = _client()
    made = client.submit_flow(_read_flow(file))
    console.print(f"submitted flow [bold]{made.id}[/] ({len(made.stages)} stages)")
    if not wait:
        for name, job in made.stages.items():
            console.print(f"  {escape(name)}: {job.id} ({job.status.value})")
        return
    _follow_flow(client, made, out, overwrite=overwrite)
