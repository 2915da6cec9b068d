"""The ``synthesize`` kind on the real Piper voices: sentences, pauses, voices, loudness.

Step-level tests run the kind's step in this process with a recording context; the
end-to-end ones go through the API to the worker of the shared SQLite stack.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pydantic
import pyloudnorm
import pytest
from conftest import Stack, wait_for_status
from step_context import input_file, run_kind
from test_media import note_tail_stops
from test_worker_memory import in_a_pool_process
from voice_measures import median_pitch, spectral_centroid

from longplay.engines.speech import PARAGRAPH_PAUSE_FACTOR, SpeechOptions, synthesize_speech
from longplay.framework import InvalidInput, InvalidParams, JobCancelled, get_kind
from longplay.kinds.convert import ConvertParams
from longplay.kinds.synthesize import SynthesizeParams
from longplay.media import LoudnessMeter, decode, halves, probe
from longplay.text.documents import Document, markdown_to_text, read_prose
from longplay.text.reading import read_document
from longplay.text.sentences import Sentence, speakable_sentences

TEXT = (
    "The library opens early in the morning. Children can borrow books every week.\n\n"
    "The reading room stays quiet all afternoon. Everyone is welcome."
)
DATABASE = pytest.mark.parametrize("database_kind", ["sqlite"], indirect=True)


def samples_of(path: Path) -> tuple[np.ndarray, int]:
    blocks = list(decode(path))
    return np.concatenate([b.samples for b in blocks])[:, 0], blocks[0].sample_rate


def loudness(path: Path) -> float:
    samples, rate = samples_of(path)
    return float(pyloudnorm.Meter(rate).integrated_loudness(samples.astype(np.float64)))


def true_peak(path: Path) -> float:
    samples, rate = samples_of(path)
    meter = LoudnessMeter(rate, 1)
    meter.add(samples[:, None])
    return meter.result().true_peak


def silent_stretches(path: Path, *, at_least: float = 0.1) -> list[float]:
    """Lengths in seconds of the runs of digital silence: the pauses put between sentences
    (the voice's own quiet edges are never all zeros)."""
    samples, rate = samples_of(path)
    silent = np.concatenate([[False], np.abs(samples) < 1e-4, [False]])
    edges = np.flatnonzero(np.diff(silent.astype(np.int8)))
    lengths = (edges[1::2] - edges[::2]) / rate
    return [float(length) for length in lengths if length >= at_least]


def speak(folder: Path, text: str = TEXT, **options: Any) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    speech = synthesize_speech(
        text, folder, SpeechOptions(**options), progress=lambda *_, **__: None
    )
    return speech.path


# -- the step ---------------------------------------------------------------------------


def test_speak_step_voices_the_text_at_the_target_loudness(tmp_path: Path) -> None:
    params = SynthesizeParams(text=TEXT, format="wav", loudness=-18.0)

    ctx = run_kind("synthesize", params, [], tmp_path)

    [(step, output)] = ctx.kept
    assert (step, output.name, output.media_type) == ("speak", "speech.wav", "audio/wav")
    assert probe(output.path).sample_rate == 22_050
    assert loudness(output.path) == pytest.approx(-18.0, abs=1.0)
    assert true_peak(output.path) <= -1.5 + 0.1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["speech.wav"]
    state = ctx.state["speech"]
    assert state["sentences"] == 4 and state["voice"] is None
    assert state["duration"] == pytest.approx(probe(output.path).duration, abs=0.05)
    assert state["loudness"]["target_lufs"] == -18.0
    fractions = ctx.fractions("speak")
    assert fractions == sorted(fractions) and fractions[-1] == pytest.approx(1.0)
    voicing = [d for d in ctx.details("speak") if "sentences" in d]
    assert [d["sentences"] for d in voicing] == [1, 2, 3, 4]
    assert {d["sentences_total"] for d in voicing} == {4}
    chars = sum(len(sentence.text) for sentence in speakable_sentences(TEXT))
    assert voicing[-1]["chars"] == voicing[-1]["chars_total"] == chars
    seconds = [d["seconds"] for d in voicing]
    assert seconds == sorted(seconds) and seconds[0] > 1.0
    assert any("mastering" in d for d in ctx.details("speak"))


def test_a_text_in_another_language_than_the_voices_is_spoken_with_a_note(
    tmp_path: Path,
) -> None:
    """German given to the English voice was read with English sounds, and the job
    said nothing; its transcript came back as "Dibruk Uber Dibruk". An English text
    goes without a note."""
    german = "Die Brücke über den Fluss ist wieder offen, und die Fähre fährt nicht mehr."
    ctx = run_kind("synthesize", SynthesizeParams(text=german, format="wav"), [], tmp_path / "de")
    assert [out.name for _, out in ctx.kept] == ["speech.wav"], "spoken all the same"
    [note] = ctx.warnings
    assert note["code"] == "voice_language", note
    assert note["message"].startswith(
        "the text is in German and the voice joe speaks English: it reads the words with "
        "English sounds; set LONGPLAY_TTS_VOICE"
    ), note
    english = run_kind("synthesize", SynthesizeParams(text=TEXT, format="wav"), [], tmp_path / "en")
    assert english.warnings == []


@pytest.mark.parametrize("target", [-18.0, -16.0])
def test_convert_and_synthesize_master_through_the_limiter_to_the_target(
    tmp_path: Path, target: float
) -> None:
    """Both kinds master with ``longplay.media.mastering``: Piper's speech is peaky, so
    even at these targets the limiter engages and the gain search makes up for what it
    takes (about 3 dB at -16; louder than about -14 the peaks cap what can be reached)."""
    synthesized = synthesize_speech(
        TEXT,
        tmp_path,
        SpeechOptions(format="wav", loudness=target),
        progress=lambda *_, **__: None,
        stem="synthesized",
    )
    quiet = speak(tmp_path / "quiet", format="wav", loudness=-30.0)
    converted = run_kind(
        "convert",
        ConvertParams(format="wav", loudness=target),
        [input_file(quiet, "audio/wav")],
        tmp_path / "convert",
    )

    [(_, output)] = converted.kept
    assert converted.state["loudness"]["limiter"]
    measured = synthesized.loudness["measured"]["integrated_lufs"]
    assert synthesized.loudness["gain_db"] > target - measured  # made up for the limiter
    assert synthesized.loudness["limited_db"] < -1.0
    # Predicted from the one pass while voicing; the output measures what was predicted.
    samples, rate = samples_of(synthesized.path)
    meter = LoudnessMeter(rate, 1)
    meter.add(samples[:, None])
    assert meter.result().integrated == pytest.approx(
        synthesized.loudness["predicted_lufs"], abs=0.05
    )
    assert loudness(synthesized.path) == pytest.approx(target, abs=0.5)
    assert loudness(output.path) == pytest.approx(target, abs=0.5)
    assert max(true_peak(synthesized.path), true_peak(output.path)) <= -1.5 + 0.1


@pytest.mark.parametrize("stage", ["sentences", "mastering"])
def test_a_job_stopped_while_speaking_leaves_no_files(tmp_path: Path, stage: str) -> None:
    """Cancelled while voicing or while mastering: neither the voiced speech kept
    between the two nor a part of the output stays in the work folder."""

    def progress(done: float, total: float, **details: Any) -> None:
        if stage in details:
            raise JobCancelled("cancelled")

    with pytest.raises(JobCancelled):
        synthesize_speech(TEXT, tmp_path, SpeechOptions(format="mp3"), progress=progress)

    assert list(tmp_path.iterdir()) == []


# The last line of a pool process's job (``in_a_pool_process``): the heap trimmed.
LONG_SENTENCE = """
import tempfile
from longplay.engines.speech import SpeechOptions, synthesize_speech

sentence = ", ".join(["the river was quiet that morning and the fog sat low"] * 5) + "."
while_voicing = []

def progress(done, total, **details):
    if "sentences" in details:
        while_voicing.append(resident_mib())

with tempfile.TemporaryDirectory() as folder:
    synthesize_speech(
        sentence, Path(folder), SpeechOptions(voice="alex", rate=0.5, format="wav"),
        progress=progress,
    )
assert give_memory_back()
print(*while_voicing, resident_mib())
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc and /proc are Linux's")
def test_the_voice_gives_back_the_memory_its_longest_sentence_took() -> None:
    """Piper's arena grows to what the longest sentence needs (hundreds of MB for a long
    one spoken slowly) and would keep it for the life of the worker process, through
    every job of every kind after it; the engine rests when the speech is voiced."""
    while_voicing, after = in_a_pool_process(LONG_SENTENCE)

    assert while_voicing - after > 150, f"resident {while_voicing} MiB, then {after} MiB"


def test_the_two_voices_sound_different(tmp_path: Path) -> None:
    text = "The library opens early in the morning. Children can borrow books every week."
    joe, rate = samples_of(speak(tmp_path / "joe", text, format="wav", voice="joe"))
    alex, _ = samples_of(speak(tmp_path / "alex", text, format="wav", voice="alex"))

    assert median_pitch(alex, rate) / median_pitch(joe, rate) > 1.15
    assert spectral_centroid(alex, rate) / spectral_centroid(joe, rate) > 1.15


@pytest.mark.parametrize(
    ("fmt", "codec", "rate"), [("mp3", "mp3", 22_050), ("ogg", "opus", 48_000)]
)
def test_compressed_formats_decode_at_the_target_loudness(
    tmp_path: Path, fmt: str, codec: str, rate: int
) -> None:
    path = speak(tmp_path, format=fmt, voice="alex")

    info = probe(path)
    assert path.name == f"speech.{fmt}"
    assert (info.codec, info.sample_rate, info.channels) == (codec, rate, 1)
    assert info.duration > 6.0
    assert loudness(path) == pytest.approx(-16.0, abs=1.0)


def test_pauses_follow_sentences_and_paragraphs(tmp_path: Path) -> None:
    short = speak(tmp_path / "short", format="wav", pause=0.2)
    long = speak(tmp_path / "long", format="wav", pause=0.6)

    assert silent_stretches(long) == pytest.approx(
        [0.6, 0.6 * PARAGRAPH_PAUSE_FACTOR, 0.6], abs=0.05
    )
    assert silent_stretches(short) == pytest.approx(
        [0.2, 0.2 * PARAGRAPH_PAUSE_FACTOR, 0.2], abs=0.05
    )
    gained = probe(long).duration - probe(short).duration
    assert gained == pytest.approx(0.4 * (2 + PARAGRAPH_PAUSE_FACTOR), abs=0.5)


def test_a_long_mp3_is_encoded_in_two_halves_meeting_in_a_pause(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Speech over a minute (here over 3 s) as MP3 has its second half encoded side by
    side with the first (``longplay.media.halves``), from a pause between sentences:
    the pauses, the length and the loudness are what the whole would have."""
    monkeypatch.setattr(halves, "SPLIT_ABOVE_S", 3.0)
    stops = note_tail_stops(monkeypatch)
    shares: list[float] = []
    speech = synthesize_speech(
        TEXT, tmp_path, SpeechOptions(), progress=lambda done, total, **_: shares.append(done)
    )

    [stop] = stops
    samples, rate = samples_of(speech.path)
    assert np.abs(samples[stop - rate // 20 : stop + rate // 20]).max() < 1e-3  # in a pause
    assert silent_stretches(speech.path) == pytest.approx(
        [0.3, 0.3 * PARAGRAPH_PAUSE_FACTOR, 0.3], abs=0.05
    )
    assert len(samples) / rate == pytest.approx(speech.duration, abs=0.01)
    assert probe(speech.path).duration == pytest.approx(speech.duration, abs=0.05)
    assert loudness(speech.path) == pytest.approx(-16.0, abs=0.5)
    assert shares == sorted(shares) and shares[-1] == pytest.approx(1.0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["speech.mp3"]


def test_a_markdown_file_is_read_as_prose(tmp_path: Path) -> None:
    notes = tmp_path / "upload-3"
    notes.write_text("# Opening hours\n\nThe library opens *early* on [weekdays](https://x.y/z).\n")
    params = SynthesizeParams(format="ogg")

    ctx = run_kind(
        "synthesize", params, [input_file(notes, "text/markdown", name="notes.md")], tmp_path / "w"
    )

    [(_, output)] = ctx.kept
    assert (output.name, output.media_type) == ("notes.ogg", "audio/ogg")
    assert ctx.state["speech"]["sentences"] == 2


def test_markdown_to_text() -> None:
    markdown = (
        "## Hours ##\nOpen *daily*, **late** on `Fridays` and my_var stays.\n\n"
        "- [Map](https://example.org/map) and ![logo](logo.png)\n"
        "> Quiet, please.\n\n```\ncode()\n```\n"
    )
    assert speakable_sentences(markdown_to_text(markdown)) == [
        Sentence("Hours", ends_paragraph=True),
        Sentence("Open daily, late on Fridays and my_var stays.", ends_paragraph=True),
        Sentence("Map and Quiet, please.", ends_paragraph=True),
    ]
    # An address may hold parentheses in pairs; none of it is left behind.
    wiki = "See [Foo](https://en.wikipedia.org/wiki/Foo_(bar) 'Foo (bar)') for kiwis."
    assert markdown_to_text(wiki) == "See Foo for kiwis."


def test_lines_without_words_are_pauses_not_speech() -> None:
    text = "First part ends here. Really.\n\n* * *\n\n---\n\nSecond part."

    assert speakable_sentences(text) == [
        Sentence("First part ends here.", ends_paragraph=False),
        Sentence("Really.", ends_paragraph=True),
        Sentence("Second part.", ends_paragraph=True),
    ]


@pytest.mark.parametrize(
    ("name", "media_type", "content", "message"),
    [
        ("empty.txt", "text/plain", b" \n\n\t", "empty.txt has no words to speak"),
        ("rule.md", "text/markdown", b"***\n", "rule.md has no words to speak"),
        ("photo.png", "image/png", b"\x89PNG\r\n", "photo.png is not a text file (image/png)"),
        ("blob.txt", "text/plain", b"caf\x00\x01 au lait", "blob.txt is not text"),
        ("blob.txt", "text/plain", b"caf\x00\x01 au lait", "save it as UTF-8"),
    ],
)
def test_unusable_text_files_are_refused_naming_them(
    tmp_path: Path, name: str, media_type: str, content: bytes, message: str
) -> None:
    path = tmp_path / "upload"
    path.write_bytes(content)

    with pytest.raises(InvalidInput, match=re.escape(message)) as refused:
        run_kind(
            "synthesize",
            SynthesizeParams(),
            [input_file(path, media_type, name=name)],
            tmp_path / "w",
        )

    assert not refused.value.retryable


SPOKEN = "Caf\u00e9 cr\u00e8me \u2013 \u201cna\u00efve\u201d dishes for \u00a312."


@pytest.mark.parametrize(
    ("encoding", "text"),
    [
        ("utf-8", SPOKEN),
        ("utf-8-sig", SPOKEN),
        ("utf-16", SPOKEN),
        ("cp1252", SPOKEN),
        ("latin-1", "Caf\u00e9 cr\u00e8me, na\u00efve dishes for \u00a312."),
    ],
)
def test_a_text_file_is_read_as_every_kind_reads_it(
    tmp_path: Path, encoding: str, text: str
) -> None:
    """Whatever its encoding, synthesize reads a text file as translate, summarize and
    collections do, and speaks it."""
    path = tmp_path / "upload"
    path.write_bytes(text.encode(encoding))
    source = input_file(path, "text/plain", name=f"{encoding}.txt")

    assert read_prose(source) == text
    assert Document.read(path, name=source.name).lines() == [text]
    assert read_document(source).text == text
    ctx = run_kind("synthesize", SynthesizeParams(format="wav"), [source], tmp_path / "w")
    assert ctx.state["speech"]["sentences"] == 1


def test_text_must_come_from_exactly_one_place(tmp_path: Path) -> None:
    story = tmp_path / "story.txt"
    story.write_text("Once upon a time.")

    with pytest.raises(InvalidParams, match="nothing to speak"):
        run_kind("synthesize", SynthesizeParams(), [], tmp_path / "none")
    with pytest.raises(InvalidParams, match="not both"):
        run_kind(
            "synthesize",
            SynthesizeParams(text="Hello."),
            [input_file(story, "text/plain")],
            tmp_path / "both",
        )


def test_an_unknown_voice_is_refused_listing_the_voices(tmp_path: Path) -> None:
    with pytest.raises(InvalidParams, match="the voices are joe, alex"):
        run_kind("synthesize", SynthesizeParams(text="Hello there.", voice="morgan"), [], tmp_path)


@pytest.mark.parametrize(
    "params",
    [
        {"text": ""},
        {"text": "  \n\t "},
        {"text": "... -- !"},
        {"text": "Hi.", "rate": 3.0},
        {"text": "Hi.", "pause": -1},
        {"text": "Hi.", "format": "flac"},
        {"text": "Hi.", "loudness": -3},
        {"text": "Hi.", "speed": 1.2},
    ],
)
def test_params_refuse_what_cannot_be_done(params: dict[str, Any]) -> None:
    with pytest.raises(pydantic.ValidationError):
        SynthesizeParams.model_validate(params)


def test_kind_is_registered() -> None:
    kind = get_kind("synthesize")

    assert kind is not None and kind.params is SynthesizeParams
    assert [s.name for s in kind.steps] == ["speak"]
    assert (kind.min_inputs, kind.max_inputs, tuple(kind.input_types)) == (0, 1, ("text/",))


# -- through the API --------------------------------------------------------------------


def finished(stack: Stack, job_id: str) -> dict[str, Any]:
    return wait_for_status(stack.client(), job_id, {"completed", "failed"}, timeout=120)


@DATABASE
def test_a_text_file_upload_is_spoken_by_the_second_voice(stack: Stack, tmp_path: Path) -> None:
    client = stack.client()
    response = client.post(
        "/v1/jobs",
        data={"kind": "synthesize", "params": json.dumps({"voice": "alex", "format": "ogg"})},
        files={"file": ("chapter.md", b"# One\n\nIt was a *bright* cold day.", "text/markdown")},
    )
    assert response.status_code == 202, response.text

    job = finished(stack, response.json()["id"])

    assert job["status"] == "completed", job["error"]
    [output] = job["outputs"]
    assert (output["name"], output["media_type"]) == ("chapter.ogg", "audio/ogg")
    path = tmp_path / output["name"]
    path.write_bytes(client.get(output["links"]["content"]).content)
    assert probe(path).codec == "opus"
    assert loudness(path) == pytest.approx(-16.0, abs=1.0)


@DATABASE
def test_empty_text_is_refused_at_submit(stack: Stack) -> None:
    response = stack.client().post("/v1/jobs", json={"kind": "synthesize", "params": {"text": " "}})

    assert response.status_code == 422
    assert "text has no words to speak" in response.text


@DATABASE
def test_a_job_with_no_text_is_refused_at_submit(stack: Stack) -> None:
    response = stack.client().post(
        "/v1/jobs", json={"kind": "synthesize", "params": {"voice": "joe"}}
    )

    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "invalid_params"
    assert error["message"].startswith("nothing to speak: give the text parameter")
    assert error["details"][0]["loc"] == ["body", "params", "text"]


@DATABASE
def test_a_windows_1252_text_file_is_taken_at_submit_and_spoken(stack: Stack) -> None:
    client = stack.client()
    response = client.post(
        "/v1/jobs",
        data={"kind": "synthesize", "params": json.dumps({"format": "wav"})},
        files={"file": ("cp1252.txt", SPOKEN.encode("cp1252"), "text/plain")},
    )
    assert response.status_code == 202, response.text

    job = finished(stack, response.json()["id"])

    assert job["status"] == "completed", job["error"]
    assert [o["name"] for o in job["outputs"]] == ["cp1252.wav"]


def test_emoji_are_passed_over_not_read_out_by_their_names() -> None:
    """A voice read "We shipped it 🎉" as "We shipped it party popper"."""
    text = "We shipped it 🎉 and the team 👍🏽 loved it. 🎉🎉\n\nThe 1️⃣ plan ❤️ works."
    assert speakable_sentences(text) == [
        Sentence("We shipped it and the team loved it.", ends_paragraph=True),
        Sentence("The 1 plan works.", ends_paragraph=True),
    ]
