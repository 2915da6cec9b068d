"""Subtitles: write SRT and WebVTT from timed segments, and read them back into cues.

Translation keeps the timings of the cues it reads, so parsing is lenient about what
real files contain (a byte-order mark, CRLF line ends, missing or repeated cue numbers,
``.`` instead of ``,`` in SRT times, cue settings after VTT times, NOTE/STYLE/REGION
blocks) and strict only where a guess would move a cue: an unreadable timing line is an
:class:`~longplay.framework.errors.InvalidInput`.
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from longplay.framework.errors import InvalidInput

SubtitleFormat = Literal["srt", "vtt", "json"]

_TIMESTAMP = re.compile(r"^(?:(\d+):)?([0-5]?\d):([0-5]?\d)[,.](\d{1,3})$")
_TIMING_LINE = re.compile(r"^\s*(\S+)\s+-->\s+(\S+)(?:\s+(.*))?$")
_VTT_VOICE = re.compile(r"^<v(?:\.[^\s>]*)?\s+([^>]+)>")
_VTT_TAG = re.compile(r"<[^>\n]*>")
_VTT_BLOCKS_TO_SKIP = ("NOTE", "STYLE", "REGION")


class TimedText(Protocol):
    """Anything with a start, an end (seconds) and text: an STT segment or a :class:`Cue`."""

    @property
    def start(self) -> float: ...

    @property
    def end(self) -> float: ...

    @property
    def text(self) -> str: ...


@dataclass(frozen=True)
class Cue:
    """One subtitle: shown from ``start`` to ``end`` seconds.

    A WebVTT cue's text is read without its markup, which a translation could not keep
    in place; who speaks it (``<v Ann>``), its identifier and its settings are kept
    beside it and written back."""

    start: float
    end: float
    text: str
    voice: str | None = None
    identifier: str | None = None
    settings: str = ""


def format_timestamp(seconds: float, *, decimal_marker: Literal[",", "."]) -> str:
    """``HH:MM:SS,mmm`` (SRT, ``decimal_marker=","``) or ``HH:MM:SS.mmm`` (WebVTT)."""
    total_ms = max(0, round(seconds * 1000))
    hours, rest = divmod(total_ms, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    secs, millis = divmod(rest, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{decimal_marker}{millis:03d}"


def parse_timestamp(value: str) -> float:
    """Seconds from ``[HH:]MM:SS,mmm`` or ``[HH:]MM:SS.mmm``."""
    match = _TIMESTAMP.match(value.strip())
    if match is None:
        raise InvalidInput(f"not a subtitle timestamp: {value!r}")
    hours, minutes, secs, fraction = match.groups()
    whole = int(hours or 0) * 3600 + int(minutes) * 60 + int(secs)
    # One division of whole milliseconds gives the float nearest the written time, as
    # a transcript's JSON holds it: 2 + 780 / 1000 would be 2.7800000000000002.
    return (whole * 1000 + int(fraction.ljust(3, "0"))) / 1000


def format_srt(cues: Iterable[TimedText]) -> str:
    """SubRip text, cues numbered from 1; cues with empty text are left out."""
    blocks: list[str] = []
    for cue in _non_empty(cues):
        start = format_timestamp(cue.start, decimal_marker=",")
        end = format_timestamp(cue.end, decimal_marker=",")
        blocks.append(f"{len(blocks) + 1}\n{start} --> {end}\n{_cue_lines(cue.text)}\n")
    return "\n".join(blocks)


def format_vtt(cues: Iterable[TimedText]) -> str:
    """WebVTT text; ``&``, ``<`` and ``>`` in cue text are escaped as the format requires.
    A :class:`Cue`'s identifier, settings and voice are written as they were read."""
    blocks: list[str] = ["WEBVTT\n"]
    for cue in _non_empty(cues):
        timing = (
            f"{format_timestamp(cue.start, decimal_marker='.')} --> "
            f"{format_timestamp(cue.end, decimal_marker='.')}"
        )
        text = html.escape(_cue_lines(cue.text), quote=False)
        if isinstance(cue, Cue):
            timing = f"{timing} {cue.settings}" if cue.settings else timing
            timing = f"{cue.identifier}\n{timing}" if cue.identifier else timing
            text = f"<v {html.escape(cue.voice, quote=False)}>{text}" if cue.voice else text
        blocks.append(f"{timing}\n{text}\n")
    return "\n".join(blocks)


def parse_srt(text: str) -> list[Cue]:
    """Cues from SubRip text."""
    cues = []
    for block in _blocks(text):
        timing_at = _timing_line_index(block)
        if timing_at is None:
            raise InvalidInput(f"SRT block without a timing line: {block[0]!r}")
        cues.append(_cue(block, timing_at, unescape=False))
    return cues


def parse_vtt(text: str) -> list[Cue]:
    """Cues from WebVTT text (cue settings, identifiers and NOTE/STYLE/REGION ignored)."""
    blocks = _blocks(text)
    if not blocks or not blocks[0][0].startswith("WEBVTT"):
        raise InvalidInput("not WebVTT: the first line must start with WEBVTT")
    cues = []
    for block in blocks[1:]:
        if block[0].startswith(_VTT_BLOCKS_TO_SKIP):
            continue
        timing_at = _timing_line_index(block)
        if timing_at is None:
            raise InvalidInput(f"WebVTT block without a timing line: {block[0]!r}")
        cues.append(_vtt_cue(block, timing_at))
    return cues


def load_json(text: str | bytes, what: str) -> Any:
    """``text`` parsed, or :class:`InvalidInput` saying why ``what`` cannot be: Python's
    parser also fails on nesting deeper than its recursion limit and on integers of
    more than 4,300 digits, neither of them a ``JSONDecodeError``."""
    try:
        return json.loads(text)
    except RecursionError:
        raise InvalidInput(f"{what} is JSON nested too deeply to read") from None
    except json.JSONDecodeError as exc:
        raise InvalidInput(f"{what} is not valid JSON: {exc}") from exc
    except ValueError:
        raise InvalidInput(f"{what} has a number of over 4,300 digits") from None


def parse_transcript_json(data: str | bytes | Mapping[str, Any] | list[Any]) -> list[Cue]:
    """Cues from a transcript: ``{"segments": [{"start", "end", "text"}, ...]}`` or the list.

    This is the shape longplay writes and the OpenAI ``verbose_json`` shape; extra keys
    (words, language, ...) are ignored.
    """
    if isinstance(data, str | bytes):
        data = load_json(data, "transcript")
    segments = data.get("segments") if isinstance(data, Mapping) else data
    if not isinstance(segments, list):
        raise InvalidInput("transcript JSON has no list of segments")
    return [_segment_cue(number, segment) for number, segment in enumerate(segments, 1)]


def _segment_cue(number: int, segment: object) -> Cue:
    """One segment of a transcript, or :class:`InvalidInput` saying which is wrong and how."""
    if not isinstance(segment, Mapping) or not {"start", "end", "text"} <= segment.keys():
        raise InvalidInput(f"transcript segment {number} is not an object with start, end and text")
    try:
        start, end = float(segment["start"]), float(segment["end"])
    except (TypeError, ValueError):
        raise InvalidInput(
            f"transcript segment {number}: start and end must be numbers of seconds"
        ) from None
    if not isinstance(segment["text"], str):
        raise InvalidInput(f"transcript segment {number}: its text must be a string")
    return Cue(start=start, end=end, text=segment["text"].strip())


def parse_subtitles(text: str, *, format: SubtitleFormat | None = None) -> list[Cue]:
    """Cues from SRT, WebVTT or transcript JSON; ``format=None`` tells them apart by content."""
    if format is None:
        head = text.lstrip("\ufeff \t\r\n")
        format = "vtt" if head.startswith("WEBVTT") else "json" if head[:1] in "{[" else "srt"
    if format == "vtt":
        return parse_vtt(text)
    if format == "json":
        return parse_transcript_json(text)
    return parse_srt(text)


def _non_empty(cues: Iterable[TimedText]) -> Iterable[TimedText]:
    return (cue for cue in cues if cue.text.strip())


def _cue_lines(text: str) -> str:
    """Cue text without blank lines, which would end the cue early."""
    return "\n".join(line.strip() for line in text.strip().splitlines() if line.strip())


def _blocks(text: str) -> list[list[str]]:
    lines = text.lstrip("\ufeff").replace("\r\n", "\n").replace("\r", "\n").split("\n")
    blocks: list[list[str]] = []
    current: list[str] = []
    for line in lines:
        if line.strip():
            current.append(line.rstrip())
        elif current:
            blocks.append(current)
            current = []
    if current:
        blocks.append(current)
    return blocks


def _timing_line_index(block: list[str]) -> int | None:
    """The timing line is the first line or, after a cue number or identifier, the second."""
    for index in range(min(2, len(block))):
        if "-->" in block[index]:
            return index
    return None


def _cue(block: list[str], timing_at: int, *, unescape: bool) -> Cue:
    match = _TIMING_LINE.match(block[timing_at])
    if match is None:
        raise InvalidInput(f"unreadable subtitle timing line: {block[timing_at]!r}")
    text = "\n".join(line.strip() for line in block[timing_at + 1 :])
    if unescape:
        text = html.unescape(text)
    return Cue(start=parse_timestamp(match[1]), end=parse_timestamp(match[2]), text=text)


def _vtt_cue(block: list[str], timing_at: int) -> Cue:
    """A WebVTT cue: its text without markup (the voice kept apart), its identifier and
    its settings."""
    match = _TIMING_LINE.match(block[timing_at])
    if match is None:
        raise InvalidInput(f"unreadable subtitle timing line: {block[timing_at]!r}")
    text = "\n".join(line.strip() for line in block[timing_at + 1 :])
    voice = _VTT_VOICE.match(text)
    return Cue(
        start=parse_timestamp(match[1]),
        end=parse_timestamp(match[2]),
        text=html.unescape(_VTT_TAG.sub("", text)),
        voice=html.unescape(voice[1].strip()) if voice else None,
        identifier=block[0] if timing_at == 1 else None,
        settings=(match[3] or "").strip(),
    )
