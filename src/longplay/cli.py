"""The ``longplay`` command: run the service or its parts, and use it as a client."""

from __future__ import annotations

import json
import logging
import os
import socket
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn
from rich.table import Column, Table

from longplay.config import Settings, get_settings

app = typer.Typer(help="Long AI media work as background jobs.", no_args_is_help=True)
keys_app = typer.Typer(help="API keys.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
owners_app = typer.Typer(help="Owners: their tier and limits.", no_args_is_help=True)
app.add_typer(owners_app, name="owners")
console = Console()
err = Console(stderr=True)


def _logging(settings: Settings) -> None:
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("alembic").setLevel(logging.WARNING)
    from longplay.queue.app import quiet_routine_logs

    quiet_routine_logs()


def _prepare(settings: Settings) -> None:
    """Data folder and schema: every part calls this before it serves anything."""
    from longplay.store.db import migrate

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    migrate(settings.effective_database_url)


def _ensure_local_key(settings: Settings) -> str | None:
    """On first start, an admin owner ``local`` and a key in the data folder for the CLI."""
    from longplay.client import key_file
    from longplay.store.db import session_scope
    from longplay.store.models import Owner
    from longplay.store.owners import create_key, get_or_create_owner

    path = key_file(settings)
    if path.is_file():
        return None
    with session_scope() as session:
        if session.query(Owner).count():
            return None
        secret = create_key(session, get_or_create_owner(session, "local", is_admin=True))
    path.touch(mode=0o600)
    path.write_text(secret + "\n")
    return secret


@app.command()
def up() -> None:
    """Start everything on this machine: embedded Redis, a worker, beat and the API."""
    from longplay.supervisor import Supervisor

    settings = get_settings()
    _logging(settings)
    supervisor = Supervisor(settings)
    supervisor.start_redis()
    try:
        _prepare(settings)
        new_key = _ensure_local_key(settings)
    except BaseException:
        supervisor.stop()
        raise
    url = f"http://{settings.api_host}:{settings.api_port}"
    console.print(f"[bold]longplay[/] on {url}  (docs: {url}/docs, data: {settings.data_dir})")
    if new_key:
        console.print(f"API key for owner 'local': [bold]{new_key}[/] (saved in the data folder)")
    supervisor.run()


@app.command()
def api() -> None:
    """Serve the HTTP API alone (for a distributed setup)."""
    import uvicorn

    from longplay.api.app import create_app

    settings = get_settings()
    _logging(settings)
    _prepare(settings)
    uvicorn.run(
        create_app(),
        host=settings.api_host,
        port=settings.api_port,
        log_level=settings.log_level,
        timeout_graceful_shutdown=5,
    )


@app.command()
def worker(
    concurrency: Annotated[
        int | None, typer.Option(help="Processes; default from settings.")
    ] = None,
    queues: Annotated[str | None, typer.Option(help="Resources: cpu, gpu or cpu,gpu.")] = None,
) -> None:
    """Run a Celery worker that takes jobs (for a distributed setup).

    SIGTERM gives running jobs ``shutdown_grace`` seconds to finish; then they are
    stopped and go back to the queue at once, without losing an attempt.
    """
    # Celery reads this when it is imported: SIGTERM means a (soft) cold shutdown,
    # so a long job does not hold up a stop for as long as it runs.
    os.environ.setdefault("REMAP_SIGTERM", "SIGQUIT")
    from longplay import keys
    from longplay.queue import liveness
    from longplay.queue.app import celery_app
    from longplay.queue.tasks import release_jobs_of

    liveness.install(celery_app)
    settings = get_settings()
    _logging(settings)
    _prepare(settings)
    resources = [q.strip() for q in (queues or settings.worker_queues).split(",") if q.strip()]
    try:
        celery_app.worker_main(
            [
                "worker",
                f"--loglevel={settings.log_level.upper()}",
                f"--concurrency={concurrency or settings.worker_concurrency}",
                f"--queues={','.join(keys.worker_queues(resources))}",
                f"--hostname=longplay-{socket.gethostname()}-{os.getpid()}@%h",
                "--without-gossip",
                "--without-mingle",
            ]
        )
    finally:
        release_jobs_of(os.getpid())


@app.command()
def beat() -> None:
    """Run Celery beat: the reaper of lapsed leases, the retention cleanup."""
    from longplay.queue.app import celery_app

    settings = get_settings()
    _logging(settings)
    _prepare(settings)
    celery_app.start(
        [
            "beat",
            f"--loglevel={settings.log_level.upper()}",
            f"--schedule={settings.data_dir / 'beat-schedule'}",
        ]
    )


@app.command()
def cleanup(
    dry_run: Annotated[bool, typer.Option(help="Count what would go; delete nothing.")] = False,
) -> None:
    """Apply the retention settings once (beat does it every ``cleanup_interval``)."""
    from longplay.jobs.cleanup import run_cleanup

    settings = get_settings()
    _logging(settings)
    _prepare(settings)
    typer.echo(json.dumps(run_cleanup(dry_run=dry_run).as_dict()))


@keys_app.command("create")
def keys_create(
    owner: Annotated[str, typer.Argument(help="Owner name; made if new.")],
    admin: Annotated[bool, typer.Option(help="The owner may see every owner's jobs.")] = False,
    label: str = "",
    tier: Annotated[
        str | None, typer.Option(help="The owner's tier (settings `tiers`); new owners: standard.")
    ] = None,
) -> None:
    """Make an API key for an owner; it is shown once."""
    from longplay.store.db import session_scope
    from longplay.store.owners import create_key, get_or_create_owner

    settings = get_settings()
    _check_tier(settings, tier)
    _prepare(settings)
    with session_scope() as session:
        found = get_or_create_owner(session, owner, is_admin=admin)
        if tier is not None:
            found.tier = tier
        secret = create_key(session, found, label=label)
    console.print(secret)


def _check_tier(settings: Settings, tier: str | None) -> None:
    if tier is not None and tier not in settings.tiers:
        raise typer.BadParameter(f"no tier {tier!r}; the tiers are {', '.join(settings.tiers)}")


@owners_app.command("set")
def owners_set(
    name: Annotated[str, typer.Argument(help="Owner name.")],
    tier: Annotated[str | None, typer.Option(help="standard, priority, batch, ...")] = None,
    max_running: Annotated[
        int | None, typer.Option(min=0, help="Jobs running at once; 0: the tier's.")
    ] = None,
    max_queued: Annotated[
        int | None, typer.Option(min=0, help="Jobs waiting at once; 0: the tier's.")
    ] = None,
    submit_rate: Annotated[
        float | None, typer.Option(min=0, help="Submissions a minute; 0: the tier's.")
    ] = None,
) -> None:
    """Set an owner's tier and its own limits (a limit it has none of is its tier's)."""
    from sqlalchemy import select

    from longplay.store.db import session_scope
    from longplay.store.models import Owner

    settings = get_settings()
    _check_tier(settings, tier)
    _prepare(settings)
    with session_scope() as session:
        found = session.scalar(select(Owner).where(Owner.name == name))
        if found is None:
            err.print(f"no owner {name} (longplay keys create {name} makes one)")
            raise typer.Exit(1)
        if tier is not None:
            found.tier = tier
        if max_running is not None:
            found.max_running = max_running or None
        if max_queued is not None:
            found.max_queued = max_queued or None
        if submit_rate is not None:
            found.submit_rate = submit_rate or None
    _print_owners([name])


@owners_app.command("list")
def owners_list() -> None:
    """Every owner with its tier and the limits that apply to it."""
    _prepare(get_settings())
    _print_owners(None)


def _print_owners(names: list[str] | None) -> None:
    from sqlalchemy import select

    from longplay.jobs.admission import limits_of
    from longplay.store.db import session_scope
    from longplay.store.models import Owner

    def shown(value: float | None) -> str:
        return "-" if value is None else f"{value:g}"

    query = select(Owner).order_by(Owner.name)
    if names is not None:
        query = query.where(Owner.name.in_(names))
    table = Table("owner", "tier", "priority", "max running", "max queued", "submits/min")
    with session_scope() as session:
        for owner in session.scalars(query):
            limits = limits_of(owner)
            table.add_row(
                owner.name + (" (admin)" if owner.is_admin else ""),
                owner.tier,
                limits.priority.value,
                shown(limits.max_running),
                shown(limits.max_queued),
                shown(limits.submit_rate),
            )
    console.print(table)


@keys_app.command("revoke")
def keys_revoke(
    owner: str, prefix: Annotated[str, typer.Argument(help="The key's first 10 characters.")]
) -> None:
    """Revoke an owner's key by its prefix."""
    from longplay.store.db import session_scope
    from longplay.store.models import Owner
    from longplay.store.owners import revoke_key

    _prepare(get_settings())
    with session_scope() as session:
        found = session.query(Owner).filter_by(name=owner).one_or_none()
        if found is None or not revoke_key(session, found, prefix):
            err.print(f"no live key {prefix}… for owner {owner}")
            raise typer.Exit(1)
    console.print("revoked")


@keys_app.command("webhook-secret")
def keys_webhook_secret(
    owner: str,
    rotate: Annotated[bool, typer.Option(help="Replace it with a new one first.")] = False,
) -> None:
    """Print the secret an owner's webhooks are signed with."""
    from longplay.jobs.webhooks import rotate_secret
    from longplay.store.db import session_scope
    from longplay.store.models import Owner

    _prepare(get_settings())
    with session_scope() as session:
        found = session.query(Owner).filter_by(name=owner).one_or_none()
        if found is None:
            err.print(f"no owner {owner}")
            raise typer.Exit(1)
        secret = rotate_secret(session, found) if rotate else found.webhook_secret
    console.print(secret)


def _client() -> Any:
    from longplay.client import Client, find_key

    settings = get_settings()
    url = os.environ.get("LONGPLAY_API_URL") or f"http://{settings.api_host}:{settings.api_port}"
    return Client(url, find_key(settings))


def _parse_params(pairs: list[str], raw: str | None) -> dict[str, Any]:
    params: dict[str, Any] = json.loads(raw) if raw else {}
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
    from longplay.client import ApiError

    client = _client()
    try:
        job = client.submit(kind, list(files), _parse_params(param or [], params), priority)
        console.print(f"submitted [bold]{job['id']}[/] ({job['status']})")
        if wait:
            _follow(client, job["id"], out)
    except ApiError as exc:
        err.print(f"[red]{exc}[/]")
        raise typer.Exit(1) from exc


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
                bar.console.print(f"note: {event.get('message')}")
            elif kind in ("running", "retrying"):
                bar.update(task, description=kind)
    job = client.job(job_id)
    if job["status"] != "completed":
        error = job.get("error") or {}
        err.print(f"[red]{job_id} {job['status']}[/]: {error.get('message', '')}")
        raise typer.Exit(1)
    for artifact in job["outputs"]:
        console.print(f"saved {client.download(artifact, out)}")


@app.command()
def watch(job_id: str, out: Path = Path(".")) -> None:
    """Follow a job live and save its results when it completes."""
    _follow(_client(), job_id, out)


@app.command()
def status(job_id: str) -> None:
    """Show one job as JSON."""
    from longplay.client import ApiError

    try:
        console.print_json(data=_client().job(job_id))
    except ApiError as exc:
        err.print(f"[red]{exc}[/]")
        raise typer.Exit(1) from exc


@app.command()
def cancel(job_id: str) -> None:
    """Cancel a job."""
    job = _client().cancel(job_id)
    console.print(f"{job['id']} {job['status']}")


@app.command()
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
