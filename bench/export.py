"""Export bench: an ``export`` job's memory and speed against the bytes it writes.

Run ``.venv/bin/python bench/export.py [--files N] [--mib M]``.
It starts a private deployment (embedded Redis, SQLite, ``longplay api`` and one
``longplay worker`` process), uploads a 1 MiB file and N files of M MiB of random
bytes (incompressible, as audio is), each the input of a ``noop`` job, and exports
twice with ``include_inputs``: first only the small job, then everything. It prints
the peak resident memory (``VmHWM``) of the worker's pool process after each export
and their ratio (flat memory: near 1 whatever the size), and the big export's speed
against copying the same files with ``shutil.copyfile`` in this process (the ratio is
what zipping, progress and the manifest cost). Exits non-zero only when a job failed.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
import zipfile
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
from speech import memory_of, pool_processes

# The process harness is shared with the tests, and lives with them.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
import harness

BENCH = Path(__file__).parent
OWNER = "bench"
MIB = 1 << 20


def step(message: str) -> None:
    print(f"... {message}", file=sys.stderr, flush=True)


def random_file(path: Path, mib: int) -> Path:
    with path.open("wb") as out:
        for _ in range(mib):
            out.write(os.urandom(MIB))
    return path


def run(client: httpx.Client, kind: str, **body: Any) -> dict[str, Any]:
    """Submit a job and wait for its end; fail the bench unless it completed."""
    response = client.post("/v1/jobs", json={"kind": kind, **body})
    response.raise_for_status()
    job_id = response.json()["id"]

    def finished() -> dict[str, Any] | None:
        job = dict(client.get(f"/v1/jobs/{job_id}").json())
        return job if job["status"] in ("completed", "failed", "cancelled") else None

    job = harness.wait_until(finished, timeout=1800, every=0.2, what=f"{kind} job {job_id}")
    if job["status"] != "completed":
        raise RuntimeError(f"{kind} job {job_id} ended {job['status']}: {job['error']}")
    return dict(job)


def upload_job(client: httpx.Client, path: Path) -> dict[str, Any]:
    """Upload ``path`` and run a ``noop`` job that names it as its input."""
    with path.open("rb") as data:
        response = client.post("/v1/artifacts", files={"file": (path.name, data, "audio/wav")})
    response.raise_for_status()
    return run(client, "noop", inputs=[response.json()["id"]])


def seconds(job: dict[str, Any]) -> float:
    started, finished = (datetime.fromisoformat(job[k]) for k in ("started_at", "finished_at"))
    return (finished - started).total_seconds()


def bench(args: argparse.Namespace, root: Path) -> None:
    data = root / "data"
    files = [random_file(root / "small.wav", 1)]
    files += [random_file(root / f"big-{n}.wav", args.mib) for n in range(args.files)]
    total = sum(f.stat().st_size for f in files[1:])
    step(f"{args.files} files of {args.mib} MiB made; starting the deployment")
    with harness.Deployment(
        data,
        "sqlite",
        plugin="bench_kinds",
        plugin_dir=BENCH,
        env={"LONGPLAY_MAX_UPLOAD_BYTES": str((args.mib + 1) * MIB)},
        logs=True,
    ) as deployment:
        deployment.start_worker(1, wait=False)
        deployment.start_api(timeout=60)
        client = deployment.client(OWNER, timeout=600)
        small = upload_job(client, files[0])
        for path in files[1:]:
            upload_job(client, path)
        [pool] = pool_processes(deployment.processes["worker"].pid)

        step("exporting the small job")
        run(client, "export", params={"include_inputs": True, "until": small["finished_at"]})
        small_peak = memory_of(pool).peak
        step(f"exporting everything ({total / MIB:.0f} MiB)")
        big = run(client, "export", params={"include_inputs": True, "kinds": ["noop"]})
        big_peak = memory_of(pool).peak
        [archive] = big["outputs"]
        with zipfile.ZipFile(deployment.data_dir / "files" / archive["id"]) as zipped:
            in_zip = sum(i.file_size for i in zipped.infolist() if i.filename != "manifest.json")

    step(f"copying the same {total / MIB:.0f} MiB with shutil.copyfile")
    started = time.perf_counter()
    for path in files[1:]:
        shutil.copyfile(path, root / f"copy-{path.name}")
    copied = time.perf_counter() - started

    exported = seconds(big)
    print(f"export of {in_zip / MIB:.0f} MiB ({args.files + 1} files), worker pool process:")
    print(f"  peak resident after a 1 MiB export:      {small_peak / MIB:8.0f} MiB")
    print(f"  peak resident after the big export:      {big_peak / MIB:8.0f} MiB")
    print(f"  ratio (flat memory is 1):                {big_peak / small_peak:8.2f}")
    print(f"  export job, start to end:                {exported:8.1f} s "
          f"({in_zip / MIB / exported:.0f} MiB/s)")  # fmt: skip
    print(f"  shutil.copyfile of the same files:       {copied:8.1f} s "
          f"({total / MIB / copied:.0f} MiB/s)")  # fmt: skip
    print(f"  ratio export / copy:                     {exported / copied:8.2f}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=4, help="big files to export")
    parser.add_argument("--mib", type=int, default=256, help="size of each big file")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="longplay-export-bench-") as tmp:
        try:
            bench(args, Path(tmp))
        except (RuntimeError, TimeoutError) as exc:
            print(f"bench failed: {exc}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
