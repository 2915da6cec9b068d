"""Podcast bench: the ``podcast`` kind's steps, timed one by one, against piper alone
voicing the same turns.

Run ``.venv/bin/python bench/podcast.py [--minutes M] [--threads T] [--runs R]``.
It makes a collection of made-up facts (enough for M minutes twice over) and runs every
step of a ``podcast`` job in this process with the bundled models (warm: the models
are loaded first and timed apart) and a cold turn cache. Then it voices the very turns
of the finished script with piper directly, sentence by sentence as the job does, with
the same threads, and runs the job's audio steps again on a cold cache, alternating,
R times each. It prints each step's time, the episode's length, each run, and the
ratio of the medians of the job's audio steps (voicing, combining, storing) to piper
alone: the overhead of the cache, the length fit, mastering, checks and files (aim:
under 10 %). Two runs of piper alone on this 2-core machine differ by up to 10 %,
hence the alternation and the medians.

The steps run in this process, not through a deployment: what the queue and the API
add is the same for every kind and ``bench/speech.py`` measures it.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

AIM_OVERHEAD = 0.10
AUDIO_STEPS = ("generating_audio", "combining_audio", "storing_audio")
PLACES = ["Skerry Point", "Quell Harbour", "Marrow Bay", "Fenwick Sound", "Osric Cove"]
THINGS = ["lighthouse", "tide gauge", "ferry", "harbour wall", "weather station", "lifeboat"]
VERBS = ["was built", "was rebuilt", "was repaired", "was moved", "was painted", "was opened"]


def collection(minutes: float) -> list[Any]:
    """Passages of made-up facts, three to five sentences each, five documents."""
    from longplay.framework.library import Passage

    rng = random.Random(1)
    passages: list[Passage] = []
    words, needed = 0, minutes * 60 * 2.6 * 2.5
    while words < needed:
        n = len(passages)
        sentences = []
        for _ in range(rng.randint(3, 5)):
            place, thing, verb = rng.choice(PLACES), rng.choice(THINGS), rng.choice(VERBS)
            year, count = rng.randint(1800, 2020), rng.randint(2, 90)
            sentences.append(
                f"The {thing} at {place} {verb} in {year}, and {count} people worked on it "
                f"through that season."
            )
        text = " ".join(sentences)
        words += len(text.split())
        document = f"Records {n % 5 + 1}"
        passages.append(
            Passage(f"pas-{n}", "col-bench", f"doc-{n % 5}", document, n, text, f"Part {n // 5}")
        )
    return passages


def podcast_context(minutes: float, folder: Path) -> tuple[Any, Any]:
    """A step context for a podcast of ``minutes`` from the made-up collection, and the
    kind."""
    from longplay.framework import InputFile, StepContext, get_kind
    from longplay.kinds import load
    from longplay.kinds.podcast import PodcastParams

    passages = collection(minutes)

    class Library:
        def search(self, collection_id: str, query: str, limit: int = 10) -> list[Any]:
            return []

        def passages(self, collection_id: str) -> list[Any]:
            return list(passages)

    class BenchContext(StepContext[PodcastParams]):
        def __init__(self) -> None:
            self.job_id = "bench"
            self.params = PodcastParams(collection="col-bench", minutes=minutes)
            self.inputs: Sequence[InputFile] = []
            self.workdir = folder
            self.state: dict[str, Any] = {}

        @property
        def library(self) -> Any:
            return Library()

        def advance(self, done: float, total: float, **details: Any) -> None:
            pass

        def add_output(
            self, path: Path, *, name: str | None = None, media_type: str | None = None
        ) -> None:
            pass

        def outputs(self, step: str | None = None) -> list[InputFile]:
            return []

        def note(self, message: str, **data: Any) -> None:
            pass

    load()
    kind = get_kind("podcast")
    assert kind is not None
    return BenchContext(), kind


def run_steps(ctx: Any, steps: Sequence[Any]) -> dict[str, tuple[float, float]]:
    """Run ``steps`` in order; the wall-clock and CPU seconds each took. The state goes
    through JSON after each, as it does between the steps of a job."""
    times: dict[str, tuple[float, float]] = {}
    for step in steps:
        start, cpu = time.perf_counter(), time.process_time()
        step.run(ctx)
        ctx.state = json.loads(json.dumps(ctx.state))
        times[step.name] = (time.perf_counter() - start, time.process_time() - cpu)
    return times


def piper_alone(script: dict[str, Any]) -> tuple[float, float]:
    """Wall-clock and CPU seconds piper takes to voice the script's turns, sentence by
    sentence."""
    from longplay.engines.tts import get_synthesizer
    from longplay.kinds.podcast import PodcastParams, _speakers
    from longplay.text.sentences import speakable_sentences

    voices = {s.name: s.voice for s in _speakers(PodcastParams(collection="x"))}
    synthesizer = get_synthesizer()
    start, cpu = time.perf_counter(), time.process_time()
    for turn in script["turns"]:
        for sentence in speakable_sentences(turn["text"]):
            synthesizer.synthesize(sentence.text, voice=voices[turn["speaker"]])
    return time.perf_counter() - start, time.process_time() - cpu


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=15.0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=3, help="of each side, alternating")
    args = parser.parse_args()
    job: list[tuple[float, float]] = []
    piper: list[tuple[float, float]] = []
    with tempfile.TemporaryDirectory(prefix="longplay-podcast-bench-") as folder:
        os.environ["LONGPLAY_DATA_DIR"] = folder  # a cold turn cache
        os.environ["LONGPLAY_ENGINE_THREADS"] = str(args.threads)
        work = Path(folder) / "work"
        work.mkdir()
        ctx, kind = podcast_context(args.minutes, work)
        audio = [step for step in kind.steps if step.name in AUDIO_STEPS]
        times = run_steps(ctx, [step for step in kind.steps if step.name not in AUDIO_STEPS])
        written = ctx.state
        for run in range(args.runs):
            shutil.rmtree(Path(folder) / "cache", ignore_errors=True)
            ctx.state = json.loads(json.dumps(written))
            run_times = run_steps(ctx, audio)
            times = times if run else {**times, **run_times}
            walls, cpus = zip(*run_times.values(), strict=True)
            job.append((sum(walls), sum(cpus)))
            piper.append(piper_alone(ctx.state["script"]))
    episode = ctx.state["episode"]
    print(f"podcast of {args.minutes:g} minutes, {args.threads} threads: wall s, CPU s (run 1)")
    for name, (wall, cpu) in times.items():
        print(f"  {name:20s} {wall:7.2f} {cpu:7.2f}")
    wall, cpu = (sum(t[i] for t in times.values()) for i in (0, 1))
    print(f"  {'all steps':20s} {wall:7.2f} {cpu:7.2f}")
    turns = len(ctx.state["script"]["turns"])
    print(f"episode: {episode['duration']:.1f} s, {turns} turns, checks {episode['checks']}")
    print("audio steps, then piper alone, alternating (wall s / CPU s):")
    for run, (ours, theirs) in enumerate(zip(job, piper, strict=True), 1):
        print(
            f"  run {run}: {ours[0]:6.2f} / {ours[1]:6.2f}    {theirs[0]:6.2f} / {theirs[1]:6.2f}"
        )
    for i, measure in enumerate(("wall", "CPU")):
        ours_median = statistics.median(t[i] for t in job)
        theirs_median = statistics.median(t[i] for t in piper)
        print(
            f"{measure}: audio steps {ours_median:.2f} s vs piper alone {theirs_median:.2f} s "
            f"for the same turns (medians of {args.runs}): overhead "
            f"{ours_median / theirs_median - 1:+.1%} (aim < {AIM_OVERHEAD:.0%})"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
