"""Speech bench: longplay's ``synthesize`` and ``transcribe`` jobs against piper and
faster-whisper called directly, on the same text and audio with the same threads.

Run ``.venv/bin/python bench/speech.py [--seconds S] [--repeat N] [--threads T]
[--worker-env NAME=VALUE ...]``.
It voices about S seconds of English with piper directly (warm, timed), transcribes
that file with faster-whisper directly (warm, timed), then starts a private
deployment (embedded Redis, SQLite, ``longplay api`` and one ``longplay worker``
process with ``LONGPLAY_ENGINE_THREADS=T``), warms its engines with a short job
of each kind (``translate`` loads the LLM, ``transcribe-music`` the note model and
music21, so every engine of the default settings is loaded), and
runs the same synthesis and transcription as jobs through the HTTP API: upload,
queue, decode, model, outputs, download. Each figure is the median of N runs,
direct and job alternating. It prints real-time factors, the ratio of job time to
direct time (and of CPU time: the deployment's processes against this one's, which
a busy machine disturbs less), and the memory of the worker's pool process with
every engine loaded (resident now and at its peak), and exits non-zero only when a
job failed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import tempfile
import time
import wave
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from dispatch import BenchError, Deployment, step

from longplay.store.models import FINISHED

AIM_OVERHEAD = {"synthesize": 0.10, "transcribe": 0.05}
"""The capacity issue's aims: what each job may cost over its model called directly."""
AIM_TRANSCRIBE_RTF = 8.0
AIM_POOL_MEMORY = 1 << 30
"""Bytes a worker pool process may hold with every engine loaded."""
FINAL_EVENTS = frozenset(status.value for status in FINISHED)
"""A job's stream ends with an event named after its final status."""
PARAGRAPH = (
    "The river was quiet that morning, and the fog still sat low over the water. "
    "A small boat drifted past the old mill, where the wheel had not turned for years. "
    "On the bank, a woman in a green coat was reading the newspaper and drinking coffee. "
    "She looked up when the church bell rang nine times, then went back to her page. "
    "Further down the path, two children were arguing about the best way to skip stones. "
)


@dataclass(frozen=True)
class Timing:
    seconds: float
    """Wall-clock time of the work."""
    cpu: float
    """CPU seconds the work took, in all its threads and processes."""
    audio: float
    """Seconds of speech it made or read."""

    @property
    def rtf(self) -> float:
        """Real-time factor: seconds of audio per second of work."""
        return self.audio / self.seconds


def tune(path: Path) -> Path:
    """Four seconds of bench/music.py's music, for the music model's warm-up job."""
    from music import music  # here, not above: music.py imports this module

    from longplay.engines.notes import SAMPLE_RATE
    from longplay.media import AudioEncoder

    with AudioEncoder(path, format="wav", sample_rate=SAMPLE_RATE, channels=1) as out:
        out.write(music(4.0)[:, None])
    return path


def text_of(seconds: float) -> str:
    """Enough of :data:`PARAGRAPH` for about ``seconds`` of speech (~2.6 words a second)."""
    words = PARAGRAPH.split()
    wanted = max(20, round(seconds * 2.6))
    return " ".join(words[i % len(words)] for i in range(wanted))


def median_timing(timings: list[Timing]) -> Timing:
    return Timing(
        statistics.median(t.seconds for t in timings),
        statistics.median(t.cpu for t in timings),
        timings[0].audio,
    )


@dataclass(frozen=True)
class Memory:
    """What a process holds in RAM, from ``/proc/<pid>/status``."""

    resident: int
    """Bytes resident now (``VmRSS``)."""
    peak: int
    """The most bytes it ever held resident (``VmHWM``)."""


def memory_of(pid: int) -> Memory:
    fields = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
    )
    kib = {name: int(fields[name].split()[0]) for name in ("VmRSS", "VmHWM")}
    return Memory(resident=kib["VmRSS"] * 1024, peak=kib["VmHWM"] * 1024)


def pool_processes(worker_pid: int) -> list[int]:
    """The pool processes of the worker whose main process is ``worker_pid`` (Linux only)."""
    children = Path(f"/proc/{worker_pid}/task/{worker_pid}/children").read_text()
    return [int(pid) for pid in children.split()]


# -- direct calls ------------------------------------------------------------------------


class Direct:
    """piper and faster-whisper as a team would call them without longplay."""

    def __init__(self, threads: int) -> None:
        import onnxruntime
        from faster_whisper import WhisperModel
        from piper import PiperVoice
        from piper.config import PiperConfig

        from longplay.engines.models import piper_voice_file, whisper_model_dir
        from longplay.settings import Settings

        settings = Settings()
        voice_file = piper_voice_file(settings)
        options = onnxruntime.SessionOptions()  # PiperVoice.load would take every core
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self.voice = PiperVoice(
            session=onnxruntime.InferenceSession(str(voice_file), sess_options=options),
            config=PiperConfig.from_dict(json.loads(Path(f"{voice_file}.json").read_text())),
        )
        self.whisper = WhisperModel(
            str(whisper_model_dir(settings)),
            device="cpu",
            compute_type="int8",
            cpu_threads=threads,
            local_files_only=True,
        )
        self.synthesize("Warming up.", None)
        self.transcribe_array(np.zeros(16_000, dtype=np.float32))

    def synthesize(self, text: str, path: Path | None) -> Timing:
        started, cpu = time.perf_counter(), time.process_time()
        chunks = [chunk.audio_int16_array for chunk in self.voice.synthesize(text)]
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
        samples = np.concatenate(chunks)
        rate = self.voice.config.sample_rate
        if path is not None:
            with wave.open(str(path), "wb") as out:
                out.setnchannels(1)
                out.setsampwidth(2)
                out.setframerate(rate)
                out.writeframes(samples.tobytes())
        return Timing(elapsed, cpu, len(samples) / rate)

    def transcribe(self, path: Path) -> tuple[Timing, str]:
        started, cpu = time.perf_counter(), time.process_time()
        segments, info = self.whisper.transcribe(str(path), vad_filter=True)
        text = " ".join(segment.text.strip() for segment in segments)
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
        return Timing(elapsed, cpu, info.duration), text

    def transcribe_array(self, audio: np.ndarray[Any, Any]) -> None:
        segments, _ = self.whisper.transcribe(audio, vad_filter=True)
        list(segments)


# -- jobs through longplay ---------------------------------------------------------------


class Jobs:
    def __init__(self, client: httpx.Client, cpu: Callable[[], float]) -> None:
        self.client = client
        self.cpu = cpu
        """CPU seconds used so far by the deployment's processes."""

    def run(self, kind: str, *, params: dict[str, Any], file: Path | None = None) -> dict[str, Any]:
        """Submit, wait for the end, download every output; the job as last seen."""
        if file is None:
            response = self.client.post("/v1/jobs", json={"kind": kind, "params": params})
        else:
            with file.open("rb") as body:
                response = self.client.post(
                    "/v1/jobs",
                    data={"kind": kind, "params": _json(params)},
                    files={"file": (file.name, body, "audio/wav")},
                )
        if response.status_code != 202:
            raise BenchError(f"{kind} submit answered {response.status_code}: {response.text}")
        job_id = response.json()["id"]
        self.follow(job_id)
        job = self.client.get(f"/v1/jobs/{job_id}").json()
        if job["status"] != "completed":
            raise BenchError(f"{kind} job {job_id} ended {job['status']}: {job.get('error')}")
        for output in job["outputs"]:
            self.client.get(output["links"]["content"]).raise_for_status()
        return dict(job)

    def follow(self, job_id: str) -> None:
        """Wait for the job's end on its event stream, as a client would: polling the
        API instead would take CPU from the model on a 2-core machine."""
        with self.client.stream("GET", f"/v1/jobs/{job_id}/events", timeout=None) as events:
            for line in events.iter_lines():
                if line.startswith("event:") and line[6:].strip() in FINAL_EVENTS:
                    return

    def timed(
        self, kind: str, audio: float, *, params: dict[str, Any], file: Path | None = None
    ) -> Timing:
        started, cpu = time.perf_counter(), self.cpu()
        self.run(kind, params=params, file=file)
        return Timing(time.perf_counter() - started, self.cpu() - cpu, audio)


def _json(value: Any) -> str:
    return json.dumps(value)


# -- the run -----------------------------------------------------------------------------


def alternate(
    repeat: int, direct: Callable[[], Timing], job: Callable[[], Timing]
) -> tuple[Timing, Timing]:
    directs, jobs = [], []
    for _ in range(repeat):
        directs.append(direct())
        jobs.append(job())
    return median_timing(directs), median_timing(jobs)


def report(rows: dict[str, tuple[Timing, Timing]], threads: int, pool: Memory) -> None:
    print(f"\nspeech bench, {threads} thread(s); median wall time, real-time factor (x)")
    print(f"{'':<12}{'audio s':>9}{'direct s':>10}{'direct x':>10}"
          f"{'job s':>9}{'job x':>8}{'overhead':>10}"
          f"{'direct cpu':>12}{'job cpu':>9}{'cpu overhead':>14}")  # fmt: skip
    for name, (direct, job) in rows.items():
        overhead = job.seconds / direct.seconds - 1
        cpu_overhead = job.cpu / direct.cpu - 1
        print(f"{name:<12}{direct.audio:>9.1f}{direct.seconds:>10.2f}{direct.rtf:>10.1f}"
              f"{job.seconds:>9.2f}{job.rtf:>8.1f}{overhead:>9.1%}"
              f"{direct.cpu:>12.2f}{job.cpu:>9.2f}{cpu_overhead:>13.1%}")  # fmt: skip
    print()
    for name, (direct, job) in rows.items():
        overhead = job.seconds / direct.seconds - 1
        verdict = "met" if overhead < AIM_OVERHEAD[name] else "NOT met"
        print(f"aim {name}: overhead under {AIM_OVERHEAD[name]:.0%}: {verdict} ({overhead:.1%})")
    _, transcribe_job = rows["transcribe"]
    verdict = "met" if transcribe_job.rtf > AIM_TRANSCRIBE_RTF else "NOT met"
    print(f"aim transcribe: faster than {AIM_TRANSCRIBE_RTF:g}x real time as a job: "
          f"{verdict} ({transcribe_job.rtf:.1f}x)")  # fmt: skip
    mib = 1 << 20
    verdict = "met" if pool.peak < AIM_POOL_MEMORY else "NOT met"
    print(f"aim memory: a worker pool process with every engine loaded under "
          f"{AIM_POOL_MEMORY / (1 << 30):g} GiB: {verdict} (resident {pool.resident / mib:.0f} "
          f"MiB, peak {pool.peak / mib:.0f} MiB)")  # fmt: skip


def bench(args: argparse.Namespace, root: Path, stack: contextlib.ExitStack) -> None:
    step(f"loading piper and faster-whisper ({args.threads} threads)")
    direct = Direct(args.threads)
    text = text_of(args.seconds)
    speech = root / "speech.wav"
    spoken = direct.synthesize(text, speech)
    step(f"{spoken.audio:.1f} s of speech from {len(text.split())} words")

    step("starting Redis, SQLite, the API and one worker")
    dep = stack.enter_context(Deployment(root, "sqlite", 1))
    dep.env["LONGPLAY_ENGINE_THREADS"] = str(args.threads)
    dep.env.update(setting.split("=", 1) for setting in args.worker_env)
    dep.start_worker(1, wait=False)
    dep.start_api(timeout=60)
    jobs = Jobs(
        stack.enter_context(dep.client()),
        lambda: sum(used for part, used in dep.cpu().items() if part != "client"),
    )
    step("warming the worker's engines: text-to-speech, speech-to-text, the LLM, music")
    jobs.run("synthesize", params={"text": "Warming up.", "format": "wav"})
    jobs.run("transcribe", params={}, file=speech)
    jobs.run("translate", params={"text": "Good morning.", "target_language": "de"})
    jobs.run("transcribe-music", params={}, file=tune(root / "tune.wav"))

    step(f"synthesize: {args.repeat} x direct and job")
    synthesis = alternate(
        args.repeat,
        lambda: direct.synthesize(text, None),
        lambda: jobs.timed("synthesize", spoken.audio, params={"text": text, "format": "wav"}),
    )
    step(f"transcribe: {args.repeat} x direct and job")
    transcription = alternate(
        args.repeat,
        lambda: direct.transcribe(speech)[0],
        lambda: jobs.timed("transcribe", spoken.audio, params={}, file=speech),
    )
    [pool] = pool_processes(dep.processes["worker"].pid)  # one, for concurrency 1
    report({"synthesize": synthesis, "transcribe": transcription}, args.threads, memory_of(pool))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=120.0, help="speech length")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each, median kept")
    parser.add_argument("--threads", type=int, default=2, help="model threads, both sides")
    parser.add_argument(
        "--worker-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a setting for the deployment, such as LONGPLAY_LLM_CONTEXT_TOKENS=4096 (repeatable)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with (
        tempfile.TemporaryDirectory(prefix="longplay-speech-bench-") as tmp,
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
