"""Running the service: all of it (``up``) or one part (``api``, ``worker``, ``beat``)."""

from __future__ import annotations

import logging
import os
import re
import signal
import socket
import subprocess
import sys
import sysconfig
import traceback
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer
from rich.text import Text

from longplay.cli.app import app, console, err, prepare, setup_logging, uvicorn_logging
from longplay.settings import WARNINGS_SAID, Settings, get_settings

if TYPE_CHECKING:
    from fastapi import FastAPI


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


Host = Annotated[
    str | None,
    typer.Option(help="Address the API listens on (env LONGPLAY_API_HOST, default 127.0.0.1)."),
]
Port = Annotated[
    int | None,
    typer.Option(
        min=1, max=65535, help="Port the API listens on (env LONGPLAY_API_PORT, default 8000)."
    ),
]
ApiWorkers = Annotated[
    int | None,
    typer.Option(
        min=1, help="API processes sharing the port (env LONGPLAY_API_WORKERS, default 1)."
    ),
]


def _with_flags(**variables: object) -> Settings:
    """The settings, with the flags given on the command line in place of their
    variables; set in this process's environment too, so the parts it starts (``up``'s
    children, uvicorn's workers) read the same."""
    given = {name: str(value) for name, value in variables.items() if value is not None}
    if given:
        os.environ.update(given)
        get_settings.cache_clear()
    return get_settings()


@app.command()
def up(host: Host = None, port: Port = None, workers: ApiWorkers = None) -> None:
    """Start everything on this machine: embedded Redis, a worker, beat and the API.

    One at a time on a data folder: another ``up`` on it, or one whose port is taken,
    says so in one line and exits with 1, having started nothing."""
    from longplay.client.core import ALL_INTERFACES, key_file, local_url, url_file
    from longplay.store.files import NoDataFolder
    from longplay.supervisor import CannotStart, Supervisor

    settings = _with_flags(
        LONGPLAY_API_HOST=host, LONGPLAY_API_PORT=port, LONGPLAY_API_WORKERS=workers
    )
    setup_logging(settings)
    supervisor = Supervisor(settings)
    try:
        supervisor.claim()
    except (CannotStart, NoDataFolder) as exc:
        _refuse(exc)
    plugins = _load_plugins_aside(settings)
    supervisor.start_redis()
    try:
        prepare(settings)
        new_key = _ensure_local_key(settings)
        if plugins is not None:
            _plugins_loaded(plugins)
    except BaseException:
        supervisor.stop()
        raise
    url = local_url(settings.api.host, settings.api.port)
    tell = _teller(settings)
    tell(f"[bold]longplay[/] on {url}  (docs: {url}/docs, data: {settings.data_dir})")
    if settings.api.host in ALL_INTERFACES:
        tell(f"listening on every interface of this machine, port {settings.api.port}")
    if new_key and settings.log_format == "json":  # log lines go where keys must not
        tell(f"API key for owner 'local' saved in {key_file(settings)}")
    elif new_key:
        tell(f"API key for owner 'local': [bold]{new_key}[/] (saved in the data folder)")
    saved = url_file(settings)  # for the CLI and the SDK on this machine (find_url)
    try:
        _save(saved, url)
    except OSError as exc:  # a full disk, most likely: what to free, in one line
        supervisor.stop()
        _refuse(CannotStart(f"cannot write {saved}: {exc.strerror}; is its disk full?"))

    def answered(after: float) -> None:
        tell(f"ready after {after:.0f} s: the API answers, the dashboard is at {url}/")

    try:
        supervisor.run(answers=(f"{url}/readyz", answered))
    except CannotStart as exc:
        _refuse(exc)
    finally:
        saved.unlink(missing_ok=True)  # before the data folder's lock goes, with this process


def _teller(settings: Settings) -> Callable[[str], None]:
    """How ``up`` tells a person what it did: whole lines on stdout (also in a log file:
    rich cuts at 80 columns where there is no terminal); with JSON logs, log lines like
    the parts' own, so that everything ``up`` writes is one JSON object per line."""
    if settings.log_format != "json":
        return lambda said: console.print(said, soft_wrap=True)
    log = logging.getLogger("longplay.up")
    return lambda said: log.info(Text.from_markup(said).plain)


def _load_plugins_aside(settings: Settings) -> subprocess.Popen[str] | None:
    """Import the kinds with the plugins of ``LONGPLAY_PLUGINS`` in a process of their
    own, while Redis starts (``up`` itself stays small): a plugin that cannot be loaded
    would take every part down at each start, for ever. None without plugins."""
    if not settings.plugins:
        return None
    code = "from longplay.kinds import load; load()"
    return subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )


def _plugins_loaded(check: subprocess.Popen[str]) -> None:
    """Wait for :func:`_load_plugins_aside`; exit as :func:`_plugins_refused` if it failed."""
    _, problem = check.communicate()
    if check.returncode:
        lines = problem.strip().splitlines()
        _plugins_refused(lines or [f"the import ended with code {check.returncode}"])


def _load_plugins_here(settings: Settings) -> None:
    """Import the kinds with the plugins in this process, before the server or worker
    would: a plugin that cannot be loaded is told as ``up`` tells it, not as a
    traceback (and uvicorn would start its worker processes again and again)."""
    if not settings.plugins:
        return
    from longplay.kinds import load

    try:
        load()
    except Exception as exc:
        _plugins_refused("".join(traceback.format_exception(exc)).strip().splitlines())


def _plugins_refused(traceback_lines: list[str]) -> NoReturn:
    """Exit with the error's last line, and the line of the plugin's own code that
    raised it."""
    err.print(
        f"LONGPLAY_PLUGINS cannot be loaded: {traceback_lines[-1]}", markup=False, soft_wrap=True
    )
    if where := _plugin_frame(traceback_lines):
        err.print(f"  at {where}", markup=False, soft_wrap=True)
    raise typer.Exit(1)


_FRAME = re.compile(r'\s*File "(?P<path>[^"]+)", line (?P<line>\d+)')


def _plugin_frame(traceback: list[str]) -> str | None:
    """Where the plugin's module stopped (``path, line N: code``): the outermost frame
    of the traceback that is not longplay's, the standard library's or generated code,
    which is the statement of the module being imported. The traceback itself ends in
    whatever refused it (a check of longplay's, pydantic); the author needs the line
    of theirs that led there."""
    ours = tuple(
        os.path.join(folder, "")  # longplay_whisper/ is a plugin, longplay/ is not
        for folder in (str(Path(__file__).resolve().parents[1]), sysconfig.get_paths()["stdlib"])
    )
    for index, text in enumerate(traceback):
        frame = _FRAME.match(text)
        if frame is None or frame["path"].startswith(("<", *ours)):
            continue
        code = traceback[index + 1].strip() if index + 1 < len(traceback) else ""
        return f"{frame['path']}, line {frame['line']}" + (f": {code}" if code else "")
    return None


def _refuse(reason: Exception) -> NoReturn:
    err.print(str(reason), markup=False, soft_wrap=True)
    raise typer.Exit(1)


def _save(path: Path, text: str) -> None:
    """Write ``path`` whole at once: a reader sees the old text or the new, never part."""
    part = path.with_name(f".{path.name}.part")
    try:
        part.write_text(text + "\n")
    except OSError:
        part.unlink(missing_ok=True)
        raise
    part.replace(path)


def _no_warning_of_cancelled_tasks(**_: object) -> None:
    """Celery warns at each lost broker connection that a later version will cancel the
    running tasks then; longplay keeps them running (the store, not the message, says
    whether a job ran), so its ten lines would only alarm whoever reads the log. Set
    once Celery has set up its logging, which asks for every such warning."""
    from celery.exceptions import CPendingDeprecationWarning

    warnings.filterwarnings(
        "ignore", category=CPendingDeprecationWarning, module=r"celery\.worker\.consumer"
    )


_API_PARENT = "_LONGPLAY_API_PARENT"
"""The pid of ``longplay api``, for the API processes it starts (``--workers``)."""


@app.command()
def api(host: Host = None, port: Port = None, workers: ApiWorkers = None) -> None:
    """Serve the HTTP API alone (for a distributed setup)."""
    import uvicorn

    from longplay.supervisor import CannotStart, check_port

    settings = _with_flags(
        LONGPLAY_API_HOST=host, LONGPLAY_API_PORT=port, LONGPLAY_API_WORKERS=workers
    )
    setup_logging(settings)
    try:
        check_port(settings.api.host, settings.api.port)
    except CannotStart as exc:
        _refuse(exc)
    _load_plugins_here(settings)
    prepare(settings)
    os.environ[WARNINGS_SAID] = "1"  # told above: its API processes read the same settings
    os.environ[_API_PARENT] = str(os.getpid())
    uvicorn.run(
        "longplay.cli.serve:api_app",
        factory=True,
        workers=settings.api.workers,
        host=settings.api.host,
        port=settings.api.port,
        log_level=settings.log_level,
        log_config=uvicorn_logging(settings),
        timeout_graceful_shutdown=5,
    )


def api_app() -> FastAPI:
    """The API, in each process uvicorn serves it from. One of several (``--workers``)
    ends with the ``longplay api`` that started it, however that ends (``kill -9``
    included): left behind, they went on answering on the port, and a new ``longplay
    api`` could not listen on it."""
    from longplay.api.app import create_app
    from longplay.supervisor import ends_with

    parent = os.environ.get(_API_PARENT, "")
    if parent.isdigit() and int(parent) == os.getppid():
        end = ends_with(int(parent), signal.SIGTERM)
        if end is not None:
            end()
    return create_app()


@app.command()
def worker(
    concurrency: Annotated[
        int | None,
        typer.Option(min=1, help="Pool processes (env LONGPLAY_WORKER_CONCURRENCY, default 2)."),
    ] = None,
    queues: Annotated[
        str | None,
        typer.Option(
            help="Resources it takes work for: cpu, gpu or cpu,gpu "
            "(env LONGPLAY_WORKER_QUEUES, default cpu)."
        ),
    ] = None,
) -> None:
    """Run a Celery worker that takes jobs (for a distributed setup).

    SIGTERM gives running jobs LONGPLAY_SHUTDOWN_GRACE seconds (10) to finish; then
    they are stopped and go back to the queue at once, without losing an attempt.
    """
    # Celery reads this when it is imported: SIGTERM means a (soft) cold shutdown,
    # so a long job does not hold up a stop for as long as it runs.
    os.environ.setdefault("REMAP_SIGTERM", "SIGQUIT")
    _load_plugins_here(get_settings())  # before the tasks module loads them
    from celery.signals import celeryd_after_setup

    from longplay import keys
    from longplay.broker import liveness
    from longplay.broker.app import celery_app
    from longplay.worker.main import run_worker
    from longplay.worker.memory import tune_malloc
    from longplay.worker.tasks import release_jobs_of, take_jobs

    if queues is not None and not _known_resources(queues):
        raise typer.BadParameter(f"name cpu, gpu or both, not {queues!r}", param_hint="--queues")
    settings = _with_flags(LONGPLAY_WORKER_CONCURRENCY=concurrency, LONGPLAY_WORKER_QUEUES=queues)
    tune_malloc()  # before the pool forks: every pool process inherits it
    celeryd_after_setup.connect(_no_warning_of_cancelled_tasks, weak=False)
    take_jobs()
    liveness.install(celery_app)
    setup_logging(settings)
    prepare(settings)
    resources = [q.strip() for q in settings.worker.queues.split(",") if q.strip()]
    try:
        ended = run_worker(
            [
                *(["--quiet"] if settings.log_format == "json" else []),  # no banner
                "worker",
                f"--loglevel={settings.log_level.upper()}",
                f"--concurrency={settings.worker.concurrency}",
                f"--queues={','.join(keys.worker_queues(resources))}",
                f"--hostname=longplay-{socket.gethostname()}-{os.getpid()}@%h",
                "--without-gossip",
                "--without-mingle",
            ]
        )
    finally:
        release_jobs_of(os.getpid())
    if ended:
        raise SystemExit(ended)


def _known_resources(queues: str) -> bool:
    names = {q.strip() for q in queues.split(",") if q.strip()}
    return bool(names) and names <= {"cpu", "gpu"}


@app.command()
def beat() -> None:
    """Run beat: the reaper, admission rounds, webhook resends, the retention cleanup.

    It schedules them and runs them on threads of its own. One beat schedules at a
    time; another started beside it waits, and takes over when the first stops."""
    import logging

    from celery.signals import celeryd_after_setup, worker_shutting_down

    from longplay.broker import single_beat
    from longplay.redis_client import get_redis
    from longplay.worker import beat as upkeep

    settings = get_settings()
    setup_logging(settings)
    _load_plugins_here(settings)  # Celery imports the tasks, and so the kinds, at start
    prepare(settings)
    client = get_redis()

    def waiting(holder: str) -> None:
        logging.getLogger("longplay.beat").warning(
            "beat %s schedules already; this one waits, and takes over if it stops", holder
        )

    single_beat.take(client, waiting=waiting)
    single_beat.keep(client)
    celeryd_after_setup.connect(_no_warning_of_cancelled_tasks, weak=False)
    # As the stop begins, not once the tasks running have ended: a standby schedules
    # meanwhile (the rounds beat runs are safe to run beside another's).
    worker_shutting_down.connect(lambda **_: single_beat.give_back(client), weak=False)
    ended = 0
    try:
        ended = upkeep.run(
            settings.data_dir / "beat-schedule",
            log_level=settings.log_level,
            quiet=settings.log_format == "json",
        )
    except SystemExit:
        if not single_beat.lost.is_set():
            raise
    finally:
        single_beat.give_back(client)
    if single_beat.lost.is_set():  # a failure, so that it is started again, as a standby
        raise SystemExit(1)
    if ended:
        raise SystemExit(ended)
