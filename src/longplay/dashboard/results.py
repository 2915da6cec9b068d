"""A job's outputs shown the way people would rather look than read.

Audio plays in the page (the player seeks with Range requests), an image shows, a
transcript reads as timed lines, a podcast script as turns with their speakers and
sources, Markdown (a summary) renders, and other small text files show as they are.
Everything stays text for the template to escape; the one exception is Markdown,
rendered by markdown-it with raw HTML off, so any tag in it comes out escaped and
links with ``javascript:`` and similar are dropped.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from markdown_it import MarkdownIt
from markupsafe import Markup

from longplay.store import files
from longplay.store.models import Artifact

PREVIEW_BYTES = 256 * 1024
"""Text outputs larger than this get a download link only."""
TEXT_TYPES = ("text/", "application/json", "application/x-subrip")
_markdown = MarkdownIt("commonmark", {"html": False, "linkify": False})


@dataclass
class Preview:
    """One output as the job page shows it; ``view`` says which way."""

    artifact: Artifact
    view: str = "download"
    """audio, video, image, transcript, script, markdown, text, data (folded) or download."""
    text: str = ""
    html: Markup | None = None
    lines: list[dict[str, Any]] = field(default_factory=list)
    title: str = ""
    sources: list[dict[str, Any]] = field(default_factory=list)


def previews(outputs: list[Artifact]) -> list[Preview]:
    """Each output with what to show of it (files read here: call in a worker thread)."""
    return [_preview(a) for a in outputs]


def _preview(artifact: Artifact) -> Preview:
    media = artifact.media_type.split(";")[0].strip().lower()
    for prefix in ("audio", "video", "image"):
        if media.startswith(prefix + "/") and media != "audio/midi":
            return Preview(artifact, view=prefix)
    if not media.startswith(TEXT_TYPES) or artifact.size > PREVIEW_BYTES:
        return Preview(artifact)
    try:
        text = files.path_of(artifact).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return Preview(artifact)
    if media == "application/json":
        return _from_json(artifact, text)
    if media == "text/markdown":
        return Preview(artifact, view="markdown", html=Markup(_markdown.render(text)))
    return Preview(artifact, view="text", text=text)


def _from_json(artifact: Artifact, text: str) -> Preview:
    try:
        data = json.loads(text)
    except ValueError:
        return Preview(artifact, view="text", text=text)
    if isinstance(data, dict) and isinstance(data.get("segments"), list):
        lines = [
            {"start": s.get("start"), "end": s.get("end"), "text": str(s.get("text", "")).strip()}
            for s in data["segments"]
            if isinstance(s, dict)
        ]
        return Preview(artifact, view="transcript", lines=lines)
    if isinstance(data, dict) and isinstance(data.get("turns"), list):
        turns = [
            {
                "speaker": str(t.get("speaker", "")),
                "text": str(t.get("text", "")),
                "sources": [str(s) for s in t.get("sources", []) if isinstance(s, str)],
                "start": t.get("start"),
            }
            for t in data["turns"]
            if isinstance(t, dict)
        ]
        passages = [p for p in data.get("passages", []) if isinstance(p, dict)]
        return Preview(
            artifact,
            view="script",
            lines=turns,
            title=str(data.get("title", "")),
            sources=passages,
        )
    # Other JSON (a score's notes, a summary's sections) is data for programs: folded.
    return Preview(artifact, view="data", text=json.dumps(data, indent=2, ensure_ascii=False))
