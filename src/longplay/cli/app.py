"""The ``longplay`` command's app, its sub-commands' groups and what every part shares."""

from __future__ import annotations

import contextlib
import logging
import logging.config
import os
import re
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import typer
from pydantic import ValidationError
from pydantic_core import ErrorDetails
from pydantic_settings import SettingsError
from rich.console import Console

from longplay.settings import Settings, SettingWarning, get_settings

app = typer.Typer(help="Long AI media work as background jobs.", no_args_is_help=True)
keys_app = typer.Typer(help="API keys.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
owners_app = typer.Typer(help="Owners: their tier and limits.", no_args_is_help=True)
app.add_typer(owners_app, name="owners")
schema_app = typer.Typer(
    help="The database's schema: which revision it is at, and moving it back for an "
    "older longplay (every part moves it forward by itself).",
    no_args_is_help=True,
)
app.add_typer(schema_app, name="schema")
console = Console()
err = Console(stderr=True)


@app.callback()
def _read_settings(ctx: typer.Context) -> None:
    """Read the settings before any command runs, so that a bad value is a clear
    message naming its variable, not a traceback from deep inside a command; a doubtful
    one (``SettingWarning``) is one line too, and the command goes on.

    ``up`` makes its files private here already: it locks the data folder and starts
    Redis before :func:`prepare`."""
    if ctx.invoked_subcommand == "up":
        keep_private()
    try:
        with warnings.catch_warnings(record=True) as doubts:
            warnings.simplefilter("always", SettingWarning)
            get_settings()
    except ValidationError as exc:
        for error in exc.errors():
            err.print(f"invalid setting {_described(error)}", markup=False, soft_wrap=True)
        raise typer.Exit(2) from None
    except SettingsError as exc:  # a variable the settings sources cannot parse at all
        why = f"{exc}: {exc.__cause__}" if exc.__cause__ else str(exc)
        err.print(f"invalid setting: {why}", markup=False, soft_wrap=True)
        raise typer.Exit(2) from None
    for doubt in doubts:
        err.print(f"warning: {doubt.message}", markup=False, soft_wrap=True)
    warnings.simplefilter("ignore", SettingWarning)  # said once: a re-read (flags) is quiet


def _described(error: ErrorDetails) -> str:
    """``LONGPLAY_X='value': why``, with the place inside a JSON value in brackets; a
    check across fields (no place) names its variables itself. Fields' aliases are
    their variables, so an error's place starts with the variable."""
    message = error["msg"].removeprefix("Value error, ")
    if not error["loc"]:
        return message
    variable, *inside = (str(part) for part in error["loc"])
    if inside:
        return f"{variable} ({'.'.join(inside)}={error['input']!r}): {message}"
    value = error["input"]
    if isinstance(value, str):
        value = hide_passwords(value)
    return f"{variable}={value!r}: {message}"


_PASSWORD = re.compile(r"(://[^:/@]*):.*@")
_PASSWORD_PARAMETER = re.compile(r"([?&]password=)[^&]*", re.IGNORECASE)


def hide_passwords(url: str) -> str:
    """``url`` with its password hidden, after ``user:`` or as ``?password=``."""
    return _PASSWORD_PARAMETER.sub(r"\1***", _PASSWORD.sub(r"\1:***@", url))


def setup_logging(settings: Settings) -> None:
    """Lines to stderr, as text or (``LONGPLAY_LOG_FORMAT=json``) one JSON object each;
    lines written while a job runs carry its fields (``longplay.jobs.logs``)."""
    from longplay.jobs.logs import logging_config

    json_lines = settings.log_format == "json"
    logging.config.dictConfig(logging_config(level=settings.log_level, json_lines=json_lines))
    logging.captureWarnings(json_lines)  # a warning is a JSON line too, not raw stderr
    logging.getLogger("alembic").setLevel(logging.WARNING)
    from longplay.broker.app import quiet_routine_logs

    quiet_routine_logs()


def uvicorn_logging(settings: Settings) -> dict[str, Any]:
    """Uvicorn's ``log_config``: its own for text; for JSON, ours (each API process,
    also one uvicorn spawns, applies it). Either way its access lines leave out the
    query string (:class:`~longplay.jobs.logs.WithoutQuery`)."""
    from longplay.jobs.logs import logging_config, without_queries

    if settings.log_format != "json":
        from uvicorn.config import LOGGING_CONFIG

        return without_queries(LOGGING_CONFIG)

    return logging_config(level=settings.log_level, json_lines=True)


PRIVATE_UMASK = 0o077
"""No access for group or others to what a part creates."""


def keep_private() -> None:
    """Whatever this process and the ones it starts create from now on (the SQLite
    database, Redis's append-only file, artifacts, the folders they are in) is its
    user's alone: the database holds every owner's webhook secret and the files are
    people's uploads. A data folder made earlier keeps the modes it has."""
    os.umask(PRIVATE_UMASK)


def prepare(settings: Settings, *, make: bool = True) -> None:
    """Data folder and schema: every part calls this before it serves anything (and
    so before it creates a file; see :func:`keep_private`). A database that cannot be
    opened (not there, unreachable, refused, an unknown URL) or whose schema a newer
    longplay made ends the command with one line saying why.

    ``make=False``, for the admin commands: a database longplay never made (no SQLite
    file, or an empty database) ends the command too, rather than be made: in a shell
    without the service's settings, such a command acted on a new empty database and
    said nothing (keys that the service never knew, a cleanup of nothing)."""
    from longplay.store.db import NewerSchema, NoDatabase, migrate, must_hold_schema
    from longplay.store.files import NoDataFolder, make_data_folder

    keep_private()
    try:
        make_data_folder(settings.data_dir)
    except NoDataFolder as exc:
        err.print(str(exc), markup=False, soft_wrap=True)
        raise typer.Exit(1) from None
    url = settings.effective_database_url
    try:
        with opening_database(url):
            if not make:
                must_hold_schema(url)
            migrate(url)
    except NoDatabase as exc:
        where = "" if url.startswith("sqlite") else f" at {hide_passwords(url)}"
        err.print(
            f"{exc}{where}: this command acts on the service's database, "
            "which `longplay up`, `api` or `worker` makes as it starts (or `longplay schema "
            "upgrade`); where the service runs with other settings, set the same "
            "LONGPLAY_DATA_DIR or LONGPLAY_DATABASE_URL here",
            markup=False,
            soft_wrap=True,
        )
        raise typer.Exit(1) from None
    except NewerSchema as exc:
        err.print(
            f"cannot use the database at {hide_passwords(url)}: {exc}", markup=False, soft_wrap=True
        )
        raise typer.Exit(NewerSchema.EXIT_CODE) from None
    for shared in open_to_others(settings):
        err.print(shared, markup=False, soft_wrap=True)


def open_to_others(settings: Settings) -> list[str]:
    """A line for the data folder, and for a SQLite database outside it, where other
    users may read them. ``up`` makes both for its user alone, but a folder made by
    hand and filled from a backup (``cp``, ``rsync``, SQLite's ``.backup``) keeps the
    modes of the copy: a ``0644`` database gave every user of the machine each
    owner's webhook secret."""
    from sqlalchemy.engine import make_url

    places = [settings.data_dir]
    url = make_url(settings.effective_database_url)
    if url.drivername.startswith("sqlite") and url.database not in (None, "", ":memory:"):
        database = Path(url.database or "").resolve()
        if not database.is_relative_to(settings.data_dir.resolve()):
            places.append(database)
    lines = []
    for place in places:
        try:
            mode = place.stat().st_mode & 0o777
        except OSError:
            continue
        if mode & 0o077:
            private = "700" if place.is_dir() else "600"
            lines.append(
                f"warning: {place} is open to other users of this machine (mode "
                f"{mode:o}), and it holds every owner's uploads, results and webhook "
                f"secrets: chmod {private} {place}"
            )
    return lines


@contextlib.contextmanager
def opening_database(url: str) -> Iterator[None]:
    """End the command with one line saying why the database at ``url`` cannot be
    opened (not there, unreachable, refused, an unknown URL), where it raises that."""
    from sqlalchemy.exc import ArgumentError, OperationalError

    try:
        yield
    except (ArgumentError, OperationalError, OSError) as exc:
        where = hide_passwords(url)
        why = _one_line(getattr(exc, "orig", None) or exc)  # the driver's own words
        err.print(f"cannot open the database at {where}: {why}", markup=False, soft_wrap=True)
        raise typer.Exit(1) from None


def _one_line(exc: BaseException) -> str:
    """A driver's message on one line, without libpq's preamble (``connection failed:
    connection to server at "host", port 5432 failed: FATAL:``) before the reason."""
    lines = (" ".join(line.split()) for line in str(exc).splitlines())
    text = "; ".join(line for line in lines if line)
    return text.rpartition(" failed: ")[2].removeprefix("FATAL: ")
