"""Using the service as a client: submit, follow, list and cancel jobs.

Every command here prints an API error, or an API it cannot reach, as one line on
stderr and exits with 1 (:func:`_one_line_errors`); never a traceback.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, ParamSpec

import typer
from rich.markup import escape
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn
from rich.table import Column, Table

from longplay.cli.app import app, console, err
from longplay.settings import get_settings

P = ParamSpec("P")


def _client() -> Any:
    """A client for ``LONGPLAY_API_URL`` (else this machine's API), waiting up to
    ``LONGPLAY_API_TIMEOUT`` seconds (60) for each answer."""
    from longplay.client import Client, find_key

    settings = get_settings()
    url = os.environ.get("LONGPLAY_API_URL") or f"http://{settings.api.host}:{settings.api.port}"
    try:
        timeout = float(os.environ.get("LONGPLAY_API_TIMEOUT") or 60)
    except ValueError:
        raise typer.BadParameter("LONGPLAY_API_TIMEOUT must be a number of seconds") from None
    return Client(url, find_key(settings), timeout=timeout)


def _one_line_errors(command: Callable[P, None]) -> Callable[P, None]:
    """Run ``command``; an ApiError becomes one red line on stderr and exit status 1."""

    @functools.wraps(command)
    def run(*args: P.args, **kwargs: P.kwargs) -> None:
        from longplay.client import ApiError

        try:
            command(*args, **kwargs)
        except ApiError as exc:
            err.print(f"[red]{escape(str(exc))}[/]", soft_wrap=True)
            raise typer.Exit(1) from None

    return run


def _parse_params(pairs: list[str], raw: str | None) -> dict[str, Any]:
    try:
        params: Any = json.loads(raw) if raw else {}
    except json.JSONDecodeError as exc:
        raise typer.BadParameter(f"not JSON: {exc}", param_hint="--params") from None
    if not isinstance(params, dict):
        raise typer.BadParameter("write a JSON object: {...}", param_hint="--params")
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep:
            raise typer.BadParameter(f"{pair!r}: write NAME=VALUE")
        try:
            params[name] = json.loads(value)
        except json.JSONDecodeError:
            params[name] = value
    return params


@app.command()
@_one_line_errors
def submit(
    kind: str,
    files: Annotated[list[Path], typer.Argument(exists=True, dir_okay=False)],
    param: Annotated[list[str] | None, typer.Option("--param", "-p", help="NAME=VALUE")] = None,
    params: Annotated[str | None, typer.Option(help="All parameters as a JSON object.")] = None,
    priority: Annotated[
        str | None, typer.Option(help="high, normal or low; default: your tier's.")
    ] = None,
    wait: Annotated[bool, typer.Option(help="Follow it live and save the results.")] = False,
    out: Annotated[Path, typer.Option(help="Where --wait saves results.")] = Path("."),
) -> None:
    """Submit a job with its input files; with --wait, follow it and save its results."""
    client = _client()
    job = client.submit(kind, list(files), _parse_params(param or [], params), priority)
    console.print(f"submitted [bold]{job['id']}[/] ({job['status']})")
    if wait:
        _follow(client, job["id"], out)


def _follow(client: Any, job_id: str, out: Path) -> None:
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        TextColumn("{task.fields[eta]}"),
    )
    with Progress(*columns, console=console) as bar:
        task = bar.add_task("queued", total=100, eta="")
        for event in client.events(job_id):
            kind = event["type"]
            if kind == "progress":
                eta = event.get("eta_seconds")
                bar.update(
                    task,
                    completed=event.get("progress", 0),
                    description=event.get("step") or "running",
                    eta=f"ETA {eta:.0f}s" if eta is not None else "",
                )
            elif kind == "note":
                bar.console.print(f"note: {escape(str(event.get('message')))}")
            elif kind in ("running", "retrying"):
                bar.update(task, description=kind)
    job = client.job(job_id)
    if job["status"] != "completed":
        error = job.get("error") or {}
        err.print(
            f"[red]{job_id} {job['status']}[/]: {escape(error.get('message', ''))}", soft_wrap=True
        )
        raise typer.Exit(1)
    for artifact in job["outputs"]:
        console.print(f"saved {client.download(artifact, out)}")


@app.command()
@_one_line_errors
def watch(job_id: str, out: Path = Path(".")) -> None:
    """Follow a job live and save its results when it completes."""
    client = _client()
    client.job(job_id)  # there to follow, before a progress bar shows
    _follow(client, job_id, out)


@app.command()
@_one_line_errors
def status(job_id: str) -> None:
    """Show one job as JSON."""
    console.print_json(data=_client().job(job_id))


@app.command()
@_one_line_errors
def cancel(job_id: str) -> None:
    """Cancel a job."""
    job = _client().cancel(job_id)
    console.print(f"{job['id']} {job['status']}")


@app.command()
@_one_line_errors
def jobs(
    status: Annotated[
        str | None, typer.Option(help="queued, running, completed, failed, cancelled, expired")
    ] = None,
    kind: str | None = None,
    limit: int = 20,
) -> None:
    """List your newest jobs."""
    page = _client().jobs(status=status, kind=kind, limit=limit)
    table = Table(
        Column("id", no_wrap=True, min_width=24), "kind", "status", "progress", "step", "created"
    )
    for job in page["items"]:
        table.add_row(
            job["id"],
            job["kind"],
            job["status"],
            f"{job['progress']:.0f}%",
            job["current_step"] or "",
            job["created_at"][:16].replace("T", " "),
        )
    console.print(table)
