"""The MIDI file: the notes as they were played, with the tempo, metre and key found.

MIDI keeps the performance: onsets and lengths in seconds, converted to ticks at the
tempo written in the file, so a player sounds like the recording and a notation
program that imports it can quantize in its own way (the MusicXML carries ours). It is
written with ``mido``: a small pure-Python library that writes exactly the events asked
for (one tempo, one time signature, one key signature, one program), without the
numpy or setuptools weight of ``pretty_midi`` or music21's habit of quantizing.
"""

from __future__ import annotations

from pathlib import Path

from longplay.music.beat import Beat
from longplay.music.notes import Note

TICKS_PER_BEAT = 480
CHANNEL = 0


def write_midi(
    notes: list[Note], path: Path, *, beat: Beat, program: int, key: str | None, title: str
) -> None:
    """Write ``notes`` as a one-track Standard MIDI File (type 1) at ``path``.

    ``key`` is music21's spelling (``"E-"``, ``"f#"``); MIDI spells it ``"Eb"``, ``"F#m"``.
    """
    import mido

    track = mido.MidiTrack()
    track.append(mido.MetaMessage("track_name", name=title[:120], time=0))
    track.append(mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(beat.bpm), time=0))
    track.append(
        mido.MetaMessage(
            "time_signature", numerator=beat.meter.beats, denominator=beat.meter.unit, time=0
        )
    )
    if key is not None:
        track.append(mido.MetaMessage("key_signature", key=_midi_key(key), time=0))
    track.append(mido.Message("program_change", channel=CHANNEL, program=program, time=0))
    ticks_per_second = TICKS_PER_BEAT * beat.bpm / 60.0
    events: list[tuple[int, int, int, int]] = []  # tick, order (offs first), pitch, velocity
    for note in notes:
        on = round(note.onset * ticks_per_second)
        off = max(on + 1, round(note.offset * ticks_per_second))
        events.append((on, 1, note.pitch, note.velocity))
        events.append((off, 0, note.pitch, 0))
    now = 0
    for tick, _, pitch, velocity in sorted(events):
        kind = "note_on" if velocity else "note_off"
        track.append(
            mido.Message(kind, channel=CHANNEL, note=pitch, velocity=velocity, time=tick - now)
        )
        now = tick
    track.append(mido.MetaMessage("end_of_track", time=0))
    midi = mido.MidiFile(type=1, ticks_per_beat=TICKS_PER_BEAT)
    midi.tracks.append(track)
    midi.save(str(path))


def _midi_key(key: str) -> str:
    """music21's key spelling in MIDI's: ``E-`` → ``Eb``, ``f#`` → ``F#m``."""
    name = key[0].upper() + key[1:].replace("-", "b")
    return f"{name}m" if key[0].islower() else name
