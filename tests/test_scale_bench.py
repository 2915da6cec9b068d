"""The scale bench runs end to end at a tiny size, so it cannot rot unnoticed.

Only that it works, reports every figure and plan, and removes its database is checked
here, never the figures.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
from conftest import PG_ADMIN, postgres_reachable

BENCH = Path(__file__).resolve().parent.parent / "bench" / "scale.py"
NUMBER = r"\d+\.\d+"


@pytest.mark.timeout(120)
def test_scale_bench_runs_and_reports(bench_tmp: Path) -> None:
    if not postgres_reachable():
        if os.environ.get("CI"):
            pytest.fail("CI must have PostgreSQL")
        pytest.skip("no PostgreSQL")
    tiny = ["--queued", "600", "--owners", "30", "--finished", "2000", "--repeat", "2"]
    run = subprocess.run(
        [sys.executable, str(BENCH), *tiny, "--submits", "5"],
        env={**os.environ, "TMPDIR": str(bench_tmp), "LONGPLAY_BENCH_POSTGRES_URL": PG_ADMIN},
        capture_output=True,
        text=True,
        timeout=110,
    )
    assert run.returncode == 0, f"stdout:\n{run.stdout}\nstderr:\n{run.stderr[-6000:]}"
    out = run.stdout
    for work in (
        "admission round",
        "beat's upkeep",
        "queue positions, page of 50",
        r"GET /v1/jobs",
        r"GET /v1/jobs\?status=queued",
        r"GET /v1/jobs, page 2",
        r"GET /v1/jobs\?status=completed at 2,000",
    ):
        row = rf"^{work}\s+{NUMBER}\s+{NUMBER}\s+{NUMBER}\s+[1-9]\d*  \S"
        assert re.search(row, out, re.MULTILINE), f"no row {work!r} in:\n{out}"
    for aim in ("admission round", r"GET /v1/jobs, page 2"):
        verdict = rf"^verdict: {aim} = {NUMBER} ms \(aim < 20 ms\): (MET|MISSED)$"
        assert re.search(verdict, out, re.MULTILINE), out
    submit = rf"^\s+([\d,]+)\s+{NUMBER}\s+{NUMBER}\s+({NUMBER})\s+(\d+)\s+{NUMBER}$"
    sizes = re.findall(submit, out, re.MULTILINE)
    assert [size for size, _, _ in sizes] == ["0", "200", "2,000"], out
    assert float(sizes[0][1]) == 1.0 and all(int(pages) > 0 for _, _, pages in sizes)
    assert out.count("\n-- ") >= 10 and "Index" in out, "the plans are missing"
    database = re.search(r"database (longplay_scale_\w+)", out)
    assert database is not None, out
    with psycopg.connect(PG_ADMIN) as conn:
        left = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [database[1]])
        assert left.fetchone() is None, "the bench left its database behind"
    assert list(bench_tmp.iterdir()) == [], "the bench left files behind"
