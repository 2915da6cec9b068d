"""The ``convert`` kind: one audio or video file in, one loudness-normalised audio file out.

The input is decoded once per pass over it, so that nothing but a block of audio
is ever in memory. ``measure`` decodes it to measure its integrated loudness and
true peak; where the gain that reaches the target would push the true peak over
the ceiling, it then simulates the peak limiter in up to three more passes to find
the gain at which the limited audio still reaches the target. ``encode`` decodes
it once more, applies that gain and the limiter and encodes. What was measured,
predicted and applied is kept in ``ctx.state["loudness"]``, which is saved with
the job.
"""

from __future__ import annotations

from collections.abc import Generator, Iterator, Sequence
from contextlib import closing
from pathlib import Path
from typing import Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from longplay.framework import (
    FieldError,
    InputFile,
    JobKind,
    Note,
    Step,
    StepContext,
    SubmittedInput,
    no_note,
    register,
)
from longplay.media import (
    OUTPUT_FORMATS,
    AudioBlock,
    AudioEncoder,
    AudioInfo,
    LoudnessMeter,
    OutputFormatName,
    check_decodable,
    codec_gain_db,
    decode,
    probe,
)
from longplay.media.loudness import Samples, finite_or_none
from longplay.media.mastering import (
    MAX_SIMULATIONS,
    TOLERANCE_LU,
    gain_through_limiter,
    limited_loudness,
)


class ConvertParams(BaseModel):
    """Parameters of a ``convert`` job."""

    model_config = ConfigDict(extra="forbid")

    format: OutputFormatName = Field("mp3", description="Output format: wav, mp3 or ogg (Opus).")
    loudness: float | None = Field(
        -16.0,
        ge=-60.0,
        le=-5.0,
        description="Target integrated loudness in LUFS; null keeps the input's level.",
    )
    true_peak: float = Field(
        -1.5, ge=-12.0, le=0.0, description="Ceiling for the true peak in dBTP when normalising."
    )
    sample_rate: int | None = Field(
        None,
        ge=8000,
        le=192_000,
        description="Output rate in Hz; null: the input's, or the nearest the format takes.",
    )
    channels: Literal[1, 2] | None = Field(
        None, description="1 or 2; null: the input's, with surround mixed down to stereo."
    )
    bitrate: int | None = Field(
        None, ge=6, le=510, description="kbit/s for mp3 and ogg; null: 192 for mp3, 96 for ogg."
    )

    @model_validator(mode="after")
    def _fits_format(self) -> Self:
        spec = OUTPUT_FORMATS[self.format]
        rates = spec.sample_rates
        if self.sample_rate is not None and rates is not None and self.sample_rate not in rates:
            allowed = ", ".join(map(str, rates))
            raise ValueError(f"{self.format} takes sample rates {allowed}, not {self.sample_rate}")
        if self.bitrate is not None:
            if spec.bitrates is None:
                raise ValueError(f"bitrate applies to mp3 and ogg, not {self.format}")
            low, high = spec.bitrates
            if not low <= self.bitrate <= high:
                raise ValueError(f"{self.format} takes bitrates from {low} to {high} kbit/s")
        return self


MEASURE_PASSES = 1 + MAX_SIMULATIONS
"""Passes over the input the measure step may make: one to measure, then the simulations."""
FIRST_PASS_SHARE = 0.95
"""The measure step's share that its first pass fills; the simulations share the rest."""
OPUS_MAX_KBPS_PER_CHANNEL = 256
"""libopus refuses more than this (so 256 kbit/s mono, 512 stereo): the format's range
of 6 to 510 kbit/s is a stereo one."""


def check(params: ConvertParams, inputs: Sequence[SubmittedInput]) -> None:
    """At submit: an Opus bitrate that a mono output (``channels: 1``) can take. With
    ``channels`` null the output has the input's channels, which only the steps know."""
    if params.channels is not None:
        _check_opus_bitrate(params, params.channels)


def measure(ctx: StepContext[ConvertParams]) -> None:
    """Decide the gain: measure the input, then, where the plain gain takes the true
    peak over the ceiling, search for the gain that still reaches the target through
    the limiter (:func:`~longplay.media.mastering.gain_through_limiter`). The first
    pass over the input fills most of the step's progress (:data:`FIRST_PASS_SHARE`),
    since most inputs need no other: as equal shares of the most passes it may make,
    the bar crawled through a quarter of the step and then jumped, and the ETA read
    four times the time left.
    """
    params, source = ctx.params, ctx.inputs[0]
    info = probe(source.path, name=source.name)
    rate, channels = _output_shape(params, info)  # refuses a bitrate the codec cannot take
    if params.loudness is None:
        ctx.state["loudness"] = {"input": source.name, "target_lufs": None, "gain_db": 0.0}
        _advance(ctx, info.duration, info.duration, final=True, input=source.name, skipped=True)
        return
    target, ceiling = params.loudness, params.true_peak
    meter = LoudnessMeter(rate, channels)
    details: dict[str, Any] = {"input": source.name, "pass": 1}
    with closing(_decode(source, rate, channels)) as blocks:
        for block in blocks:
            meter.add(block.samples)
            _advance(ctx, block.position, info.duration, part=(0, MEASURE_PASSES), **details)
    measured = meter.result()
    codec_gain = codec_gain_db(params.format, rate, channels, params.bitrate)
    aim = target - codec_gain  # what the audio must measure before the codec
    gain, level, passes = 0.0, measured.integrated, 1
    if measured.is_silent:
        ctx.note(f"{source.name} is silent (below the -70 LUFS gate): no gain applied")
    else:
        gain = round(aim - measured.integrated, 2)
        level = measured.integrated + gain
        overshoot = measured.true_peak + gain - ceiling
        if overshoot > TOLERANCE_LU:
            simulate = _Simulation(ctx, source, rate, channels, measured.duration)
            search = gain_through_limiter(simulate, gain, aim, overshoot)
            gain, level, passes = search.gain, search.level, 1 + search.simulations
            if abs(level - aim) > 0.5:
                ctx.note(
                    f"{source.name} comes out at {level + codec_gain:.1f} LUFS, not "
                    f"{target:g}: its peaks need more limiting than that to stay under "
                    f"{ceiling:g} dBTP"
                )
    predicted = finite_or_none(level + codec_gain)
    ctx.state["loudness"] = {
        "input": source.name,
        "measured": measured.as_dict(),
        "target_lufs": target,
        "true_peak_ceiling_dbtp": ceiling,
        "codec_gain_db": codec_gain,
        "gain_db": gain,
        "predicted_lufs": predicted,
        "passes": passes,
        "limiter": measured.true_peak + gain > ceiling,
    }
    _advance(
        ctx,
        measured.duration,
        info.duration,
        final=True,
        input=source.name,
        passes=passes,
        gain_db=gain,
        predicted_lufs=predicted,
    )


class _Simulation:
    """Measures the input as the encoder will write it, limiter included, at a gain;
    each call one more pass over the input on the step's progress bar."""

    def __init__(
        self,
        ctx: StepContext[ConvertParams],
        source: InputFile,
        rate: int,
        channels: int,
        duration: float,
    ) -> None:
        self.ctx, self.source, self.rate, self.channels = ctx, source, rate, channels
        self.duration = duration
        self.runs = 0

    def __call__(self, gain: float) -> float:
        self.runs += 1
        return limited_loudness(
            self._blocks(gain),
            self.rate,
            self.channels,
            gain=gain,
            ceiling=self.ctx.params.true_peak,
        )

    def _blocks(self, gain: float) -> Iterator[Samples]:
        part = (self.runs, MEASURE_PASSES)
        details: dict[str, Any] = {"input": self.source.name, "pass": self.runs + 1}
        with closing(_decode(self.source, self.rate, self.channels)) as blocks:
            for block in blocks:
                yield block.samples
                _advance(
                    self.ctx, block.position, self.duration, part=part, gain_db=gain, **details
                )


def encode(ctx: StepContext[ConvertParams]) -> None:
    """Decode the input again, apply the gain and encode it into the work folder."""
    params, source = ctx.params, ctx.inputs[0]
    info = probe(source.path, name=source.name)
    rate, channels = _output_shape(params, info)
    loudness: dict[str, Any] = ctx.state["loudness"]
    measured = loudness.get("measured") or {}
    total = measured.get("duration") or info.duration
    spec = OUTPUT_FORMATS[params.format]
    path = _output_path(ctx.workdir, source, spec.name)
    details = {
        "input": source.name,
        "output": path.name,
        "measured_lufs": measured.get("integrated_lufs"),
        "target_lufs": loudness["target_lufs"],
        "gain_db": loudness["gain_db"],
        "predicted_lufs": loudness.get("predicted_lufs"),
    }
    encoder = AudioEncoder(
        path,
        format=params.format,
        sample_rate=rate,
        channels=channels,
        bitrate=params.bitrate,
        gain_db=loudness["gain_db"],
        ceiling_db=params.true_peak if loudness.get("limiter") else None,
    )
    with encoder, closing(_decode(source, rate, channels, note=ctx.note)) as blocks:
        for block in blocks:
            encoder.write(block.samples)
            _advance(ctx, block.position, total, **details)
    loudness["limited_db"] = round(encoder.limited_db, 2)
    ctx.add_output(path, media_type=spec.media_type)
    _advance(ctx, total, total, final=True, **details)


def _decode(
    source: InputFile, rate: int, channels: int, *, note: Note = no_note
) -> Generator[AudioBlock, None, None]:
    """The input's blocks; ``note`` hears if it turns out to be cut short (the encode
    step passes it, as the one pass over the input every job makes)."""
    return decode(source.path, sample_rate=rate, channels=channels, name=source.name, note=note)


def _output_shape(params: ConvertParams, info: AudioInfo) -> tuple[int, int]:
    """The output's sample rate and channel count; a :class:`FieldError` when the Opus
    bitrate asked for is more than that many channels take."""
    rate = params.sample_rate or OUTPUT_FORMATS[params.format].rate_for(info.sample_rate)
    channels = params.channels or min(info.channels, 2)
    _check_opus_bitrate(params, channels)
    return rate, channels


def _check_opus_bitrate(params: ConvertParams, channels: int) -> None:
    """Refuse an Opus ``bitrate`` over :data:`OPUS_MAX_KBPS_PER_CHANNEL` per channel,
    which the encoder would refuse only after the measuring passes."""
    most = OPUS_MAX_KBPS_PER_CHANNEL * channels
    if params.format == "ogg" and params.bitrate is not None and params.bitrate > most:
        shape = "mono" if channels == 1 else f"{channels}-channel"
        raise FieldError(
            f"ogg (Opus) takes at most {OPUS_MAX_KBPS_PER_CHANNEL} kbit/s per channel: "
            f"bitrate must be {most} or less for {shape} output, not {params.bitrate}",
            field="bitrate",
        )


def _output_path(workdir: Path, source: InputFile, extension: str) -> Path:
    """``<input stem>.<extension>`` in the work folder, never the input itself."""
    stem = Path(source.name).stem or "audio"
    path = workdir / f"{stem}.{extension}"
    if path.resolve() == source.path.resolve():
        path = workdir / f"{stem}-converted.{extension}"
    return path


def _advance(
    ctx: StepContext[ConvertParams],
    seconds: float,
    total: float,
    *,
    final: bool = False,
    part: tuple[int, int] = (0, 1),
    **details: Any,
) -> None:
    """Report ``seconds`` of input done out of ``total`` in pass ``part[0]`` (from 0) of
    the ``part[1]`` passes over the input that the step may make (the first fills
    :data:`FIRST_PASS_SHARE` of the step, the others share the rest); ``final``: the
    step is done, whichever pass it was in.

    Decoders may run a little past the header's duration, so progress is capped at
    ``total``; an input whose header gives no duration (total 0) shows progress only
    from pass to pass.
    """
    index, count = part
    start, width = _pass_span(index, count)
    if final:
        done = 1.0
    elif total > 0:
        done = start + width * min(seconds, total) / total
    else:
        done = start
    unit = total if total > 0 else 1.0
    ctx.advance(done * unit, unit, seconds=round(seconds, 1), **details)


def _pass_span(index: int, count: int) -> tuple[float, float]:
    """Where pass ``index`` of ``count`` starts in its step, and the share it fills."""
    if count == 1:
        return 0.0, 1.0
    if index == 0:
        return 0.0, FIRST_PASS_SHARE
    rest = (1.0 - FIRST_PASS_SHARE) / (count - 1)
    return FIRST_PASS_SHARE + (index - 1) * rest, rest


register(
    JobKind(
        name="convert",
        description=(
            "Convert one audio or video file to wav, mp3 or ogg, resampled and "
            "normalised to a target loudness (EBU R 128)."
        ),
        params=ConvertParams,
        steps=[Step("measure", measure, weight=1.0), Step("encode", encode, weight=2.0)],
        min_inputs=1,
        max_inputs=1,
        input_types=("audio/", "video/"),
        check=check,
        check_upload=check_decodable,
    )
)
