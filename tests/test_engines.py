"""The engines on their real models: Piper speaks, Whisper hears it, Gemma writes; the
HTTP twins against a real OpenAI-compatible server on 127.0.0.1; the GPU rules on CPU."""

from __future__ import annotations

import re
import socket
import threading
from collections.abc import Callable, Iterator
from itertools import pairwise
from pathlib import Path

import jiwer
import numpy as np
import pytest
from openai_stub_server import StubServer, create_app
from voice_measures import median_pitch, spectral_centroid

from longplay.engines import (
    SAMPLE_RATE,
    SECOND_VOICE_NAME,
    DeviceFallback,
    HttpLanguageModel,
    HttpSynthesizer,
    HttpTranscriber,
    LanguageModel,
    Speech,
    Synthesizer,
    Transcriber,
    WhisperTranscriber,
    detect_speech,
    get_language_model,
    get_synthesizer,
    get_transcriber,
    gpu_slot,
    is_out_of_memory,
    load_on_device,
    loaded_engines,
)
from longplay.engines.audio import resample
from longplay.engines.cache import Loaded, cached_engine
from longplay.engines.device import Device, choose_device
from longplay.engines.embeddings import DIMENSIONS, MODEL_ID, Embedder, HttpEmbedder, get_embedder
from longplay.engines.http import EngineClient
from longplay.engines.models import whisper_model_dir
from longplay.engines.voices import known_voices
from longplay.framework import InvalidInput, InvalidParams, PermanentError, RetryableError
from longplay.framework.library import NewPassage
from longplay.jobs.retrieval import passage_vectors
from longplay.settings import Settings

PARAGRAPH = (
    "The library opens early in the morning. Children can borrow books every week, "
    "and the reading room stays quiet all afternoon."
)
API_KEY = "test-key"


def normalized(text: str) -> str:
    return " ".join(re.sub(r"[^\w\s']", " ", text.lower()).split())


def word_error_rate(reference: str, hypothesis: str) -> float:
    return float(jiwer.wer(normalized(reference), normalized(hypothesis)))


def at_16k(speech: Speech) -> np.ndarray:
    return resample(speech.samples, round(len(speech.samples) * SAMPLE_RATE / speech.sample_rate))


def heard(transcriber: Transcriber, audio: np.ndarray) -> str:
    return " ".join(segment.text for segment in transcriber.transcribe(audio).segments)


# -- fixtures: each model loaded once per session ------------------------------------


@pytest.fixture(scope="session")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return Settings(
        data_dir=tmp_path_factory.mktemp("engines"),
        engines={"device": "auto"},
        stt={"engine": "local", "model": None},
        tts={"engine": "local", "voice": None},
        llm={"engine": "local", "model": None},
        embed={"engine": "local"},
    )


@pytest.fixture(scope="session")
def transcriber(settings: Settings) -> Transcriber:
    return get_transcriber(settings)


@pytest.fixture(scope="session")
def synthesizer(settings: Settings) -> Synthesizer:
    return get_synthesizer(settings)


@pytest.fixture(scope="session")
def language_model(settings: Settings) -> LanguageModel:
    return get_language_model(settings)


@pytest.fixture(scope="session")
def joe(synthesizer: Synthesizer) -> Speech:
    return synthesizer.synthesize(PARAGRAPH, voice="joe")


@pytest.fixture(scope="session")
def embedder(settings: Settings) -> Embedder:
    local = get_embedder(settings)
    assert local is not None, "the embedding model's packages are installed for the tests"
    return local


@pytest.fixture(scope="session")
def server(
    transcriber: Transcriber,
    synthesizer: Synthesizer,
    language_model: LanguageModel,
    embedder: Embedder,
) -> Iterator[StubServer]:
    app = create_app(
        api_key=API_KEY,
        transcriber=transcriber,
        synthesizer=synthesizer,
        language_model=language_model,
        embedder=embedder,
    )
    with StubServer(app) as running:
        yield running


@pytest.fixture(scope="session")
def http_settings(settings: Settings, server: StubServer) -> Settings:
    http = {"engine": "http", "url": server.url, "api_key": API_KEY}
    return settings.model_copy(
        update={
            "stt": settings.stt.model_copy(update=http),
            "tts": settings.tts.model_copy(update=http),
            "llm": settings.llm.model_copy(update=http),
            "embed": settings.embed.model_copy(update=http),
        }
    )


def client(server: StubServer, *, key: str = API_KEY, timeout_s: float = 30) -> EngineClient:
    return EngineClient(
        engine="test",
        base_url=server.url,
        api_key=key,
        settings_prefix="LONGPLAY_TEST",
        timeout_s=timeout_s,
    )


# -- speech: Piper speaks, Whisper hears ----------------------------------------------


def test_piper_speaks_a_paragraph_that_whisper_transcribes(
    joe: Speech, transcriber: Transcriber
) -> None:
    assert joe.sample_rate == 22_050
    assert joe.samples.dtype == np.float32
    assert 4 < joe.duration < 15
    assert np.abs(joe.samples).max() <= 1.0

    run = transcriber.transcribe(at_16k(joe), word_timestamps=True)
    segments = list(run.segments)

    assert run.language == "en"
    assert run.duration == pytest.approx(joe.duration, abs=0.01)
    assert word_error_rate(PARAGRAPH, " ".join(s.text for s in segments)) < 0.10
    assert all(0 <= s.start < s.end <= run.duration + 0.01 for s in segments)
    words = [w for s in segments for w in s.words]
    assert [normalized(w.text) for w in words[:3]] == ["the", "library", "opens"]
    assert all(a.start <= b.start for a, b in pairwise(words))


def test_second_voice_sounds_different_and_is_understood(
    joe: Speech, synthesizer: Synthesizer, transcriber: Transcriber
) -> None:
    assert synthesizer.voices == ("joe", SECOND_VOICE_NAME)
    alex = synthesizer.synthesize(PARAGRAPH, voice=SECOND_VOICE_NAME)

    pitch_ratio = median_pitch(alex.samples, alex.sample_rate) / median_pitch(
        joe.samples, joe.sample_rate
    )
    centroid_ratio = spectral_centroid(alex.samples, alex.sample_rate) / spectral_centroid(
        joe.samples, joe.sample_rate
    )
    assert pitch_ratio > 1.15
    assert centroid_ratio > 1.15
    assert word_error_rate(PARAGRAPH, heard(transcriber, at_16k(alex))) < 0.10


def test_length_scale_slows_speech_down(synthesizer: Synthesizer, joe: Speech) -> None:
    slow = synthesizer.synthesize(PARAGRAPH, voice="joe", length_scale=1.5)
    assert slow.duration > joe.duration * 1.3


def test_unknown_voice_empty_text_and_bad_pace_are_refused(synthesizer: Synthesizer) -> None:
    with pytest.raises(InvalidParams, match="joe"):
        synthesizer.synthesize("Hello there.", voice="nobody")
    with pytest.raises(InvalidInput):
        synthesizer.synthesize("   ")
    with pytest.raises(InvalidParams, match="length_scale"):
        synthesizer.synthesize("Hello there.", length_scale=0)


def test_vad_reports_speech_between_silences(joe: Speech, transcriber: Transcriber) -> None:
    speech = at_16k(joe)
    silence = np.zeros(3 * SAMPLE_RATE, dtype=np.float32)
    audio = np.concatenate([silence, speech, silence, speech, silence])

    spans = detect_speech(audio, min_silence_s=1.0)
    run = transcriber.transcribe(audio, vad=True)
    segments = list(run.segments)

    assert len(spans) == 2
    assert spans[0].start == pytest.approx(3.0, abs=0.5)
    assert spans[1].start == pytest.approx(6.0 + joe.duration, abs=0.5)
    assert run.duration == pytest.approx(len(audio) / SAMPLE_RATE)
    assert run.speech_duration < run.duration - 6
    # Segment times stay on the original timeline: the first words start after the silence.
    assert segments[0].start >= 2.5
    assert segments[-1].end <= run.duration


def test_transcribe_refuses_what_it_cannot_do(transcriber: Transcriber) -> None:
    with pytest.raises(InvalidInput, match="empty"):
        transcriber.transcribe(np.zeros(0, dtype=np.float32))
    with pytest.raises(InvalidInput, match="mono"):
        transcriber.transcribe(np.zeros((2, 16_000), dtype=np.float32))
    with pytest.raises(InvalidParams, match="only English"):
        transcriber.transcribe(np.zeros(16_000, dtype=np.float32), language="fr")


# -- the LLM ----------------------------------------------------------------------------


def test_llm_completes_deterministically(language_model: LanguageModel) -> None:
    prompt = "The three primary colors are red, yellow and"
    first = language_model.complete(prompt, max_tokens=8)
    second = language_model.complete(prompt, max_tokens=8)
    assert first.strip()
    assert first == second


def test_llm_translates_with_a_base_model_prompt(language_model: LanguageModel) -> None:
    prompt = (
        "English: Good morning, my friend.\nFrench: Bonjour, mon ami.\n\n"
        "English: The cat is sleeping.\nFrench:"
    )
    answer = language_model.complete(prompt, max_tokens=16, stop=["\n"])
    assert answer.strip()
    assert "\n" not in answer


def test_llm_refuses_a_prompt_longer_than_its_context(language_model: LanguageModel) -> None:
    assert 0 < language_model.count_tokens("Hello world") < 10
    with pytest.raises(InvalidParams, match="tokens"):
        language_model.complete("word " * 9000, max_tokens=8)


# -- the cache ----------------------------------------------------------------------------


def test_engines_load_once_per_process(
    settings: Settings, transcriber: Transcriber, synthesizer: Synthesizer
) -> None:
    assert get_transcriber(settings) is transcriber
    assert get_transcriber(settings.model_copy()) is transcriber
    assert get_synthesizer(settings) is synthesizer

    whisper = [r for r in loaded_engines() if r.backend == "faster-whisper" and not r.fallback]
    assert len(whisper) == 1
    assert whisper[0].device == "cpu"
    assert whisper[0].model == str(whisper_model_dir(settings))
    assert whisper[0].load_seconds > 0


# -- the HTTP twins against a real server ------------------------------------------------


def test_http_engines_round_trip(http_settings: Settings, language_model: LanguageModel) -> None:
    synthesizer = get_synthesizer(http_settings)
    transcriber = get_transcriber(http_settings)
    llm = get_language_model(http_settings)
    assert isinstance(synthesizer, HttpSynthesizer)
    assert isinstance(transcriber, HttpTranscriber)
    assert isinstance(llm, HttpLanguageModel)

    speech = synthesizer.synthesize(PARAGRAPH, voice=SECOND_VOICE_NAME)
    assert speech.sample_rate == 22_050
    run = transcriber.transcribe(at_16k(speech), word_timestamps=True)
    segments = list(run.segments)
    assert run.language == "en"
    assert word_error_rate(PARAGRAPH, " ".join(s.text for s in segments)) < 0.10
    assert sum(len(s.words) for s in segments) >= len(PARAGRAPH.split()) - 2

    messages = [{"role": "user", "content": "Name a fruit that is yellow."}]
    assert llm.chat(messages, max_tokens=8) == language_model.chat(messages, max_tokens=8)
    assert llm.complete("The sky is", max_tokens=4).strip()

    http = [r for r in loaded_engines() if r.backend == "http"]
    assert {r.kind for r in http} == {"stt", "tts", "llm"}
    assert {r.device for r in http} == {"remote"}


def test_http_embeddings_are_the_models_own(http_settings: Settings, embedder: Embedder) -> None:
    """The HTTP twin gets the same unit vectors the local model makes (the server runs
    it), in the order of the texts though the server answers them in another, and they
    are stored under the HTTP model's name, never compared with the local model's."""
    remote = get_embedder(http_settings)
    assert isinstance(remote, HttpEmbedder)
    texts = ["Zorbian bees make violet honey.", "The ferry leaves twice a day."] * 40
    got, local = remote.embed(texts), embedder.embed(texts)
    assert got.shape == local.shape == (80, DIMENSIONS)
    assert np.allclose(got, local, atol=1e-5)
    assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    assert (remote.model_id, embedder.model_id) == ("http:text-embedding-3-small", MODEL_ID)
    refused = http_settings.model_copy(
        update={"embed": http_settings.embed.model_copy(update={"http_model": "bad-400"})}
    )
    with pytest.raises(PermanentError, match="does not exist"):
        embedder_of(refused).embed(["anything"])


def test_a_long_documents_embeddings_are_told_as_they_go(
    settings: Settings, embedder: Embedder
) -> None:
    """Embedding a long document's passages takes minutes on a CPU: its index job said
    nothing all that time. The progress comes chunk by chunk, and the vectors are the
    ones embedding them all at once gives."""
    passages = [NewPassage(f"passage number {n} of the harbour notes") for n in range(70)]
    told: list[tuple[int, int]] = []
    embedded = passage_vectors(
        passages, settings, progress=lambda done, of: told.append((done, of))
    )
    assert told == [(64, 70), (70, 70)]
    assert embedded is not None and len(embedded.vectors) == 70
    whole = embedder.embed([p.text for p in passages])
    assert np.allclose(np.frombuffer(embedded.vectors[69], np.float32), whole[69], atol=1e-5)


def embedder_of(settings: Settings) -> Embedder:
    made = get_embedder(settings)
    assert made is not None
    return made


def test_an_http_speech_servers_voices_are_known_with_its_default_first(
    settings: Settings,
) -> None:
    """They were unknown: any name went to the server (OpenAI answers 400 to "alex"),
    and every speaker of a podcast spoke the one default voice."""

    def http(**tts: str) -> Settings:
        return settings.model_copy(
            update={"tts": settings.tts.model_copy(update={"engine": "http", **tts})}
        )

    assert known_voices(http())[:3] == ("alloy", "echo", "fable")
    assert known_voices(http(http_voice="nova"))[:3] == ("nova", "alloy", "echo")
    assert known_voices(http(http_voices="*")) is None  # the server's own names


def test_http_speech_as_raw_pcm(server: StubServer, joe: Speech) -> None:
    synthesizer = HttpSynthesizer(client(server), model="tts-1", response_format="pcm")
    speech = synthesizer.synthesize(PARAGRAPH, voice="joe")
    assert speech.sample_rate == 24_000
    assert speech.duration == pytest.approx(joe.duration, rel=0.25)
    assert np.abs(speech.samples).max() > 0.5


@pytest.mark.parametrize(
    ("model", "code"),
    [("fail-500", "engine_server_error"), ("busy-429", "engine_rate_limited")],
)
def test_http_server_errors_are_retryable(server: StubServer, model: str, code: str) -> None:
    with pytest.raises(RetryableError) as caught:
        HttpLanguageModel(client(server), model=model).complete("Hi", max_tokens=2)
    assert caught.value.code == code


def test_http_timeout_is_retryable(server: StubServer) -> None:
    synthesizer = HttpSynthesizer(client(server, timeout_s=0.3), model="slow")
    with pytest.raises(RetryableError) as caught:
        synthesizer.synthesize("Hello.")
    assert caught.value.code == "engine_timeout"


def test_http_unreachable_server_is_retryable() -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{probe.getsockname()[1]}"
    dead = EngineClient(
        engine="test", base_url=url, api_key=None, settings_prefix="LONGPLAY_TEST", timeout_s=2
    )
    with pytest.raises(RetryableError) as caught:
        HttpTranscriber(dead, model="whisper-1").transcribe(np.zeros(1600, dtype=np.float32))
    assert caught.value.code == "engine_unreachable"


def test_http_client_errors_are_permanent(server: StubServer) -> None:
    with pytest.raises(PermanentError) as caught:
        HttpTranscriber(client(server), model="bad-400").transcribe(
            np.zeros(1600, dtype=np.float32)
        )
    assert not caught.value.retryable
    assert caught.value.code == "engine_rejected"
    assert "The model 'bad-400' does not exist" in caught.value.message

    with pytest.raises(PermanentError) as caught:
        HttpSynthesizer(client(server, key="wrong"), model="tts-1").synthesize("Hello.")
    assert caught.value.code == "engine_auth_failed"
    assert "LONGPLAY_TEST_API_KEY" in caught.value.message


def test_http_engine_without_url_names_the_setting(settings: Settings) -> None:
    with pytest.raises(PermanentError, match="LONGPLAY_LLM_URL"):
        llm = settings.llm.model_copy(update={"engine": "http", "url": None})
        get_language_model(settings.model_copy(update={"llm": llm}))


# -- missing models ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "setting", "getter"),
    [
        ("stt.model", "LONGPLAY_STT_MODEL", get_transcriber),
        ("tts.voice", "LONGPLAY_TTS_VOICE", get_synthesizer),
        ("llm.model", "LONGPLAY_LLM_MODEL", get_language_model),
    ],
)
def test_missing_model_names_path_and_setting(
    settings: Settings, tmp_path: Path, field: str, setting: str, getter: object
) -> None:
    missing = tmp_path / "no-such-model"
    with pytest.raises(PermanentError) as caught:
        group, name = field.split(".")
        changed = getattr(settings, group).model_copy(update={name: str(missing)})
        getter(settings.model_copy(update={group: changed}))  # type: ignore[operator]
    assert str(missing) in caught.value.message
    assert setting in caught.value.message
    assert caught.value.code == "model_missing"


# -- device choice, CPU fallback and the GPU slot, on a CPU machine ---------------------


def test_choose_device() -> None:
    assert choose_device("cpu", engine="x", cuda_available=True) == "cpu"
    assert choose_device("auto", engine="x", cuda_available=True) == "cuda"
    assert choose_device("auto", engine="x", cuda_available=False) == "cpu"
    with pytest.raises(PermanentError, match="LONGPLAY_DEVICE"):
        choose_device("cuda", engine="x", cuda_available=False)


def test_out_of_memory_is_recognised() -> None:
    assert is_out_of_memory(RuntimeError("CUDA failed with error out of memory"))
    assert is_out_of_memory(RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB"))
    assert is_out_of_memory(ValueError("cudaMalloc failed: out of memory"))
    assert is_out_of_memory(MemoryError())
    assert not is_out_of_memory(RuntimeError("Library libcublas.so.12 is not found"))


def whisper_loader(
    settings: Settings, cuda_error: Exception
) -> tuple[list[Device], Callable[[Device], WhisperTranscriber]]:
    """A loader that fails the way CUDA does and loads the real model on the CPU."""
    tried: list[Device] = []

    def load(device: Device) -> WhisperTranscriber:
        tried.append(device)
        if device == "cuda":
            raise cuda_error
        return WhisperTranscriber.load(whisper_model_dir(settings), device=device, threads=1)

    return tried, load


def test_cuda_out_of_memory_falls_back_to_cpu(settings: Settings, joe: Speech) -> None:
    oom = RuntimeError("CUDA failed with error out of memory")
    tried, load = whisper_loader(settings, oom)
    engine, device, fallback = load_on_device("faster-whisper", load, "cuda", strict=True)

    assert tried == ["cuda", "cpu"]
    assert device == "cpu" and engine.device == "cpu"
    assert fallback == DeviceFallback("faster-whisper", "cuda", "cpu", str(oom))
    assert "faster-whisper runs on the CPU" in fallback.describe()
    assert word_error_rate(PARAGRAPH, heard(engine, at_16k(joe))) < 0.10


def test_other_cuda_failures_fall_back_only_in_auto(settings: Settings) -> None:
    broken = RuntimeError("Library libcublas.so.12 is not found or cannot be loaded")
    tried, load = whisper_loader(settings, broken)
    with pytest.raises(PermanentError, match="libcublas") as caught:
        load_on_device("faster-whisper", load, "cuda", strict=True)
    assert caught.value.code == "engine_load_failed"
    assert tried == ["cuda"]

    _, device, fallback = load_on_device("faster-whisper", load, "cuda", strict=False)
    assert device == "cpu"
    assert fallback is not None and "libcublas" in fallback.reason


def test_fallback_is_reported_to_every_job_that_uses_the_engine(settings: Settings) -> None:
    threads = settings.engines.model_copy(update={"threads": 1})
    own = settings.model_copy(update={"engines": threads})  # its own cache entry
    _, load = whisper_loader(own, RuntimeError("CUDA out of memory"))
    notes: list[DeviceFallback] = []

    def load_whisper(_: Settings) -> Loaded[WhisperTranscriber]:
        engine, device, fallback = load_on_device("faster-whisper", load, "cuda", strict=False)
        return Loaded(engine, "faster-whisper", engine.model, device, fallback)

    first = cached_engine("stt", own, load_whisper, notes.append)
    second = cached_engine("stt", own, load_whisper, notes.append)

    assert first is second
    assert [n.used for n in notes] == ["cpu", "cpu"]
    records = [r for r in loaded_engines() if r.fallback is not None]
    assert len(records) == 1 and records[0].device == "cpu"


def test_gpu_slot_lets_one_job_at_a_time_use_the_gpu(tmp_path: Path) -> None:
    own = Settings(data_dir=tmp_path)
    with gpu_slot("cpu", settings=own), gpu_slot("cpu", settings=own):
        pass  # the CPU is not a slot: nesting does not wait

    outcome: list[str] = []

    def other_job() -> None:
        try:
            with gpu_slot("cuda", settings=own, timeout_s=0.3):
                outcome.append("ran")
        except RetryableError as exc:
            outcome.append(exc.code)

    with gpu_slot("cuda", settings=own):
        waiting = threading.Thread(target=other_job)
        waiting.start()
        waiting.join()
    assert outcome == ["gpu_busy"]

    after = threading.Thread(target=other_job)
    after.start()
    after.join()
    assert outcome == ["gpu_busy", "ran"]
    assert list((tmp_path / "locks").glob("gpu-*.lock"))
