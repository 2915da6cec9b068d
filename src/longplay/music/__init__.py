"""Music from notes: turning a model's activations into notes, finding the beat,
quantizing to a grid, and writing MIDI, MusicXML and a piano-roll picture.

Nothing here runs a model: :mod:`longplay.engines.notes` does, and hands its frames to
:class:`NoteTracker`.
"""

from longplay.music.notes import Note, NoteTracker, TrackerOptions, drop_overtones

__all__ = ["Note", "NoteTracker", "TrackerOptions", "drop_overtones"]
