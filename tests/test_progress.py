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
    run(tracker, clock, 60, 0.5)  # 40 % after a minute
    assert tracker.percent == pytest.approx(40.0)
    run(tracker, clock, 240, 0.125)  # then at a quarter of that pace: 70 % after 5 minutes
    assert tracker.percent == pytest.approx(70.0)
    # Since the start: 60 points in 300 s, 150 s left; over the last 100 s, 12.5 points.
    assert tracker.eta_seconds() == pytest.approx(30 / 0.125)


def test_eta_goes_by_the_recent_pace_where_the_run_sped_up() -> None:
    """A transcription's first seconds (the model loaded, the first window decoded) are
    slower than the rest: the pace since its start said 84 s were left for 20."""
    clock = Clock()
    faster = ProgressTracker(STEPS, clock=clock)
    faster.finish("fetch")
    faster.start("voice")
    run(faster, clock, 200, 0.1)
    run(faster, clock, 120, 0.4)
    assert faster.percent == pytest.approx(78.0)
    assert faster.eta_seconds() == pytest.approx(22 / 0.4)  # since its start: 104 s


def test_eta_grows_while_the_run_stands_still_and_stays() -> None:
    """A step that reports nothing for a while (a model's long call): the ETA is the
    pace back to its last move, so it grows, and it does not go blank."""
    clock = Clock()
    tracker = ProgressTracker(STEPS, clock=clock)
    tracker.finish("fetch")
    tracker.start("voice")
    run(tracker, clock, 30, 1.0)  # 40 % after 30 s: 60 s left at that pace
    assert tracker.eta_seconds() == pytest.approx(60.0)
    etas = []
    for _ in range(200):  # then nothing for 200 s, past the recent window
        clock.now += 1
        eta = tracker.eta_seconds()
        assert eta is not None
        etas.append(eta)
    assert etas == sorted(etas) and etas[-1] > 5 * 60.0


def test_eta_goes_by_the_steps_shares_of_the_time() -> None:
    """A dub's translation takes two thirds of its time in 40 % of its bar: by the
    weights, the ETA at the end of its quick first step said a third of the time left."""
    clock = Clock()
    by_weight = ProgressTracker(STEPS, clock=clock)
    shares = {"fetch": 0.02, "voice": 0.18, "mix": 0.80}  # "mix" is slow, for all its 20 %
    by_time = ProgressTracker(STEPS, clock=clock, shares=shares)
    for tracker in (by_weight, by_time):
        tracker.start("fetch")
    clock.now += 1
    for tracker in (by_weight, by_time):
        tracker.finish("fetch")
        tracker.start("voice")
    clock.now += 9
    for tracker in (by_weight, by_time):
        tracker.finish("voice")
    assert by_weight.percent == by_time.percent == pytest.approx(80.0)  # the bar: weights
    assert by_weight.eta_seconds() == pytest.approx(10 * 20 / 80)
    assert by_time.eta_seconds() == pytest.approx(10 * 0.80 / 0.20)  # 40 s, as it was
    assert by_time.seconds == {"fetch": 1.0, "voice": 9.0}
    # Shares for other steps than the kind's (it changed since) are not used.
    other = ProgressTracker(STEPS, clock=clock, shares={"fetch": 0.5, "encode": 0.5})
    other.start("fetch")
    clock.now += 10
    other.finish("fetch")
    assert other.eta_seconds() == pytest.approx(10 * 90 / 10)


def run(tracker: ProgressTracker, clock: Clock, seconds: int, percent_a_second: float) -> None:
    """``seconds`` of the "voice" step gaining ``percent_a_second`` of the bar each."""
    for _ in range(seconds):
        clock.now += 1
        tracker.set_fraction(tracker.percent - 10 + percent_a_second, 70)
