"""Transcribing one audio or video file of any length: what is said in it as plain
text, SRT, WebVTT and JSON (segments, words, language, duration).

The input is decoded to 16 kHz mono block by block and at most ``WINDOW_S`` seconds
of it are held at a time: a longer input is cut into pieces in the middle of a
silence that faster-whisper's Silero VAD finds (:func:`~longplay.engines.detect_speech`),
and each piece is transcribed on its own, its times moved back onto the input's
timeline. Memory therefore stays bounded however long the input is. Inside a piece
the engine's own VAD skips the silences (``vad``).

:func:`transcribe_audio` makes the :class:`Transcript`, :func:`write_transcript`
writes it in each format, and :func:`transcribe_file` does both in one call, for kinds
that transcribe as one stage of their own (``dub``).
"""

from __future__ import annotations

import json
from collections.abc import Generator, Iterable, Iterator, Sequence
from contextlib import closing
from dataclasses import dataclass, replace
from itertools import pairwise
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field, field_validator

from longplay.engines.device import FallbackCallback, gpu_slot
from longplay.engines.stt import (
    SAMPLE_RATE,
    Segment,
    Transcriber,
    Word,
    detect_speech,
    get_transcriber,
    whisper_languages,
)
from longplay.framework import InputFile, Note, Progress, no_note
from longplay.media import AudioBlock, decode, probe
from longplay.settings import get_settings
from longplay.text import format_srt, format_vtt
from longplay.text.languages import Language

Audio = npt.NDArray[np.float32]
TranscriptFormat = Literal["json", "txt", "srt", "vtt"]

MEDIA_TYPES: dict[TranscriptFormat, str] = {
    "json": "application/json",
    "txt": "text/plain",
    "srt": "application/x-subrip",
    "vtt": "text/vtt",
}
WINDOW_S = 600.0
"""The most audio transcribed in one piece (about 38 MB as float32)."""
CUT_SEARCH_S = 60.0
"""How far back from the end of a full window a silence to cut at is looked for."""
MIN_CUT_SILENCE_S = 0.3
PARAGRAPH_PAUSE_S = 2.0
DOUBTFUL_LOGPROB = -0.58
"""Below this mean log-probability per token (the segments' ``avg_logprob``, weighted by
their length) the speech is likely in a language the model does not know, which it
still writes down as confident-looking words. Measured with Whisper tiny.en on the
bundled Piper voice, over ``SHORT_SPEECH_S`` or more: English -0.22 to -0.56 (the worst
full of names), the same English voice reading German -0.61 to -0.86, French, Dutch,
Italian, Portuguese and Spanish -0.66 to -1.08. Real German speech scored -0.98."""
DOUBTFUL_LOGPROB_SHORT = -0.7
"""The same for less speech, where the first, least sure tokens weigh more: a word or
two of English scored -0.42 to -0.65, of German read by the voice -0.77 to -1.03."""
SHORT_SPEECH_S = 4.0


class TranscriptionOptions(BaseModel):
    """How to transcribe: the options of :func:`transcribe_file`, and a ``transcribe``
    job's params."""

    model_config = ConfigDict(extra="forbid")

    language: str | None = Field(
        default=None,
        description=(
            "Language code of the speech (ISO 639-1, e.g. 'en'); null: detected. The bundled "
            "model, Whisper tiny.en, knows only English: other languages need LONGPLAY_STT_MODEL "
            "set to a multilingual Whisper model, and are refused otherwise."
        ),
    )
    word_timestamps: bool = Field(
        default=False, description="Also time every word; the words are in the JSON transcript."
    )
    initial_prompt: str | None = Field(
        default=None,
        max_length=1000,
        description=(
            "Text as if said just before the audio: names, spellings and punctuation style "
            "for the model to follow."
        ),
    )
    vad: bool = Field(
        default=True,
        description=(
            "Skip silence with the Silero voice activity detector before transcribing: "
            "faster, and no words made up from noise."
        ),
    )

    @field_validator("language")
    @classmethod
    def _language_code(cls, value: str | None) -> str | None:
        if value is None:
            return None
        code = value.strip().lower()
        if code not in whisper_languages():
            raise ValueError(
                f"language must be a code Whisper knows, such as 'en' or 'fr', not {value!r}"
            )
        return code


@dataclass(frozen=True)
class Transcript:
    """What was said in a file: segments on the file's timeline, in seconds."""

    language: str
    duration: float
    """Seconds of audio decoded."""
    segments: tuple[Segment, ...]
    language_probability: float | None = None

    @property
    def text(self) -> str:
        """The plain text: the segments one after another, and a new paragraph after a
        pause of ``PARAGRAPH_PAUSE_S`` or more."""
        spoken = [segment for segment in self.segments if segment.text]
        parts = [spoken[0].text] if spoken else []
        for before, segment in pairwise(spoken):
            parts.append("\n\n" if segment.start - before.end >= PARAGRAPH_PAUSE_S else " ")
            parts.append(segment.text)
        return "".join(parts)

    def as_dict(self) -> dict[str, Any]:
        """The JSON transcript: the OpenAI ``verbose_json`` shape, words in their segment."""
        return {
            "language": self.language,
            "language_probability": _rounded(self.language_probability),
            "duration": _seconds(self.duration),
            "text": " ".join(self.text.split()),
            "segments": [_segment_dict(i, s) for i, s in enumerate(self.segments)],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Transcript:
        """The transcript :meth:`as_dict` wrote."""
        segments = tuple(
            Segment(
                start=s["start"],
                end=s["end"],
                text=s["text"],
                words=tuple(
                    Word(w["start"], w["end"], w["word"], w.get("probability")) for w in s["words"]
                ),
                avg_logprob=s.get("avg_logprob"),
                no_speech_prob=s.get("no_speech_prob"),
            )
            for s in data["segments"]
        )
        return cls(data["language"], data["duration"], segments, data["language_probability"])


@dataclass(frozen=True)
class TranscriptFiles:
    """A transcript and the files written from it, by format."""

    transcript: Transcript
    files: dict[TranscriptFormat, Path]


def transcribe_file(
    source: InputFile,
    folder: Path,
    options: TranscriptionOptions,
    *,
    progress: Progress,
    on_fallback: FallbackCallback | None = None,
    note: Note = no_note,
) -> TranscriptFiles:
    """Transcribe ``source`` and write ``<stem>.json``, ``.txt``, ``.srt`` and ``.vtt``
    into ``folder``; see :func:`transcribe_audio` for the progress reported."""
    transcript = transcribe_audio(
        source, options, progress=progress, on_fallback=on_fallback, note=note
    )
    return TranscriptFiles(transcript, write_transcript(transcript, folder, stem_of(source)))


def transcribe_audio(
    source: InputFile,
    options: TranscriptionOptions,
    *,
    progress: Progress,
    on_fallback: FallbackCallback | None = None,
    note: Note = no_note,
    window_s: float = WINDOW_S,
) -> Transcript:
    """Transcribe the first audio stream of ``source``, piece by piece.

    ``progress`` hears of every segment: done and total in seconds of audio, with
    ``seconds``, ``segments`` (found so far), ``duration`` and ``input`` as details.
    Raises :class:`~longplay.media.UndecodableAudio` naming the file when it has no
    audio that PyAV decodes, and the engine's ``InvalidParams`` for a language it
    cannot do. ``note`` hears of an input that ends early (``truncated_input``) and of
    doubts about the language (:func:`_note_language`).
    """
    info = probe(source.path, name=source.name)
    stt = get_transcriber(on_fallback=on_fallback)
    run = _Run(stt, options, source.name, info.duration, progress)
    blocks = _heard_blocks(source, note)
    with gpu_slot(stt.device, timeout_s=get_settings().engines.gpu_wait_timeout), closing(blocks):
        for offset, piece in split_at_silences(blocks, window_s=window_s):
            run.add(offset, piece)
    transcript = run.finish()
    _note_language(transcript, assumed=run.language_assumed, note=note)
    return transcript


def _heard_blocks(source: InputFile, note: Note) -> Generator[AudioBlock, None, None]:
    """``source`` as speech recognition hears it: 16 kHz mono, on the file's clock (a
    late start and gaps kept as silence), so that cue times are what a player shows."""
    return decode(
        source.path,
        sample_rate=SAMPLE_RATE,
        channels=1,
        name=source.name,
        note=note,
        from_container_start=True,
    )


def cut_into_pieces(
    source: InputFile,
    folder: Path,
    *,
    piece_s: float,
    language: str | None = None,
    note: Note = no_note,
) -> Iterator[dict[str, Any]]:
    """Cut ``source`` at silences into pieces of at most ``piece_s`` seconds, each kept
    in ``folder`` as 16 kHz mono float32 samples (``.npy``), for
    :func:`transcribe_piece` to take up in any process that sees ``folder``.

    Yields the pieces as JSON items, in order, each once its file is written:
    ``{"file", "offset", "seconds", "language", "language_probability",
    "language_assumed"}`` (the last as :class:`~longplay.engines.stt.Transcription` has
    it). The language is detected once, on the first piece with speech, before that
    piece or any before it goes out, so that every piece is transcribed in it, as one
    pass would do: each piece detecting its own, a music intro or a noisy stretch could
    be heard as another language. Where no piece has speech the language is None; a
    ``language`` given is every piece's, with nothing detected. Raises
    :class:`~longplay.media.UndecodableAudio` like :func:`transcribe_audio`.
    """
    folder.mkdir(parents=True, exist_ok=True)
    blocks = _heard_blocks(source, note)
    held: list[dict[str, Any]] = []  # the pieces before the first one with speech
    heard = None
    if language is not None:
        heard = {"language": language, "language_probability": None, "language_assumed": False}
    with closing(blocks):
        for n, (offset, audio) in enumerate(split_at_silences(blocks, window_s=piece_s)):
            name = f"piece-{n:05d}.npy"
            np.save(folder / name, audio, allow_pickle=False)
            seconds = round(len(audio) / SAMPLE_RATE, 3)
            held.append({"file": name, "offset": offset, "seconds": seconds})
            if heard is None:
                heard = _language_heard(audio)
            if heard is not None:
                yield from ({**piece, **heard} for piece in held)
                held = []
    unheard = {"language": None, "language_probability": None, "language_assumed": False}
    yield from ({**piece, **unheard} for piece in held)


def transcribe_piece(
    piece: dict[str, Any],
    folder: Path,
    options: TranscriptionOptions,
    *,
    progress: Progress,
    on_fallback: FallbackCallback | None = None,
) -> dict[str, Any]:
    """Transcribe one piece :func:`cut_into_pieces` kept, in the language asked for, else
    the one it detected: its language and segments, on the whole input's timeline, as
    JSON (:func:`join_pieces` puts them together). ``progress`` hears of every segment,
    in seconds of the piece."""
    audio = np.load(folder / piece["file"], allow_pickle=False)
    stt = get_transcriber(on_fallback=on_fallback)
    seconds = float(piece["seconds"])
    with gpu_slot(stt.device, timeout_s=get_settings().engines.gpu_wait_timeout):
        run = stt.transcribe(
            audio,
            language=options.language or piece.get("language"),
            word_timestamps=options.word_timestamps,
            initial_prompt=options.initial_prompt,
            vad=options.vad,
        )
        segments = []
        for segment in run.segments:
            segments.append(_segment_dict(0, _shifted(segment, float(piece["offset"]))))
            progress(min(segment.end, seconds), seconds, seconds=round(segment.end, 1))
    progress(seconds, seconds)
    return {
        "language": run.language,
        "language_probability": _rounded(run.language_probability),
        "language_assumed": run.language_assumed,
        "segments": segments,
    }


def join_pieces(
    pieces: Sequence[dict[str, Any]],
    results: Sequence[dict[str, Any]],
    language: str | None,
    *,
    note: Note = no_note,
) -> Transcript:
    """The transcript of the whole input from its pieces' (in order): segments one after
    another, the language the one asked for, else the one :func:`cut_into_pieces`
    detected, else (no speech) the one the first piece heard. ``note`` hears of doubts
    about the language, as from :func:`transcribe_audio`."""
    heard = [r for r in results if r["segments"]] or list(results)
    first = heard[0] if heard else {"language": language or "", "language_probability": None}
    if pieces and pieces[0].get("language"):
        first = pieces[0]
    duration = sum(float(p["seconds"]) for p in pieces)
    segments = [s for r in results for s in r["segments"]]
    transcript = Transcript.from_dict(
        {
            "language": language or first["language"],
            "language_probability": None if language else first["language_probability"],
            "duration": round(duration, 3),
            "segments": segments,
        }
    )
    assumed = language is None and bool(first.get("language_assumed"))
    _note_language(transcript, assumed=assumed, note=note)
    return transcript


def _note_language(transcript: Transcript, *, assumed: bool, note: Note) -> None:
    """Tell of speech the model was unsure of throughout (``language_doubtful``): most
    likely in a language it does not know, which it writes down as confident nonsense in
    the one it does (an English-only model, where the language was ``assumed`` rather
    than detected, calls all speech English), or very poor audio. An English-only
    model's every transcript is not warned of: a warning on every job is read by no
    one; its JSON's ``language_probability`` is null instead of a certainty."""
    if not transcript.segments:
        return
    speech_s = sum(s.end - s.start for s in transcript.segments)
    bar = DOUBTFUL_LOGPROB if speech_s >= SHORT_SPEECH_S else DOUBTFUL_LOGPROB_SHORT
    mean = _mean_logprob(transcript.segments)
    if mean is None or mean >= bar:
        return
    name = _language_name(transcript.language)
    why = (
        f"the speech-to-text model here knows only {name}, and writes other speech down "
        f"as {name} words never said (LONGPLAY_STT_MODEL may name a multilingual Whisper "
        "model)"
        if assumed
        else "the transcript may be words never said"
    )
    note(
        f"the speech may not be in {name}, or the audio is very poor: the model was unsure "
        f"of it throughout (a mean log-probability of {mean:.2f} per token, below {bar}); "
        f"{why}",
        code="language_doubtful",
        mean_logprob=round(mean, 3),
        language_assumed=assumed,
    )


def _mean_logprob(segments: Iterable[Segment]) -> float | None:
    """The segments' mean ``avg_logprob``, each weighted by its length; None where no
    segment has one."""
    weighted = [
        (s.end - s.start, s.avg_logprob)
        for s in segments
        if s.avg_logprob is not None and s.end > s.start
    ]
    seconds = sum(length for length, _ in weighted)
    return sum(length * logprob for length, logprob in weighted) / seconds if seconds else None


def _language_name(code: str) -> str:
    """``en`` → English; a code the list of languages lacks, quoted."""
    try:
        return Language.find(code).name
    except ValueError:
        return repr(code)


def _language_heard(audio: Audio) -> dict[str, Any] | None:
    """The language of the speech in 16 kHz ``audio`` as a piece's ``language`` and
    ``language_probability``; None when the VAD hears no speech in it.

    Only what :meth:`~longplay.engines.stt.Transcriber.transcribe` knows at once is
    read: the segments, decoded only as they are iterated, are left alone, so this
    costs faster-whisper the VAD and one look at the first 30 s of speech.
    """
    if not detect_speech(audio):
        return None
    stt = get_transcriber()
    with gpu_slot(stt.device, timeout_s=get_settings().engines.gpu_wait_timeout):
        run = stt.transcribe(audio, vad=True)
    return {
        "language": run.language,
        "language_probability": _rounded(run.language_probability),
        "language_assumed": run.language_assumed,
    }


def split_at_silences(
    blocks: Iterable[AudioBlock], *, window_s: float = WINDOW_S
) -> Iterator[tuple[float, Audio]]:
    """Consecutive pieces of 16 kHz mono ``blocks`` as ``(start in seconds, samples)``.

    Whenever ``window_s`` seconds are held, they are cut at :func:`silence_cut` and the
    piece before the cut goes out; the rest starts the next piece.
    """
    window = round(window_s * SAMPLE_RATE)
    search_s = min(CUT_SEARCH_S, window_s / 2)
    held: list[Audio] = []
    frames = start = 0
    for block in blocks:
        held.append(block.samples[:, 0])
        frames += len(block.samples)
        while frames >= window:
            audio = np.concatenate(held)
            cut = silence_cut(audio, search_s=search_s)
            yield start / SAMPLE_RATE, audio[:cut]
            start += cut
            held, frames = [audio[cut:]], len(audio) - cut
    if frames:
        yield start / SAMPLE_RATE, np.concatenate(held)


def silence_cut(audio: Audio, *, search_s: float) -> int:
    """Where to cut 16 kHz ``audio``: the middle of the longest silence the VAD finds in
    its last ``search_s`` seconds, else anywhere in it, else (speech throughout) its end.

    A silence is a pause of at least ``MIN_CUT_SILENCE_S`` between two stretches of
    speech (the VAD pads speech and may leave no gap between the two, but the pause
    lies where they meet), or a gap before the first or after the last.
    """
    for offset in dict.fromkeys((max(0, len(audio) - round(search_s * SAMPLE_RATE)), 0)):
        spans = detect_speech(audio[offset:], min_silence_s=MIN_CUT_SILENCE_S)
        if not spans:
            return len(audio)
        edges = [0.0, *(t for span in spans for t in (span.start, span.end))]
        edges.append((len(audio) - offset) / SAMPLE_RATE)
        gaps = list(zip(edges[::2], edges[1::2], strict=True))
        silences = [*gaps[1:-1], *(gap for gap in (gaps[0], gaps[-1]) if gap[1] > gap[0])]
        if silences:
            start, end = max(silences, key=lambda gap: gap[1] - gap[0])
            return offset + round((start + end) / 2 * SAMPLE_RATE)
    return len(audio)


class _Run:
    """One transcription under way: segments so far, the language, progress."""

    def __init__(
        self,
        stt: Transcriber,
        options: TranscriptionOptions,
        name: str,
        duration: float,
        progress: Progress,
    ) -> None:
        self.stt, self.options, self.name, self.progress = stt, options, name, progress
        self.header_duration = duration
        self.segments: list[Segment] = []
        self.language = options.language
        self.language_probability: float | None = None
        self.language_assumed = False
        self.heard_language = ""
        self.decoded = 0.0

    def add(self, offset: float, audio: Audio) -> None:
        """Transcribe the piece of ``audio`` that starts ``offset`` seconds in."""
        self.decoded = offset + len(audio) / SAMPLE_RATE
        run = self.stt.transcribe(
            audio,
            language=self.language,
            word_timestamps=self.options.word_timestamps,
            initial_prompt=self.options.initial_prompt,
            vad=self.options.vad,
        )
        self.heard_language = run.language
        for segment in run.segments:
            if self.language is None:  # the first piece with speech decides for the rest
                self.language, self.language_probability = run.language, run.language_probability
                self.language_assumed = run.language_assumed
            self.segments.append(_shifted(segment, offset))
            self._report(offset + segment.end)
        self._report(self.decoded)

    def finish(self) -> Transcript:
        self._report(self.decoded, total=self.decoded)
        return Transcript(
            language=self.language or self.heard_language,
            duration=self.decoded,
            segments=tuple(self.segments),
            language_probability=self.language_probability,
        )

    def _report(self, seconds: float, *, total: float | None = None) -> None:
        """Progress in seconds of input; the header's duration is an estimate, so the
        total grows when decoding runs past it."""
        total = total if total is not None else max(self.header_duration, self.decoded)
        done = float(min(seconds, total))
        self.progress(
            done,
            float(total),
            seconds=round(done, 1),
            segments=len(self.segments),
            duration=round(total, 1),
            input=self.name,
        )


def write_transcript(
    transcript: Transcript,
    folder: Path,
    stem: str,
    formats: Iterable[TranscriptFormat] = ("json", "txt", "srt", "vtt"),
) -> dict[TranscriptFormat, Path]:
    """Write ``<stem>.<format>`` files into ``folder``; an empty transcript gives empty
    text and subtitles with no cues."""
    written: dict[TranscriptFormat, Path] = {}
    for fmt in formats:
        path = folder / f"{stem}.{fmt}"
        path.write_text(_render(transcript, fmt), encoding="utf-8")
        written[fmt] = path
    return written


def read_transcript(path: Path) -> Transcript:
    """A JSON transcript that :func:`write_transcript` wrote."""
    return Transcript.from_dict(json.loads(path.read_text(encoding="utf-8")))


def stem_of(source: InputFile) -> str:
    """The name outputs made from ``source`` take, before their extension."""
    return Path(source.name).stem or "transcript"


def _render(transcript: Transcript, fmt: TranscriptFormat) -> str:
    if fmt == "json":
        return json.dumps(transcript.as_dict(), ensure_ascii=False, indent=1) + "\n"
    if fmt == "srt":
        return format_srt(transcript.segments)
    if fmt == "vtt":
        return format_vtt(transcript.segments)
    return f"{transcript.text}\n" if transcript.text else ""


def _shifted(segment: Segment, offset: float) -> Segment:
    if not offset:
        return segment
    words = tuple(replace(w, start=w.start + offset, end=w.end + offset) for w in segment.words)
    return replace(segment, start=segment.start + offset, end=segment.end + offset, words=words)


def _segment_dict(index: int, segment: Segment) -> dict[str, Any]:
    return {
        "id": index,
        "start": _seconds(segment.start),
        "end": _seconds(segment.end),
        "text": segment.text,
        "words": [
            {
                "word": w.text,
                "start": _seconds(w.start),
                "end": _seconds(w.end),
                "probability": _rounded(w.probability),
            }
            for w in segment.words
        ],
        "avg_logprob": _rounded(segment.avg_logprob),
        "no_speech_prob": _rounded(segment.no_speech_prob),
    }


def _seconds(value: float) -> float:
    return round(float(value), 3)


def _rounded(value: float | None) -> float | None:
    return round(float(value), 4) if value is not None else None
