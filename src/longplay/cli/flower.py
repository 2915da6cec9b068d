"""``longplay flower``: Flower, Celery's own monitor, on longplay's Celery app and broker.

Workers send task events only while someone asks for them: a running Flower asks every
five seconds (Celery's ``enable_events`` broadcast), which also reaches workers started
after it, and when it stops this command asks them to stop (``disable_events``), so a
cluster nobody watches pays nothing for events.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
from typing import Annotated

import typer

from longplay.cli.app import app, err, setup_logging
from longplay.settings import Settings, get_settings

log = logging.getLogger(__name__)

AUTH_VARIABLES = ("FLOWER_BASIC_AUTH", "FLOWER_AUTH")
"""How Flower is told who may use it (basic auth, or the e-mail pattern of its OAuth)."""


def is_loopback(host: str) -> bool:
    """Whether ``host`` is reachable from this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def flower_argv(host: str, port: int, *, read_only: bool, extra: list[str]) -> list[str]:
    """Celery's command line for Flower; ``extra`` are Flower's own options, passed on."""
    argv = ["flower", f"--address={host}", f"--port={port}"]
    if read_only:
        argv.append("--read_only=True")
    return [*argv, *extra]


def _broker_problem(settings: Settings) -> str | None:
    """Why Flower could not reach the broker the workers use, if it plainly could not."""
    if settings.embedded_redis and not settings.redis_socket.exists():
        return (
            f"no embedded Redis at {settings.redis_socket}: start `longplay up` first, "
            "or set LONGPLAY_REDIS_URL to the Redis the workers use"
        )
    return None


def _has_auth(extra: list[str]) -> bool:
    given = any(os.environ.get(name) for name in AUTH_VARIABLES)
    return given or any(arg.lstrip("-").startswith(("basic_auth", "auth=")) for arg in extra)


@app.command(
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
)
def flower(
    ctx: typer.Context,
    host: Annotated[
        str, typer.Option(help="Address to listen on; beyond loopback it needs auth.")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port to listen on.")] = 5555,
    basic_auth: Annotated[
        str | None,
        typer.Option(
            envvar="FLOWER_BASIC_AUTH",
            help="user:password (comma-separated for more); better as the variable.",
            show_default=False,
        ),
    ] = None,
    read_only: Annotated[
        bool, typer.Option(help="No revoking tasks, no restarting or stopping workers.")
    ] = False,
) -> None:
    """Run Flower on longplay's workers and broker: Celery workers, tasks, queues.

    Any further option is Flower's own (--url_prefix=flower, --persistent=True).
    """
    settings = get_settings()
    setup_logging(settings)
    problem = _broker_problem(settings)
    if problem:
        err.print(problem, markup=False, soft_wrap=True)
        raise typer.Exit(2)
    if basic_auth:
        os.environ["FLOWER_BASIC_AUTH"] = basic_auth  # Flower reads it; kept out of argv
    if not is_loopback(host) and not _has_auth(ctx.args):
        err.print(
            f"Flower on {host} would let anyone who reaches it revoke tasks and stop "
            "workers: set FLOWER_BASIC_AUTH=user:password (or Flower's OAuth settings), "
            "or listen on 127.0.0.1",
            markup=False,
            soft_wrap=True,
        )
        raise typer.Exit(2)

    from longplay.broker.app import celery_app

    try:
        celery_app.start(flower_argv(host, port, read_only=read_only, extra=list(ctx.args)))
    finally:
        with contextlib.suppress(Exception):  # the broker may be what went away
            celery_app.control.disable_events()
            log.info("asked the workers to stop sending task events")
