"""``longplay flow FILE.json``: submit a flow; with ``--wait``, follow it with one
progress bar per stage and save every stage's results."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape
from rich.progress import BarColumn, Progress, TaskID, TaskProgressColumn, TextColumn

from longplay.cli.app import app, console, err
from longplay.cli.jobs import Overwrite, _check_out, _client, _one_line_errors, save_results

if TYPE_CHECKING:
    from longplay.client import Client, FlowPublic


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
    _follow(client, made)
    ended = client.flow(made.id)
    for name, job in ended.stages.items():
        if job.status.value != "completed":
            message = job.error.message if job.error else ""
            err.print(
                f"[red]{escape(name)} {job.status.value}[/]: {escape(message)}", soft_wrap=True
            )
        save_results(client, job, out / name, overwrite=overwrite)
    if ended.status.value != "completed":
        raise typer.Exit(1)


def _follow(client: Client, made: FlowPublic) -> None:
    """One bar per stage, moved by the flow's events until it ends."""
    columns = (
        TextColumn("{task.fields[stage]}"),
        BarColumn(),
        TaskProgressColumn(),
        TextColumn("{task.description}"),
    )
    with Progress(*columns, console=console) as bars:
        tasks: dict[str, TaskID] = {
            name: bars.add_task(job.status.value, total=100, stage=name)
            for name, job in made.stages.items()
        }
        for event in client.flow_events(made.id):
            task = tasks.get(event.get("stage") or "")
            if task is None:
                continue
            kind = event.type
            if kind == "progress":
                bars.update(
                    task,
                    completed=event.progress or 0,
                    description=event.step or "running",
                )
            elif kind == "completed":
                bars.update(task, completed=100, description="completed")
            elif kind != "note":
                bars.update(task, description=kind)
