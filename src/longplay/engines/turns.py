"""Voicing a script turn by turn, each turn's audio kept by what made it.

A turn's audio is kept under ``<data dir>/cache/turns/`` as a 16-bit WAV named by the
SHA-256 of (text, voice, rate, engine, model): a job voicing an edited script
synthesizes only the turns whose text or voice changed, and a job retried after a
failure in turn 14 finds turns 1 to 13 already there. The folder is shared by every
job of the worker's machine (two podcasts quoting the same passage in the same voice
share its audio); a file is written under a temporary name and renamed, so a job
killed mid-write leaves nothing half made. Using a kept turn touches its file, so the
cleanup (:mod:`longplay.jobs.cleanup`) can remove the turns no job has used for
``turn_cache_retention`` and temporary files a killed job left behind.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from longplay.engines.audio import Samples, from_wav, resample, to_wav
from longplay.engines.tts import Synthesizer
from longplay.framework.errors import InvalidInput
from longplay.text.sentences import speakable_sentences

SENTENCE_PAUSE_S = 0.25
"""Silence between two sentences of one turn."""
PARTIAL_SUFFIX = ".part"
"""How the name of a turn's file being written ends (``<key>.wav.<pid>.part``)."""


def turn_cache(data_dir: Path) -> Path:
    """The folder the turns of a worker's machine are kept in."""
    return data_dir / "cache" / "turns"


@dataclass(frozen=True)
class VoicedTurn:
    """A turn's audio, mono, and whether this call synthesized it (else: kept)."""

    samples: Samples
    sample_rate: int
    synthesized: bool

    @property
    def duration(self) -> float:
        return len(self.samples) / self.sample_rate


class TurnVoicer:
    """Voices turns with ``synthesizer``, keeping each in ``folder``."""

    def __init__(self, synthesizer: Synthesizer, folder: Path, *, engine: str) -> None:
        self.synthesizer = synthesizer
        self.folder = folder
        self.engine = engine

    def key(self, text: str, voice: str | None, rate: float) -> str:
        """The name a turn's audio is kept under."""
        made_by = [" ".join(text.split()), voice, rate, self.engine, self.synthesizer.model]
        return hashlib.sha256(json.dumps(made_by).encode()).hexdigest()

    def voice(self, text: str, *, voice: str | None, rate: float = 1.0) -> VoicedTurn:
        """The turn's audio: kept from before, or synthesized now and kept."""
        path = self.folder / f"{self.key(text, voice, rate)}.wav"
        try:
            samples, sample_rate = from_wav(path.read_bytes())
        except FileNotFoundError:
            pass
        except (wave.Error, EOFError):
            pass  # damaged (a disk error, say): voiced again below, and replaced
        else:
            with contextlib.suppress(OSError):  # used now: the cleanup leaves it
                os.utime(path)
            return VoicedTurn(samples, sample_rate, synthesized=False)
        samples, sample_rate = self._synthesize(text, voice, rate)
        self.folder.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f"{path.name}.{os.getpid()}{PARTIAL_SUFFIX}")
        partial.write_bytes(to_wav(samples, sample_rate))
        partial.replace(path)
        return VoicedTurn(samples, sample_rate, synthesized=True)

    def _synthesize(self, text: str, voice: str | None, rate: float) -> tuple[Samples, int]:
        sentences = speakable_sentences(text)
        if not sentences:
            raise InvalidInput(f"a turn has nothing to say: {text[:80]!r}")
        parts: list[Samples] = []
        sample_rate = 0
        for sentence in sentences:
            speech = self.synthesizer.synthesize(
                sentence.text, voice=voice, length_scale=1.0 / rate
            )
            samples = speech.samples
            if sample_rate and speech.sample_rate != sample_rate:
                samples = resample(samples, round(len(samples) * sample_rate / speech.sample_rate))
            sample_rate = sample_rate or speech.sample_rate
            if parts:
                parts.append(np.zeros(round(SENTENCE_PAUSE_S * sample_rate), np.float32))
            parts.append(samples.astype(np.float32))
        return np.concatenate(parts), sample_rate
