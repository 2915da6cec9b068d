"""The shapes of :meth:`StepContext.advance` and :meth:`StepContext.note`, for library code.

Code in ``media``, ``text`` and ``engines`` reports progress and notes through these,
so a step passes ``ctx.advance`` and ``ctx.note`` as they are, and a caller outside a
job passes anything called the same way (or nothing: :func:`no_progress`, :func:`no_note`).
"""

from __future__ import annotations

from typing import Any, Protocol


class Progress(Protocol):
    """Called as ``progress(done, total, **details)``; an exception it raises (a
    ``JobCancelled`` at a cancelled job's checkpoint) stops the work."""

    def __call__(self, done: float, total: float, **details: Any) -> None: ...


class Note(Protocol):
    """Called as ``note(message, **data)`` with something a person should know."""

    def __call__(self, message: str, **data: Any) -> None: ...


def no_progress(done: float, total: float, **details: Any) -> None:
    """Progress nobody follows."""


def no_note(message: str, **data: Any) -> None:
    """Notes nobody reads."""
