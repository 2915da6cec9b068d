"""An episode made of voiced turns: joined with pauses, mastered once, checked, chaptered.

:class:`EpisodeWriter` takes the turns one by one (mono float audio at the episode's
rate) and puts them, with a pause after each, in a :class:`~longplay.media.Spool` and
through a :class:`~longplay.media.LevelTrace`, noting where each turn starts and ends and how loud
it is. :meth:`EpisodeWriter.finish` masters the whole to the target loudness through
the limiter (:func:`~longplay.media.mastering.gain_for_levels`, as ``synthesize``
does) into the encoder, a long MP3 in two halves side by side
(:mod:`~longplay.media.halves`), and measures what the encoder writes as it writes it
(a :class:`~longplay.media.encode.Playback`: on this core, while the codecs work).

:func:`check_episode` then says which check failed, if one did: of that measure, and of
the file's own header; :func:`tag_chapters` writes ID3 chapter frames.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np

from longplay.framework import PermanentError, Progress
from longplay.media.audio import probe
from longplay.media.encode import (
    OUTPUT_FORMATS,
    AudioEncoder,
    OutputFormatName,
    codec_gain_db,
)
from longplay.media.halves import Pause, encode_limited
from longplay.media.levels import LevelTrace
from longplay.media.loudness import Loudness, LoudnessMeter, Samples, finite_or_none
from longplay.media.mastering import gain_for_levels
from longplay.media.spool import Spool

TRUE_PEAK_DB = -1.5
"""The limiter's ceiling: 0.5 dB under the -1 dBTP an episode promises, for the codec."""
TURN_PAUSE_S = 0.45
SILENT_LUFS = -60.0
"""A turn quieter than this, as voiced, counts as silent."""
DURATION_SLACK_S = 0.25
"""How far the episode, as decoded and as its file's header states, may differ from the
voiced turns (codec delay and padding)."""


@dataclass
class EpisodeCheckFailed(PermanentError):
    """The audio made for an episode failed a check; ``check`` names which."""

    code: str = "episode_check_failed"
    check: str = ""

    def as_dict(self) -> dict[str, object]:
        return {**super().as_dict(), "check": self.check}


@dataclass(frozen=True)
class Placed:
    """Where one turn lies in the episode, and how loud it was voiced."""

    speaker: str
    start: float
    end: float
    loudness: float


@dataclass
class Episode:
    """What :meth:`EpisodeWriter.finish` wrote."""

    path: Path
    media_type: str
    duration: float
    turns: list[Placed]
    heard: Loudness
    """What the encoded audio measures, decoded as it was written."""
    loudness: dict[str, Any] = field(default_factory=dict)


class EpisodeWriter:
    """Turns in, one mastered episode file out; use it as a context manager."""

    def __init__(self, folder: Path, stem: str, sample_rate: int) -> None:
        self.folder = folder
        self.stem = stem
        self.sample_rate = sample_rate
        self._spool = Spool(folder / f".{stem}.episode.f32", channels=1)
        self._trace = LevelTrace(sample_rate, 1)
        self._frames = 0
        self._pauses: list[Pause] = []
        """Where each pause after a turn starts and ends."""
        self.turns: list[Placed] = []

    def add(self, speaker: str, samples: Samples) -> Placed:
        """Append a turn (mono, at the episode's rate) and the pause after it."""
        pause = np.zeros(round(TURN_PAUSE_S * self.sample_rate), np.float32)
        block = np.concatenate([samples.astype(np.float32), pause])[:, None]
        start = self._frames / self.sample_rate
        self._spool.write(block)
        # The turn's loudness from the trace's filter, which the pause before it has
        # let settle to silence: no second K-weighting of the same audio.
        meter = LoudnessMeter(self.sample_rate, 1, true_peak=False)
        meter.add_energy(self._trace.add(block)[: len(samples)])
        self._pauses.append((self._frames + len(samples), self._frames + len(block)))
        self._frames += len(block)
        placed = Placed(
            speaker,
            round(start, 3),
            round(start + len(samples) / self.sample_rate, 3),
            meter.result().integrated,
        )
        self.turns.append(placed)
        return placed

    def finish(self, format: OutputFormatName, loudness: float, *, progress: Progress) -> Episode:
        """Master everything added to ``loudness`` LUFS into ``<stem>.<format>``."""
        levels = self._trace.finish()
        rate = OUTPUT_FORMATS[format].rate_for(self.sample_rate)
        codec_gain = codec_gain_db(format, rate, 1)
        search = gain_for_levels(levels, loudness - codec_gain, TRUE_PEAK_DB)
        limiter = levels.limiter(search.gain, TRUE_PEAK_DB)
        path = self.folder / f"{self.stem}.{format}"
        duration = self._frames / self.sample_rate
        encoder = AudioEncoder(
            path,
            format=format,
            sample_rate=rate,
            channels=1,
            input_rate=self.sample_rate,
            speech=True,
            playback=True,
        )
        assert encoder.playback is not None
        heard = LoudnessMeter(rate, 1, true_peak=False)  # the limiter saw to the peaks
        with encoder:
            for done in encode_limited(
                encoder,
                self._spool,
                limiter,
                frames=self._frames,
                sample_rate=self.sample_rate,
                pauses=self._pauses,
            ):
                heard.add(encoder.playback.take())
                progress(done, 1.0, seconds=round(done * duration, 1))
        heard.add(encoder.playback.take(wait=True))
        return Episode(
            path=path,
            media_type=OUTPUT_FORMATS[format].media_type,
            duration=round(duration, 3),
            turns=self.turns,
            heard=heard.result(),
            loudness={
                "measured": levels.loudness.as_dict(),
                "gain_db": search.gain,
                "limited_db": round(limiter.limited_db, 2),
                "predicted_lufs": finite_or_none(search.level + codec_gain),
                "target_lufs": loudness,
            },
        )

    def __enter__(self) -> EpisodeWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._spool.__exit__(exc_type, exc, traceback)


def check_episode(episode: Episode, *, speakers_asked: int) -> dict[str, Any]:
    """Check the episode is what its turns promise: its file opens and decodes, it
    lasts as long as they do (as heard, and as the file's header states), is not
    silent, and has at least two audible speakers where more than one was asked for.
    Returns what was measured; raises :class:`EpisodeCheckFailed` naming the check
    that failed."""
    try:
        stated = probe(episode.path).duration
    except PermanentError as exc:
        raise EpisodeCheckFailed(
            f"the episode does not decode: {exc.message}", check="decodes"
        ) from exc
    heard = episode.heard
    if heard.duration == 0:
        raise EpisodeCheckFailed("the episode has no audio in it", check="decodes")
    for what, seconds in (("lasts", heard.duration), ("states in its header", stated)):
        if abs(seconds - episode.duration) > DURATION_SLACK_S:
            raise EpisodeCheckFailed(
                f"the episode {what} {seconds:.2f} s but its turns {episode.duration:.2f} s",
                check="duration",
            )
    if heard.is_silent:
        raise EpisodeCheckFailed("the episode is silent", check="not_silent")
    audible = {t.speaker for t in episode.turns if t.loudness > SILENT_LUFS}
    if speakers_asked > 1 and len(audible) < 2:
        raise EpisodeCheckFailed(
            f"{speakers_asked} speakers were asked for but {len(audible)} can be heard",
            check="speakers",
        )
    return {
        "duration": round(heard.duration, 3),
        "integrated_lufs": finite_or_none(heard.integrated),
        "speakers_heard": sorted(audible),
    }


@dataclass(frozen=True)
class ChapterMark:
    """A chapter as an ID3 frame holds it."""

    title: str
    start: float
    end: float


def tag_chapters(path: Path, title: str, chapters: Sequence[ChapterMark]) -> None:
    """Write the episode's title and chapters (ID3v2 ``CHAP`` frames under one ordered
    ``CTOC``) into an mp3 file."""
    from mutagen.id3 import CHAP, CTOC, ID3, TIT2, CTOCFlags

    tags = ID3()
    tags.add(TIT2(encoding=3, text=[title]))
    ids = [f"chp{n}" for n in range(len(chapters))]
    tags.add(
        CTOC(
            element_id="toc",
            flags=CTOCFlags.TOP_LEVEL | CTOCFlags.ORDERED,
            child_element_ids=ids,
            sub_frames=[TIT2(encoding=3, text=[title])],
        )
    )
    for element_id, chapter in zip(ids, chapters, strict=True):
        tags.add(
            CHAP(
                element_id=element_id,
                start_time=math.floor(chapter.start * 1000),
                end_time=math.floor(chapter.end * 1000),
                sub_frames=[TIT2(encoding=3, text=[chapter.title])],
            )
        )
    tags.save(str(path))
