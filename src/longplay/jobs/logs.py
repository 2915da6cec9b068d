"""Log lines that say which job they are about, and the JSON form of every line.

The runner says which job (and step) the running code works for with :func:`job_context`
and :func:`at_step`; a context variable carries it, so every line the job's code writes
(the runner's, a kind's, an engine's, a library's) gets ``job_id``, ``kind``, ``owner``,
``attempt`` and ``step`` from :class:`JobFields` without passing anything down. With
``LONGPLAY_LOG_FORMAT=json`` each line is one JSON object (:class:`JsonFormatter`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

FIELDS = ("job_id", "kind", "owner", "attempt", "step")

_job: ContextVar[dict[str, Any] | None] = ContextVar("longplay_job", default=None)


@contextmanager
def job_context(*, job_id: str, kind: str, owner: str, attempt: int) -> Iterator[None]:
    """Lines written in this block (in this thread or task) are about this job."""
    token = _job.set(
        {"job_id": job_id, "kind": kind, "owner": owner, "attempt": attempt, "step": None}
    )
    try:
        yield
    finally:
        _job.reset(token)


def at_step(step: str | None) -> None:
    """The job in context has moved on to ``step``."""
    fields = _job.get()
    if fields is not None:
        _job.set({**fields, "step": step})


def current() -> dict[str, Any] | None:
    """The job the running code works for, if any."""
    fields = _job.get()
    return dict(fields) if fields is not None else None


class JobFields(logging.Filter):
    """Puts the job's fields on each record written while a job runs (never drops one)."""

    def filter(self, record: logging.LogRecord) -> bool:
        fields = _job.get()
        if fields is not None:
            for name, value in fields.items():
                if not hasattr(record, name):
                    setattr(record, name, value)
        return True


class WithoutQuery(logging.Filter):
    """Drops the query string from uvicorn's access lines (``GET /v1/…/search 200``):
    a query holds what people search for, and the log is kept longer and read by more
    people than the data. Uvicorn logs ``(client, method, path?query, version,
    status)`` as the record's arguments; its path is percent-encoded, so the first
    ``?`` starts the query."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) == 5 and isinstance(args[2], str):
            record.args = (*args[:2], args[2].partition("?")[0], *args[3:])
        return True


ACCESS_FILTER = {"()": f"{__name__}.WithoutQuery"}
"""The :func:`logging.config.dictConfig` entry of :class:`WithoutQuery`."""


def without_queries(config: dict[str, Any]) -> dict[str, Any]:
    """``config`` (uvicorn's own :func:`logging.config.dictConfig`, for text lines)
    with :class:`WithoutQuery` on the ``uvicorn.access`` logger; ``config`` is not
    changed. Ours (:func:`logging_config`) has it already."""
    loggers = dict(config.get("loggers", {}))
    access = dict(loggers.get("uvicorn.access", {}))
    access["filters"] = [*access.get("filters", []), "without_query"]
    loggers["uvicorn.access"] = access
    filters = {**config.get("filters", {}), "without_query": ACCESS_FILTER}
    return {**config, "filters": filters, "loggers": loggers}


_RECORD_ATTRIBUTES = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "color_message",  # uvicorn's copy of the message with terminal colours
}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, process, the job's fields
    when there is a job, anything passed in ``extra``, and the traceback if any."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "process": record.process,
        }
        for name, value in vars(record).items():
            if name not in _RECORD_ATTRIBUTES and not name.startswith("_"):
                line[name] = value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return json.dumps(line, default=str, ensure_ascii=False)


TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def logging_config(*, level: str, json_lines: bool) -> dict[str, Any]:
    """A :func:`logging.config.dictConfig` for a part: one handler on stderr, with the job
    fields filter, as text or JSON lines. Uvicorn takes it as its ``log_config`` (each API
    process applies it, also those it spawns), so its own loggers go through it too."""
    formatter: dict[str, Any] = (
        {"()": f"{__name__}.JsonFormatter"} if json_lines else {"format": TEXT_FORMAT}
    )
    through_root = {"handlers": [], "propagate": True}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"job": {"()": f"{__name__}.JobFields"}, "without_query": ACCESS_FILTER},
        "formatters": {"line": formatter},
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "formatter": "line",
                "filters": ["job"],
                "stream": "ext://sys.stderr",
            }
        },
        "root": {"level": level.upper(), "handlers": ["stderr"]},
        "loggers": {
            "uvicorn": through_root,
            "uvicorn.error": through_root,
            "uvicorn.access": {**through_root, "filters": ["without_query"]},
            # It warns of each bad byte in a client's multipart headers, which the
            # client is answered a 422 for: a line per request a scanner sends.
            "python_multipart": {**through_root, "level": "ERROR"},
            # It writes each request's URL at INFO, and a webhook's URL may hold a
            # password or a token; the webhook's own line says how it went.
            "httpx": {**through_root, "level": "WARNING"},
        },
    }
