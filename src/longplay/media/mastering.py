"""Bringing audio to a loudness target through the peak limiter: one gain search for
every kind that masters (``convert``, ``synthesize``).

The plain gain is the target minus the measured loudness. Where it takes the true
peak over the ceiling the limiter takes loudness away too (it cannot take more than
it takes off the peaks), so the audio is put through the :class:`GainStage` the
encoder will use, measured, and the gain raised by the shortfall, until the simulated
output is within ``TOLERANCE_LU`` of the aim or after ``MAX_SIMULATIONS`` passes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from longplay.media.limiter import GainStage
from longplay.media.loudness import LoudnessMeter, Samples

MAX_SIMULATIONS = 3
"""Passes, at most, that simulate the limiter to find the gain that reaches the target."""
TOLERANCE_LU = 0.2
"""How close to the aim a simulated output must come to stop simulating."""
MAX_BOOST_DB = 10.0
"""The most gain added to the plain gain to make up for what the limiter takes."""
MIN_RETURN = 0.1
"""LU per dB of added gain below which adding more only adds limiting."""


@dataclass(frozen=True)
class GainSearch:
    """The gain :func:`gain_through_limiter` chose, what it measured, and the passes made."""

    gain: float
    level: float
    simulations: int


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


def gain_through_limiter(
    simulate: Callable[[float], float], gain: float, aim: float, overshoot: float
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
    stops. Gains are rounded to 0.01 dB before they are tried, so the gain kept is
    exactly one that was simulated: the closest.
    """
    lowest = gain
    tried = [(gain, simulate(gain))]
    while abs(aim - tried[-1][1]) > TOLERANCE_LU and len(tried) < MAX_SIMULATIONS:
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
