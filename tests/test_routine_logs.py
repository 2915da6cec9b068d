"""Beat's routine upkeep stays out of the INFO log; job lines and warnings stay in."""

from __future__ import annotations

import logging
import socket
import sys

import pytest
import redis

from longplay.broker.app import ADMIT, REAP, RUN_JOB, BrokerAway, QuietRoutine


def record(level: int, message: str, *args: object) -> logging.LogRecord:
    return logging.LogRecord("celery.app.trace", level, __file__, 1, message, args, None)


def test_routine_upkeep_lines_are_dropped_and_the_rest_kept() -> None:
    quiet = QuietRoutine()
    assert not quiet.filter(record(logging.INFO, "Task %s[abc] succeeded in 0.01s", ADMIT))
    assert not quiet.filter(record(logging.INFO, "Scheduler: Sending due task reap (%s)", REAP))
    assert quiet.filter(record(logging.INFO, "Task %s[abc] received", RUN_JOB))
    assert quiet.filter(record(logging.ERROR, "Task %s[abc] raised: boom", REAP))


def failed_send(cause: BaseException) -> logging.LogRecord:
    """Beat's record of a scheduled send that raised ``cause``, as Celery makes it."""
    try:
        try:
            raise cause
        except BaseException as exc:
            raise RuntimeError(f"Couldn't apply scheduled task admit: {exc}") from exc
    except RuntimeError as exc:
        message = logging.LogRecord(
            "celery.beat", logging.ERROR, __file__, 1, "Message Error: %s\n%s", (exc, []), None
        )
        message.exc_info = sys.exc_info()
        return message


def test_a_send_beat_could_not_make_for_redis_is_a_line_and_for_else_a_traceback() -> None:
    away = failed_send(redis.ConnectionError("Error 111 connecting to redis.sock."))
    assert BrokerAway().filter(away) and away.exc_info is None
    assert away.levelname == "WARNING"
    assert away.getMessage() == (
        "admit: not sent, Redis did not answer (ConnectionError: Error 111 connecting to "
        "redis.sock.); beat sends it at its next time"
    )


@pytest.mark.parametrize(
    "cause", [redis.AuthenticationError("invalid password"), TypeError("not JSON")]
)
def test_a_send_that_failed_for_another_reason_keeps_its_traceback(cause: Exception) -> None:
    other = failed_send(cause)
    assert BrokerAway().filter(other)
    assert other.exc_info is not None and other.levelname == "ERROR"


def test_a_part_away_is_one_health_line_a_minute_not_one_a_probe(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A load balancer probes every few seconds: a store away for minutes wrote a
    warning each time (238 in 160 s)."""
    from longplay import health
    from longplay.settings import get_settings

    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))  # a port nothing listens on
    port = closed.getsockname()[1]
    monkeypatch.setenv("LONGPLAY_DATABASE_URL", f"postgresql://nobody@127.0.0.1:{port}/none")
    monkeypatch.setattr(health, "_told", {})
    get_settings.cache_clear()
    try:
        with caplog.at_level(logging.WARNING, logger="longplay.health"):
            found = [health.report() for _ in range(3)]
    finally:
        closed.close()
        get_settings.cache_clear()
    assert all(f.store.startswith("error:") for f in found), found
    told = [r.getMessage() for r in caplog.records if "store does not answer" in r.getMessage()]
    assert len(told) == 1, told
