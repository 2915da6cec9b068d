"""ONNX Runtime sessions whose memory arena can be told to give back its buffers.

ONNX Runtime keeps the buffers of its largest run so far in an arena, for the life of
the process: Piper's after the longest sentence (100-200 MB after ordinary prose, 500
MB after a 300-character sentence spoken slowly by the second voice), Basic Pitch's
after its batches of windows (50-90 MB). A worker's pool process runs every
kind, so each engine would hold that through the jobs of every other. Giving the
buffers back after every run costs a fifth more CPU for Piper (each sentence allocates
them again) and a quarter more time for Basic Pitch, so it is done once, after a job's
last run.
"""

from __future__ import annotations

from typing import Any

from longplay.engines.device import Device


class ShrinkableSession:
    """An ``InferenceSession`` whose arena gives back its buffers after the next run,
    when asked; it runs like the session it wraps."""

    def __init__(self, session: Any, device: Device) -> None:
        import onnxruntime

        self._session = session
        self._shrink = onnxruntime.RunOptions()
        arena = "cpu:0;gpu:0" if device == "cuda" else "cpu:0"
        self._shrink.add_run_config_entry("memory.enable_memory_arena_shrinkage", arena)
        self._shrink_next = False

    def shrink_after_next_run(self) -> None:
        self._shrink_next = True

    def run(self, output_names: Any, input_feed: Any, run_options: Any = None) -> Any:
        """``InferenceSession.run``."""
        if self._shrink_next:
            run_options, self._shrink_next = self._shrink, False
        return self._session.run(output_names, input_feed, run_options)
