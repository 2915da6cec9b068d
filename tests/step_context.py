"""The built-in kinds' steps run by name, in the framework's recording context
(``longplay.framework.testing``, which kind authors use too)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from pydantic import BaseModel

from longplay.framework import InputFile, get_kind
from longplay.framework.testing import MemoryLibrary, RecordingContext, input_file, run_steps
from longplay.kinds import load as load_kinds

__all__ = ["MemoryLibrary", "RecordingContext", "input_file", "run_kind"]


def run_kind(
    kind_name: str, params: BaseModel, inputs: Sequence[InputFile], workdir: Path
) -> RecordingContext:
    """Run every step of a built-in kind in order, passing state through JSON as the
    runner does."""
    load_kinds()
    kind = get_kind(kind_name)
    assert kind is not None
    return run_steps(kind, params, inputs, workdir)
