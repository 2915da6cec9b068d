"""Built-in job kinds, one module each: its params, its steps and its registration.

Importing a module registers its kind. :func:`load` registers every built-in kind
and the plugin modules the ``plugins`` setting names; the processes that accept or
run jobs (the API, the workers) call it once at start, since
:func:`~longplay.framework.get_kind` only looks up what is registered.
"""

from __future__ import annotations

import importlib

BUILTIN = (
    "longplay.kinds.convert",
    "longplay.kinds.transcribe",
    "longplay.kinds.synthesize",
    "longplay.kinds.translate",
    "longplay.kinds.dub",
    "longplay.kinds.transcribe_music",
    "longplay.kinds.summarize",
    "longplay.kinds.index",
    "longplay.kinds.reply",
    "longplay.kinds.export",
    "longplay.kinds.podcast",
)


def load() -> None:
    """Import every built-in kind and the plugin modules named in the settings."""
    from longplay.settings import get_settings

    for module in (*BUILTIN, *get_settings().plugins):
        importlib.import_module(module)
