"""The ``podcast`` kind on the real models: a grounded two-voice episode from passages.

Step-level tests run the kind's steps in this process, on a recording context whose
library holds passages the tests write; the end-to-end ones go through the API to the
worker of the shared SQLite stack. Episodes are a minute long; the turn cache makes
every voicing after the first one cheap.
"""

from __future__ import annotations

import itertools
import json
import os
import random
import re
import signal
import string
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import jiwer
import numpy as np
import pydantic
import pyloudnorm
import pytest
from conftest import Stack, wait_for_status, wait_until
from fastapi import FastAPI
from mutagen.id3 import ID3
from openai_stub_server import StubServer, create_app
from step_context import RecordingContext
from test_media import note_tail_stops
from voice_measures import median_pitch

from longplay.engines.llm import LanguageModel, Message, get_language_model
from longplay.engines.scripts import FOLLOW_UPS, LEAD_INS, Draft, _made_question, _parse_question
from longplay.engines.stt import get_transcriber
from longplay.engines.tts import get_synthesizer
from longplay.engines.turns import TurnVoicer, turn_cache
from longplay.framework import FieldError, InvalidParams, get_kind
from longplay.framework.library import Passage
from longplay.kinds import load as load_kinds
from longplay.kinds import podcast
from longplay.kinds.podcast import PodcastParams, check, episode_stem, retrieve_content
from longplay.media import LoudnessMeter, decode, halves
from longplay.media.episode import Episode, EpisodeCheckFailed, EpisodeWriter, check_episode
from longplay.settings import Settings, get_settings
from longplay.text.script import Script, Turn, ungrounded_words

DATABASE = pytest.mark.parametrize("database_kind", ["sqlite"], indirect=True)
API_KEY = "test-key"
FACTS = [
    ("Lighthouses", "History", "The first lighthouse on Skerry Point was lit in 1821. Its lamp "
     "burned whale oil and could be seen eleven miles out to sea. Keepers climbed one hundred "
     "and twelve steps to trim the wicks every four hours through the night."),
    ("Lighthouses", "History", "In 1874 the whale oil lamp was replaced with a paraffin burner "
     "and a Fresnel lens made in Paris. The lens weighed nearly two tons and floated on a bath "
     "of mercury so that a single keeper could turn it by hand."),
    ("Lighthouses", "Keepers", "Three families lived at the station in the 1890s. The children "
     "rowed to the mainland school on calm days and studied at home when storms closed the "
     "channel, sometimes for weeks at a time."),
    ("Lighthouses", "Keepers", "The last keeper, Margaret Oduya, left the tower in 1987 when "
     "the light was automated. She kept a logbook for twenty two years that recorded every "
     "ship, every storm and every visit by seals to the rocks below."),
    ("Tides", None, "Spring tides at Skerry Point rise more than six metres, twice a month, "
     "when the sun and moon pull in a line. Neap tides rise barely two metres. Fishing boats "
     "plan their trips around these tides because the channel is shallow."),
    ("Tides", None, "A tide gauge was fixed to the old pier in 1952. Its records show the "
     "average sea level at the point has risen by about nineteen centimetres since then, "
     "faster in the last twenty years than before."),
]  # fmt: skip
GERMAN_FACTS = [
    ("Leuchtturm", "Geschichte", "Der Leuchtturm auf der Insel wurde im Jahr 1821 zum ersten "
     "Mal entzündet. Seine Lampe brannte mit Walöl und war elf Meilen weit auf See zu sehen. "
     "Die Wärter stiegen alle vier Stunden die Treppe hinauf, um die Dochte zu schneiden. Im "
     "Jahr 1874 bekam der Turm eine Linse aus Paris, die fast zwei Tonnen wog."),
    ("Leuchtturm", "Wärter", "Drei Familien lebten damals auf der Station. Die Kinder ruderten "
     "an ruhigen Tagen zur Schule auf dem Festland und lernten zu Hause, wenn Stürme den Kanal "
     "schlossen."),
    ("Gezeiten", None, "Die Springfluten steigen an der Küste mehr als sechs Meter, zweimal im "
     "Monat, wenn Sonne und Mond in einer Linie stehen. Nippfluten steigen kaum zwei Meter. Die "
     "Fischer planen ihre Fahrten genau nach den Gezeiten, weil der Kanal flach ist. Bei Sturm "
     "bleiben die Boote im Hafen."),
    ("Gezeiten", None, "Ein Pegel wurde 1952 am alten Pier befestigt. Seine Aufzeichnungen "
     "zeigen, dass der Meeresspiegel an der Küste seitdem um etwa neunzehn Zentimeter gestiegen "
     "ist."),
]  # fmt: skip
"""A small German document: the content of a German episode."""


def passages_of(facts: Sequence[tuple[str, str | None, str]]) -> list[Passage]:
    return [
        Passage(
            id=f"pas-{n}",
            collection_id="col-1",
            document_id=f"doc-{document}",
            document_name=document,
            position=n,
            text=text,
            heading=heading,
        )
        for n, (document, heading, text) in enumerate(facts)
    ]


PASSAGES = passages_of(FACTS)
GERMAN_PASSAGES = passages_of(GERMAN_FACTS)
GERMAN = [
    (r"Welcome to the show\. Today we're talking about (.+), from \{documents\}\. "
     r"With me is (.+)\.", r"Willkommen zur Sendung. Heute geht es um \1, aus {documents}. "
     r"Bei mir ist \2."),
    (r"Thanks\. Let's get into (.+)\.", r"Danke. Steigen wir ein in \1."),
    (r"Thanks, (.+)\. That's all for today\. Thanks for listening\.",
     r"Danke, \1. Das war's für heute. Danke fürs Zuhören."),
    (r"What does (.+) tell us about (.+)\?", r"Was erzählt uns \1 über \2?"),
    (r"What else does (.+) tell us\?", r"Was erzählt uns \1 noch?"),
    (r"Right\.", "Genau."), (r"Sure\.", "Sicher."), (r"Well,", "Nun,"),
    (r"Good question\.", "Gute Frage."), (r"Here's what the source says\.", "Die Quelle sagt:"),
    (r"Go on\.", "Weiter."), (r"And what else\?", "Und was noch?"),
    (r"Tell us more\.", "Erzähl uns mehr."), (r"What follows from that\?", "Was folgt daraus?"),
    (r"\{first\} and \{last\}", "{first} und {last}"), (r"our sources", "unsere Quellen"),
]  # fmt: skip
"""The script writer's phrases in German, as a model that translates well gives them."""


def german(phrase: str) -> str:
    """``phrase`` in German by :data:`GERMAN`; one it does not know, as it is."""
    for pattern, translation in GERMAN:
        if found := re.fullmatch(pattern, phrase):
            return found.expand(translation)
    return phrase


class GermanPhrases:
    """A stand-in for a server's model that translates well: it answers a translation
    request (numbered lines, or one line) from :func:`german`, but with ``wrong``'s
    answer for a phrase there; any other chat goes to ``model`` (the bundled Gemma,
    which asked as a chat to translate answers "I'm sorry, I don't have time to
    translate"), and a completion, with ``model`` None, gets nothing."""

    model, device = "german-phrases", "cpu"

    def __init__(self, model: LanguageModel | None, wrong: Mapping[str, str] | None = None) -> None:
        self.questions, self.wrong = model, wrong or {}

    def chat(self, messages: Sequence[Message], **options: Any) -> str:
        if "professional translator" not in messages[0]["content"]:
            assert self.questions is not None
            return self.questions.chat(messages, **options)
        asked = messages[-1]["content"]
        if "numbered lines" not in messages[0]["content"]:
            return self._say(asked)
        lines = [line.split(". ", 1) for line in asked.splitlines()]
        return "\n".join(f"{number}. {self._say(line)}" for number, line in lines)

    def _say(self, phrase: str) -> str:
        return self.wrong.get(phrase) or german(phrase)

    def complete(self, prompt: str, **options: Any) -> str:
        return self.questions.complete(prompt, **options) if self.questions else ""

    def count_tokens(self, text: str) -> int:
        return self.questions.count_tokens(text) if self.questions else len(text) // 4

    def __getattr__(self, name: str) -> Any:
        return getattr(self.questions, name)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("podcast-data")


@pytest.fixture
def local(monkeypatch: pytest.MonkeyPatch, data_dir: Path) -> Iterator[None]:
    """The bundled models, and a turn cache of this module's own."""
    for name in [n for n in os.environ if n.startswith(("LONGPLAY_LLM_", "LONGPLAY_TTS_"))]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("LONGPLAY_DATA_DIR", str(data_dir))
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def run_podcast(
    folder: Path, *, passages: Sequence[Passage] = PASSAGES, **params: Any
) -> RecordingContext:
    """Every step of a podcast job over ``passages``, state through JSON as the runner
    passes it."""
    load_kinds()
    kind = get_kind("podcast")
    assert kind is not None
    folder.mkdir(parents=True, exist_ok=True)
    ctx = RecordingContext(PodcastParams(**params), [], folder)
    ctx.shelf.collections["col-1"] = list(passages)
    for step in kind.steps:
        ctx.step = step.name
        step.run(ctx)
        ctx.state = json.loads(json.dumps(ctx.state, allow_nan=False))
    return ctx


def samples_of(path: Path) -> tuple[np.ndarray, int]:
    blocks = list(decode(path))
    return np.concatenate([b.samples for b in blocks])[:, 0], blocks[0].sample_rate


def output(ctx: RecordingContext, suffix: str) -> Path:
    [path] = [kept.path for _, kept in ctx.kept if kept.name.endswith(suffix)]
    return path


# -- the steps ---------------------------------------------------------------------------


def test_script_only_then_an_edited_script_voices_only_the_changed_turn(
    local: None, tmp_path: Path
) -> None:
    written = run_podcast(tmp_path / "write", collection="col-1", minutes=1, script_only=True)

    assert sorted(kept.name for _, kept in written.kept) == ["podcast.md", "podcast.script.json"]
    questions = written.details("generating_script")[-1]
    assert questions["questions_written"] >= 1  # the model's, where they passed the check
    script = Script.model_validate_json(output(written, ".script.json").read_text())
    first = run_podcast(tmp_path / "voice", script=script.model_dump(), format="wav")
    script.turns[2].text = f"Let me put that another way, take {uuid.uuid4().hex[:6]}."
    edited = run_podcast(tmp_path / "edited", script=script.model_dump(), format="wav")

    assert first.state["voicing"]["synthesized"] + first.state["voicing"]["kept"] == len(
        script.turns
    )
    assert edited.state["voicing"]["synthesized"] == 1
    assert edited.state["voicing"]["kept"] == len(script.turns) - 1
    # Neither shape teaches the ETA of whole runs: one voices nothing, the other writes
    # nothing (its script was given).
    assert written.partial and first.partial and edited.partial
    assert first.details("retrieving_content") == [{"script": "given"}]
    # Progress: the steps; turn by turn while voicing.
    kind = get_kind("podcast")
    assert kind is not None
    assert [s.name for s in kind.steps] == [
        "loading_models", "retrieving_content", "generating_script", "parsing_turns",
        "generating_audio", "combining_audio", "storing_audio",
    ]  # fmt: skip
    voicing = first.details("generating_audio")
    assert {"total_turns", "completed_turns", "current_speaker"} <= set(voicing[0])
    assert [d["completed_turns"] for d in voicing] == list(range(len(script.turns) + 1))
    assert voicing[-1]["total_turns"] == len(script.turns)


def test_one_speaker_makes_a_single_host_brief(local: None, tmp_path: Path) -> None:
    ctx = run_podcast(
        tmp_path,
        collection="col-1",
        minutes=1,
        style="brief",
        speakers=[{"name": "Ada", "role": "host", "voice": "alex"}],
        script_only=True,
    )

    script = Script.model_validate_json(output(ctx, ".script.json").read_text())
    assert {turn.speaker for turn in script.turns} == {"Ada"}


def test_speakers_named_without_a_voice_each_get_one_of_their_own(
    local: None, tmp_path: Path
) -> None:
    script = Script(
        turns=[
            Turn(speaker="Ann", text="Welcome aboard. Today we talk about the harbour ferry."),
            Turn(speaker="Ben", text="The first boat leaves at six, every day of the week."),
        ]
    )
    ctx = run_podcast(
        tmp_path,
        script=script.model_dump(),
        speakers=[{"name": "Ann", "role": "host"}, {"name": "Ben"}],
        format="wav",
    )

    samples, rate = samples_of(output(ctx, ".wav"))
    voiced = Script.model_validate(ctx.state["script"]).turns
    pitch = {}
    for turn in voiced:
        start, end = int((turn.start or 0) * rate), int((turn.end or 0) * rate)
        pitch[turn.speaker] = median_pitch(samples[start:end], rate)
    assert pitch["Ben"] / pitch["Ann"] > 1.15, "Ben speaks in alex, Ann in joe"


def test_a_script_whose_chapters_do_not_fit_its_turns_is_refused() -> None:
    turns = [{"speaker": "Ann", "text": "Hello."}, {"speaker": "Ben", "text": "Hi."}]
    backwards = [{"title": "Two", "first_turn": 1}, {"title": "One", "first_turn": 0}]
    with pytest.raises(pydantic.ValidationError, match=r"2 \('One'\) starts at turn 0, not after"):
        Script.model_validate({"turns": turns, "chapters": backwards})
    past_the_end = [{"title": "Intro", "first_turn": 0}, {"title": "Outro", "first_turn": 2}]
    with pytest.raises(pydantic.ValidationError, match="script has 2 turns, counted from 0"):
        Script.model_validate({"turns": turns, "chapters": past_the_end})


def serve(
    monkeypatch: pytest.MonkeyPatch,
    data_dir: Path,
    engines: Sequence[str],
    model: Callable[[LanguageModel], LanguageModel] = lambda gemma: gemma,
) -> Iterator[FastAPI]:
    """The ``engines`` (LLM, TTS) set to http, pointed at the stub server, which answers
    chat from ``model`` made of the bundled Gemma."""
    settings = Settings(data_dir=data_dir)  # the local engines: ``local`` cleared the rest
    app = create_app(
        api_key=API_KEY,
        transcriber=get_transcriber(settings),
        synthesizer=get_synthesizer(settings),
        language_model=model(get_language_model(settings)),
    )
    with StubServer(app) as server:
        for engine in engines:
            for name, value in {
                "ENGINE": "http",
                "URL": server.url,
                "API_KEY": API_KEY,
                "HTTP_MODEL": "stub",
            }.items():
                monkeypatch.setenv(f"LONGPLAY_{engine}_{name}", value)
        get_settings.cache_clear()
        yield app
    get_settings.cache_clear()


@pytest.fixture
def http_llm(monkeypatch: pytest.MonkeyPatch, local: None, data_dir: Path) -> Iterator[FastAPI]:
    """The LLM engine set to http, pointed at the stub server (answering from Gemma)."""
    yield from serve(monkeypatch, data_dir, ["LLM"])


@pytest.fixture
def http_german(monkeypatch: pytest.MonkeyPatch, local: None, data_dir: Path) -> Iterator[FastAPI]:
    """The LLM and TTS engines set to http, pointed at the stub server, whose model
    translates as :class:`GermanPhrases` does and writes questions with Gemma."""
    yield from serve(monkeypatch, data_dir, ["LLM", "TTS"], GermanPhrases)  # type: ignore[arg-type]


def test_an_openai_compatible_server_writes_the_questions(
    http_llm: FastAPI, tmp_path: Path
) -> None:
    ctx = run_podcast(tmp_path, collection="col-1", topic="tides", minutes=1, script_only=True)

    requests = http_llm.state.chat_requests
    assert requests and all(r["messages"][0]["role"] == "system" for r in requests)
    assert any("Spring tides" in r["messages"][-1]["content"] for r in requests)
    script = Script.model_validate_json(output(ctx, ".script.json").read_text())
    # English: the writer's own phrases as they are, no model asked to translate them.
    assert script.turns[0].text.startswith("Welcome to the show. Today we're talking about tides")
    assert script.turns[-1].text == "Thanks, Alex. That's all for today. Thanks for listening."
    assert not any("translator" in r["messages"][0]["content"] for r in requests)
    assert "phrases_translated" not in ctx.details("generating_script")[-1]


GERMAN_EPISODE = {
    "collection": "col-1",
    "topic": "die Küste",
    "minutes": 1,
    # A language whose phrases are not written by hand (text/host_phrases.py): the model
    # translates them. The stub server answers in German whatever it is asked for.
    "language": "sv",
    "script_only": True,
}


def test_documents_in_another_language_than_the_episode_are_said_to_be(tmp_path: Path) -> None:
    """French or German documents and the default ``en``: the hosts would speak English
    around the documents' own sentences. The job says so, and what to set."""
    load_kinds()
    kind = get_kind("podcast")
    assert kind is not None
    [retrieve] = [step for step in kind.steps if step.name == "retrieving_content"]
    for n, (passages, language, said) in enumerate(
        [(GERMAN_PASSAGES, "en", True), (GERMAN_PASSAGES, "de", False), (PASSAGES, "en", False)]
    ):
        params = PodcastParams(collection="col-1", minutes=1, language=language, script_only=True)
        ctx = RecordingContext(params, [], tmp_path / str(n))
        ctx.shelf.collections["col-1"] = list(passages)
        retrieve.run(ctx)
        mixed = [w["message"] for w in ctx.warnings if w["code"] == "languages_mixed"]
        assert bool(mixed) == said, (language, ctx.warnings)
    assert mixed == [] and said is False
    ctx = RecordingContext(
        PodcastParams(collection="col-1", minutes=1, script_only=True), [], tmp_path / "again"
    )
    ctx.shelf.collections["col-1"] = list(GERMAN_PASSAGES)
    retrieve.run(ctx)
    [message] = ctx.notes
    assert message.startswith("the documents are in German, the episode in English")
    assert "set language=de" in message

    # German and English documents: told passage by passage, in either episode. As one
    # text they were "in German" for a French episode, and nothing for a German one.
    mixed_up = passages_of([f for pair in zip(GERMAN_FACTS, FACTS, strict=False) for f in pair])
    for language, said in [
        (
            "fr",
            r"of the \d+ passages the episode draws on, \d+ in (German|English), \d+ in "
            r"(German|English), the episode in French: ",
        ),
        (
            "de",
            r"of the \d+ passages the episode draws on, \d+ in English, the episode in "
            r"German: ",
        ),
    ]:
        params = PodcastParams(collection="col-1", minutes=1, language=language, script_only=True)
        ctx = RecordingContext(params, [], tmp_path / f"mixed-{language}")
        ctx.shelf.collections["col-1"] = mixed_up
        retrieve.run(ctx)
        [message] = ctx.notes
        assert re.match(said, message), message
        assert "a collection (or a topic) of one language makes an episode of one" in message


def test_a_language_without_written_phrases_has_the_model_translate_them(
    http_german: FastAPI, tmp_path: Path
) -> None:
    check(PodcastParams(**GERMAN_EPISODE), [])  # an HTTP voice may speak Swedish
    with pytest.raises(FieldError, match="unknown language 'xx'"):
        check(PodcastParams(**{**GERMAN_EPISODE, "language": "xx"}), [])  # nothing to say it in
    ctx = run_podcast(tmp_path, passages=GERMAN_PASSAGES, **GERMAN_EPISODE)

    script = Script.model_validate_json(output(ctx, ".script.json").read_text())
    listed = " und ".join(dict.fromkeys(p.document for p in script.passages))
    intro, outro, body = script.turns[:2], script.turns[-1], script.turns[2:-1]
    assert [(t.speaker, t.text) for t in intro] == [
        ("Joe", f"Willkommen zur Sendung. Heute geht es um die Küste, aus {listed}. Bei mir ist "
                "Alex."),
        ("Alex", "Danke. Steigen wir ein in die Küste."),
    ]  # fmt: skip
    assert (outro.speaker, outro.text) == (
        "Joe",
        "Danke, Alex. Das war's für heute. Danke fürs Zuhören.",
    )
    assert {t.speaker for t in script.turns} == {"Joe", "Alex"}
    # The expert says a German lead-in (or none), then the document's own sentences; the
    # host a German follow-up or a question (the model's, or made from the heading).
    leads = [f"{german(lead)} " for lead in LEAD_INS if lead]
    texts = {p.id: " ".join(p.text.split()) for p in script.passages}
    for turn in body:
        [source] = turn.sources
        if turn.speaker == "Alex":
            lead = next((lead for lead in leads if turn.text.startswith(lead)), "")
            assert turn.text.removeprefix(lead) in texts[source], turn.text
        else:
            assert turn.text in {german(f) for f in FOLLOW_UPS} or turn.text.endswith("?")
    english = [
        *LEAD_INS[1:], *FOLLOW_UPS, "Welcome to the show.", "Thanks. Let's", "That's all",
        *(_made_question(p).english for p in GERMAN_PASSAGES),
    ]  # fmt: skip
    assert not [t.text for t in script.turns if any(t.text.startswith(e) for e in english)]
    assert len(body) >= 4 and any(t.text.startswith(tuple(leads)) for t in body)
    # Each phrase translated once, in one request, the names kept by the glossary; none
    # fails the check, and no turn fails the grounding check for its German words.
    requests = http_german.state.chat_requests
    [asked] = [r for r in requests if "translator" in r["messages"][0]["content"]]
    system, lines = asked["messages"][0]["content"], asked["messages"][1]["content"]
    phrases = [line.split(". ", 1)[1] for line in lines.splitlines()]
    assert len(phrases) == len(set(phrases)) and "into Swedish" in system
    # The host's questions are asked for in the episode's language, by its name.
    questions = [r for r in requests if r["messages"][0]["content"].startswith("You are a podcast")]
    assert questions and all(
        "Write it in Swedish." in r["messages"][0]["content"] for r in questions
    )
    names = ["Alex", "die Küste", "Leuchtturm", "Gezeiten", "Wärter", "{documents}"]
    assert all(f"{name} → {name}" in system for name in names)
    details = ctx.details("generating_script")[-1]
    assert (details["phrases_translated"], details["phrases_in_english"]) == (len(phrases), 0)
    assert not [note for note in ctx.notes if "stay in English" in note]
    assert ctx.state["grounding"]["turns_dropped"] == 0
    # The translation is the first half of the step's progress, the questions the rest.
    fractions = ctx.fractions("generating_script")
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert any(0.0 < f <= 0.5 for f in fractions) and any(0.5 < f < 1.0 for f in fractions)


def test_a_phrase_whose_translation_fails_the_check_stays_english_with_a_note(
    local: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    intro = "Welcome to the show. Today we're talking about die Küste, from {documents}."
    outro = "Thanks, Alex. That's all for today. Thanks for listening."
    wrong = {
        f"{intro} With me is Alex.": "Willkommen. Heute geht es um die Küste. Bei mir ist Alex.",
        outro: "Danke. Das war's für heute.",  # the name left out
        "Right.": "Genau, seit 1821.",  # a number the phrase has not
        "Tell us more.": "Erzähl uns bitte ganz genau und ausführlich, was die Quelle noch sagt.",
    }
    model = GermanPhrases(None, wrong)  # no questions: those made from the headings
    monkeypatch.setattr(podcast, "get_language_model", lambda *_, **__: model)

    ctx = run_podcast(tmp_path, passages=GERMAN_PASSAGES, **GERMAN_EPISODE)

    draft = Draft.model_validate(ctx.state["draft"])
    assert draft.intro[0].text == f"{intro} With me is Alex."
    assert draft.intro[1].text == "Danke. Steigen wir ein in die Küste."
    assert draft.outro[0].text == outro
    questions = {s.passage.heading: s.beats[0][0].text for s in draft.sections}
    assert questions["Geschichte"] == "Was erzählt uns Leuchtturm über Geschichte?"
    assert draft.sections[0].beats[0][1].text.startswith("Right. Die Springfluten")
    follow_ups = {beat[0].text for section in draft.sections for beat in section.beats[1:]}
    assert "Tell us more." in follow_ups <= {"Tell us more.", *(german(f) for f in FOLLOW_UPS)}
    [note] = [note for note in ctx.notes if "stay in English" in note]
    assert note.startswith("4 of the 17 phrases the script writer adds itself")
    assert ctx.details("generating_script")[-1]["phrases_in_english"] == 4


# -- the parts ---------------------------------------------------------------------------


def test_a_collection_with_too_little_to_say_fails_saying_how_much_it_has(
    tmp_path: Path,
) -> None:
    ctx = RecordingContext(PodcastParams(collection="col-1", minutes=10), [], tmp_path)
    ctx.shelf.collections["col-1"] = PASSAGES

    with pytest.raises(InvalidParams) as failed:
        retrieve_content(ctx)

    assert failed.value.code == "not_enough_content"
    message = failed.value.message
    said = re.search(
        r"about (\d+) words to draw on, enough for (\d+) min; ask for that or less", message
    )
    assert said is not None, message
    # As many minutes as it says are enough are: that episode's content is found.
    enough = RecordingContext(PodcastParams(collection="col-1", minutes=int(said[2])), [], tmp_path)
    enough.shelf.collections["col-1"] = PASSAGES
    retrieve_content(enough)
    assert enough.state["passages"]


def test_a_collection_too_small_for_the_shortest_episode_says_to_add_documents(
    tmp_path: Path,
) -> None:
    ctx = RecordingContext(PodcastParams(collection="col-1", minutes=1), [], tmp_path)
    ctx.shelf.collections["col-1"] = PASSAGES[:1]

    with pytest.raises(InvalidParams) as failed:
        retrieve_content(ctx)

    assert failed.value.code == "not_enough_content"
    assert "too little for the shortest episode (1 min): add documents" in failed.value.message
    assert "fewer" not in failed.value.message


def test_the_question_parser_cannot_be_broken() -> None:
    rng = random.Random(7)
    alphabet = string.printable + "?\u201c\u201d\u2019\u2026\u2014\u00e9\u6f22"
    for _ in range(2000):
        written = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 120)))
        question = _parse_question(written)
        assert question is None or (question.endswith("?") and "\n" not in question)
    assert _parse_question(' Host: "When was the lamp lit?" Expert: In 1821.') == (
        "When was the lamp lit?"
    )
    assert _parse_question("The lamp was lit in 1821.") is None
    assert _parse_question("Why?") is None


def test_ungrounded_words_catch_a_fact_not_in_the_sources() -> None:
    source = "The lens weighed nearly two tons and floated on mercury."

    assert not ungrounded_words("So the lens floated on mercury?", [source])
    assert ungrounded_words("The lens weighed five tons and was made of glass.", [source]) == {
        "five",
        "glass",
    }


def test_a_kept_turn_is_read_back_as_voiced_and_a_damaged_one_voiced_again(
    tmp_path: Path,
) -> None:
    voicer = TurnVoicer(get_synthesizer(), tmp_path, engine="local")
    text = "The lens floated on a bath of mercury."

    made = voicer.voice(text, voice=None)
    kept = voicer.voice(text, voice=None)
    [path] = tmp_path.glob("*.wav")
    path.write_bytes(path.read_bytes()[:-1000])  # a file cut short, as a full disk leaves it
    again = voicer.voice(text, voice=None)

    assert made.synthesized and not kept.synthesized and again.synthesized
    assert kept.sample_rate == made.sample_rate
    # Kept as 16-bit samples (written as x 32767, read as / 32768, as FFmpeg reads them).
    np.testing.assert_allclose(kept.samples, made.samples, atol=2 / 32_768)
    assert again.duration == pytest.approx(made.duration, rel=0.15)  # Piper varies a little
    replaced = voicer.voice(text, voice=None)
    assert not replaced.synthesized
    np.testing.assert_allclose(replaced.samples, again.samples, atol=2 / 32_768)


def test_a_long_episode_is_encoded_in_two_halves_and_sounds_as_if_encoded_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An MP3 episode over a minute has its second half encoded side by side with the
    first (``AudioEncoder.encode_tail``), in the pause nearest its middle: the same
    file as one encoded whole, sample for sample as decoded, turns at the same times."""
    rate = 22_050
    rng = np.random.default_rng(7)
    turns = [
        (0.2 * np.sin(np.arange(round(s * rate)) * 2 * np.pi * f / rate)
         * rng.uniform(0.5, 1.0, round(s * rate))).astype(np.float32)
        for s, f in zip(rng.uniform(2.0, 5.0, 24), rng.uniform(120.0, 400.0, 24), strict=True)
    ]  # fmt: skip
    tails = note_tail_stops(monkeypatch)

    def write(stem: str) -> Episode:
        with EpisodeWriter(tmp_path, stem, rate) as writer:
            for n, samples in enumerate(turns):
                writer.add("Joe" if n % 2 else "Alex", samples)
            return writer.finish("mp3", -16.0, progress=lambda *_, **__: None)

    split = write("split")
    assert len(tails) == 1 and split.duration > halves.SPLIT_ABOVE_S
    monkeypatch.setattr(halves, "SPLIT_ABOVE_S", 3600.0)
    whole = write("whole")

    assert len(tails) == 1
    assert abs(tails[0] / rate - split.duration / 2) < 5.0  # in a pause near the middle
    assert split.turns == whole.turns
    assert check_episode(split, speakers_asked=2) == check_episode(whole, speakers_asked=2)
    np.testing.assert_allclose(decoded(split.path), decoded(whole.path), atol=1e-3)


def test_each_turn_is_as_loud_as_it_measures_alone(tmp_path: Path) -> None:
    """A turn's loudness comes from the episode's own filter, not a second one: the
    pause before it lets that filter settle, so it reads what a fresh meter reads."""
    rate = 22_050
    rng = np.random.default_rng(3)
    turns = [
        (level * rng.standard_normal(round(seconds * rate))).astype(np.float32)
        for level, seconds in ((0.2, 2.3), (0.02, 1.7), (0.1, 0.3), (0.05, 3.1))
    ]
    with EpisodeWriter(tmp_path, "levels", rate) as writer:
        placed = [writer.add(f"S{n}", samples) for n, samples in enumerate(turns)]
        writer.finish("wav", -16.0, progress=lambda *_, **__: None)

    for turn, samples in zip(placed, turns, strict=True):
        meter = LoudnessMeter(rate, 1, true_peak=False)
        meter.add(samples[:, None])
        alone = meter.result().integrated
        if np.isinf(alone):  # the 0.3 s turn is shorter than a gating block
            assert turn.loudness == alone
        else:
            assert turn.loudness == pytest.approx(alone, abs=1e-6)
    assert len({round(t.loudness, 1) for t in placed if np.isfinite(t.loudness)}) == 3


def decoded(path: Path) -> Any:
    return np.concatenate([block.samples for block in decode(path)])


def test_an_episode_that_fails_a_check_names_it(tmp_path: Path) -> None:
    rate = 22_050
    tone = (0.3 * np.sin(np.arange(rate) * 2 * np.pi * 220 / rate)).astype(np.float32)
    with EpisodeWriter(tmp_path, "one-voice", rate) as writer:
        writer.add("Joe", tone)
        writer.add("Alex", np.zeros(rate, np.float32))
        one_voice = writer.finish("wav", -16.0, progress=lambda *_, **__: None)
    with EpisodeWriter(tmp_path, "silent", rate) as writer:
        writer.add("Joe", np.zeros(rate, np.float32))
        silent = writer.finish("wav", -16.0, progress=lambda *_, **__: None)

    with pytest.raises(EpisodeCheckFailed) as failed:
        check_episode(one_voice, speakers_asked=2)
    assert failed.value.check == "speakers"
    with pytest.raises(EpisodeCheckFailed) as failed:
        check_episode(silent, speakers_asked=1)
    assert failed.value.check == "not_silent"
    one_voice.duration += 3.0
    with pytest.raises(EpisodeCheckFailed) as failed:
        check_episode(one_voice, speakers_asked=1)
    assert failed.value.check == "duration"


# -- through the API ---------------------------------------------------------------------


def finished(client: httpx.Client, job_id: str, timeout: float = 180) -> dict[str, Any]:
    return wait_for_status(client, job_id, {"completed", "failed"}, timeout=timeout)


def normalized(text: str) -> str:
    return " ".join(re.sub(r"[^\w\s']", " ", text.lower()).split())


@dataclass(frozen=True)
class Collection:
    client: httpx.Client
    id: str


@pytest.fixture(scope="module")
def collection(stack: Stack) -> Collection:
    """:data:`FACTS` as a Markdown file (with headings) and a text file, indexed."""
    client = stack.client("podcaster")
    made = client.post("/v1/collections", json={"name": "Skerry Point"})
    assert made.status_code == 201, made.text
    markdown = "# Lighthouses\n\n" + "\n\n".join(
        f"## {heading}\n\n{text}" for document, heading, text in FACTS if document == "Lighthouses"
    )
    tides = "\n\n".join(text for document, _, text in FACTS if document == "Tides")
    files = [
        ("file", ("lighthouses.md", markdown.encode(), "text/markdown")),
        ("file", ("tides.txt", tides.encode(), "text/plain")),
    ]
    added = client.post(f"/v1/collections/{made.json()['id']}/documents", files=files)
    assert added.status_code == 202, added.text
    job = finished(client, added.json()["job"]["id"])
    assert job["status"] == "completed", job["error"]
    return Collection(client, made.json()["id"])


def content(client: httpx.Client, item: dict[str, Any]) -> bytes:
    return client.get(item["links"]["content"]).content


def named(job: dict[str, Any], suffix: str) -> dict[str, Any]:
    [item] = [o for o in job["outputs"] if o["name"].endswith(suffix)]
    return item


@DATABASE
def test_a_podcast_from_a_collection_is_heard_back_and_an_edit_voices_one_turn(
    stack: Stack, collection: Collection, tmp_path: Path
) -> None:
    client = collection.client
    submitted = client.post(
        "/v1/jobs",
        json={"kind": "podcast", "params": {"collection": collection.id, "minutes": 1}},
    )
    assert submitted.status_code == 202, submitted.text
    job = finished(client, submitted.json()["id"])

    assert job["status"] == "completed", job["error"]
    episode = tmp_path / "episode.mp3"
    episode.write_bytes(content(client, named(job, ".mp3")))
    samples, rate = samples_of(episode)
    assert len(samples) / rate == pytest.approx(60.0, rel=0.15)
    assert pyloudnorm.Meter(rate).integrated_loudness(samples.astype(np.float64)) == (
        pytest.approx(-16.0, abs=1.0)
    )
    meter = LoudnessMeter(rate, 1)
    meter.add(samples[:, None])
    assert meter.result().true_peak <= -1.0
    script = Script.model_validate_json(content(client, named(job, ".script.json")))
    speakers = [turn.speaker for turn in script.turns]
    assert all(a != b for a, b in itertools.pairwise(speakers))
    assert set(speakers) == {"Joe", "Alex"}
    # Grounded: every turn's content words are in the passages it cites.
    cited = {p.id: p for p in script.passages}
    allowed = ["Joe", "Alex", *(f"{p.document} {p.heading or ''}" for p in cited.values())]
    for turn in script.turns:
        assert turn.sources and set(turn.sources) <= set(cited)
        texts = [cited[s].text for s in turn.sources]
        assert not ungrounded_words(turn.text, texts, allowed), turn.text
    # Timed from the audio; chapters on turn starts, in the JSON and the mp3's ID3 frames.
    starts = [turn.start or 0.0 for turn in script.turns]
    assert starts == sorted(starts) and (script.turns[-1].end or 0) <= len(samples) / rate
    assert [c.start for c in script.chapters] == [
        script.turns[c.first_turn].start for c in script.chapters
    ]
    tags = ID3(episode)
    chapters = sorted(tags.getall("CHAP"), key=lambda c: c.start_time)
    assert [c.sub_frames["TIT2"].text[0] for c in chapters] == [c.title for c in script.chapters]
    assert [c.start_time for c in chapters] == [
        int((c.start or 0.0) * 1000) for c in script.chapters
    ]
    assert tags.getall("CTOC")[0].child_element_ids == [c.element_id for c in chapters]
    vtt = content(client, named(job, ".vtt")).decode()
    assert vtt.startswith("WEBVTT") and vtt.count("<v Joe>") == speakers.count("Joe")
    assert "## Sources" in content(client, named(job, ".md")).decode()
    for passage in script.passages:  # every cited passage is one the collection has
        found = client.get(
            f"/v1/collections/{collection.id}/search", params={"q": passage.text[:60]}
        ).json()["items"]
        assert passage.id in [item["id"] for item in found]
    assert {s for turn in script.turns for s in turn.sources} <= {p.id for p in script.passages}

    # Heard back by the transcribe kind: the words of the script.
    heard = client.post(
        "/v1/jobs", json={"kind": "transcribe", "inputs": [named(job, ".mp3")["id"]]}
    )
    assert heard.status_code == 202, heard.text
    transcript = finished(client, heard.json()["id"])
    assert transcript["status"] == "completed", transcript["error"]
    said = content(client, named(transcript, ".txt")).decode()
    assert jiwer.wer(normalized(script.text), normalized(said)) <= 0.25

    # script_only, one turn edited, voiced: only what no job voiced before is synthesized.
    only = client.post(
        "/v1/jobs",
        json={
            "kind": "podcast",
            "params": {"collection": collection.id, "minutes": 1, "script_only": True},
        },
    )
    written = finished(client, only.json()["id"])
    assert written["status"] == "completed", written["error"]
    assert sorted(o["name"] for o in written["outputs"]) == ["podcast.md", "podcast.script.json"]
    edited = Script.model_validate_json(content(client, named(written, ".script.json")))
    edited.turns[2].text = f"Let me put that another way, take {uuid.uuid4().hex[:6]}."
    upload = client.post(
        "/v1/artifacts",
        files={"file": ("edited.json", edited.model_dump_json().encode(), "application/json")},
    )
    assert upload.status_code == 201, upload.text
    voiced = client.post("/v1/jobs", json={"kind": "podcast", "inputs": [upload.json()["id"]]})
    assert voiced.status_code == 202, voiced.text
    again = finished(client, voiced.json()["id"])
    assert again["status"] == "completed", again["error"]
    before = {(t.speaker, t.text) for t in script.turns}
    new = {(t.speaker, t.text) for t in edited.turns} - before
    [reused] = [w["message"] for w in again["warnings"] if w["code"] == "turns_reused"]
    assert reused.startswith(f"synthesized {len(new)} turns; {len(edited.turns) - len(new)} were")
    assert 1 <= len(new) <= 3


@DATABASE
@pytest.mark.parametrize(
    ("params", "field", "says"),
    [
        ({"minutes": 0.5}, "minutes", "greater than or equal to 1"),
        ({"minutes": 61}, "minutes", "less than or equal to 60"),
        ({"speakers": [{"name": "A", "voice": "nobody"}]}, "voice", "no voice 'nobody'"),
        ({"collection": None}, "collection", "name a collection"),
        ({"collection": None, "script": {"turns": [{"speaker": "Zed", "text": "Hi."}]}},
         "script", "speaker 'Zed' is not one of"),
        ({"language": "de"}, "language", "the voice joe speaks English only, not German"),
        ({"language": "klingon"}, "language", "unknown language"),
        # Longer than a code: a name, told as unknown, not as "at most 10 characters".
        ({"language": "Klingonisch"}, "language", "unknown language 'Klingonisch'"),
        ({"collection": None, "script": {"turns": [{"speaker": "Joe", "text": "Hi."}],
                                         "chapters": [{"title": "Intro", "first_turn": 0},
                                                      {"title": "Outro", "first_turn": 3}]}},
         "script", "chapter 2 ('Outro') starts at turn 3, but the script has 1 turns"),
    ],
)  # fmt: skip
def test_bad_params_are_refused_at_submit_naming_the_field(
    collection: Collection, params: dict[str, Any], field: str, says: str
) -> None:
    body = {"kind": "podcast", "params": {"collection": collection.id, **params}}
    response = collection.client.post("/v1/jobs", json=body)

    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert says in error["message"] or says in json.dumps(error)
    assert field in json.dumps(error)
    assert "Traceback" not in response.text and "/src/" not in response.text


@DATABASE
def test_a_script_in_a_language_the_voice_does_not_speak_is_taken(collection: Collection) -> None:
    """A script alone needs no voice: German is refused for an episode, not for its script."""
    params = {"collection": collection.id, "language": "de", "script_only": True}
    response = collection.client.post("/v1/jobs", json={"kind": "podcast", "params": params})
    assert response.status_code == 202, response.text
    assert collection.client.post(f"/v1/jobs/{response.json()['id']}/cancel").status_code == 200


@DATABASE
def test_an_empty_or_another_owners_collection_is_refused_at_submit(
    stack: Stack, collection: Collection
) -> None:
    stranger = stack.client("stranger-podcaster")
    theirs = stranger.post(
        "/v1/jobs", json={"kind": "podcast", "params": {"collection": collection.id}}
    )
    empty = stranger.post("/v1/collections", json={"name": "Empty"}).json()["id"]
    nothing = stranger.post("/v1/jobs", json={"kind": "podcast", "params": {"collection": empty}})

    assert theirs.status_code == 404 and collection.id in theirs.json()["error"]["message"]
    assert (
        nothing.status_code == 422 and "no indexed passages" in nothing.json()["error"]["message"]
    )


LONG_NAME = ("Notes on the harbour, its lighthouse and its keepers " * 5)[:246] + ".txt"
"""A document name of 250 characters, longer than a title may be."""
LONG_TOPIC = ("The lighthouse keepers of Skerry Point and the tides " * 6)[:300]


@DATABASE
def test_a_long_document_name_or_topic_makes_titles_cut_at_a_word(stack: Stack) -> None:
    """A title made from a document's name or the topic (the longest the API takes) is
    cut after a word, with an ellipsis, to what a script holds: the job works."""
    client = stack.client("long-namer")
    made = client.post("/v1/collections", json={"name": "Long names"}).json()["id"]
    text = "\n\n".join(text for _, _, text in FACTS)
    added = client.post(
        f"/v1/collections/{made}/documents",
        files={"file": (LONG_NAME, text.encode(), "text/plain")},
    )
    assert added.status_code == 202, added.text
    assert finished(client, added.json()["job"]["id"])["status"] == "completed"
    params = {"collection": made, "minutes": 1, "script_only": True}
    jobs = [
        client.post("/v1/jobs", json={"kind": "podcast", "params": {**params, **more}})
        for more in ({}, {"topic": LONG_TOPIC})
    ]
    assert [j.status_code for j in jobs] == [202, 202], [j.text for j in jobs]

    for job, long in zip(jobs, (LONG_NAME, LONG_TOPIC), strict=True):
        done = finished(client, job.json()["id"])
        assert done["status"] == "completed", done["error"]
        script = Script.model_validate_json(content(client, named(done, ".script.json")))
        assert script.chapters or long == LONG_TOPIC  # its intro may leave no time for more
        for title, whole in [
            (script.title, long),
            *((c.title, LONG_NAME) for c in script.chapters),
        ]:
            kept, ellipsis = title[:-1], title[-1]
            assert ellipsis == "\u2026" and len(title) <= 200
            assert whole.startswith(kept) and not whole[len(kept)].isalnum(), "cut after a word"


@DATABASE
def test_an_edited_script_with_a_too_long_title_is_refused_saying_so(
    stack: Stack, collection: Collection
) -> None:
    client = collection.client
    turns = [{"speaker": "Joe", "text": "Hello and welcome."}]
    too_long = {"title": "T" * 201, "turns": turns}
    inline = client.post("/v1/jobs", json={"kind": "podcast", "params": {"script": too_long}})
    upload = client.post(
        "/v1/artifacts",
        files={"file": ("edited.json", json.dumps(too_long).encode(), "application/json")},
    )
    given = client.post("/v1/jobs", json={"kind": "podcast", "inputs": [upload.json()["id"]]})

    assert inline.status_code == 422, inline.text
    assert "title" in inline.text and "at most 200 characters" in inline.text
    assert given.status_code == 202, given.text
    failed = finished(client, given.json()["id"])
    assert failed["status"] == "failed"
    assert failed["error"]["code"] == "invalid_input"
    assert failed["error"]["message"].startswith("edited.json is not a podcast script: title:")


@DATABASE
def test_the_cli_submits_a_podcast_with_its_params_as_options(
    stack: Stack, collection: Collection, tmp_path: Path
) -> None:
    env = {
        **stack.env,
        "LONGPLAY_API_URL": stack.api_url,
        "LONGPLAY_API_KEY": stack.key("podcaster"),
    }
    done = subprocess.run(
        [sys.executable, "-m", "longplay", "submit", "podcast", "--collection", collection.id,
         "--minutes", "1", "--script-only", "--wait", "--out", str(tmp_path)],
        env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip

    assert done.returncode == 0, done.stderr
    script = Script.model_validate_json((tmp_path / "podcast.script.json").read_text())
    assert {turn.speaker for turn in script.turns} == {"Joe", "Alex"}


def process_ended(pid: int) -> bool:
    """Whether ``pid`` is gone or a zombie (dead, its parent not told yet)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] in {"Z", "X"}


def test_a_voicing_killed_mid_script_resumes_at_the_turn_it_reached(stack: Stack) -> None:
    client = stack.client("resumer")
    take = uuid.uuid4().hex[:6]  # turns no other job on this machine has voiced
    total = 10
    script = Script.model_validate(
        {
            "turns": [
                {
                    "speaker": ("Joe", "Alex")[n % 2],
                    "text": f"Point {n + 1} of take {take}. The lamp burned whale oil, and "
                    "the keepers climbed the steps every four hours to trim the wicks.",
                }
                for n in range(total)
            ],  # and no chapters, as a script written by hand may have
        }
    )
    cache = turn_cache(stack.data_dir)
    before = set(cache.glob("*.wav"))
    body = {"kind": "podcast", "params": {"script": script.model_dump(), "format": "wav"}}
    submitted = client.post("/v1/jobs", json=body)
    assert submitted.status_code == 202, submitted.text
    job_id = submitted.json()["id"]

    def voiced_some() -> dict[str, Any] | None:
        job = client.get(f"/v1/jobs/{job_id}").json()
        assert job["status"] in {"queued", "running"}, job
        details = job["step_details"]
        if job["current_step"] == "generating_audio" and details.get("completed_turns", 0) >= 3:
            return dict(details)
        return None

    seen = wait_until(voiced_some, timeout=120, every=0.02)
    [attempt] = client.get(f"/v1/jobs/{job_id}/attempts").json()
    pid = int(attempt["worker"].rsplit(":", 1)[1])
    os.kill(pid, signal.SIGKILL)  # mid-voicing: no step ends, nothing is saved
    wait_until(lambda: process_ended(pid), timeout=10, every=0.005)
    # The turns the killed run finished, before the run that takes the job over writes.
    finished_before_kill = set(cache.glob("*.wav")) - before
    assert seen["total_turns"] == total
    assert seen["completed_turns"] <= len(finished_before_kill) < total, (
        "the kill came after the last turn: nothing was left to resume"
    )

    job = finished(client, job_id)

    assert job["status"] == "completed", job["error"]
    outcomes = [a["outcome"] for a in client.get(f"/v1/jobs/{job_id}/attempts").json()]
    assert outcomes == ["lost", "completed"]
    kept = len(finished_before_kill)
    reused = [w["message"] for w in job["warnings"] if w["code"] == "turns_reused"]
    assert len(reused) == 1, f"the second run says nothing of kept turns: {job['warnings']}"
    assert reused[0].startswith(f"synthesized {total - kept} turns; {kept} were kept"), reused
    assert len(set(cache.glob("*.wav")) - before) == total, "every turn is kept now"


def test_an_episodes_files_are_named_after_its_title_in_any_script() -> None:
    """ "Fähren nach Oslo" was f-hren-nach-oslo; a title in Japanese lost every letter."""
    named = {
        title: episode_stem(
            Script.model_validate({"title": title, "turns": [{"speaker": "Joe", "text": "Hi."}]})
        )
        for title in ("Fähren nach Oslo", "東京の港", "The Ferry: A History (Part 2)", "!!!")
    }
    assert named == {
        "Fähren nach Oslo": "fähren-nach-oslo",
        "東京の港": "東京の港",
        "The Ferry: A History (Part 2)": "the-ferry-a-history-part-2",
        "!!!": "podcast",
    }


def test_voicing_goes_by_seconds_of_the_episode_not_turns_of_a_growing_script() -> None:
    """A fit round adds turns to reach ``minutes``: by turns of the script as it stood,
    the bar reached nine tenths of the step with a third of its time ahead, and stood
    there while the added turns were voiced."""
    from longplay.kinds.podcast import _estimate, _voiced_of

    turns = [Turn(speaker="Ann", text=f"Turn number {n} of the first script.") for n in range(9)]
    voiced = {t.text: _estimate(t) for t in turns[:8]}  # all but the last voiced
    done, whole = _voiced_of(turns, voiced, lambda t: t.text, fitted_to=None)
    assert done / whole == pytest.approx(8 / 9)  # a given script: its own length
    done, aim = _voiced_of(turns, voiced, lambda t: t.text, fitted_to=3 * whole)
    assert aim == 3 * whole and done / aim == pytest.approx(8 / 27)  # room for what is added
