"""Setup mistakes an operator makes end in one short line on stderr that names the
variable or the database, never in a traceback: the real ``longplay`` command is run."""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from pathlib import Path

import psycopg
import pytest
from conftest import PG_ADMIN, free_port, postgres_reachable, run_longplay
from sqlalchemy.engine import make_url


def longplay(tmp_path: Path, *args: str, **variables: str) -> subprocess.CompletedProcess[str]:
    """Run ``longplay`` with a data folder in ``tmp_path`` (unless ``variables`` name
    another) and only these ``LONGPLAY_*`` variables set."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("LONGPLAY_")}
    env.update({"LONGPLAY_DATA_DIR": str(tmp_path / "data"), **variables})
    return run_longplay(*args, env=env)


def assert_short(done: subprocess.CompletedProcess[str], *named: str) -> None:
    """Failed, with a few lines on stderr naming each of ``named`` and no traceback."""
    assert done.returncode != 0, done.stderr
    assert "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) <= 3, done.stderr
    for text in named:
        assert text in done.stderr, done.stderr


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("LONGPLAY_TIERS", '{"gold": {"max_running": 4,}}'),
        ("LONGPLAY_PLUGINS", "notjson"),
        ("LONGPLAY_API_PORT", "abc"),
        ("LONGPLAY_DISPATCH_AHEAD", "0"),
        ("LONGPLAY_JOB_RETENTION", "30x"),
        ("LONGPLAY_STT_TIMEOUT", "-1"),
        ("LONGPLAY_WORKER_MAX_MEMORY_MB", "-1"),
        ("LONGPLAY_ENGINE_RETRY_WITHIN", "-1"),
    ],
)
def test_a_bad_setting_is_one_line_naming_its_variable(
    tmp_path: Path, variable: str, value: str
) -> None:
    done = longplay(tmp_path, "keys", "create", "alice", **{variable: value})
    assert done.returncode == 2, done.stderr
    assert_short(done, f"invalid setting {variable}")


@pytest.mark.parametrize(
    ("variable", "value", "said"),
    [
        (
            "LONGPLAY_DATABASE_URL",
            "mysql://root:hunter2@127.0.0.1/longplay",
            "LONGPLAY_DATABASE_URL='mysql://root:***@127.0.0.1/longplay': mysql:// is no store "
            "longplay knows: write sqlite:///PATH or postgresql://",
        ),
        (
            "LONGPLAY_REDIS_URL",
            "http://127.0.0.1:6390/7",
            "LONGPLAY_REDIS_URL='http://127.0.0.1:6390/7': http:// is not a Redis URL",
        ),
        (
            "LONGPLAY_DATABASE_URL",
            "mysql://127.0.0.1/longplay?user=root&password=hunter2",
            "LONGPLAY_DATABASE_URL='mysql://127.0.0.1/longplay?user=root&password=***': mysql://",
        ),
        (
            "LONGPLAY_DATABASE_URL",
            "postgres://longplay@127.0.0.1/longplay",
            "LONGPLAY_DATABASE_URL='postgres://longplay@127.0.0.1/longplay': write "
            "postgresql://, as SQLAlchemy does, not postgres://",
        ),
        (
            "LONGPLAY_REDIS_URL",
            "127.0.0.1:6379",
            "LONGPLAY_REDIS_URL='127.0.0.1:6379': a URL without a scheme is not a Redis URL",
        ),
        # Taken: the API used database 0 of a shared Redis, the worker crashed, exit 0.
        (
            "LONGPLAY_REDIS_URL",
            "redis://127.0.0.1:6379/abc",
            "LONGPLAY_REDIS_URL='redis://127.0.0.1:6379/abc': its database, 'abc', is not a number",
        ),
        # Each of these was a traceback of a hundred lines.
        (
            "LONGPLAY_DATABASE_URL",
            "postgresql+psycopg2://u:hunter2@127.0.0.1/longplay",
            "LONGPLAY_DATABASE_URL='postgresql+psycopg2://u:***@127.0.0.1/longplay': longplay "
            "speaks to PostgreSQL through psycopg (3), not psycopg2",
        ),
        (
            "LONGPLAY_DATABASE_URL",
            "postgresql://u:hunter2@127.0.0.1:abc/longplay",
            "LONGPLAY_DATABASE_URL='postgresql://u:***@127.0.0.1:abc/longplay': its port is "
            "not a number",
        ),
    ],
)
def test_a_url_of_another_kind_is_one_line(
    tmp_path: Path, variable: str, value: str, said: str
) -> None:
    """A database SQLAlchemy knows but longplay does not failed with a traceback from a
    driver that is not installed; a Redis URL of another scheme was taken, and each use
    of Redis failed after."""
    for command in (["keys", "create", "alice"], ["api", "--port", str(free_port())]):
        done = longplay(tmp_path, *command, **{variable: value})
        assert done.returncode == 2, done.stderr
        assert_short(done, f"invalid setting {said}")
        assert "hunter2" not in done.stderr


def test_a_data_folder_too_deep_for_the_embedded_redis_is_one_line(tmp_path: Path) -> None:
    """A unix socket's path holds 107 bytes: ``up`` in a deeper folder waited 15 s for
    a Redis that could not listen, then said only that it did not answer."""
    deep = tmp_path / ("d" * (95 - len(os.fsencode(tmp_path))))
    assert len(os.fsencode(deep / "redis.sock")) == 107
    done = longplay(tmp_path, "schema", "show", LONGPLAY_DATA_DIR=str(deep))
    assert "too deep" not in done.stderr, "107 bytes fit"
    deeper = f"{deep}e"
    for command in (["up", "--port", str(free_port())], ["worker"], ["keys", "list", "x"]):
        done = longplay(tmp_path, *command, LONGPLAY_DATA_DIR=deeper)
        assert done.returncode == 2, done.stderr
        assert_short(
            done,
            f"invalid setting LONGPLAY_DATA_DIR='{deeper}' is too deep for the embedded Redis",
            "would be 108 bytes",
            "a folder of at most 96 bytes, or set LONGPLAY_REDIS_URL",
        )
    served = longplay(
        tmp_path, "schema", "show", LONGPLAY_DATA_DIR=deeper, LONGPLAY_REDIS_URL="redis://x:1/0"
    )
    assert "too deep" not in served.stderr, "no embedded Redis, no socket"


def test_a_data_folder_that_cannot_be_made_is_one_line(tmp_path: Path) -> None:
    """Under a file, say: a traceback of 33 lines ending in NotADirectoryError."""
    (tmp_path / "a-file").write_text("")
    folder = str(tmp_path / "a-file" / "data")
    for command in (["up", "--port", str(free_port())], ["worker"], ["keys", "list", "x"]):
        done = longplay(tmp_path, *command, LONGPLAY_DATA_DIR=folder)
        assert done.returncode == 1, done.stderr
        assert_short(
            done, f"cannot make the data folder LONGPLAY_DATA_DIR='{folder}': Not a directory"
        )


def test_an_empty_url_is_unset(tmp_path: Path) -> None:
    """``LONGPLAY_DATABASE_URL=${DATABASE_URL:-}`` in a Compose file: the defaults."""
    done = longplay(tmp_path, "schema", "upgrade", LONGPLAY_DATABASE_URL="")
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "data" / "longplay.db").exists()


def test_an_admin_command_makes_no_database_of_its_own(tmp_path: Path) -> None:
    """Run in a shell without the service's settings, ``keys create`` made a new empty
    database and printed a key the service never knew; ``cleanup`` cleaned nothing and
    said so as a success. Each now says whose database it looked for and how one is
    made; ``schema upgrade`` makes it (keys before the service first starts)."""
    database = tmp_path / "data" / "longplay.db"
    for command in (
        ["keys", "create", "alice"],
        ["keys", "list", "alice"],
        ["keys", "revoke", "alice", "lp_0123456789"],
        ["owners", "list"],
        ["owners", "set", "alice", "--max-running", "2"],
        ["cleanup", "--dry-run"],
    ):
        done = longplay(tmp_path, *command)
        assert done.returncode == 1, (command, done.stderr)
        assert_short(
            done,
            f"no database at {database}: this command acts on the service's database",
            "`longplay schema upgrade`",
            "LONGPLAY_DATA_DIR or LONGPLAY_DATABASE_URL",
        )
        assert not database.exists(), command
    made = longplay(tmp_path, "schema", "upgrade")
    assert made.returncode == 0, made.stderr
    assert made.stdout.startswith(f"sqlite:///{database}: at "), made.stdout
    key = longplay(tmp_path, "keys", "create", "alice")
    assert key.returncode == 0 and key.stdout.startswith("lp_"), key.stderr

    if not postgres_reachable():
        return
    name = f"longplay_empty_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        url = make_url(PG_ADMIN).set(database=name).render_as_string(False)
        done = longplay(tmp_path, "owners", "list", LONGPLAY_DATABASE_URL=url)
        assert_short(done, "no longplay tables in the database at postgresql://")
        assert longplay(tmp_path, "schema", "upgrade", LONGPLAY_DATABASE_URL=url).returncode == 0
        listed = longplay(tmp_path, "owners", "list", LONGPLAY_DATABASE_URL=url)
        assert listed.returncode == 0, listed.stderr
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


def test_a_group_variable_that_is_not_json_is_one_line(tmp_path: Path) -> None:
    """``LONGPLAY_API`` would be the whole ``api`` group as JSON: the settings source
    itself cannot read it."""
    done = longplay(tmp_path, "keys", "list", LONGPLAY_API="notjson")
    assert done.returncode == 2, done.stderr
    assert_short(done, 'invalid setting: error parsing value for field "api"', "Expecting value")


def test_bad_json_inside_a_setting_says_where(tmp_path: Path) -> None:
    done = longplay(tmp_path, "keys", "list", LONGPLAY_TIERS='{"gold": {"max_running": 0}}')
    assert done.returncode == 2, done.stderr
    assert_short(done, "LONGPLAY_TIERS", "gold.max_running=0")


def test_a_short_retention_without_a_unit_is_warned_about_and_kept(tmp_path: Path) -> None:
    assert longplay(tmp_path, "schema", "upgrade").returncode == 0
    done = longplay(tmp_path, "cleanup", "--dry-run", LONGPLAY_JOB_RETENTION="30")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.splitlines()[-1])["dry_run"] is True
    assert "LONGPLAY_JOB_RETENTION=30 is 30 seconds; write 30d for days" in done.stderr
    quiet = longplay(tmp_path, "cleanup", "--dry-run", LONGPLAY_JOB_RETENTION="30s")
    assert quiet.returncode == 0 and "LONGPLAY_JOB_RETENTION" not in quiet.stderr


def test_a_missing_postgresql_database_is_one_line(tmp_path: Path) -> None:
    if not postgres_reachable():
        pytest.skip(f"no PostgreSQL at {PG_ADMIN}")
    name = f"longplay_missing_{uuid.uuid4().hex[:8]}"
    url = make_url(PG_ADMIN).set(database=name)
    shown = url.render_as_string(hide_password=True)
    # The schema commands too: an operator runs them in an upgrade, and they printed
    # 450 lines of traceback.
    for command in (
        ["keys", "create", "alice"],
        ["api", "--port", str(free_port())],
        ["schema", "show"],
        ["schema", "downgrade", "0001", "--yes"],
    ):
        done = longplay(tmp_path, *command, LONGPLAY_DATABASE_URL=url.render_as_string(False))
        assert done.returncode == 1, done.stderr
        assert_short(done, f'cannot open the database at {shown}: database "{name}" does not exist')


def test_an_unreachable_database_hides_its_password(tmp_path: Path) -> None:
    url = f"postgresql://postgres:hunter2@127.0.0.1:{free_port()}/longplay"
    done = longplay(tmp_path, "keys", "create", "alice", LONGPLAY_DATABASE_URL=url)
    assert done.returncode == 1, done.stderr
    assert "hunter2" not in done.stderr
    assert_short(done, "cannot open the database at postgresql://postgres:***@127.0.0.1")


def test_a_sqlite_database_in_no_folder_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("not a folder")
    url = f"sqlite:///{tmp_path / 'a-file' / 'longplay.db'}"
    done = longplay(tmp_path, "schema", "upgrade", LONGPLAY_DATABASE_URL=url)
    assert done.returncode == 1, done.stderr
    assert_short(done, f"cannot open the database at {url}")


def test_a_data_folder_or_database_others_can_read_is_warned_about(tmp_path: Path) -> None:
    """A folder made by hand and filled from a backup keeps the copy's modes: every
    command says so, with the command that closes it; one made by longplay is quiet."""
    made = longplay(tmp_path, "schema", "upgrade")
    assert made.returncode == 0 and "open to other users" not in made.stderr, made.stderr
    assert (tmp_path / "data").stat().st_mode & 0o777 == 0o700

    restored = tmp_path / "restored"
    restored.mkdir(mode=0o755)
    restored.chmod(0o755)
    outside = tmp_path / "db"
    outside.mkdir()
    database = outside / "longplay.db"
    made = longplay(tmp_path, "schema", "upgrade", LONGPLAY_DATABASE_URL=f"sqlite:///{database}")
    assert made.returncode == 0, made.stderr
    database.chmod(0o644)
    done = longplay(
        tmp_path,
        "cleanup",
        "--dry-run",
        LONGPLAY_DATA_DIR=str(restored),
        LONGPLAY_DATABASE_URL=f"sqlite:///{database}",
    )
    assert done.returncode == 0, done.stderr
    assert f"{restored} is open to other users of this machine (mode 755)" in done.stderr
    assert f"chmod 700 {restored}" in done.stderr
    assert f"chmod 600 {database}" in done.stderr
    restored.chmod(0o700)
    database.chmod(0o600)
    quiet = longplay(
        tmp_path,
        "cleanup",
        "--dry-run",
        LONGPLAY_DATA_DIR=str(restored),
        LONGPLAY_DATABASE_URL=f"sqlite:///{database}",
    )
    assert quiet.returncode == 0 and "open to other users" not in quiet.stderr, quiet.stderr
