"""Upgrading a database that holds data, as every part does at its start (``migrate``):
no row is lost and no reference cut on the way, a schema a newer longplay made is
refused in one line, and the repairs of what earlier releases left are made."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.script import ScriptDirectory
from conftest import create_database, drop_database
from sqlalchemy import (
    JSON,
    Boolean,
    Connection,
    DateTime,
    Float,
    Integer,
    MetaData,
    Numeric,
    Table,
    create_engine,
    inspect,
    select,
    text,
)
from sqlalchemy.engine import Engine

from longplay.store import db
from longplay.store.db import NewerSchema, alembic_config, get_engine, migrate, normalise_url

BEFORE_REBUILDS = "0007"
"""The last revision before the first that rebuilds ``jobs`` on SQLite (0008 adds a
foreign key to it, and SQLite can only do that by copying the table)."""
NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


@pytest.fixture
def url(database_kind: str, tmp_path: Path) -> Iterator[str]:
    """An empty database: made, then taken down to no schema at all."""
    made = create_database(database_kind, tmp_path)
    command.downgrade(alembic_config(made), "base")
    yield made
    drop_database(made)


@pytest.fixture
def plain(url: str) -> Iterator[Engine]:
    """An engine of the database's defaults, none of the service's settings (SQLite's
    foreign keys off), to set up the rows as an older release left them."""
    engine = create_engine(normalise_url(url))
    yield engine
    engine.dispose()


def _value(table: str, column: Any, n: int) -> Any:
    """A value the column takes: the ``n``-th of its table, unique where it must be."""
    kind = column.type
    if isinstance(kind, Boolean):
        return False
    if isinstance(kind, Integer):
        return n
    if isinstance(kind, Float | Numeric):
        return 1.0
    if isinstance(kind, DateTime):
        return NOW
    if isinstance(kind, JSON):
        return {}
    made = f"{n}-{table}.{column.name}"
    return made[: kind.length] if getattr(kind, "length", None) else made


def add_row(connection: Connection, table: Table, n: int, **given: Any) -> dict[str, Any]:
    """Insert row ``n`` of ``table``: ``given`` values, others made up where the column
    takes no null; its references must be given."""
    row = dict(given)
    for column in table.columns:
        if column.name in row or (column.nullable and not column.primary_key):
            continue
        if column.foreign_keys:
            raise AssertionError(f"{table.name}.{column.name} refers to a row: give it")
        if column.server_default is None or column.primary_key:
            row[column.name] = _value(table.name, column, n)
    connection.execute(table.insert().values(row))
    return row


def fill_every_table(connection: Connection) -> dict[str, list[dict[str, Any]]]:
    """Two rows in each table of the schema as it is, each reference filled (those that
    may be null too), parents first; full-text index tables are left to their triggers."""
    schema = MetaData()
    schema.reflect(connection)
    added: dict[str, list[dict[str, Any]]] = {}
    for table in schema.sorted_tables:
        if table.name == "alembic_version" or "_fts" in table.name:
            continue
        rows = added[table.name] = []
        for n in (1, 2):
            references = {}
            for column in table.columns:
                for key in column.foreign_keys:
                    parent = key.column
                    references[column.name] = added[parent.table.name][n - 1][parent.name]
            rows.append(add_row(connection, table, n, **references))
    return added


def rows_of(connection: Connection, table: str, columns: list[str]) -> list[tuple[Any, ...]]:
    found = Table(table, MetaData(), autoload_with=connection)
    selected = select(*(found.c[name] for name in columns)).order_by(*found.primary_key.columns)
    return [tuple(row) for row in connection.execute(selected)]


def longplay(url: str, data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``longplay ARGS`` on the database at ``url``."""
    return subprocess.run(
        [sys.executable, "-m", "longplay", *args],
        env={k: v for k, v in os.environ.items() if not k.startswith("LONGPLAY_")}
        | {"LONGPLAY_DATABASE_URL": url, "LONGPLAY_DATA_DIR": str(data_dir)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_an_upgrade_keeps_every_row_and_every_reference(
    url: str, plain: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    """From a release before the migrations that copy tables on SQLite, with a row in
    every table, up to now: each row is there with the values it had. Run with the
    service's foreign keys on, copying ``jobs`` deleted every job's attempts and
    webhook deliveries and cut its artifacts loose, saying nothing."""
    command.upgrade(alembic_config(url), BEFORE_REBUILDS)
    with plain.begin() as connection:
        added = fill_every_table(connection)
    with plain.connect() as connection:
        before = {t: rows_of(connection, t, list(rows[0])) for t, rows in added.items()}
    assert {"jobs", "job_attempts", "artifacts", "webhook_deliveries", "documents"} <= set(before)

    caplog.set_level(logging.INFO, logger="longplay.store.db")
    migrate(url)

    with plain.connect() as connection:
        after = {t: rows_of(connection, t, list(rows[0])) for t, rows in added.items()}
    for table, rows in before.items():
        assert after[table] == rows, table
    head = ScriptDirectory.from_config(alembic_config(url)).get_current_head()
    said = f"database schema upgraded from {BEFORE_REBUILDS} to {head}"
    assert said in caplog.text, caplog.text
    if plain.dialect.name == "sqlite":  # the migration's setting stays with it
        with get_engine(url).connect() as service:
            assert service.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1


def test_a_schema_a_newer_longplay_made_is_refused_in_one_line(
    url: str, plain: Engine, tmp_path: Path
) -> None:
    """A part of an older longplay started against a database a newer one upgraded
    (a rollback, or a part left behind): one line that says so, no traceback."""
    migrate(url)
    with plain.begin() as connection:
        connection.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    data_dir = tmp_path / "data"
    started = longplay(url, data_dir, "worker")
    said = started.stderr.strip()
    assert started.returncode == NewerSchema.EXIT_CODE, said  # up does not restart it
    assert said.endswith(
        "the database's schema is at revision 9999, which this longplay does not know: "
        "a newer longplay upgraded it. Run that one, or move the schema back with it "
        "first (README: Upgrading and backups)"
    ), said
    assert len(said.splitlines()) == 1 and "Traceback" not in said, said


OLD_VIEWER_TOKENS = """
CREATE TABLE viewer_tokens (
    id VARCHAR(40) NOT NULL PRIMARY KEY,
    job_id VARCHAR(40) NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    secret_hash VARCHAR(64) NOT NULL UNIQUE,
    created_at TIMESTAMP NOT NULL,
    expires_at TIMESTAMP NOT NULL
)
"""
"""``viewer_tokens`` as revision 0013 made it when it first shipped, without ``key_id``."""


def test_viewer_tokens_made_by_the_first_0013_get_their_key_column(url: str, plain: Engine) -> None:
    """A database that revision 0013 made before it had ``key_id`` is marked 0013 all
    the same: every read by a token failed for the column it lacks. It gets it; its
    old tokens, made by no key it can name, are deleted."""
    command.upgrade(alembic_config(url), "0015")
    with plain.begin() as connection:
        connection.execute(text("DROP TABLE viewer_tokens"))
        connection.execute(text(OLD_VIEWER_TOKENS))
        connection.execute(text("CREATE INDEX ix_viewer_tokens_job_id ON viewer_tokens (job_id)"))
        schema = MetaData()
        schema.reflect(connection)
        owner = add_row(connection, schema.tables["owners"], 1)
        job = add_row(connection, schema.tables["jobs"], 1, owner_id=owner["id"])
        add_row(connection, schema.tables["viewer_tokens"], 1, job_id=job["id"])

    migrate(url)

    with plain.connect() as connection:
        tokens = inspect(connection)
        assert "key_id" in {c["name"] for c in tokens.get_columns("viewer_tokens")}
        assert "ix_viewer_tokens_key_id" in {i["name"] for i in tokens.get_indexes("viewer_tokens")}
        [refers] = [
            k
            for k in tokens.get_foreign_keys("viewer_tokens")
            if k["constrained_columns"] == ["key_id"]
        ]
        assert refers["referred_table"] == "api_keys"
        assert connection.execute(text("SELECT count(*) FROM viewer_tokens")).scalar() == 0


@pytest.mark.parametrize(
    ("stages", "ended_as"),
    [
        (["completed", "failed", "cancelled"], "failed"),
        (["completed", "expired"], "failed"),
        (["completed", "cancelled"], "cancelled"),
        (["completed", "completed"], "completed"),
    ],
)
def test_flows_that_ended_before_0015_are_given_how_they_ended(
    url: str, plain: Engine, stages: list[str], ended_as: str
) -> None:
    """0015 keeps how a flow ended as it ends; a flow that had ended already is given it
    from its stages, so deleting a stage no longer changes how it reads. A flow still
    running is left without."""
    command.upgrade(alembic_config(url), "0014")
    with plain.begin() as connection:
        schema = MetaData()
        schema.reflect(connection)
        owner = add_row(connection, schema.tables["owners"], 1)
        for n, finished_at in ((1, NOW), (2, None)):
            flow = add_row(
                connection, schema.tables["flows"], n, owner_id=owner["id"], finished_at=finished_at
            )
            for m, status in enumerate(stages):
                add_row(
                    connection,
                    schema.tables["jobs"],
                    10 * n + m,
                    owner_id=owner["id"],
                    flow_id=flow["id"],
                    status=status,
                )

    migrate(url)

    with plain.connect() as connection:
        ended = dict(connection.execute(text("SELECT id, ended_as FROM flows ORDER BY id")).all())
    assert list(ended.values()) == [ended_as, None], ended


def test_the_schema_moves_back_for_an_older_longplay_keeping_what_it_had(
    url: str, plain: Engine, tmp_path: Path
) -> None:
    """The way back from an upgrade: ``longplay schema downgrade`` by the newer
    longplay, to the revision the older one knows; the rows and values that revision
    has are all there (on SQLite too, where going back copies tables)."""
    migrate(url)
    with plain.begin() as connection:
        added = fill_every_table(connection)
    with plain.connect() as connection:
        before = {t: rows_of(connection, t, list(rows[0])) for t, rows in added.items()}

    data_dir = tmp_path / "data"
    moved = longplay(url, data_dir, "schema", "downgrade", BEFORE_REBUILDS, "--yes")
    assert moved.returncode == 0, moved.stderr
    shown = longplay(url, data_dir, "schema", "show")
    head = ScriptDirectory.from_config(alembic_config(url)).get_current_head()
    assert shown.stdout.strip().endswith(
        f"at {BEFORE_REBUILDS}; this longplay's newest is {head}"
    ), shown

    with plain.connect() as connection:
        schema = MetaData()
        schema.reflect(connection)
        for table, rows in before.items():
            if table not in schema.tables:
                continue  # added after BEFORE_REBUILDS
            kept = [n for n, name in enumerate(added[table][0]) if name in schema.tables[table].c]
            names = [list(added[table][0])[n] for n in kept]
            assert rows_of(connection, table, names) == [
                tuple(row[n] for n in kept) for row in rows
            ], table
    refused = longplay(url, data_dir, "schema", "downgrade", "0999", "--yes")
    assert refused.returncode == 1
    assert refused.stderr.strip() == (
        "cannot move the schema back to 0999: Can't locate revision identified by '0999'"
    ), refused.stderr
    missing = tmp_path / "nowhere" / "longplay.db"
    for args in (("show",), ("downgrade", "0011", "--yes")):
        refused = longplay(f"sqlite:///{missing}", data_dir, "schema", *args)
        assert refused.returncode == 1, refused
        assert refused.stderr.strip().endswith(f"no database at {missing}"), refused.stderr
    assert not missing.parent.exists(), "it made a database where there was none"


HALF_DONE = """
import sqlalchemy as sa
from alembic import op

revision = "9001"
down_revision = "{head}"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table("half_done", sa.Column("id", sa.Integer, primary_key=True))
    op.execute("UPDATE owners SET name = name || '!'")
    with op.batch_alter_table("owners") as batch_op:
        batch_op.add_column(sa.Column("half", sa.Integer, nullable=True))
    raise RuntimeError("this migration fails halfway")


def downgrade() -> None:
    pass
"""


def test_a_migration_that_fails_halfway_leaves_nothing_of_itself(
    url: str, plain: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A migration is one transaction on SQLite too: Python's sqlite3 committed each
    schema change as it went, so a migration that failed after its first left a table
    behind, and every start after failed on "table already exists"."""
    migrate(url)
    with plain.begin() as connection:
        schema = MetaData()
        schema.reflect(connection)
        add_row(connection, schema.tables["owners"], 1)
    head = ScriptDirectory.from_config(alembic_config(url)).get_current_head()
    copied = tmp_path / "migrations"
    shutil.copytree(db.MIGRATIONS, copied)
    (copied / "versions" / "9001_half_done.py").write_text(HALF_DONE.format(head=head))
    monkeypatch.setattr(db, "MIGRATIONS", copied)
    with pytest.raises(RuntimeError, match="fails halfway"):
        migrate(url)
    with plain.connect() as connection:
        assert "half_done" not in inspect(connection).get_table_names()
        assert "half" not in {c["name"] for c in inspect(connection).get_columns("owners")}
        assert connection.execute(text("SELECT name FROM owners")).scalar() == "1-owners.name"
        assert connection.execute(text("SELECT version_num FROM alembic_version")).scalar() == head
