"""Encoding spooled audio through its planned limiter, a long MP3 in two halves side by side.

LAME is a single thread, and for long audio it is most of the time mastering takes. An
MP3 of more than a minute, where the encoder allows it
(:attr:`~longplay.media.encode.AudioEncoder.can_encode_tail`), has its second half
encoded by a second codec side by side with the first, the two meeting in the pause
nearest the middle that has room for them
(:meth:`~longplay.media.encode.AudioEncoder.encode_tail`): the file decodes as if it
had been encoded whole. ``synthesize`` (pauses between sentences) and the podcast's
episode (pauses between turns) master this way.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from longplay.media.encode import MP3_DELAY, AudioEncoder
from longplay.media.limiter import PlannedLimiter
from longplay.media.spool import Spool

SPLIT_ABOVE_S = 60.0
"""Audio longer than this is encoded in two halves, where it can be."""
SPLIT_MARGIN_S = 0.05
"""Silence kept on each side of where the two codecs meet. At 22,050 Hz the halves
decode to the very samples of the whole from 0.03 s on; with 0.05 a sentence's pause
of 0.3 s has room for the second codec's late start."""
LATEST_START = MP3_DELAY + 1152
"""The most frames the second half's codec starts after the first half ends (its
delay, and up to a packet of MPEG-1 Layer III: see ``encode_tail``)."""

Pause = tuple[int, int]
"""Where a stretch of silence starts and ends, in frames."""


def split_point(pauses: Sequence[Pause], frames: int, sample_rate: int) -> int | None:
    """Where the first half of ``frames`` of audio ends: in the pause nearest the middle
    that leaves room for the second half's codec to start late, with silence on both
    sides. ``None``: the audio is short, or has no such pause."""
    if frames < SPLIT_ABOVE_S * sample_rate:
        return None
    margin = round(SPLIT_MARGIN_S * sample_rate)
    room = [
        start + margin
        for start, end in pauses
        if end - start >= 2 * margin + LATEST_START and end < frames
    ]
    if not room:
        return None
    return min(room, key=lambda stop: abs(stop - frames // 2))


def encode_limited(
    encoder: AudioEncoder,
    spool: Spool,
    limiter: PlannedLimiter,
    *,
    frames: int,
    sample_rate: int,
    pauses: Sequence[Pause],
) -> Iterator[float]:
    """Put the ``frames`` of audio in ``spool`` through ``limiter`` into ``encoder``, a
    second of audio at a time, yielding after each block the share of the work done
    (the halves of a split go at about the same pace: the first one's share)."""
    stop = split_point(pauses, frames, sample_rate) if encoder.can_encode_tail else None
    if stop is not None:
        encoder.encode_tail(
            stop,
            lambda start: map(limiter.at(start).process, spool.read(sample_rate, start=start)),
        )
    first = max(stop or frames, 1)
    done = 0
    for samples in spool.read(sample_rate, stop=stop):
        encoder.write(limiter.process(samples))
        done += len(samples)
        yield done / first
