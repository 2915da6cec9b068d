"""The rules a step's context keeps, in a running job and in a test alike.

The runner's context (``longplay.jobs.context``) and the testing one
(:mod:`longplay.framework.testing`) both check what a step hands them here, so a step
that passes its tests is refused by the service for nothing they did not refuse.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from longplay.framework.errors import PermanentError


def output_path(path: Path, workdir: Path, added: Iterable[Path]) -> Path:
    """``path`` resolved, as ``ctx.add_output`` keeps it; a :class:`PermanentError`
    (code ``invalid_output``) for a path that is not a file, one outside ``workdir``
    (a folder under it is inside) and one among ``added`` (this step's, resolved)."""
    path = Path(path)
    if not path.is_file():
        raise PermanentError(f"output {path} is not a file", code="invalid_output")
    resolved = path.resolve()
    if not resolved.is_relative_to(workdir.resolve()):
        raise PermanentError(f"output {path} is outside the job's workdir", code="invalid_output")
    if resolved in added:
        raise PermanentError(
            f"output {path} was already added in this step (copy it to keep it twice)",
            code="invalid_output",
        )
    return resolved


def check_step_name(kind: str, steps: Sequence[str], step: str | None) -> None:
    """Refuse ``ctx.outputs(step)`` for a ``step`` the kind (with ``steps``) has not: a
    typo would read as a step that kept nothing (code ``invalid_step``)."""
    if step is not None and steps and step not in steps:
        raise PermanentError(
            f"ctx.outputs: {kind} has no step {step!r}; its steps: {', '.join(steps)}",
            code="invalid_step",
        )


def returned_note(step: str, value: object) -> str | None:
    """The note (code ``step_returned_value``) for a step that returned ``value``; None
    for a step that returned nothing, as a step should."""
    if value is None:
        return None
    return (
        f"step {step!r} returned a {type(value).__name__}, which is not kept: "
        "keep a file with ctx.add_output, a value for later steps in ctx.state"
    )


def checkpointable(state: dict[str, Any]) -> dict[str, Any]:
    """``state`` as the JSON checkpoint gives it back (number keys become text, tuples
    lists); a PermanentError ``invalid_state`` naming the first value it cannot keep."""
    try:
        return dict(json.loads(json.dumps(state, allow_nan=False)))
    except (TypeError, ValueError) as exc:
        try:
            where, value = ("", None) if "Circular" in str(exc) else _unkeepable(state, "ctx.state")
        except RecursionError:
            where, value = "", None
        if not where:  # not a value JSON has no form for: a loop, say
            raise PermanentError(
                "ctx.state cannot be kept as a checkpoint: it refers to itself or nests too deep",
                code="invalid_state",
            ) from None
        raise PermanentError(
            f"{where} is {_a(value)}, which a checkpoint cannot keep: keep text, numbers, "
            "true/false, lists and dicts with text keys",
            code="invalid_state",
        ) from None


def _unkeepable(value: Any, where: str) -> tuple[str, Any]:
    """Where in ``value`` (and what) the first part JSON cannot keep is."""
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str | int | float | bool) and key is not None:
                return f"{where} key {key!r}", key
            found = _unkeepable(item, f"{where}[{key!r}]")
            if found[0]:
                return found
        return "", None
    if isinstance(value, list | tuple):
        for n, item in enumerate(value):
            found = _unkeepable(item, f"{where}[{n}]")
            if found[0]:
                return found
        return "", None
    if value is None or isinstance(value, str | int | bool):
        return "", None
    if isinstance(value, float):
        return ("", None) if value == value and abs(value) != float("inf") else (where, value)
    return where, value


def _a(value: Any) -> str:
    if isinstance(value, float):
        return f"the number {value!r}"
    name = type(value).__name__
    return f"{'an' if name[:1].lower() in 'aeiou' else 'a'} {name}"
