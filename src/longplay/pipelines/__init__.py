"""Built-in job kinds, one module each; importing a module registers its kind."""

from __future__ import annotations

import importlib

BUILTIN = (
    "longplay.pipelines.convert",
    "longplay.pipelines.transcribe",
    "longplay.pipelines.synthesize",
    "longplay.pipelines.translate",
    "longplay.pipelines.dub",
)


def load() -> None:
    """Import every built-in kind and the plugin modules named in the settings."""
    from longplay.config import get_settings

    for module in (*BUILTIN, *get_settings().plugins):
        importlib.import_module(module)
