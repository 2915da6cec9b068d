"""The progress arithmetic: weights, percent and ETA, on a clock the test drives."""

from __future__ import annotations

import pytest

from longplay.framework import Step
from longplay.jobs.progress import ProgressTracker


def noop(_ctx: object) -> None:
    return None


STEPS = [Step("fetch", noop, weight=10), Step("voice", noop, weight=70), Step("mix", noop, 20)]


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_percent_follows_step_weights() -> None:
    tracker = ProgressTracker(STEPS)
    tracker.start("fetch")
    tracker.set_fraction(1, 2)
    assert tracker.percent == pytest.approx(5.0)
    tracker.finish("fetch")
    tracker.start("voice")
    tracker.set_fraction(35, 70)
    assert tracker.percent == pytest.approx(45.0)
    tracker.set_fraction(10, 70)  # a step cannot make the bar go back
    assert tracker.percent == pytest.approx(45.0)
    tracker.finish("voice")
    tracker.start("mix")
    tracker.set_fraction(5, 0)  # an empty total counts as done
    assert tracker.percent == pytest.approx(100.0)


def test_eta_from_pace_since_start() -> None:
    clock = Clock()
    tracker = ProgressTracker(STEPS, clock=clock)
    tracker.finish("fetch")  # skipped on a retry: done before this run's clock starts
    tracker.start("voice")
    assert tracker.eta_seconds() is None
    clock.now += 10
    tracker.set_fraction(7, 70)  # 7 points of the bar in 10 s
    assert tracker.percent == pytest.approx(17.0)
    assert tracker.eta_seconds() == pytest.approx(83 * 10 / 7)


def test_eta_waits_for_a_pace() -> None:
    clock = Clock()
    tracker = ProgressTracker(STEPS, clock=clock)
    tracker.start("fetch")
    clock.now += 0.2
    tracker.set_fraction(1, 1)
    assert tracker.eta_seconds() is None  # too early to say
    # A model's first window, loaded and read in one go: 2 % of the bar in 18 s says
    # nothing of the pace to come (an ETA of 13 minutes, where 30 s were left).
    slow_start = ProgressTracker(STEPS, clock=clock)
    slow_start.finish("fetch")
    slow_start.start("voice")
    clock.now += 18
    slow_start.set_fraction(2, 70)
    assert slow_start.eta_seconds() is None
    clock.now += 0.3
    slow_start.set_fraction(20, 70)
    assert slow_start.eta_seconds() == pytest.approx((100 - 30) * 18.3 / 20)


def test_eta_goes_by_the_recent_pace_where_the_run_slowed() -> None:
    """A long transcription whose helper left for another job went on at half its
    pace; the ETA from its start said 11 minutes left for 8 minutes."""
    clock = Clock()
    tracker = ProgressTracker(STEPS, clock=clock)
    tracker.finish("fetch")
    tracker.start("voice")  # 10 % of the bar done; "voice" is 70 %

    def run(seconds: int, percent_a_second: float) -> None:
        for _ in range(seconds):
            clock.now += 1
            tracker.set_fraction(tracker.percent - 10 + percent_a_second, 70)

    run(60, 0.5)  # 40 % after a minute
    assert tracker.percent == pytest.approx(40.0)
    run(240, 0.125)  # then at a quarter of that pace: 70 % after five minutes
    assert tracker.percent == pytest.approx(70.0)
    # Since the start: 60 points in 300 s, 150 s left; lately 15 points in 120 s.
    assert tracker.eta_seconds() == pytest.approx(30 / 0.125)
    clock.now += 121  # and then it stood still
    assert tracker.eta_seconds() is None
    # A run that sped up keeps the pace since its start: an ETA that errs long.
    faster = ProgressTracker(STEPS, clock=clock)
    faster.finish("fetch")
    faster.start("voice")
    for seconds, percent_a_second in ((200, 0.1), (120, 0.4)):
        for _ in range(seconds):
            clock.now += 1
            faster.set_fraction(faster.percent - 10 + percent_a_second, 70)
    assert faster.percent == pytest.approx(78.0)
    assert faster.eta_seconds() == pytest.approx(22 * 320 / 68)
