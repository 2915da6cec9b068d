"""Naming an item function so that any worker process can find it again.

:meth:`~longplay.framework.StepContext.map` sends items to other processes as a name,
``module:qualname``, never as pickled code: every process has the same kinds loaded,
so importing the module gives it the same function.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def function_ref(fn: Callable[..., Any]) -> str:
    """``module:qualname`` of ``fn``; a ValueError for a function other processes
    cannot import by that name (a lambda, a nested function, a bound method)."""
    ref = f"{fn.__module__}:{fn.__qualname__}"
    if "<" in fn.__qualname__ or "." in fn.__qualname__ or resolve(ref) is not fn:
        raise ValueError(f"ctx.map needs a module-level function, not {ref}")
    return ref


def resolve(ref: str) -> Callable[..., Any]:
    """The function :func:`function_ref` named."""
    module, _, name = ref.partition(":")
    fn = getattr(importlib.import_module(module), name, None)
    if not callable(fn):
        raise LookupError(f"no function {ref}")
    return fn  # type: ignore[no-any-return]
