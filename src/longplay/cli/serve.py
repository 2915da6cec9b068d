"""Running the service: all of it (``up``) or one part (``api``, ``worker``, ``beat``)."""

from __future__ import annotations

import os
import socket
from typing import Annotated

import typer

from longplay.cli.app import app, console, prepare, setup_logging
from longplay.settings import Settings, get_settings


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
    setup_logging(settings)
    supervisor = Supervisor(settings)
    supervisor.start_redis()
    try:
        prepare(settings)
        new_key = _ensure_local_key(settings)
    except BaseException:
        supervisor.stop()
        raise
    url = f"http://{settings.api.host}:{settings.api.port}"
    console.print(f"[bold]longplay[/] on {url}  (docs: {url}/docs, data: {settings.data_dir})")
    if new_key:
        console.print(f"API key for owner 'local': [bold]{new_key}[/] (saved in the data folder)")
    supervisor.run()


@app.command()
def api(
    workers: Annotated[
        int | None, typer.Option(min=1, help="API processes; default from settings (1).")
    ] = None,
) -> None:
    """Serve the HTTP API alone (for a distributed setup)."""
    import uvicorn

    settings = get_settings()
    setup_logging(settings)
    prepare(settings)
    uvicorn.run(
        "longplay.api.app:create_app",
        factory=True,
        workers=workers or settings.api.workers,
        host=settings.api.host,
        port=settings.api.port,
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
    from longplay.broker import liveness
    from longplay.broker.app import celery_app
    from longplay.worker.memory import give_memory_back
    from longplay.worker.tasks import release_jobs_of

    give_memory_back()  # before the pool forks: every pool process inherits it
    liveness.install(celery_app)
    settings = get_settings()
    setup_logging(settings)
    prepare(settings)
    resources = [q.strip() for q in (queues or settings.worker.queues).split(",") if q.strip()]
    try:
        celery_app.worker_main(
            [
                "worker",
                f"--loglevel={settings.log_level.upper()}",
                f"--concurrency={concurrency or settings.worker.concurrency}",
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
    from longplay.broker.app import celery_app

    settings = get_settings()
    setup_logging(settings)
    prepare(settings)
    celery_app.start(
        [
            "beat",
            f"--loglevel={settings.log_level.upper()}",
            f"--schedule={settings.data_dir / 'beat-schedule'}",
        ]
    )
