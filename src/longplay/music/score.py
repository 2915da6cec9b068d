"""The MusicXML score, written with music21 from quantized notes and read back to check.

music21 is not a converter from performed MIDI to notation (its maintainers say so),
and unquantized input gives malformed scores; so only :class:`QuantizedNote` s, whose
lengths are whole ticks of a :data:`~longplay.music.quantize.TICKS` grid, go in.
The score is one part, on one staff or, for a keyboard whose notes reach both clefs, on
a grand staff split at middle C (:func:`_staves`). Each staff is one voice a notation
program opens as it is: it is cut wherever a note starts or ends and at every bar line,
and what sounds in each stretch is a note or a chord, tied on where a note goes on (as
music21's ``chordify`` would, at a fraction of its cost). Measures, rests, accidentals,
beams and tuplet brackets are made here in one pass and music21 only writes them out
(``makeNotation=False``). A transposing instrument's part (a B-flat trumpet, a
saxophone, a horn) is written as its players read it, at its written pitch, in its
written key, with the ``<transpose>`` that tells a notation program what sounds. The
file is then parsed again, with the standard library's XML parser, and its notes,
tied notes joined and at the pitch they sound, must be the quantized notes: a score
that does not say what was heard is an error, not an output.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, replace
from fractions import Fraction
from functools import cache
from itertools import pairwise
from pathlib import Path
from typing import Any, Literal

from longplay.music.beat import Meter
from longplay.music.quantize import TICKS, QuantizedNote

RELATIVE_TIE = 0.05
"""How close (in correlation) a key and its relative must fit the sounding lengths for
the music's last and first notes to choose between them: a plain scale fits C major
and A minor within 0.01."""
KEY_NAME = re.compile(r"^([A-Ga-g])([#b-]?)(?:\s*(major|minor))?$", re.IGNORECASE)


class ScoreMismatch(Exception):
    """The MusicXML read back does not hold the notes written into it."""


@dataclass(frozen=True)
class ScoreSummary:
    """What the MusicXML holds, as read back."""

    key: str
    key_estimated: bool
    measures: int
    notes: int


def music21_key_name(text: str) -> str:
    """``"F# minor"``, ``"Eb"``, ``"a"`` → music21's spelling (``"f#"``, ``"E-"``, ``"a"``:
    lower case is minor). Raises ValueError for anything else."""
    match = KEY_NAME.match(text.strip())
    if match is None:
        raise ValueError(f"a key is written like 'C', 'F# minor' or 'Eb major', not {text!r}")
    letter, accidental, mode = match.groups()
    accidental = {"b": "-", "B": "-"}.get(accidental, accidental)
    minor = mode.lower() == "minor" if mode else letter.islower()
    return (letter.lower() if minor else letter.upper()) + accidental


def key_label(name: str) -> str:
    """music21's spelling of a key as people write it, the inverse of
    :func:`music21_key_name`: ``"a"`` → ``"A minor"``, ``"E-"`` → ``"Eb major"``."""
    mode = "minor" if name[:1].islower() else "major"
    return f"{name[:1].upper()}{name[1:].replace('-', 'b')} {mode}"


def write_musicxml(
    notes: list[QuantizedNote],
    path: Path,
    *,
    title: str,
    bpm: float,
    meter: Meter,
    program: int,
    key: str | None,
) -> ScoreSummary:
    """Write ``notes`` as a one-part MusicXML score at ``path`` (on one staff or two,
    see :func:`_staves`) and check it by reading it back; ``key`` (music21's spelling)
    or, with None, the key music21 estimates. In a key with flats, black keys are
    spelled as flats.

    The measures, rests, ties and accidentals are made here, in one pass over
    :func:`segments`, and the file is written with music21's ``makeNotation=False``:
    music21's own ``makeNotation`` (run once by us and again on a deep copy by its
    exporter) redoes accidentals for every note against every earlier note of its bar,
    and took most of a job's time after the model.
    """
    from music21 import key as m21key
    from music21 import layout, metadata, stream, tempo

    estimated = key is None
    # An estimated key is spelled as simply as it can be; one asked for, as asked,
    # unless no key signature has that many sharps or flats.
    most = MOST_ESTIMATED_ACCIDENTALS if estimated else MOST_ACCIDENTALS
    found = _plainest(_estimated_key(notes) if key is None else m21key.Key(key), most)
    instrument = _instrument(program)
    written, written_key = _as_written(notes, found, instrument)
    written_key = _plainest(written_key, most)
    bar = int(meter.bar_quarters * TICKS)
    length = max((q.start + q.length for q in notes), default=0)
    count = max(1, -(-length // bar))
    staves = [
        _measures(staff_notes, bar, count, clef_sign, written_key, meter)
        for clef_sign, staff_notes in _staves(written, program)
    ]
    staves[0][0].insert(0, tempo.MetronomeMark(number=round(bpm, 1), referent=1.0))
    score = stream.Score()
    score.metadata = metadata.Metadata(title=title)
    parts = [stream.Part() if len(staves) == 1 else stream.PartStaff() for _ in staves]
    parts[0].insert(0, instrument)
    for part, measures in zip(parts, staves, strict=True):
        for index, measure in enumerate(measures):
            part.insert(Fraction(index * bar, TICKS), measure)
        stream.makeNotation.makeTupletBrackets(part.flatten(), inPlace=True)
        score.insert(0, part)
    if len(parts) > 1:  # music21 writes staves it finds grouped as one part of two staves
        score.insert(0, layout.StaffGroup(parts, symbol="brace", barTogether=True))
    score.write("musicxml", fp=str(path), makeNotation=False)
    return _check(path, notes, found.tonicPitchNameWithCase, estimated)


Tie = Literal["start", "continue", "stop"] | None

MOST_ESTIMATED_ACCIDENTALS = 6
"""The most sharps or flats an estimated key is written with: F-sharp major keeps six,
C-sharp major's seven are D-flat major's five."""
MOST_ACCIDENTALS = 7
"""The most sharps or flats a key signature has (C-sharp and C-flat major)."""

MIDDLE_C = 60
REACH = {"treble": (55, 86), "bass": (35, 65)}
"""MIDI pitches a clef's staff holds with at most two ledger lines (treble: G3 to D6,
bass: B1 to F4)."""
GRAND_STAFF_PROGRAMS = frozenset([*range(0, 8), *range(16, 24), 46])
"""General MIDI programs printed on a grand staff: pianos, organs and the harp."""
OCTAVE_CLEFS = {
    **dict.fromkeys(range(24, 32), "treble8vb"),
    **dict.fromkeys(range(32, 40), "bass8vb"),
}
"""General MIDI programs whose staff is an octave above their sound, as their players
read it: guitars on a treble clef, basses on a bass clef, each marked 8vb. The notes'
pitches in the file stay the pitches that sound; the clef moves them on the page."""
CLEFS = {
    "treble": "TrebleClef",
    "bass": "BassClef",
    "treble8vb": "Treble8vbClef",
    "bass8vb": "Bass8vbClef",
}
"""music21's class for each clef."""

NOTATABLE = (144, 96, 72, 48, 36, 24, 18, 16, 12, 9, 8, 6, 4, 3, 2, 1)
"""Lengths in ticks a single note can have (whole, dotted half, ..., triplets),
longest first: a stretch of another length is written as several, tied."""


def segments(
    notes: list[QuantizedNote], bar: int
) -> list[tuple[int, int, list[tuple[QuantizedNote, Tie]]]]:
    """The part as one voice: ``(start, length, [(note, tie)])`` for every stretch
    (in ticks) in which the same notes sound, cut at every onset, every end and every
    bar line, and again where a stretch is not one of the :data:`NOTATABLE` lengths; a
    note that spans several stretches is tied across them. Stretches where nothing
    sounds are left out (they are rests)."""
    if not notes:
        return []
    ends = [q.start + q.length for q in notes]
    edges = {q.start for q in notes} | set(ends)
    edges |= set(range(0, max(ends), bar))
    cuts = sorted(edges)
    by_start = sorted(notes, key=lambda q: q.start)
    found = []
    held: list[QuantizedNote] = []
    next_note = 0
    for a, b in pairwise(cuts):
        while next_note < len(by_start) and by_start[next_note].start == a:
            held.append(by_start[next_note])
            next_note += 1
        held = [q for q in held if q.start + q.length > a]
        if held:
            for x, y in _pieces(a, b):
                found.append((x, y - x, [(q, _tie(q, x, y)) for q in held]))
    return found


def _pieces(a: int, b: int) -> list[tuple[int, int]]:
    """``a`` to ``b`` cut into :data:`NOTATABLE` lengths, longest first."""
    found = []
    while a < b:
        length = next(n for n in NOTATABLE if n <= b - a)
        found.append((a, a + length))
        a += length
    return found


def _tie(note: QuantizedNote, a: int, b: int) -> Tie:
    first, last = note.start == a, note.start + note.length == b
    if first and last:
        return None
    return "start" if first else "stop" if last else "continue"


class _Spelling:
    """Pitches spelled for the key, with accidentals shown as an engraver would: where a
    note's alteration differs from the key's or from an earlier note of the same line
    or space in the bar; not on a note tied over from before (which does not carry its
    accidental to the notes after it)."""

    def __init__(self, signature: Any, *, flats: bool) -> None:
        self.signature, self.flats = signature, flats
        self.measure = -1
        self.current: dict[tuple[str, int | None], float] = {}

    def begin_measure(self, index: int) -> _Spelling:
        if index != self.measure:
            self.measure, self.current = index, {}
        return self

    def pitch(self, midi: int, tie: Tie) -> Any:
        from music21 import pitch

        spelled = pitch.Pitch(midi=midi)
        if self.flats and spelled.accidental is not None and spelled.accidental.name == "sharp":
            spelled = spelled.getEnharmonic() or spelled
        line = (spelled.step, spelled.octave)
        alter = spelled.accidental.alter if spelled.accidental is not None else 0.0
        in_key = self.signature.accidentalByStep(spelled.step)
        was = self.current.get(line, in_key.alter if in_key is not None else 0.0)
        tied_over = tie in ("stop", "continue")
        show = alter != was and not tied_over
        if not tied_over:  # a tie carries its note's accidental, not the line's
            self.current[line] = alter
        if show and spelled.accidental is None:
            spelled.accidental = pitch.Accidental("natural")
        if spelled.accidental is not None:
            spelled.accidental.displayStatus = show
        return spelled


def _element(sounding: list[tuple[QuantizedNote, Tie]], spelling: _Spelling) -> Any:
    """A note, or a chord of notes, each with its tie."""
    from music21 import note as m21note
    from music21 import tie

    notes = []
    for q, tie_type in sorted(sounding, key=lambda held: held[0].pitch):
        written = m21note.Note(spelling.pitch(q.pitch, tie_type))
        if tie_type is not None:
            written.tie = tie.Tie(tie_type)
        notes.append(written)
    element = notes[0] if len(notes) == 1 else _chord_class()(notes)
    element.volume.velocity = max(q.velocity for q, _ in sounding)
    return element


@cache
def _chord_class() -> Any:
    """music21's Chord, less a wasted copy: its MusicXML writer calls
    ``sortAscending()`` on every chord and drops the sorted deep copy it returns (a
    third of the writing time). Our chords are built sorted, so the copy is skipped.
    Made on first use, as music21 is imported late."""
    from music21 import chord

    class SortedChord(chord.Chord):
        def sortAscending(self, *, inPlace: bool = False) -> Any:
            return super().sortAscending(inPlace=True) if inPlace else self

    return SortedChord


def _rests(measure: Any, start: int, end: int, bar: int) -> None:
    """Rests from ``start`` to ``end`` ticks into ``measure`` of ``bar`` ticks. Whether a
    rest fills its measure is said here: left to music21, its exporter looks up each
    rest's time signature through the score."""
    from music21 import note as m21note

    for a, b in _pieces(start, end):
        rest = m21note.Rest(quarterLength=Fraction(b - a, TICKS))
        rest.fullMeasure = b - a == bar
        measure.insert(Fraction(a, TICKS), rest)


def _staves(notes: list[QuantizedNote], program: int) -> list[tuple[str, list[QuantizedNote]]]:
    """The staves to write ``notes`` on, each a clef (of :data:`CLEFS`) and its notes:
    a guitar's or a bass's one octave clef (:data:`OCTAVE_CLEFS`); else one staff where
    every note lies within a clef's :data:`REACH`; for a keyboard or a harp
    (:data:`GRAND_STAFF_PROGRAMS`) whose notes reach further, a grand staff, split at
    middle C, as such music is printed; for another instrument, the clef of most of its
    notes."""
    if program in OCTAVE_CLEFS:
        return [(OCTAVE_CLEFS[program], notes)]
    pitches = [q.pitch for q in notes]
    for sign, (low, high) in REACH.items():
        if all(low <= p <= high for p in pitches):
            return [(sign, notes)]
    upper = [q for q in notes if q.pitch >= MIDDLE_C]
    lower = [q for q in notes if q.pitch < MIDDLE_C]
    if program in GRAND_STAFF_PROGRAMS and upper and lower:
        return [("treble", upper), ("bass", lower)]
    low = sum(pitches) / len(pitches) < MIDDLE_C
    return [("bass" if low else "treble", notes)]


def _measures(
    notes: list[QuantizedNote], bar: int, count: int, clef_sign: str, key: Any, meter: Meter
) -> list[Any]:
    """One staff's ``count`` measures of ``bar`` ticks: its clef, key and time signature
    in the first, then the notes as :func:`segments` cuts them, rests between."""
    from music21 import clef, stream
    from music21 import key as m21key
    from music21 import meter as m21meter

    signature = m21key.KeySignature(key.sharps)
    measures = [stream.Measure(number=index + 1) for index in range(count)]
    staff_clef = getattr(clef, CLEFS[clef_sign])()
    time_signature = m21meter.TimeSignature(str(meter))
    for element in (staff_clef, signature, time_signature):
        measures[0].insert(0, element)
    filled = [0] * count
    """Ticks of each measure written so far."""
    spelling = _Spelling(signature, flats=key.sharps < 0)
    for start, ticks, sounding in segments(notes, bar):
        index, at = divmod(start, bar)
        measure = measures[index]
        if at > filled[index]:
            _rests(measure, filled[index], at, bar)
        element = _element(sounding, spelling.begin_measure(index))
        element.quarterLength = Fraction(ticks, TICKS)
        measure.insert(Fraction(at, TICKS), element)
        filled[index] = at + ticks
    for measure, done in zip(measures, filled, strict=True):
        if done < bar:
            _rests(measure, done, bar, bar)
        _beam(measure, lent=[] if measure is measures[0] else [staff_clef, time_signature])
    return measures


def _beam(measure: Any, lent: list[Any]) -> None:
    """Beam ``measure``'s notes and turn their stems, lending it the first measure's
    clef and time signature (``lent``) for the while: music21 beams by the time
    signature and turns stems by the clef, and looks up a measure's in the score when
    it has none. In a measure not yet in a score none is found (its eighths kept their
    flags), and in a part each look-up walks the part (0.1-0.15 s more for the 240
    measures of a 1,000-note piano score)."""
    from music21 import stream

    for element in lent:
        measure.insert(0, element)
    stream.makeNotation.makeBeams(measure, inPlace=True, failOnNoTimeSignature=True)
    for element in lent:
        measure.remove(element)


def _estimated_key(notes: list[QuantizedNote]) -> Any:
    """The key music21's default analysis (Krumhansl-Schmuckler's method with
    Aarden-Essen's weights) hears in the notes' pitches, weighted by their lengths. The
    analysis reads only how long each pitch class sounds in all, so it is given one note
    per pitch class that long, not every note. Its ``process`` gives the best key alone;
    ``Stream.analyze`` would also build the 23 others as ``Key`` objects (12-18 ms)."""
    from music21 import key as m21key
    from music21 import note as m21note
    from music21 import pitch, stream
    from music21.analysis.discrete import AardenEssen

    lengths: dict[int, int] = {}
    for q in notes:
        lengths[q.pitch % 12] = lengths.get(q.pitch % 12, 0) + q.length
    line: stream.Stream[m21note.Note] = stream.Stream()
    at = 0
    for pitch_class, ticks in sorted(lengths.items()):
        line.insert(
            Fraction(at, TICKS),
            m21note.Note(pitch.Pitch(midi=60 + pitch_class), quarterLength=Fraction(ticks, TICKS)),
        )
        at += ticks
    analysis = AardenEssen()
    (tonic, mode, fit), _ = analysis.process(line, storeAlternatives=True)
    # The key with the same signature (C major's is A minor's): told apart by which
    # note the music ends on, else starts on, where the sounding lengths cannot.
    relative_mode = "minor" if mode == "major" else "major"
    relative = (tonic.pitchClass + (9 if mode == "major" else 3)) % 12
    close = next(
        (
            p
            for p, m, c in analysis.alternativeSolutions
            if m == relative_mode and p.pitchClass == relative and fit - c <= RELATIVE_TIE
        ),
        None,
    )
    if close is not None:
        for ends_on in _last_and_first_pitch_classes(notes):
            if ends_on == tonic.pitchClass:
                break
            if ends_on == relative:
                return m21key.Key(close, relative_mode)
    return m21key.Key(tonic, mode)


def _last_and_first_pitch_classes(notes: list[QuantizedNote]) -> list[int]:
    """The pitch class of the lowest note of the last onset, then of the first."""
    if not notes:
        return []
    last = max(q.start for q in notes)
    first = min(q.start for q in notes)
    return [min(q.pitch for q in notes if q.start == at) % 12 for at in (last, first)]


def _plainest(key: Any, most: int) -> Any:
    """``key``, or the same key spelled the other way (C-sharp major as D-flat major)
    when it has more than ``most`` sharps or flats: the key's name and the notes' spelling
    come from MIDI numbers (C-sharp, not D-flat) and a transposing instrument's
    transposition, neither of which minds how many there are."""
    from music21 import key as m21key

    if abs(key.sharps) <= most:
        return key
    other = key.tonic.getEnharmonic()
    return m21key.Key(other.name, key.mode) if other is not None else key


def _instrument(program: int) -> Any:
    """The instrument General MIDI ``program`` names; a piano where music21 knows none."""
    from music21 import instrument

    try:
        return instrument.instrumentFromMidiProgram(program)
    except instrument.InstrumentException:
        return instrument.Piano()


def _as_written(
    notes: list[QuantizedNote], key: Any, instrument: Any
) -> tuple[list[QuantizedNote], Any]:
    """``notes`` (as they sound) and ``key`` as ``instrument``'s part is written: for a
    transposing instrument, shifted by its transposition (a B-flat trumpet's a major
    second up: a C that sounds is a D on its part, in a key a step higher). music21
    writes the instrument's ``<transpose>`` but leaves the pitches as they are given."""
    if instrument.transposition is None:
        return notes, key
    up = instrument.transposition.reverse()
    return [replace(q, pitch=q.pitch + up.semitones) for q in notes], key.transpose(up)


def _check(path: Path, notes: list[QuantizedNote], key: str, estimated: bool) -> ScoreSummary:
    try:
        measures, sounding = read_musicxml(path)
    except (ET.ParseError, ValueError, KeyError) as exc:
        raise ScoreMismatch(f"the MusicXML does not parse: {exc}") from exc
    heard = sorted(_tied_notes(sounding))
    written = sorted((q.offset, q.pitch, q.quarter_length) for q in notes)
    if heard != written:
        missing = sorted(set(written) - set(heard))[:3]
        extra = sorted(set(heard) - set(written))[:3]
        raise ScoreMismatch(
            f"the MusicXML read back differs from the quantized notes: missing {missing}, "
            f"unexpected {extra}"
        )
    return ScoreSummary(key=key, key_estimated=estimated, measures=measures, notes=len(heard))


STEPS = {"C": 0, "D": 2, "E": 4, "F": 5, "G": 7, "A": 9, "B": 11}

Sounding = tuple[Fraction, Fraction, int, Tie]
"""A written note as read: start and end in quarter notes, the MIDI pitch it sounds,
tie."""


def read_musicxml(path: Path) -> tuple[int, list[Sounding]]:
    """The measures and the notes of a one-part MusicXML file (score-partwise), on
    one staff or several (their notes follow each other in a measure, a ``<backup>``
    between).

    Read with the standard library's parser, not music21's (which builds a whole
    music21 score, several times slower than writing it): only what the check needs,
    the ``<divisions>`` and ``<transpose>`` (what to add to a written pitch for the
    pitch that sounds), every ``<note>``'s pitch, duration, chord and ties, and
    ``<backup>``/``<forward>``.
    """
    root = ET.parse(path).getroot()
    part = root.find("part")
    if part is None:
        raise ValueError("it has no <part>")
    divisions, transposed, bar_start = 1, 0, Fraction(0)
    sounding: list[Sounding] = []
    measures = part.findall("measure")
    for measure in measures:
        at = longest = Fraction(0)
        onset = at
        for element in measure:
            if element.tag == "attributes":
                divisions = int(element.findtext("divisions", str(divisions)))
                transpose = element.find("transpose")
                if transpose is not None:
                    transposed = int(transpose.findtext("chromatic", "0")) + 12 * int(
                        transpose.findtext("octave-change", "0")
                    )
            elif element.tag in ("backup", "forward"):
                moved = Fraction(int(element.findtext("duration", "0")), divisions)
                at += moved if element.tag == "forward" else -moved
            elif element.tag == "note" and element.find("grace") is None:
                length = Fraction(int(element.findtext("duration", "0")), divisions)
                if element.find("chord") is None:
                    onset, at = at, at + length
                pitch = element.find("pitch")
                if pitch is not None:
                    sounding.append(
                        (
                            bar_start + onset,
                            bar_start + onset + length,
                            _midi(pitch) + transposed,
                            _tie_of(element),
                        )
                    )
            longest = max(longest, at)
        bar_start += longest
    return len(measures), sounding


def _midi(pitch: ET.Element) -> int:
    alter = float(pitch.findtext("alter", "0"))
    return (
        STEPS[pitch.findtext("step", "")]
        + round(alter)
        + 12 * (int(pitch.findtext("octave", "")) + 1)
    )


def _tie_of(note: ET.Element) -> Tie:
    types = {tie.get("type") for tie in note.findall("tie")}
    if types == {"start", "stop"}:
        return "continue"
    return "start" if "start" in types else "stop" if "stop" in types else None


def _tied_notes(sounding: list[Sounding]) -> list[tuple[Fraction, int, Fraction]]:
    """``(offset, MIDI pitch, length)`` of every note, in quarter notes, with each run
    of tied notes of one pitch joined. Joined per pitch, not per chord (as music21's
    ``stripTies`` does): a chord ties some of its notes onwards and not others."""
    held: dict[int, tuple[Fraction, Fraction]] = {}
    """Pitch → start and end of a tied run not yet stopped."""
    found = []
    for offset, end, pitch, tie in sorted(sounding, key=lambda s: s[0]):
        start = offset
        if tie in ("stop", "continue") and pitch in held and held[pitch][1] == offset:
            start = held.pop(pitch)[0]
        if tie in ("start", "continue"):
            held[pitch] = (start, end)
        else:
            found.append((start, pitch, end - start))
    found.extend((start, pitch, end - start) for pitch, (start, end) in held.items())
    return found
