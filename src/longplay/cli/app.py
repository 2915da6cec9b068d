"""The ``longplay`` command's app, its sub-commands' groups and what every part shares."""

from __future__ import annotations

import logging
import logging.config
from typing import Any

import typer
from pydantic import ValidationError
from rich.console import Console

from longplay.settings import Settings, get_settings

app = typer.Typer(help="Long AI media work as background jobs.", no_args_is_help=True)
keys_app = typer.Typer(help="API keys.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
owners_app = typer.Typer(help="Owners: their tier and limits.", no_args_is_help=True)
app.add_typer(owners_app, name="owners")
console = Console()
err = Console(stderr=True)


@app.callback()
def _read_settings() -> None:
    """Read the settings before any command runs, so that a bad value is a clear
    message naming its variable, not a traceback from deep inside a command."""
    try:
        get_settings()
    except ValidationError as exc:
        for error in exc.errors():
            message = error["msg"].removeprefix("Value error, ")
            if error["loc"]:  # a field's own check; else one across fields names them
                name = ".".join(str(part) for part in error["loc"])
                message = f"{name}={error['input']!r}: {message}"
            err.print(f"invalid setting {message}", markup=False, soft_wrap=True)
        raise typer.Exit(2) from None


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
    also one uvicorn spawns, applies it)."""
    if settings.log_format != "json":
        from uvicorn.config import LOGGING_CONFIG

        return LOGGING_CONFIG
    from longplay.jobs.logs import logging_config

    return logging_config(level=settings.log_level, json_lines=True)


def prepare(settings: Settings) -> None:
    """Data folder and schema: every part calls this before it serves anything."""
    from longplay.store.db import migrate

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    migrate(settings.effective_database_url)
