"""Audio in and out for longplay's jobs: probe, stream-decode, measure loudness, encode.

Everything streams in blocks, so an hour-long input never sits in memory whole::

    info = probe(path)
    meter = LoudnessMeter(48_000, 2)
    for block in decode(path, sample_rate=48_000, channels=2):
        meter.add(block.samples)
    loudness = meter.result()
"""

from longplay.media.audio import (
    AudioBlock,
    AudioInfo,
    UndecodableAudio,
    check_decodable,
    decode,
    probe,
)
from longplay.media.encode import (
    OUTPUT_FORMATS,
    AudioEncoder,
    OutputFormat,
    OutputFormatName,
    codec_gain_db,
)
from longplay.media.levels import Levels, LevelTrace
from longplay.media.limiter import GainStage, PeakLimiter, PlannedLimiter
from longplay.media.loudness import Loudness, LoudnessMeter, db_to_gain, gain_to_db
from longplay.media.spool import Spool

__all__ = [
    "OUTPUT_FORMATS",
    "AudioBlock",
    "AudioEncoder",
    "AudioInfo",
    "GainStage",
    "LevelTrace",
    "Levels",
    "Loudness",
    "LoudnessMeter",
    "OutputFormat",
    "OutputFormatName",
    "PeakLimiter",
    "PlannedLimiter",
    "Spool",
    "UndecodableAudio",
    "check_decodable",
    "codec_gain_db",
    "db_to_gain",
    "decode",
    "gain_to_db",
    "probe",
]
