"""The fault bench at a small size: a worker killed, Redis and the API restarted and the
database taken away during a run lose no job and run none twice.

``bench/faults.py`` with its default sizes gives the figures in the README; here it runs
6 jobs of 1-2 s per fault, and every count must be exact.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import PG_ADMIN, postgres_reachable

BENCH = Path(__file__).resolve().parent.parent / "bench" / "faults.py"
SMALL = ["--jobs", "6", "--min-seconds", "1", "--max-seconds", "2", "--concurrency", "2"]


def run_bench(tmp_path: Path, work: Path, *args: str, timeout: float) -> list[dict[str, object]]:
    """The bench's report, kept in ``tmp_path``; ``work`` is its ``TMPDIR``."""
    report = tmp_path / "faults.json"
    run = subprocess.run(
        [sys.executable, str(BENCH), *SMALL, "--outage", "3", "--json", str(report), *args],
        env={**os.environ, "TMPDIR": str(work), "LONGPLAY_BENCH_POSTGRES_URL": PG_ADMIN},
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert run.returncode == 0, f"stdout:\n{run.stdout}\nstderr:\n{run.stderr[-6000:]}"
    assert list(work.iterdir()) == [], "the bench left files behind"
    assert "fault" in run.stdout and "duplicated" in run.stdout, run.stdout
    return list(json.loads(report.read_text()))


def check(outcomes: list[dict[str, object]], faults: list[str]) -> None:
    assert [o["fault"] for o in outcomes] == faults
    for outcome in outcomes:
        summary = {k: outcome[k] for k in ("fault", "completed", "lost", "duplicated", "followed")}
        assert outcome["submitted"] == outcome["completed"] == 6, summary
        assert outcome["lost"] == 0 and outcome["duplicated"] == 0, outcome
        assert outcome["followed"] == 6, f"a client stopped following: {outcome}"


@pytest.mark.timeout(420)
def test_no_job_lost_or_run_twice_on_sqlite(tmp_path: Path, bench_tmp: Path) -> None:
    faults = ["worker", "redis", "api", "database"]
    outcomes = run_bench(tmp_path, bench_tmp, "--faults", ",".join(faults), timeout=400)
    check(outcomes, faults)
    by_fault = {o["fault"]: o for o in outcomes}
    assert "down: workers" in str(by_fault["worker"]["healthz"])
    assert "down: store" in str(by_fault["database"]["healthz"])


@pytest.mark.timeout(300)
def test_no_job_lost_or_run_twice_when_postgres_goes_away(tmp_path: Path, bench_tmp: Path) -> None:
    if not postgres_reachable():
        if os.environ.get("CI"):
            pytest.fail("CI must have PostgreSQL")
        pytest.skip("no PostgreSQL")
    outcomes = run_bench(
        tmp_path, bench_tmp, "--database", "postgresql", "--faults", "database", timeout=280
    )
    check(outcomes, ["database"])
    assert "down: store" in str(outcomes[0]["healthz"])
