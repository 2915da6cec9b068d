"""A piano-roll picture of the notes: time across, pitch up, one bar per note.

For a person to look at before opening a notation program: each note is a bar as
long as it sounded, darker the louder it is; thin lines mark the beats and stronger
ones the bars, and a grey band marks every C, labelled with its octave. Drawn with
Pillow, which comes with music21's plotting dependencies anyway.
"""

from __future__ import annotations

import math
from pathlib import Path

from longplay.music.beat import Beat
from longplay.music.notes import Note

ROW = 6
"""Pixels per semitone."""
PIXELS_PER_SECOND = 80
MAX_WIDTH = 8000
"""A long recording is drawn narrower per second rather than wider than this."""
MARGIN = 28


def draw_pianoroll(notes: list[Note], path: Path, *, beat: Beat, duration: float) -> None:
    """Draw ``notes`` over ``duration`` seconds as a PNG at ``path``."""
    from PIL import Image, ImageDraw

    low = min((n.pitch for n in notes), default=60) - 2
    high = max((n.pitch for n in notes), default=72) + 2
    scale = min(PIXELS_PER_SECOND, (MAX_WIDTH - 2 * MARGIN) / max(duration, 1.0))
    width = int(MARGIN * 2 + math.ceil(duration * scale))
    height = MARGIN * 2 + (high - low + 1) * ROW
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)

    def y_of(pitch: int) -> int:
        return MARGIN + (high - pitch) * ROW

    for pitch in range(low, high + 1):
        if pitch % 12 == 0:
            draw.rectangle(
                [MARGIN, y_of(pitch), width - MARGIN, y_of(pitch) + ROW - 1], fill=(238, 238, 238)
            )
            draw.text((2, y_of(pitch) - 3), f"C{pitch // 12 - 1}", fill=(90, 90, 90))
    beat_s = beat.seconds_per_quarter
    per_bar = max(1, round(float(beat.meter.bar_quarters)))
    first = math.ceil(-beat.first_downbeat / beat_s)
    for index in range(first, int((duration - beat.first_downbeat) / beat_s) + 1):
        x = MARGIN + (beat.first_downbeat + index * beat_s) * scale
        bar = index % per_bar == 0
        draw.line([x, MARGIN, x, height - MARGIN], fill=(150, 150, 150) if bar else (225, 225, 225))
    for note in notes:
        shade = int(200 - 170 * note.velocity / 127)
        x0, x1 = MARGIN + note.onset * scale, MARGIN + note.offset * scale
        draw.rectangle(
            [x0, y_of(note.pitch) + 1, max(x0 + 1, x1), y_of(note.pitch) + ROW - 2],
            fill=(shade, shade, 230),
        )
    image.save(path, format="PNG", optimize=True)
