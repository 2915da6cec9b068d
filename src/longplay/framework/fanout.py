"""Naming an item function so that any worker process can find it again, and what an
item that fails fails its step with, wherever it ran.

:meth:`~longplay.framework.StepContext.map` sends items to other processes as a name,
``module:qualname``, never as pickled code: every process has the same kinds loaded,
so importing the module gives it the same function.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from longplay.framework.errors import JobCancelled, JobError, PermanentError


def function_ref(fn: Callable[..., Any]) -> str:
    """``module:qualname`` of ``fn``; a :class:`PermanentError` (code ``invalid_map``)
    for a function other processes cannot import by that name (a lambda, a nested
    function, a bound method)."""
    ref = f"{getattr(fn, '__module__', None)}:{getattr(fn, '__qualname__', repr(fn))}"
    try:
        found = "<" not in ref and "." not in ref.partition(":")[2] and resolve(ref) is fn
    except (ImportError, LookupError):
        found = False
    if not found:
        raise PermanentError(
            f"ctx.map needs a module-level function, not {ref}", code="invalid_map"
        )
    return ref


def resolve(ref: str) -> Callable[..., Any]:
    """The function :func:`function_ref` named."""
    module, _, name = ref.partition(":")
    fn = getattr(importlib.import_module(module), name, None)
    if not callable(fn):
        raise LookupError(f"no function {ref}")
    return fn  # type: ignore[no-any-return]


ItemFailed = Callable[[int, Exception], Exception]
"""What item ``index`` of a map that raised ``exc`` fails the step with
(:meth:`~longplay.framework.StepContext.item_failed`)."""


def item_error(index: int, error: JobError) -> JobError:
    """``error``, raised by item ``index`` of a map, its message naming the item; its
    class, code and retryability kept."""
    return replace(error, message=f"ctx.map: item {index} failed: {error.message}")


def run_item(
    fn: Callable[[Any, Any], Any], item_ctx: Any, item: Any, index: int, failed: ItemFailed
) -> Any:
    """``fn(item_ctx, item)``: what it raises as ``failed`` judges it (a cancellation
    as it is)."""
    try:
        return fn(item_ctx, item)
    except JobCancelled:
        raise
    except Exception as exc:
        judged = failed(index, exc)
        if judged is exc:
            raise
        raise judged from exc
