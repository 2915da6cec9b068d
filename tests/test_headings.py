"""Passages are named by the headings above them, and one outline gives one path in
every format a collection reads."""

from __future__ import annotations

import io
from pathlib import Path

import docx
from step_context import input_file

from longplay.text.passages import cut_passages
from longplay.text.reading import read_document

OUTLINE_MD = b"""# Harbour history

The harbour wall was built in 1820.

## Timetable

### Winter

Ferries leave at nine only.
"""


def outline_docx() -> bytes:
    """The same outline in Word's own styles: a Title above Heading 1 and Heading 2."""
    document = docx.Document()
    document.add_heading("Harbour history", level=0)  # the Title style
    document.add_paragraph("The harbour wall was built in 1820.")
    document.add_heading("Timetable", level=1)
    document.add_heading("Winter", level=2)
    document.add_paragraph("Ferries leave at nine only.")
    out = io.BytesIO()
    document.save(out)
    return out.getvalue()


def headings(tmp_path: Path, name: str, data: bytes) -> list[str | None]:
    path = tmp_path / name
    path.write_bytes(data)
    document = read_document(input_file(path, "", name=name))
    return [p.heading for p in cut_passages(document, max_words=50, overlap_words=0)]


def test_a_word_title_stays_above_its_first_heading(tmp_path: Path) -> None:
    expected = ["Harbour history", "Harbour history > Timetable > Winter"]
    assert headings(tmp_path, "outline.md", OUTLINE_MD) == expected
    assert headings(tmp_path, "outline.docx", outline_docx()) == expected
