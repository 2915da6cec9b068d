"""One pass that learns what mastering needs: :class:`LevelTrace` measures like the
loudness meter, predicts the loudness after the limiter, and plans the limiter that the
encoder would otherwise run again; :class:`Spool` keeps the audio between the passes."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from test_media import speechy_noise, tone

from longplay.media import GainStage, Levels, LevelTrace, LoudnessMeter, Spool
from longplay.media.loudness import KWeighting, Loudness
from longplay.media.mastering import MAX_BOOST_DB, gain_for_levels

Audio = npt.NDArray[np.float32]
CEILING = -1.5


def in_blocks(samples: Audio, block: int) -> list[Audio]:
    return [samples[i : i + block] for i in range(0, len(samples), block)]


def trace(samples: Audio, rate: int, block: int = 1777) -> Levels:
    tracer = LevelTrace(rate, samples.shape[1])
    for part in in_blocks(samples, block):
        tracer.add(part)
    return tracer.finish()


def measure(samples: Audio, rate: int) -> Loudness:
    meter = LoudnessMeter(rate, samples.shape[1])
    meter.add(samples)
    return meter.result()


def peaky(seconds: float, rate: int, channels: int = 1) -> Audio:
    """Speech-like noise with short bursts 16 dB up: the limiter has work at any gain."""
    samples = speechy_noise(seconds, rate, channels=channels)
    for start in range(rate // 2, len(samples), rate):
        samples[start : start + rate // 50] *= 6.0
    return samples


CASES = pytest.mark.parametrize(
    ("rate", "channels"), [(22_050, 1), (48_000, 2), (11_025, 1)], ids=["22k", "48k-st", "11k"]
)


@CASES
def test_a_trace_measures_what_the_loudness_meter_measures(rate: int, channels: int) -> None:
    samples = peaky(6.3, rate, channels)

    levels = trace(samples, rate)

    expected = measure(samples, rate)
    assert levels.loudness.integrated == pytest.approx(expected.integrated, abs=1e-9)
    assert levels.loudness.true_peak == pytest.approx(expected.true_peak, abs=1e-6)
    assert levels.loudness.sample_peak == expected.sample_peak
    assert levels.loudness.duration == expected.duration


def test_a_trace_does_not_depend_on_how_the_audio_is_split() -> None:
    samples = peaky(3.0, 11_025)
    whole = trace(samples, 11_025, block=len(samples))

    for block in (7, 110, 1103, 5000):
        split = trace(samples, 11_025, block=block)
        np.testing.assert_array_equal(split.cuts, whole.cuts)
        np.testing.assert_allclose(split.cut_energy, whole.cut_energy, rtol=1e-9, atol=1e-12)
        np.testing.assert_array_equal(split.block_peaks, whole.block_peaks)


def test_a_trace_gives_each_blocks_weighted_energy_and_ends_its_thread() -> None:
    """What ``add`` returns is what the K-weighting filter makes of the stream, block by
    block; the thread that measures the peaks ends with ``finish``."""

    def trace_threads() -> set[threading.Thread]:
        return {t for t in threading.enumerate() if t.name.startswith("level-trace")}

    samples = peaky(2.0, 22_050, 2)
    before = trace_threads()  # an earlier test's unfinished trace may still hold one
    tracer = LevelTrace(22_050, 2)
    energy = np.concatenate([tracer.add(part) for part in in_blocks(samples, 3001)])
    assert trace_threads() - before
    tracer.finish()

    expected = KWeighting(22_050, 2).energy(samples)
    np.testing.assert_allclose(energy, expected, rtol=1e-9, atol=1e-15)
    assert trace_threads() <= before


@CASES
@pytest.mark.parametrize("gain", [0.0, 6.0, 12.0, 20.0])
def test_the_planned_limiter_is_the_limiter(rate: int, channels: int, gain: float) -> None:
    """Sample for sample what the encoder's GainStage (a gain, the look-ahead limiter,
    a clip) makes of the same audio, without oversampling it again."""
    samples = peaky(4.0, rate, channels)
    levels = trace(samples, rate)

    planned = levels.limiter(gain, CEILING)
    ours = np.concatenate([planned.process(part) for part in in_blocks(samples, 999)])
    stage = GainStage(rate, gain_db=gain, ceiling_db=CEILING)
    theirs = np.concatenate([*map(stage.process, in_blocks(samples, 4096)), stage.flush()])

    assert ours.shape == samples.shape and ours.dtype == np.float32
    np.testing.assert_allclose(ours, theirs, atol=2e-6)
    assert planned.limited_db == pytest.approx(stage.limited_db, abs=1e-4)
    assert measure(ours, rate).true_peak <= CEILING + 0.05


@CASES
@pytest.mark.parametrize("gain", [0.0, 6.0, 12.0, 20.0])
def test_the_loudness_after_the_limiter_is_predicted(rate: int, channels: int, gain: float) -> None:
    samples = peaky(8.0, rate, channels)
    levels = trace(samples, rate)

    planned = levels.limiter(gain, CEILING)
    limited = np.concatenate([planned.process(part) for part in in_blocks(samples, 4096)])

    assert planned.limited_db < -3.0  # the limiter works hard, even at no gain
    predicted = levels.limited_loudness(gain, CEILING)
    assert predicted == pytest.approx(measure(limited, rate).integrated, abs=0.05)


def test_with_no_limiting_the_prediction_is_the_measurement_plus_the_gain() -> None:
    samples = tone(5.0, 22_050, amplitude=0.1)
    levels = trace(samples, 22_050)

    assert levels.limited_loudness(3.0, CEILING) == pytest.approx(
        levels.loudness.integrated + 3.0, abs=1e-6
    )


@pytest.mark.parametrize("aim", [-20.0, -16.0, -12.0])
def test_the_gain_search_lands_on_the_aim_through_the_limiter(aim: float) -> None:
    rate = 22_050
    samples = peaky(10.0, rate)
    levels = trace(samples, rate)

    search = gain_for_levels(levels, aim, CEILING)

    planned = levels.limiter(search.gain, CEILING)
    limited = np.concatenate([planned.process(part) for part in in_blocks(samples, rate)])
    assert search.gain > aim - levels.loudness.integrated  # made up for the limiter
    assert search.gain <= aim - levels.loudness.integrated + MAX_BOOST_DB
    assert measure(limited, rate).integrated == pytest.approx(aim, abs=0.1)
    assert search.level == pytest.approx(aim, abs=0.05)


def test_the_gain_search_stops_at_the_boost_cap() -> None:
    """Audio that is nearly all peak cannot be made loud by limiting: the search gives
    up at the plain gain plus MAX_BOOST_DB at most, short of the aim."""
    rate = 22_050
    clicks = np.zeros((5 * rate, 1), np.float32)
    clicks[:: rate // 20] = 0.9
    levels = trace(clicks, rate)

    search = gain_for_levels(levels, -10.0, CEILING)

    assert search.gain <= -10.0 - levels.loudness.integrated + MAX_BOOST_DB + 1e-9
    assert search.level < -10.5


def test_silence_gets_no_gain() -> None:
    levels = trace(np.zeros((3 * 22_050, 1), np.float32), 22_050)

    search = gain_for_levels(levels, -16.0, CEILING)

    assert levels.loudness.is_silent
    assert (search.gain, search.simulations) == (0.0, 0)


def test_a_spool_gives_back_every_sample_and_leaves_nothing(tmp_path: Path) -> None:
    samples = speechy_noise(2.0, 22_050)
    path = tmp_path / ".spool.f32"

    with Spool(path, channels=2) as spool:
        for part in in_blocks(samples, 3001):
            spool.write(part)
        blocks = list(spool.read(22_050))

    assert [len(b) for b in blocks] == [22_050, 22_050]
    np.testing.assert_array_equal(np.concatenate(blocks), samples)
    assert list(tmp_path.iterdir()) == []


def test_a_spool_is_removed_when_the_work_fails(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError), Spool(tmp_path / ".spool.f32", channels=1) as spool:
        spool.write(np.ones((100, 1), np.float32))
        raise RuntimeError("cancelled")

    assert list(tmp_path.iterdir()) == []
