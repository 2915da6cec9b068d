"""The bundled Piper voices without their noise, for fixtures read the same every run.

Piper adds generator and duration noise, so the same text is different audio on every
call. Where a test's assertion hangs on what a model makes of speech (the confidence of a
transcript, the owners a summary names from it), one unlucky reading fails a run that
the code did not deserve to fail; read that speech with :func:`steady_synthesizer`.
"""

from __future__ import annotations

import copy
from dataclasses import replace

from longplay.engines import PiperSynthesizer, get_synthesizer


def steady_synthesizer() -> PiperSynthesizer:
    """This process's Piper voices, each with its noise set to zero: the same text is
    the same audio every call. The engine itself is shared, not changed."""
    synthesizer = get_synthesizer()
    assert isinstance(synthesizer, PiperSynthesizer), "the tests read speech with Piper"
    steady = copy.copy(synthesizer)
    steady.styles = {
        name: replace(style, noise_scale=0.0, noise_w_scale=0.0)
        for name, style in synthesizer.styles.items()
    }
    return steady
