"""Music bench: a ``transcribe-music`` job against the Basic Pitch model called directly,
on the same recording with the same threads.

Run ``.venv/bin/python bench/music.py [--seconds S] [--repeat N] [--threads T]``.
It plays about S seconds of music (a melody over chords, tones with harmonics) into a
WAV file, then runs Basic Pitch's ``nmp.onnx`` on it directly (warm, timed: decode to
22,050 Hz mono, the windows through ONNX Runtime, as a team would call the model
without longplay), starts a private deployment (embedded Redis, SQLite, ``longplay
api`` and one ``longplay worker`` process with ``LONGPLAY_ENGINE_THREADS=T``), warms
it with one job, and runs the same recording as jobs through the HTTP API: upload,
queue, decode, the model, notes, beat, quantize, MIDI, MusicXML (written and read
back), the picture, downloads. Each figure is the median of N runs, direct and job
alternating. It prints real-time factors and the job's overhead over the model, and
exits non-zero only when a job failed.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from dispatch import BenchError, Deployment, step
from speech import Jobs, Timing, alternate

from longplay.engines.notes import (
    SAMPLE_RATE,
    BasicPitchModel,
    model_file,
    window_count,
    window_of,
)
from longplay.media import AudioEncoder, decode
from longplay.settings import Settings

AIM_OVERHEAD = 0.10
PROGRESSION = [(48, 60, 64, 67), (53, 65, 69, 72), (55, 67, 71, 74), (48, 60, 64, 67)]
TUNE = [72, 74, 76, 77, 79, 77, 76, 74]


def tone(pitch: int, seconds: float) -> np.ndarray:
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    f0 = 440.0 * 2 ** ((pitch - 69) / 12)
    wave = sum(0.6**k * np.sin(2 * np.pi * f0 * (k + 1) * t) for k in range(5))
    return np.asarray(wave * np.exp(-2 * t) * np.minimum(1, t / 0.01), np.float32)


def music(seconds: float) -> np.ndarray:
    """A chord every two beats and a melody in eighths over it, at 120 a minute."""
    audio = np.zeros(int(seconds * SAMPLE_RATE) + SAMPLE_RATE, np.float32)
    for bar in range(int(seconds)):
        chord = PROGRESSION[bar % len(PROGRESSION)]
        for pitch in chord:
            start = bar * SAMPLE_RATE
            sound = tone(pitch, 0.95)
            audio[start : start + len(sound)] += 0.08 * sound
        for step_ in range(4):
            start = bar * SAMPLE_RATE + step_ * SAMPLE_RATE // 4
            sound = tone(TUNE[(bar * 4 + step_) % len(TUNE)], 0.24)
            audio[start : start + len(sound)] += 0.15 * sound
    return audio[: int(seconds * SAMPLE_RATE)]


class Direct:
    """Basic Pitch's ONNX model called as a team would call it without longplay."""

    def __init__(self, threads: int) -> None:
        self.model = BasicPitchModel.load(model_file(Settings()), device="cpu", threads=threads)
        self.run(np.zeros(SAMPLE_RATE, np.float32))

    def transcribe(self, path: Path) -> Timing:
        started, cpu = time.perf_counter(), time.process_time()
        blocks = decode(path, sample_rate=SAMPLE_RATE, channels=1)
        audio = np.concatenate([block.samples[:, 0] for block in blocks])
        self.run(audio)
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
        return Timing(elapsed, cpu, len(audio) / SAMPLE_RATE)

    def run(self, audio: np.ndarray) -> None:
        count = window_count(len(audio))
        for first in range(0, count, 4):  # the batch the worker uses by default
            windows = [window_of(audio, i) for i in range(first, min(count, first + 4))]
            self.model.activations(np.stack(windows))


def report(direct: Timing, job: Timing, threads: int) -> None:
    overhead = job.seconds / direct.seconds - 1
    print(f"\nmusic bench, {threads} thread(s); median wall time, real-time factor (x)")
    print(f"{'audio s':>9}{'model s':>9}{'model x':>9}{'job s':>8}{'job x':>8}{'overhead':>10}"
          f"{'model cpu':>11}{'job cpu':>9}")  # fmt: skip
    print(f"{direct.audio:>9.1f}{direct.seconds:>9.2f}{direct.rtf:>9.1f}{job.seconds:>8.2f}"
          f"{job.rtf:>8.1f}{overhead:>9.1%}{direct.cpu:>11.2f}{job.cpu:>9.2f}")  # fmt: skip
    verdict = "met" if overhead < AIM_OVERHEAD else "NOT met"
    print(f"\naim: job overhead over the model under {AIM_OVERHEAD:.0%}: {verdict} "
          f"({overhead:.1%})")  # fmt: skip


def bench(args: argparse.Namespace, root: Path, stack: contextlib.ExitStack) -> None:
    recording = root / "music.wav"
    with AudioEncoder(recording, format="wav", sample_rate=SAMPLE_RATE, channels=1) as out:
        out.write(music(args.seconds)[:, None])
    step(f"{args.seconds:g} s of music; loading the model ({args.threads} threads)")
    direct = Direct(args.threads)

    step("starting Redis, SQLite, the API and one worker")
    dep = stack.enter_context(Deployment(root, "sqlite", 1))
    dep.env["LONGPLAY_ENGINE_THREADS"] = str(args.threads)
    dep.start_worker(1, wait=False)
    dep.start_api(timeout=60)
    jobs = Jobs(
        stack.enter_context(dep.client()),
        lambda: sum(used for part, used in dep.cpu().items() if part != "client"),
    )
    step("warming the worker: one job")
    jobs.run("transcribe-music", params={}, file=recording)

    step(f"transcribe-music: {args.repeat} x direct and job")
    model, job = alternate(
        args.repeat,
        lambda: direct.transcribe(recording),
        lambda: jobs.timed("transcribe-music", args.seconds, params={}, file=recording),
    )
    report(model, job, args.threads)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=120.0, help="music length")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each, median kept")
    parser.add_argument("--threads", type=int, default=2, help="model threads, both sides")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with (
        tempfile.TemporaryDirectory(prefix="longplay-music-bench-") as tmp,
        contextlib.ExitStack() as stack,
    ):
        try:
            bench(args, Path(tmp), stack)
        except (BenchError, TimeoutError) as exc:
            print(f"bench failed: {exc}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
