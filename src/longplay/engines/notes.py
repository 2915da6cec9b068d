"""The notes played in a recording: Spotify's Basic Pitch model run by ONNX Runtime.

Basic Pitch (Apache-2.0) is a small network (230 KB as ONNX) that hears one
instrument's notes, chords included, at 22,050 Hz: it takes two seconds of audio at a
time and gives, for every 256-sample frame and each of the 88 piano keys, how likely a
note starts and how likely one sounds there. The recording is cut into windows that
overlap by 30 frames; the 15 frames at each edge of a window, where the model hears
only half of what surrounds them, are dropped, and :class:`~longplay.music.NoteTracker`
turns the frames left into notes as they come.

The model file is ``nmp.onnx`` from the ``basic-pitch`` package on PyPI, found through
the package's file list (the package itself is never imported: it would reach for
TensorFlow), or the file ``LONGPLAY_MUSIC_MODEL`` names.

Where ONNX Runtime has its CUDA provider and the worker a GPU, the model runs there
(one job per GPU, :func:`~longplay.engines.device.gpu_slot`); a GPU that runs out of
memory part way hands the rest of the recording to a CPU copy of the model, with a note.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Protocol

import numpy as np
import numpy.typing as npt

from longplay.engines.arena import ShrinkableSession
from longplay.engines.cache import Loaded, cached_engine
from longplay.engines.device import (
    Device,
    FallbackCallback,
    choose_device,
    cpu_threads,
    gpu_slot,
    is_out_of_memory,
    load_on_device,
)
from longplay.framework import Note as NoteCallback
from longplay.framework import PermanentError, Progress, RetryableError, no_note
from longplay.music import Note, NoteTracker, TrackerOptions, drop_overtones
from longplay.settings import Settings, get_settings

log = logging.getLogger(__name__)

SAMPLE_RATE = 22_050
"""The rate the model hears at: audio goes in mono float32 at this rate."""
FRAME_SAMPLES = 256
WINDOW_SAMPLES = 2 * SAMPLE_RATE - FRAME_SAMPLES
"""Samples in one window the model takes (43,844)."""
WINDOW_FRAMES = 172
EDGE_FRAMES = 15
"""Frames dropped at each edge of a window: half the 30-frame overlap."""
STRIDE_SAMPLES = WINDOW_SAMPLES - 2 * EDGE_FRAMES * FRAME_SAMPLES
"""From the start of one window to the next (36,164 samples, about 1.64 s)."""
KEPT_FRAMES = STRIDE_SAMPLES // FRAME_SAMPLES
"""Frames kept per window (141): they cover its stride without overlapping the next."""
MODEL_PACKAGE = "basic-pitch"
MODEL_PATH_IN_PACKAGE = "basic_pitch/saved_models/icassp_2022/nmp.onnx"
_INPUT = "serving_default_input_2:0"
_ONSETS, _FRAMES = "StatefulPartitionedCall:2", "StatefulPartitionedCall:1"

Audio = npt.NDArray[np.float32]


class NoteModel(Protocol):
    """A frame-level note model: windows of audio in, onset and frame activations out."""

    model: str
    device: str

    def activations(self, windows: Audio, *, last: bool = False) -> tuple[Audio, Audio]:
        """``(n, WINDOW_SAMPLES)`` audio → onset and frame activations, each
        ``(n, WINDOW_FRAMES, 88)``. ``last``: a recording's last windows, after which
        the model gives back the memory it kept for the next call."""
        ...

    def rest(self) -> None:
        """Give back the memory kept for the next call, where a recording stopped
        before its last windows (cancelled, or failed)."""
        ...


class BasicPitchModel:
    """Basic Pitch's ``nmp.onnx`` in an ONNX Runtime session."""

    def __init__(self, session: ShrinkableSession, *, model: str, device: Device) -> None:
        self._session = session
        self.model = model
        self.device: str = device

    @classmethod
    def load(cls, path: Path, *, device: Device, threads: int) -> BasicPitchModel:
        """Open the model; on CUDA also run one window, so that a missing or mismatched
        CUDA library fails here, where the CPU fallback can catch it."""
        import onnxruntime as ort

        cuda = "CUDAExecutionProvider"
        if device == "cuda" and cuda not in ort.get_available_providers():
            raise RuntimeError(
                "ONNX Runtime has no CUDA provider here (onnxruntime-gpu is not installed)"
            )
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        # Threads that spin between calls would take the cores from the rest of the job.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        providers = [cuda, "CPUExecutionProvider"] if device == "cuda" else ["CPUExecutionProvider"]
        session = ort.InferenceSession(str(path), options, providers=providers)
        if device == "cuda":
            if cuda not in session.get_providers():  # it falls back on its own, quietly
                raise RuntimeError("ONNX Runtime could not start its CUDA provider")
            session.run([_ONSETS], {_INPUT: np.zeros((1, WINDOW_SAMPLES, 1), np.float32)})
        return cls(ShrinkableSession(session, device), model=str(path), device=device)

    def activations(self, windows: Audio, *, last: bool = False) -> tuple[Audio, Audio]:
        """See :meth:`NoteModel.activations`."""
        if last:
            self._session.shrink_after_next_run()
        onsets, frames = self._session.run([_ONSETS, _FRAMES], {_INPUT: windows[:, :, None]})
        return onsets, frames

    def rest(self) -> None:
        """See :meth:`NoteModel.rest`: one window of silence, as a last one."""
        self.activations(np.zeros((1, WINDOW_SAMPLES), np.float32), last=True)


@dataclass(frozen=True)
class Detection:
    """The notes found in a recording, in order of onset, and where the model ran."""

    notes: list[Note]
    device: str
    windows: int


def detect_notes(
    audio: Audio,
    options: TrackerOptions,
    *,
    progress: Progress,
    note: NoteCallback = no_note,
    settings: Settings | None = None,
    model: NoteModel | None = None,
) -> Detection:
    """The notes in mono ``audio`` at :data:`SAMPLE_RATE` (a memory-mapped array is
    read a few windows at a time), by ``model`` or this process's :func:`get_note_model`.

    ``progress`` hears of every window: seconds done and in all, with
    ``seconds_done``, ``notes_found`` and ``windows`` as details. ``note`` hears where
    the model runs on the CPU instead of the GPU, and why.
    """
    settings = settings or get_settings()
    if model is None:
        model = get_note_model(
            settings, on_fallback=lambda f: note(f.describe(), code="cpu_fallback")
        )
    duration = len(audio) / SAMPLE_RATE
    count = window_count(len(audio))
    batch = settings.music.batch_windows
    tracker = NoteTracker(options)
    notes: list[Note] = []
    rested = False
    """Whether the model has run the last windows, and so given its memory back."""
    with gpu_slot(model.device, timeout_s=settings.engines.gpu_wait_timeout):
        try:
            for first in range(0, count, batch):
                indexes = range(first, min(count, first + batch))
                windows = np.stack([window_of(audio, index) for index in indexes])
                last = indexes.stop == count
                try:
                    onsets, frames = model.activations(windows, last=last)
                except Exception as exc:
                    model = _after_failure(model, exc, settings, note)
                    onsets, frames = model.activations(windows, last=last)
                rested = last
                for index, onset, frame in zip(indexes, onsets, frames, strict=True):
                    times = (
                        index * STRIDE_SAMPLES + np.arange(KEPT_FRAMES) * FRAME_SAMPLES
                    ) / SAMPLE_RATE
                    inside = times < duration
                    kept = slice(EDGE_FRAMES, EDGE_FRAMES + KEPT_FRAMES)
                    found = tracker.add(onset[kept][inside], frame[kept][inside], times[inside])
                    notes.extend(found)
                    done = min(duration, (index + 1) * STRIDE_SAMPLES / SAMPLE_RATE)
                    progress(
                        done,
                        duration,
                        seconds_done=round(done, 1),
                        notes_found=tracker.found,
                        windows=index + 1,
                    )
        finally:
            if not rested:
                _rest(model)
    notes.extend(tracker.finish())
    notes.sort(key=lambda n: (n.onset, n.pitch))
    return Detection(drop_overtones(notes), model.device, count)


def get_note_model(
    settings: Settings | None = None, *, on_fallback: FallbackCallback | None = None
) -> NoteModel:
    """This process's note model for ``settings``, loaded on first use."""
    return cached_engine("music", settings or get_settings(), _load, on_fallback)


def model_file(settings: Settings) -> Path:
    """``nmp.onnx``: the file ``LONGPLAY_MUSIC_MODEL`` names, or the ``basic-pitch``
    package's own copy."""
    if settings.music.model:
        path = Path(settings.music.model).expanduser()
    else:
        try:
            distribution = metadata.distribution(MODEL_PACKAGE)
        except metadata.PackageNotFoundError:
            raise PermanentError(
                "the basic-pitch package, which ships the music model, is not installed; "
                "install it without its TensorFlow dependency "
                "(pip install --no-deps basic-pitch==0.4.0) or set LONGPLAY_MUSIC_MODEL "
                "to Basic Pitch's nmp.onnx",
                code="model_missing",
            ) from None
        path = Path(str(distribution.locate_file(MODEL_PATH_IN_PACKAGE)))
    if not path.is_file():
        raise PermanentError(
            f"no music model at {path}; set LONGPLAY_MUSIC_MODEL to Basic Pitch's nmp.onnx",
            code="model_missing",
        )
    return path


def window_count(samples: int) -> int:
    """Windows that cover ``samples`` of audio."""
    return math.ceil((samples + EDGE_FRAMES * FRAME_SAMPLES) / STRIDE_SAMPLES)


def window_of(audio: Audio, index: int) -> Audio:
    """Window ``index``: it starts half an overlap before its stride, so that the frames
    it keeps begin exactly at ``index * STRIDE_SAMPLES``; zeros pad both ends."""
    start = index * STRIDE_SAMPLES - EDGE_FRAMES * FRAME_SAMPLES
    window = np.zeros(WINDOW_SAMPLES, np.float32)
    lo, hi = max(0, start), min(len(audio), start + WINDOW_SAMPLES)
    if hi > lo:
        window[lo - start : hi - start] = audio[lo:hi]
    return window


def _rest(model: NoteModel) -> None:
    """:meth:`NoteModel.rest` where a recording stopped part way, for whatever reason:
    a model that fails again here must not hide why it stopped."""
    try:
        model.rest()
    except Exception as exc:
        log.warning("the music model could not give back its memory: %s", exc)


def _after_failure(
    model: NoteModel, exc: Exception, settings: Settings, note: NoteCallback
) -> NoteModel:
    """The CPU twin of a GPU model that ran out of memory; otherwise the error to raise."""
    if not is_out_of_memory(exc):
        raise exc
    if model.device != "cuda":
        raise RetryableError(
            f"the music model ran out of memory: {exc}", code="out_of_memory"
        ) from exc
    note(
        "the music model ran out of GPU memory; the rest of the recording runs on the CPU",
        code="cpu_fallback",
    )
    cpu = settings.model_copy(
        update={"engines": settings.engines.model_copy(update={"device": "cpu"})}
    )
    return get_note_model(cpu)


def _load(settings: Settings) -> Loaded[NoteModel]:
    import onnxruntime as ort

    path = model_file(settings)
    threads = cpu_threads(settings)
    device = choose_device(
        settings.engines.device,
        engine="onnxruntime",
        cuda_available="CUDAExecutionProvider" in ort.get_available_providers(),
    )
    engine, used, fallback = load_on_device(
        "onnxruntime",
        lambda d: BasicPitchModel.load(path, device=d, threads=threads),
        device,
        strict=settings.engines.device == "cuda",
    )
    return Loaded(engine, "onnxruntime", str(path), used, fallback)
