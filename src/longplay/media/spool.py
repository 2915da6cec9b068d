"""Audio kept on disk between two passes over it, as raw float32 frames."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from types import TracebackType

import numpy as np

from longplay.media.loudness import Samples


class Spool:
    """Audio written block by block, then read back once, from a file of raw float32
    frames: nothing to encode or decode between the passes, and not a sample changed
    (a 16-bit WAV would round them). It costs 4 bytes a sample on disk: 88 kB a second
    of 22 kHz mono speech, 320 MB an hour. Used as a context manager, the file is
    removed at the end, whatever happens.
    """

    def __init__(self, path: Path, channels: int) -> None:
        self.path = path
        self.channels = channels
        self._writer = path.open("wb")

    def write(self, samples: Samples) -> None:
        """Append a ``(frames, channels)`` block."""
        self._writer.write(np.ascontiguousarray(samples, dtype=np.float32).tobytes())

    def read(
        self, block_frames: int, *, start: int = 0, stop: int | None = None
    ) -> Iterator[Samples]:
        """What was written from frame ``start`` up to ``stop`` (default: all of it),
        in ``(frames, channels)`` blocks of ``block_frames``. Two reads may go on at
        once, from two threads."""
        self._writer.close()
        frame_bytes = 4 * self.channels
        with self.path.open("rb") as reader:
            reader.seek(start * frame_bytes)
            left = None if stop is None else max(0, stop - start)
            while left is None or left > 0:
                count = block_frames if left is None else min(block_frames, left)
                block = np.fromfile(reader, np.float32, count=count * self.channels)
                if not len(block):
                    return
                if left is not None:
                    left -= len(block) // self.channels
                yield block.reshape(-1, self.channels)

    def __enter__(self) -> Spool:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._writer.close()
        self.path.unlink(missing_ok=True)
