"""Bringing audio to a loudness target through the peak limiter: one gain search for
every kind that masters (``convert``, ``synthesize``).

The plain gain is the target minus the measured loudness. Where it takes the true
peak over the ceiling the limiter takes loudness away too (it cannot take more than
it takes off the peaks), so the gain is raised by the shortfall of the limited
output, until it is within a tolerance of the aim. How the limited output is
measured is up to the caller: ``convert`` puts the audio through the
:class:`GainStage` the encoder will use, a pass over the input each time
(:func:`limited_loudness`, at most ``MAX_SIMULATIONS`` of them); audio followed by a
:class:`~longplay.media.levels.LevelTrace` as it was made has its loudness predicted
without a pass (:func:`gain_for_levels`, ``synthesize``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from longplay.media.levels import Levels
from longplay.media.limiter import GainStage
from longplay.media.loudness import LoudnessMeter, Samples

MAX_SIMULATIONS = 3
"""Passes, at most, that simulate the limiter to find the gain that reaches the target."""
TOLERANCE_LU = 0.2
"""How close to the aim a simulated output must come to stop simulating."""
MAX_PREDICTIONS = 8
"""Predictions, at most, in the search for the gain from :class:`Levels`: each takes
milliseconds, so the search goes on to ``PREDICTION_TOLERANCE_LU``."""
PREDICTION_TOLERANCE_LU = 0.02
"""How close to the aim a predicted output must come to stop predicting."""
MAX_BOOST_DB = 10.0
"""The most gain added to the plain gain to make up for what the limiter takes."""
MIN_RETURN = 0.1
"""LU per dB of added gain below which adding more only adds limiting."""


@dataclass(frozen=True)
class GainSearch:
    """The gain :func:`gain_through_limiter` chose, what it measured, and the passes made."""

    gain: float
    level: float
    """The loudness the limited output measures (or is predicted to) at ``gain``."""
    simulations: int
    """The gains tried: simulated, or predicted."""


def limited_loudness(
    blocks: Iterable[Samples], sample_rate: int, channels: int, *, gain: float, ceiling: float
) -> float:
    """Integrated loudness of ``blocks`` after the encoder's :class:`GainStage` at
    ``gain`` with its limiter at ``ceiling`` dBTP."""
    stage = GainStage(sample_rate, gain_db=gain, ceiling_db=ceiling)
    meter = LoudnessMeter(sample_rate, channels, true_peak=False)  # the limiter sees to it
    for samples in blocks:
        meter.add(stage.process(samples))
    if len(tail := stage.flush()):
        meter.add(tail)
    return meter.result().integrated


def gain_for_levels(levels: Levels, aim: float, ceiling: float) -> GainSearch:
    """The gain that brings audio of ``levels`` to ``aim`` LUFS through the limiter at
    ``ceiling`` dBTP, from predictions of the limited loudness: the plain gain, raised
    by :func:`gain_through_limiter` where it takes the true peak over the ceiling. No
    gain for silence."""
    measured = levels.loudness
    if measured.is_silent:
        return GainSearch(0.0, measured.integrated, 0)
    predict = functools.partial(levels.limited_loudness, ceiling_db=ceiling)
    gain = round(aim - measured.integrated, 2)
    overshoot = measured.true_peak + gain - ceiling
    if overshoot <= TOLERANCE_LU:
        return GainSearch(gain, predict(gain), 1)
    return gain_through_limiter(
        predict,
        gain,
        aim,
        overshoot,
        tries=MAX_PREDICTIONS,
        tolerance=PREDICTION_TOLERANCE_LU,
    )


def gain_through_limiter(
    simulate: Callable[[float], float],
    gain: float,
    aim: float,
    overshoot: float,
    *,
    tries: int = MAX_SIMULATIONS,
    tolerance: float = TOLERANCE_LU,
) -> GainSearch:
    """Raise ``gain`` until the limited audio measures ``aim``, as far as it can.

    ``simulate(gain)`` is the loudness after the limiter (:func:`limited_loudness`);
    ``gain`` takes the true peak ``overshoot`` dB over the ceiling. Loudness never
    rises faster than the gain, and slower the harder the limiter works, so every
    step falls short, by less the better the rate of return is known: the first step
    divides the shortfall by ``1 - loss / overshoot`` (the limiter took ``loss`` for
    ``overshoot`` dB over the ceiling, and each dB more costs at least as much as that
    average), the next ones by the slope between the last two tries. Where a dB buys
    less than ``MIN_RETURN`` LU, more gain would only add limiting, and the search
    stops; else it stops within ``tolerance`` LU of the aim or after ``tries`` gains.
    Gains are rounded to 0.01 dB before they are tried, so the gain kept is exactly
    one that was simulated: the closest.
    """
    lowest = gain
    tried = [(gain, simulate(gain))]
    while abs(aim - tried[-1][1]) > tolerance and len(tried) < tries:
        gain, level = tried[-1]
        if len(tried) == 1:
            rate_of_return = 1.0 - (aim - level) / overshoot
        else:
            before, level_before = tried[-2]
            rate_of_return = (level - level_before) / (gain - before)
        if not rate_of_return >= MIN_RETURN:  # also NaN, from a silent simulation
            break
        step = (aim - level) / min(1.0, rate_of_return)
        next_gain = round(min(lowest + MAX_BOOST_DB, max(lowest, gain + step)), 2)
        if next_gain == gain:
            break
        tried.append((next_gain, simulate(next_gain)))
    gain, level = min(tried, key=lambda attempt: abs(aim - attempt[1]))
    return GainSearch(gain, level, len(tried))
