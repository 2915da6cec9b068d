"""Engines, sessions and migrations for SQLite (WAL) and PostgreSQL (psycopg 3)."""

from __future__ import annotations

import fcntl
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any, cast

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util.exc import CommandError
from sqlalchemy import Connection, CursorResult, Engine, Result, create_engine, event, text
from sqlalchemy.engine import ExceptionContext, make_url
from sqlalchemy.exc import StatementError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import NullPool

log = logging.getLogger(__name__)
MIGRATIONS = Path(__file__).with_name("migrations")
_PG_MIGRATION_LOCK = 0x10_6C_70  # any constant shared by every longplay process


def normalise_url(url: str) -> str:
    """Use psycopg 3 for a plain ``postgresql://`` URL."""
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed.render_as_string(hide_password=False)


BUSY_MS = 30_000
"""How long a SQLite statement waits for the write lock another process holds."""

PG_CONNECTION: dict[str, int] = {
    "connect_timeout": 10,
    "keepalives": 1,
    "keepalives_idle": 10,
    "keepalives_interval": 5,
    "keepalives_count": 3,
    "tcp_user_timeout": 30_000,
}
"""libpq's connection settings for a server that stops answering without closing its
connections (its host lost, a failover to another address, a network that drops
packets). By default a connection to it waits for ever: an answer that never comes,
or 15 minutes of the kernel resending; every pooled connection of the API, the
admission thread and each pool process hung on one, and only a restart brought the
worker back. With these, a connection not heard from in 25 s (keepalive probes
unanswered) or whose sent bytes are not acknowledged for 30 s fails; the failure is a
store that does not answer (503, a progress write skipped, the claim retried), and
the next connection goes to whatever the address names now. A new connection gives
up after 10 s, not psycopg's 130. Any of them set in the database URL's query
(``?keepalives_idle=60``) is used instead."""


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute(f"PRAGMA busy_timeout={BUSY_MS}")
    cursor.close()


@contextmanager
def session_waiting_at_most(seconds: float) -> Iterator[Session]:
    """:func:`session_scope`, whose statements wait at most ``seconds`` for SQLite's
    write lock, then fail as a store that does not answer (``database is locked``):
    for a write that may be skipped, which must not hold up its caller for the
    :data:`BUSY_MS` the others wait. PostgreSQL locks rows, not the database; there
    it is a plain session."""
    with session_scope() as session:
        connection = session.connection()
        if connection.dialect.name != "sqlite":
            yield session
            return
        connection.exec_driver_sql(f"PRAGMA busy_timeout={int(seconds * 1000)}")
        try:
            yield session
        finally:
            connection.exec_driver_sql(f"PRAGMA busy_timeout={BUSY_MS}")


def _read_only_is_stale(context: ExceptionContext) -> None:
    """SQLite opens a database whose files it cannot write then (made read-only,
    immutable, or on a disk remounted read-only) read-only, and the connection stays
    so after they are writable again: every write on it would fail for as long as the
    pool kept it. It is thrown away as a broken connection, and the pool's others
    with it; the next request opens the files anew."""
    if "readonly database" in str(context.original_exception):
        context.is_disconnect = True


def make_engine(url: str) -> Engine:
    """An engine tuned for many short transactions from API and worker processes."""
    url = normalise_url(url)
    if url.startswith("sqlite"):
        path = make_url(url).database
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        waits = {"check_same_thread": False, "timeout": BUSY_MS / 1000}
        engine = create_engine(url, connect_args=waits)
        event.listen(engine, "connect", _sqlite_pragmas)
        event.listen(engine, "handle_error", _read_only_is_stale)
        return engine
    return create_engine(
        url,
        pool_pre_ping=True,
        pool_size=5,
        max_overflow=10,
        connect_args=pg_connect_args(url),
    )


def pg_connect_args(url: str) -> dict[str, Any]:
    """:data:`PG_CONNECTION`, but for what the URL's query sets itself (SQLAlchemy
    would let these override the URL)."""
    chosen = make_url(url).query
    return {name: value for name, value in PG_CONNECTION.items() if name not in chosen}


@lru_cache(maxsize=4)
def _engine_for(url: str) -> Engine:
    return make_engine(url)


@lru_cache(maxsize=4)
def _sessionmaker_for(url: str) -> sessionmaker[Session]:
    return sessionmaker(_engine_for(url), expire_on_commit=False)


def get_engine(url: str | None = None) -> Engine:
    from longplay.settings import get_settings

    return _engine_for(url or get_settings().effective_database_url)


@contextmanager
def session_scope(url: str | None = None) -> Iterator[Session]:
    """A session that commits on success and rolls back on error."""
    from longplay.settings import get_settings

    session = _sessionmaker_for(url or get_settings().effective_database_url)()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def driver_message(exc: StatementError) -> str:
    """What the database driver said, on one line: SQLAlchemy's own text of the error
    adds the statement, its parameters (a job's values) and a link, none of them for a
    job's owner to read, nor for the log."""
    said = str(exc.orig if exc.orig is not None else exc).strip()
    return said.splitlines()[0] if said else type(exc.orig or exc).__name__


def affected(result: Result[Any]) -> int:
    """Rows an UPDATE, DELETE or INSERT ... SELECT touched (SQLAlchemy types ``execute``
    as a plain Result)."""
    return cast(CursorResult[Any], result).rowcount


def dispose_engine() -> None:
    """Drop pooled connections; a forked worker child must not share its parent's."""
    get_engine().dispose(close=False)


def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", normalise_url(url).replace("%", "%%"))
    return config


class NewerSchema(Exception):
    """The database's schema is at a revision this longplay does not know: a newer one
    upgraded it."""

    EXIT_CODE = 78
    """What a part that finds it exits with (``EX_CONFIG``): ``up`` does not start such
    a part again, as it would one that crashed, and systemd or compose see the same."""


class NoDatabase(Exception):
    """No database longplay made, where a command must not make one: a SQLite file that
    is not there, or an empty database."""


def migrate(url: str) -> None:
    """Bring the database to the newest schema; safe when several processes start at
    once. The log says when the schema changed, from which revision to which."""
    config = alembic_config(url)
    with _migration_connection(url) as connection:
        before = MigrationContext.configure(connection).get_current_revision()
        if before is not None and not _known(config, before):
            raise NewerSchema(
                f"the database's schema is at revision {before}, which this longplay does "
                "not know: a newer longplay upgraded it. Run that one, or move the schema "
                "back with it first (README: Upgrading and backups)"
            )
        config.attributes["connection"] = connection
        command.upgrade(config, "head")
        after = MigrationContext.configure(connection).get_current_revision()
    if after != before:
        log.info("database schema upgraded from %s to %s", before or "nothing", after)
        _warn_of_broken_references(url, "upgrade")


def schema_revisions(url: str) -> tuple[str | None, str | None]:
    """The database's schema revision (None: it has none yet) and the newest this
    longplay knows. Raise :class:`NoDatabase` rather than make a SQLite file."""
    _must_exist(url)
    head = ScriptDirectory.from_config(alembic_config(url)).get_current_head()
    with _engine_for(url).connect() as connection:
        return MigrationContext.configure(connection).get_current_revision(), head


def must_hold_schema(url: str) -> None:
    """Raise :class:`NoDatabase` where ``url`` names no database longplay made: a
    SQLite file that is not there (none is made), or a database without a schema
    revision (an empty one)."""
    _must_exist(url)
    with _engine_for(url).connect() as connection:
        if MigrationContext.configure(connection).get_current_revision() is None:
            raise NoDatabase("no longplay tables in the database")


def downgrade(url: str, revision: str) -> None:
    """Move the schema back to ``revision``, for an older longplay: run by this one,
    which has the migrations to undo. What the later revisions added is dropped.
    Raise alembic's ``CommandError`` for a revision it does not know, and
    :class:`NoDatabase` rather than make a SQLite file."""
    _must_exist(url)
    config = alembic_config(url)
    with _migration_connection(url) as connection:
        before = MigrationContext.configure(connection).get_current_revision()
        config.attributes["connection"] = connection
        command.downgrade(config, revision)
        after = MigrationContext.configure(connection).get_current_revision()
    if after != before:
        log.info("database schema moved back from %s to %s", before, after or "nothing")
        _warn_of_broken_references(url, "downgrade")


def _must_exist(url: str) -> None:
    database = make_url(normalise_url(url)).database or ""
    on_disk = url.startswith("sqlite") and database not in ("", ":memory:")
    if on_disk and not Path(database).is_file():
        raise NoDatabase(f"no database at {database}")


def _known(config: Config, revision: str) -> bool:
    try:
        return ScriptDirectory.from_config(config).get_revision(revision) is not None
    except CommandError:  # alembic's word for a revision it has no file for
        return False


@contextmanager
def _migration_connection(url: str) -> Iterator[Connection]:
    """A connection to change the schema on, held by this process alone, in one
    transaction: a migration that fails halfway leaves nothing of itself.

    On SQLite, with foreign keys off: a migration that changes a table there copies it
    into a new one and drops the old, and with them on that drop would delete every row
    that refers to the old table (a job's attempts, its artifacts' link to it), or the
    rows themselves. SQLite takes the setting only outside a transaction, so this is a
    connection of its own, never one of the pool the service uses. Python's sqlite3
    would commit each statement that changes the schema as it goes: the connection
    leaves transactions to SQLAlchemy, which begins one for it (SQLAlchemy's recipe
    for pysqlite)."""
    engine = _engine_for(url)
    if engine.dialect.name == "postgresql":
        with engine.connect() as connection:
            connection.execute(text("SELECT pg_advisory_lock(:k)"), {"k": _PG_MIGRATION_LOCK})
            try:
                yield connection
                connection.commit()
            finally:
                connection.rollback()
                connection.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": _PG_MIGRATION_LOCK})
                connection.commit()
        return
    database = engine.url.database or ""
    if database in ("", ":memory:"):  # one connection's own database: nobody to share it
        with engine.begin() as connection:
            yield connection
        return
    lone = create_engine(engine.url, poolclass=NullPool)
    event.listen(lone, "connect", _sqlite_migration_pragmas)
    event.listen(lone, "begin", lambda connection: connection.exec_driver_sql("BEGIN"))
    try:
        with Path(database + ".migrate.lock").open("w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            with lone.begin() as connection:
                yield connection
    finally:
        lone.dispose()


def _sqlite_migration_pragmas(dbapi_connection: Any, _record: Any) -> None:
    dbapi_connection.isolation_level = None  # no BEGIN or COMMIT of the driver's own
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=OFF")
    cursor.execute(f"PRAGMA busy_timeout={BUSY_MS}")
    cursor.close()


def _warn_of_broken_references(url: str, change: str) -> None:
    """Log the SQLite tables with rows that name a row no longer there after a
    ``change`` of the schema: with foreign keys off, a migration could leave some,
    which the service would then trip over."""
    if not url.startswith("sqlite"):
        return
    with _engine_for(url).connect() as connection:
        broken = {row[0] for row in connection.exec_driver_sql("PRAGMA foreign_key_check")}
    if broken:
        log.warning(
            "after the schema %s, rows of %s refer to rows that are gone",
            change,
            ", ".join(sorted(broken)),
        )
