"""Text handling for the kinds: sentences for TTS, chunks for LLMs, subtitles; and in
their own modules the language catalogue (:mod:`~longplay.text.languages`), documents
(:mod:`~longplay.text.documents`) and checks of a model's answers
(:mod:`~longplay.text.answers`)."""

from longplay.text.chunks import chunk_text, estimate_tokens
from longplay.text.sentences import split_sentences
from longplay.text.subtitles import (
    Cue,
    SubtitleFormat,
    TimedText,
    format_srt,
    format_timestamp,
    format_vtt,
    parse_srt,
    parse_subtitles,
    parse_timestamp,
    parse_transcript_json,
    parse_vtt,
)

__all__ = [
    "Cue",
    "SubtitleFormat",
    "TimedText",
    "chunk_text",
    "estimate_tokens",
    "format_srt",
    "format_timestamp",
    "format_vtt",
    "parse_srt",
    "parse_subtitles",
    "parse_timestamp",
    "parse_transcript_json",
    "parse_vtt",
    "split_sentences",
]
