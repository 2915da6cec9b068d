"""The ``longplay`` command's app, its sub-commands' groups and what every part shares."""

from __future__ import annotations

import logging

import typer
from rich.console import Console

from longplay.settings import Settings

app = typer.Typer(help="Long AI media work as background jobs.", no_args_is_help=True)
keys_app = typer.Typer(help="API keys.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
owners_app = typer.Typer(help="Owners: their tier and limits.", no_args_is_help=True)
app.add_typer(owners_app, name="owners")
console = Console()
err = Console(stderr=True)


def setup_logging(settings: Settings) -> None:
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("alembic").setLevel(logging.WARNING)
    from longplay.broker.app import quiet_routine_logs

    quiet_routine_logs()


def prepare(settings: Settings) -> None:
    """Data folder and schema: every part calls this before it serves anything."""
    from longplay.store.db import migrate

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    migrate(settings.effective_database_url)
