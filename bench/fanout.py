"""Fan-out bench: one long transcription on 1 and on more worker processes, and what the
fan-out machinery costs against one pass.

Run ``.venv/bin/python bench/fanout.py [--seconds S] [--piece P] [--repeat N]
[--processes 2,4] [--recording FILE]``. It has Piper say about S seconds of English
with pauses (or reads FILE, saying it there first if it does not exist), then for each
set-up starts a private deployment (embedded Redis, SQLite, ``longplay api`` and one
``longplay worker``) and submits the recording as a ``transcribe`` job over HTTP,
N + 1 times, the first one only to warm the models:

- **one pass, 1 process**: fan-out off (``LONGPLAY_STT_FAN_OUT_ABOVE`` above S);
- **fan-out, 1 process**: pieces of at most P seconds, all run by the job's own
  process: the machinery's overhead against one pass;
- **fan-out, K processes** for each K of ``--processes``: the same pieces over a pool
  of K (expect close to Kx on K free cores).

Engine threads are the default (the cores shared out among the pool's processes).
It prints the median wall time of each, the CPU seconds the worker used for it (its
processes and their children, from ``/proc``: a busy machine disturbs this less than
the wall time), the ratios, and the word error rate of each transcript against the
one pass; it exits non-zero only when a job failed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import jiwer
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
import harness
from dispatch import cpu_seconds

from longplay.engines import get_synthesizer
from longplay.media import AudioEncoder, probe

BENCH = Path(__file__).resolve().parent
SENTENCES = (
    "The museum opens its doors early in the morning.",
    "A guide walks the first visitors through the painting hall.",
    "Large paintings of the sea hang along the western wall.",
    "Children draw the ships they see in the glass cases.",
    "A quiet garden lies behind the main building.",
    "Students sketch the statues near the fountain.",
    "The library upstairs keeps letters from the founders.",
    "In the afternoon a musician plays the old piano.",
    "Volunteers answer questions at the front desk.",
    "The shop sells postcards and small wooden boats.",
    "The doors close again in the evening.",
)
PAUSES_S = (0.8, 1.3, 1.0, 2.2)


@dataclass(frozen=True)
class Setup:
    name: str
    concurrency: int
    fan_out: bool


def setups(processes: list[int]) -> list[Setup]:
    """One pass and fan-out on one process, then fan-out on each pool size asked for."""
    wider = [Setup(f"fan-out, {k} processes", k, True) for k in processes if k > 1]
    return [Setup("one pass, 1 process", 1, False), Setup("fan-out, 1 process", 1, True), *wider]


def step(message: str) -> None:
    print(f"... {message}", file=sys.stderr, flush=True)


def normalized(text: str) -> str:
    return " ".join(re.sub(r"[^\w\s']", " ", text.lower()).split())


def make_recording(path: Path, seconds: float) -> float:
    """The sentences over and over with pauses, until ``seconds`` are said, in a WAV file
    (or an MP3 where ``path`` ends in ``.mp3``); its length."""
    synthesizer = get_synthesizer()
    speeches = [synthesizer.synthesize(s) for s in SENTENCES]
    rate = speeches[0].sample_rate
    parts: list[np.ndarray] = []
    length = 0
    n = 0
    while length < seconds * rate:
        speech = speeches[n % len(speeches)].samples
        pause = np.zeros(round(PAUSES_S[n % len(PAUSES_S)] * rate), np.float32)
        parts += [speech, pause]
        length += len(speech) + len(pause)
        n += 1
    kind = "mp3" if path.suffix == ".mp3" else "wav"  # an mp3 is small enough to carry
    with AudioEncoder(path, format=kind, sample_rate=rate, channels=1) as encoder:
        encoder.write(np.concatenate(parts).astype(np.float32)[:, None])
    return length / rate


@dataclass(frozen=True)
class Run:
    wall: float
    cpu: float
    """CPU seconds of the worker's processes during the run."""
    text: str


@contextlib.contextmanager
def deployment(
    root: Path, setup: Setup, seconds: float, piece: float
) -> Iterator[tuple[httpx.Client, int]]:
    dep = harness.Deployment(root, "sqlite", plugin="bench_kinds", plugin_dir=BENCH, logs=True)
    with dep:
        above = 10.0 if setup.fan_out else seconds * 10
        dep.env.update(LONGPLAY_STT_FAN_OUT_ABOVE=str(above), LONGPLAY_STT_FAN_OUT_PIECE=str(piece))
        dep.start_worker(setup.concurrency, wait=False)
        dep.start_api(timeout=60)
        with dep.client(timeout=300) as client:
            yield client, dep.processes["worker"].pid


def transcribe(client: httpx.Client, recording: Path, worker: int) -> Run:
    """Wall time from submit to completed, the worker's CPU time, the transcript's text."""
    cpu = cpu_seconds({"worker": worker})["worker"]
    started = time.perf_counter()
    response = client.post(
        "/v1/jobs",
        data={"kind": "transcribe", "params": "{}"},
        files={"file": (recording.name, recording.read_bytes(), "audio/wav")},
    )
    response.raise_for_status()
    job_id = response.json()["id"]
    while True:
        job = client.get(f"/v1/jobs/{job_id}").json()
        if job["status"] in {"completed", "failed", "cancelled", "expired"}:
            break
        time.sleep(0.05)
    took = time.perf_counter() - started
    used = cpu_seconds({"worker": worker})["worker"] - cpu
    if job["status"] != "completed":
        raise RuntimeError(f"job {job_id} ended {job['status']}: {json.dumps(job['error'])}")
    [txt] = [o for o in job["outputs"] if o["name"].endswith(".txt")]
    return Run(took, used, client.get(txt["links"]["content"]).text)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=180.0, help="length of the recording")
    parser.add_argument("--piece", type=float, default=30.0, help="longest piece, in seconds")
    parser.add_argument("--repeat", type=int, default=1, help="timed runs of each set-up")
    parser.add_argument(
        "--processes", default="2", help="pool sizes to fan out over, beside 1 (e.g. 2,4)"
    )
    parser.add_argument(
        "--recording",
        type=Path,
        help="a recording to transcribe; said there first (.wav or .mp3) if it does not exist",
    )
    args = parser.parse_args()
    runs_of = setups(sorted({int(k) for k in args.processes.split(",")}))
    with tempfile.TemporaryDirectory(prefix="lp-fanout-") as tmp:
        root = Path(tmp)
        recording = args.recording or root / "long.wav"
        if recording.exists():
            length = probe(recording).duration
        else:
            step(f"saying about {args.seconds:g} s of speech with Piper")
            length = make_recording(recording, args.seconds)
        times: dict[str, float] = {}
        cpus: dict[str, float] = {}
        texts: dict[str, str] = {}
        for n, setup in enumerate(runs_of):
            step(f"{setup.name}: starting a deployment")
            try:
                with deployment(root / f"dep-{n}", setup, length, args.piece) as (client, pid):
                    transcribe(client, recording, pid)  # warms the models
                    runs = [transcribe(client, recording, pid) for _ in range(args.repeat)]
            except (RuntimeError, TimeoutError, httpx.HTTPError) as exc:
                print(f"bench broke: {exc}", file=sys.stderr)
                return 1
            times[setup.name] = statistics.median(r.wall for r in runs)
            cpus[setup.name] = statistics.median(r.cpu for r in runs)
            texts[setup.name] = runs[-1].text
    one, alone = times[runs_of[0].name], times[runs_of[1].name]
    print(
        f"\nfan-out bench: one transcription of {length:.0f} s, pieces of at most {args.piece:g} s"
    )
    print(
        f"{'set-up':<24}{'wall (s)':>10}{'x real time':>13}{'CPU (s)':>10}{'WER vs one pass':>17}"
    )
    for setup in runs_of:
        wer = jiwer.wer(normalized(texts[runs_of[0].name]), normalized(texts[setup.name]))
        took = times[setup.name]
        cpu = cpus[setup.name]
        print(f"{setup.name:<24}{took:>10.2f}{length / took:>13.1f}{cpu:>10.1f}{wer:>17.2%}")
    print()
    for setup in runs_of[2:]:
        k, took = setup.concurrency, times[setup.name]
        print(f"{k} processes against 1 (fan-out both): {alone / took:.2f}x faster")
        print(f"{k} processes fanned out against one pass on 1: {one / took:.2f}x faster")
    print(f"fan-out machinery on 1 process against one pass: {alone / one - 1:+.1%} time")
    extra_cpu = cpus[runs_of[1].name] / cpus[runs_of[0].name] - 1
    print(f"fan-out machinery on 1 process against one pass: {extra_cpu:+.1%} CPU")
    return 0


if __name__ == "__main__":
    sys.exit(main())
