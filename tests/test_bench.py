"""The dispatch bench runs end to end at a tiny size, so it cannot rot unnoticed.

Only that it works and reports is checked here, never its figures: they depend on the
machine and on whatever else runs on it.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent / "bench" / "dispatch.py"
NUMBER = r"-?\d+\.\d+"


def test_dispatch_bench_runs_and_reports_ratios(bench_tmp: Path) -> None:
    run = subprocess.run(
        [sys.executable, str(BENCH), "--jobs", "20", "--latency-samples", "10", "--gap", "0.02"],
        env={**os.environ, "TMPDIR": str(bench_tmp)},
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert run.returncode == 0, f"stdout:\n{run.stdout}\nstderr:\n{run.stderr}"
    out = run.stdout
    for metric in (
        r"submit round trip p50 \(ms\)",
        r"submit round trip p99 \(ms\)",
        r"submit returned -> running p99 \(ms\)",
        r"throughput, HTTP submit \(jobs/s\)",
        r"throughput, in-process enqueue \(jobs/s\)",
    ):
        row = rf"^{metric}\s+({NUMBER})\s+({NUMBER})\s+({NUMBER})$"
        assert re.search(row, out, re.MULTILINE), f"no row {metric!r} in:\n{out}"
    rates = re.search(rf"^throughput, HTTP submit \(jobs/s\)\s+({NUMBER})\s+({NUMBER})", out, re.M)
    assert rates is not None and float(rates[1]) > 0 and float(rates[2]) > 0
    assert re.search(rf"^worker \(main \+ pool\)(\s+{NUMBER}){{3}}$", out, re.MULTILINE), out
    for verdict in (
        rf"throughput ratio HTTP = {NUMBER} \(aim >= 0\.80\): (MET|MISSED)",
        rf"throughput ratio in-process = {NUMBER} \(aim >= 0\.80\): (MET|MISSED)",
        rf"submit p99 = {NUMBER} ms \(aim < 20 ms\): (MET|MISSED)",
    ):
        assert re.search(rf"^verdict: {verdict}$", out, re.MULTILINE), f"no verdict in:\n{out}"
    assert list(bench_tmp.iterdir()) == [], "the bench left files behind"


SPEECH_BENCH = BENCH.parent / "speech.py"


def test_speech_bench_runs_and_reports_ratios(bench_tmp: Path) -> None:
    run = subprocess.run(
        [sys.executable, str(SPEECH_BENCH), "--seconds", "8", "--repeat", "1"],
        env={**os.environ, "TMPDIR": str(bench_tmp)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, f"stdout:\n{run.stdout}\nstderr:\n{run.stderr}"
    out = run.stdout
    for kind, aim in (("synthesize", 10), ("transcribe", 5)):
        row = rf"^{kind}\s+({NUMBER})\s+({NUMBER})\s+({NUMBER})\s+({NUMBER})\s+({NUMBER})\s+-?\d"
        match = re.search(row, out, re.MULTILINE)
        assert match is not None, f"no row for {kind} in:\n{out}"
        audio, direct_s, _, job_s, _ = map(float, match.groups())
        assert audio > 3 and direct_s > 0 and job_s > 0
        assert re.search(rf"^aim {kind}: overhead under {aim}%: (met|NOT met)", out, re.M), out
    speed = r"^aim transcribe: faster than 8x real time as a job: (met|NOT met)"
    assert re.search(speed, out, re.MULTILINE), out
    memory = r"^aim memory: .*: (met|NOT met) \(resident \d+ MiB, peak (\d+) MiB\)$"
    found = re.search(memory, out, re.MULTILINE)
    assert found is not None, out
    assert int(found[2]) > 300, "that is not the memory of a process with the engines loaded"
    # onnxruntime (under piper) leaves a session file in the temporary folder by design.
    left = [p for p in bench_tmp.iterdir() if p.name != ".ses"]
    assert left == [], "the bench left files behind"
