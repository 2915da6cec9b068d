"""The ``podcast`` kind: a collection in, a grounded episode of two (or one to four)
voices out, with its script, transcript and chapters.

Steps and their share of the progress bar, as clients of such services expect them:
``loading_models`` 0-10 %, ``retrieving_content`` 10-30, ``generating_script`` 30-40,
``parsing_turns`` 40-50, ``generating_audio`` 50-90 (``total_turns``,
``completed_turns``, ``current_speaker``), ``combining_audio`` 90-95,
``storing_audio`` 95-100.

The script is grounded by construction (:mod:`longplay.engines.scripts`): passages
give the content, the model only asks. In another language than English the model also
translates the phrases the writer adds itself, once per job, at the start of
``generating_script`` (the first half of that step's progress); a phrase whose
translation fails the check stays English, and a note says how many did.

Its length is fitted twice: by an estimate of the speaking rate when it is written,
then by the real length of the voiced turns, adding or trimming beats until the episode
is as close to ``minutes`` as they allow. Turns are voiced through a cache
(:mod:`longplay.engines.turns`), so an edited script or a retry synthesizes only what
is new.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from longplay.engines.audio import resample
from longplay.engines.device import gpu_slot
from longplay.engines.llm import get_language_model
from longplay.engines.scripts import (
    WORDS_PER_SECOND,
    Draft,
    ScriptWriter,
    Style,
    Voice,
    estimated_seconds,
    fit,
)
from longplay.engines.tts import get_synthesizer
from longplay.engines.turns import TurnVoicer, turn_cache
from longplay.engines.voices import check_voice, check_voice_language, known_voices
from longplay.framework import (
    FieldError,
    InputFile,
    InvalidInput,
    InvalidParams,
    JobKind,
    Step,
    StepContext,
    SubmittedInput,
    register,
)
from longplay.framework.library import Library, Passage
from longplay.media import OutputFormatName
from longplay.media.episode import (
    TURN_PAUSE_S,
    ChapterMark,
    EpisodeWriter,
    check_episode,
    tag_chapters,
)
from longplay.settings import get_settings
from longplay.text.host_phrases import sources_heading
from longplay.text.languages import LANGUAGES, Language, language_of_text, other_language
from longplay.text.script import (
    Chapter,
    Script,
    Turn,
    to_markdown,
    to_vtt,
    ungrounded_words,
    words,
)

SHORTEST_MINUTES = 1
LENGTH_TOLERANCE = 0.15
"""How far the episode may be from ``minutes``, as a share of it."""
MAX_FIT_ROUNDS = 4
PASSAGE_SHARE = 0.8
"""The share of an episode's words its passages give, at the least (the host's
questions, the intro and the outro are the rest)."""
LANGUAGE_SAMPLE = 20
"""How many of the episode's passages (the best ones first) its language is told from."""
SPARE_CONTENT = 2.0
"""Retrieve this many times the words the episode needs, for the length fit to draw on."""
SEARCH_LIMIT = 200
SPARE_QUESTIONS = 2
"""Sections beyond the estimated fit whose questions the model writes too, for the fit
by voiced length to draw on (others keep the question made from their passage)."""
PHRASES_SHARE = 0.5
"""The share of ``generating_script`` the translation of the writer's own phrases takes
in another language than English: about as much model work as the questions."""
DEFAULT_CAST = (("Joe", "host"), ("Alex", "expert"))


class Speaker(BaseModel):
    """One voice of the episode."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=40, pattern=r"^[^<>:\n]+$")
    role: str = Field(
        default="guest",
        min_length=1,
        max_length=40,
        description="'host' leads and asks; the others answer from the sources.",
    )
    voice: str | None = Field(default=None, description="A voice name; null: one of its own.")


class PodcastParams(BaseModel):
    """Parameters of a ``podcast`` job."""

    model_config = ConfigDict(extra="forbid")

    collection: str | None = Field(
        default=None, description="The collection the episode is made from (its id)."
    )
    topic: str | None = Field(
        default=None, max_length=300, description="What the episode is about, in words."
    )
    instructions: str | None = Field(
        default=None, max_length=1000, description="Focus or angle, in words."
    )
    minutes: float = Field(
        default=5.0, ge=SHORTEST_MINUTES, le=60, description="Length of the episode."
    )
    style: Style = "deep-dive"
    speakers: Annotated[list[Speaker], Field(min_length=1, max_length=4)] | None = Field(
        default=None,
        description=(
            "1 to 4 voices; default a host (Joe) and an expert (Alex) in the two bundled "
            "voices. One speaker makes a single-host brief."
        ),
    )
    language: str = Field(
        default="en",
        min_length=2,
        max_length=40,
        description=(
            "The episode's language, a code (de) or a name (German, Deutsch); the "
            "phrases the script writer adds itself are in it."
        ),
    )
    format: OutputFormatName = "mp3"
    loudness: float = Field(default=-16.0, ge=-35.0, le=-10.0)
    script_only: bool = Field(
        default=False, description="Write the script (JSON and Markdown) and stop: no audio."
    )
    script: Script | None = Field(
        default=None,
        description=(
            "An edited script to voice (the script JSON a job wrote); or give that file "
            "as the job's input."
        ),
    )


def check(params: PodcastParams, inputs: Sequence[SubmittedInput]) -> None:
    """At submit: something to make the episode from, voices the engine has, a language
    it speaks, and a script whose speakers are the episode's."""
    given = params.script is not None or bool(inputs)
    if params.script is not None and inputs:
        raise FieldError("give the script inline or as an input file, not both", field="script")
    if not given and params.collection is None:
        raise FieldError(
            "name a collection to make the episode from, or give a script", field="collection"
        )
    if given and params.script_only:
        raise FieldError("script_only writes a script; this job was given one", field="script_only")
    for index, speaker in enumerate(params.speakers or []):
        check_voice(speaker.voice, field=f"speakers.{index}.voice")
    names = [s.name for s in params.speakers or []]
    if len(set(names)) != len(names):
        raise FieldError("two speakers have the same name", field="speakers")
    try:
        language = Language.find(params.language)
    except ValueError as exc:
        raise FieldError(str(exc), field="language") from exc
    if not params.script_only:
        check_voice_language(language, "language", besides=", or ask for script_only")
    if params.script is not None:
        _voices_of(params, params.script)


# -- steps -------------------------------------------------------------------------------


def load_models(ctx: StepContext[PodcastParams]) -> None:
    """Load the engines the job will use, so that later steps' progress is their work."""
    if not _given(ctx):
        get_language_model(on_fallback=lambda f: ctx.note(f.describe()))
    ctx.advance(0.5, 1.0)
    if not ctx.params.script_only:
        get_synthesizer(on_fallback=lambda f: ctx.note(f.describe()))
    ctx.advance(1.0, 1.0)


def retrieve_content(ctx: StepContext[PodcastParams]) -> None:
    """The passages for the episode, best first: the topic's search results, then the
    rest of the collection in order, until there is more than enough to say."""
    params = ctx.params
    if _given(ctx):
        ctx.nothing_to_do(script="given")
        return
    assert params.collection is not None  # the submit check saw to it
    needed = params.minutes * 60 * WORDS_PER_SECOND
    passages = _retrieve(ctx.library, params.collection, _query(params), needed)
    have = sum(len(words(p.text)) for p in passages)
    least = (1 - LENGTH_TOLERANCE) * PASSAGE_SHARE
    if have < needed * least:
        fits = have / (60 * WORDS_PER_SECOND * least)  # the most minutes that would pass
        if fits >= SHORTEST_MINUTES:
            advice = f"enough for {math.floor(fits)} min; ask for that or less, or add documents"
        else:
            advice = (
                f"too little for the shortest episode ({SHORTEST_MINUTES} min): "
                "add documents to the collection"
            )
        raise InvalidParams(
            f"the collection has about {have} words to draw on, {advice}",
            code="not_enough_content",
        )
    ctx.state["passages"] = [_passage_json(p) for p in passages]
    _note_other_language(ctx, passages)
    ctx.advance(1.0, 1.0, passages=len(passages), words=have)


def _note_other_language(ctx: StepContext[PodcastParams], passages: Sequence[Passage]) -> None:
    """A note where passages are plainly in another language than the episode's: the
    hosts' phrases are in the episode's, what they quote in the documents', so one
    episode would speak two (French documents and the default ``en``: English questions,
    French answers, all read by English voices, and nothing said of it). Each passage is
    told apart: a collection of English, German and French documents, told as one text,
    was said to be German whatever the episode's language, or said nothing."""
    wanted = Language.find(ctx.params.language)
    sample = passages[:LANGUAGE_SAMPLE]
    others = Counter(o for p in sample if (o := other_language(p.text, wanted.code)) is not None)
    if not others:
        return
    if len(others) == 1 and not any(language_of_text(p.text) == wanted.code for p in sample):
        [only] = others
        said = f"the documents are in {_language_named(only)}"
        advice = (
            f"set language={only} (and a voice that speaks it)"
            if only in LANGUAGES
            else "set language to theirs"  # only its letters tell (Cyrillic, say)
        )
    else:
        parts = ", ".join(f"{n} in {_language_named(c)}" for c, n in others.most_common())
        said = f"of the {len(sample)} passages the episode draws on, {parts}"
        advice = "a collection (or a topic) of one language makes an episode of one"
    ctx.note(
        f"{said}, the episode in {wanted.name}: its hosts would speak {wanted.name} around "
        f"the documents' own sentences; {advice} for one language throughout",
        code="languages_mixed",
        languages=dict(others),
    )


def _language_named(code: str) -> str:
    """``de`` → German; a script's name (only its letters tell) → Cyrillic letters."""
    try:
        return Language.find(code).name
    except ValueError:
        return f"{code} letters"


def generate_script(ctx: StepContext[PodcastParams]) -> None:
    """A section for every passage; the model writes the questions of those the
    episode is likely to use, after translating the writer's own phrases where the
    episode is not in English."""
    if _given(ctx):
        ctx.nothing_to_do()
        return
    params = ctx.params
    passages = [Passage(**p) for p in ctx.state["passages"]]
    settings = get_settings()
    writer = ScriptWriter(
        get_language_model(),
        voices=[Voice(s.name, s.role) for s in _speakers(params)],
        style=params.style,
        topic=params.topic,
        instructions=params.instructions,
        language=params.language,
        chat=settings.llm.engine == "http",
    )
    translated = writer.translate(
        passages,
        context_tokens=settings.llm.context_tokens,
        progress=lambda done, total, **_: ctx.advance(PHRASES_SHARE * done / total, 1.0),
    )
    phrases: dict[str, int] = {}
    if translated is not None:
        phrases = {
            "phrases_translated": translated.phrases - translated.english,
            "phrases_in_english": translated.english,
        }
        if translated.english:
            ctx.note(
                f"{translated.english} of the {translated.phrases} phrases the script writer "
                "adds itself (intro, outro, lead-ins, questions made from headings) stay in "
                f"English: their translation into {params.language} failed the check",
                code="phrases_in_english",
                **phrases,
            )
    draft = writer.outline(passages)
    plan = fit(draft, params.minutes * 60, _estimate)
    spare = [
        i
        for i in sorted(range(len(draft.sections)), key=lambda i: draft.sections[i].rank)
        if i not in plan
    ][:SPARE_QUESTIONS]

    def asked(done: int, total: int) -> None:
        if translated is None:
            ctx.advance(done, total)
        else:  # the second half of the step, after the translation
            ctx.advance(PHRASES_SHARE + (1 - PHRASES_SHARE) * done / total, 1.0)

    writer.ask(draft, [*sorted(plan), *spare], progress=asked)
    ctx.state["draft"] = draft.model_dump(mode="json")
    ctx.advance(
        1.0,
        1.0,
        questions_written=draft.questions_written,
        questions_replaced=draft.questions_replaced,
        **phrases,
    )


def parse_turns(ctx: StepContext[PodcastParams]) -> None:
    """Check every turn against its sources (a beat with a turn that fails is dropped),
    or read the script given; with ``script_only``, keep the script and stop."""
    params = ctx.params
    if _given(ctx):
        script = _given_script(ctx)
        _voices_of(params, script)
        ctx.state["script"] = script.model_dump(mode="json")
        ctx.advance(1.0, 1.0, turns=len(script.turns))
        return
    draft = Draft.model_validate(ctx.state["draft"])
    dropped = _drop_ungrounded(draft, params)
    ctx.state["draft"] = draft.model_dump(mode="json")
    plan = fit(draft, params.minutes * 60, _estimate)
    script = draft.script(plan)
    ctx.state["script"] = script.model_dump(mode="json")
    ctx.state["grounding"] = {"turns_dropped": dropped}
    ctx.advance(1.0, 1.0, turns=len(script.turns), turns_dropped=dropped)
    if params.script_only:
        stem = episode_stem(script)
        _write_script_files(ctx, script, stem, vtt=False)


def generate_audio(ctx: StepContext[PodcastParams]) -> None:
    """Voice every turn (kept ones are not synthesized again); a written script is then
    fitted to ``minutes`` by the voiced lengths, voicing what that adds."""
    if ctx.params.script_only:
        ctx.nothing_to_do()
        return
    params = ctx.params
    script = Script.model_validate(ctx.state["script"])
    voices = _voices_of(params, script)
    voicer = _voicer()
    voiced: dict[str, float] = {}
    """Seconds each voiced turn takes in the episode, pause included, by its key."""
    counts = {"synthesized": 0, "kept": 0}

    def key(turn: Turn) -> str:
        return voicer.key(turn.text, voices[turn.speaker], 1.0)

    def voice_all(turns: Sequence[Turn]) -> None:
        for turn in turns:
            if key(turn) in voiced:
                continue
            done = sum(key(t) in voiced for t in turns)
            seconds, aim = _voiced_of(turns, voiced, key, fitted_to=fitted_to)
            ctx.advance(
                seconds,
                aim,
                total_turns=len(turns),
                completed_turns=done,
                current_speaker=turn.speaker,
            )
            made = voicer.voice(turn.text, voice=voices[turn.speaker])
            counts["synthesized" if made.synthesized else "kept"] += 1
            voiced[key(turn)] = made.duration + TURN_PAUSE_S

    # The turns a fit round adds are foreseen by the bar: it goes by seconds voiced of
    # the episode's length, not by turns of a script that is still growing.
    fitted_to = None if _given(ctx) else params.minutes * 60.0
    planned = {key(t) for t in script.turns}
    with gpu_slot(voicer.synthesizer.device, timeout_s=get_settings().engines.gpu_wait_timeout):
        try:
            voice_all(script.turns)
            if not _given(ctx):
                draft = Draft.model_validate(ctx.state["draft"])
                for _ in range(MAX_FIT_ROUNDS):
                    plan = fit(
                        draft, params.minutes * 60, lambda t: voiced.get(key(t), _estimate(t))
                    )
                    script = draft.script(plan)
                    if all(key(t) in voiced for t in script.turns):
                        break
                    voice_all(script.turns)
        finally:
            voicer.synthesizer.rest()
    final = {key(t) for t in script.turns}
    fitted = {
        "target_seconds": params.minutes * 60,
        "seconds": round(sum(voiced[key(t)] for t in script.turns), 1),
        "turns_added": len(final - planned),
        "turns_trimmed": len(planned - final),
    }
    ctx.state["script"] = script.model_dump(mode="json")
    ctx.state["voicing"] = {**counts, **fitted}
    if counts["kept"]:
        ctx.note(
            f"synthesized {counts['synthesized']} turns; {counts['kept']} were kept from an "
            "earlier voicing of the same text in the same voice",
            code="turns_reused",
            **counts,
        )
    ctx.advance(
        len(script.turns),
        len(script.turns),
        total_turns=len(script.turns),
        completed_turns=len(script.turns),
        **fitted,
    )


def combine_audio(ctx: StepContext[PodcastParams]) -> None:
    """Join the voiced turns with pauses, master the episode, check it, tag chapters."""
    if ctx.params.script_only:
        ctx.nothing_to_do()
        return
    params = ctx.params
    script = Script.model_validate(ctx.state["script"])
    voices = _voices_of(params, script)
    voicer = _voicer()
    stem = episode_stem(script)
    first = voicer.voice(script.turns[0].text, voice=voices[script.turns[0].speaker])
    rate = first.sample_rate
    with EpisodeWriter(ctx.workdir, stem, rate) as writer:
        for index, turn in enumerate(script.turns):
            made = first if index == 0 else voicer.voice(turn.text, voice=voices[turn.speaker])
            samples = made.samples
            if made.sample_rate != rate:
                samples = resample(samples, round(len(samples) * rate / made.sample_rate))
            placed = writer.add(turn.speaker, samples)
            turn.start, turn.end = placed.start, placed.end
            ctx.advance(0.5 * (index + 1) / len(script.turns), 1.0, turns=index + 1)
        episode = writer.finish(
            params.format,
            params.loudness,
            progress=lambda done, total, **d: ctx.advance(0.5 + 0.5 * done / total, 1.0, **d),
        )
    checks = check_episode(episode, speakers_asked=len(voices))
    _time_chapters(script, episode.duration)
    if params.format == "mp3":
        marks = [ChapterMark(c.title, c.start or 0.0, c.end or 0.0) for c in script.chapters]
        tag_chapters(episode.path, script.title, marks)
    ctx.state["script"] = script.model_dump(mode="json")
    ctx.state["episode"] = {
        "name": episode.path.name,
        "duration": episode.duration,
        "loudness": episode.loudness,
        "checks": checks,
    }
    ctx.add_output(episode.path, media_type=episode.media_type)


def store_audio(ctx: StepContext[PodcastParams]) -> None:
    """Keep the script (JSON, Markdown) and the transcript (WebVTT) beside the episode."""
    if ctx.params.script_only:
        ctx.nothing_to_do()
        return
    script = Script.model_validate(ctx.state["script"])
    _write_script_files(ctx, script, episode_stem(script), vtt=True)
    ctx.advance(1.0, 1.0)


# -- helpers -----------------------------------------------------------------------------


def _given(ctx: StepContext[PodcastParams]) -> bool:
    return ctx.params.script is not None or bool(ctx.inputs)


def _given_script(ctx: StepContext[PodcastParams]) -> Script:
    if ctx.params.script is not None:
        return ctx.params.script
    source: InputFile = ctx.inputs[0]
    try:
        return Script.model_validate_json(source.path.read_bytes())
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'the file'}: {e['msg']}"
            for e in exc.errors()[:3]
        )
        raise InvalidInput(f"{source.name} is not a podcast script: {problems}") from exc


def _speakers(params: PodcastParams) -> list[Speaker]:
    """The speakers, host first: the one whose role is host, else the first. A speaker
    given without a voice gets the first known voice no other speaker has, while one
    is left (an HTTP engine names none: its server's default speaks)."""
    voices = known_voices() or ()
    if params.speakers:
        speakers = list(params.speakers)
        host = next((s for s in speakers if s.role.lower() == "host"), speakers[0])
        ordered = [host, *(s for s in speakers if s is not host)]
        free = iter([v for v in voices if v not in {s.voice for s in speakers}])
        return [s if s.voice else s.model_copy(update={"voice": next(free, None)}) for s in ordered]
    return [
        Speaker(name=name, role=role, voice=voices[i] if i < len(voices) else None)
        for i, (name, role) in enumerate(DEFAULT_CAST)
    ]


def _voices_of(params: PodcastParams, script: Script) -> dict[str, str | None]:
    """The voice of each speaker of ``script``, who must be the episode's speakers."""
    voices = {s.name: s.voice for s in _speakers(params)}
    strangers = [name for name in script.speakers if name not in voices]
    if strangers:
        raise FieldError(
            f"the script's speaker {strangers[0]!r} is not one of the episode's speakers "
            f"({', '.join(voices)}); name them in speakers",
            field="script",
        )
    return {name: voices[name] for name in script.speakers}


def _voicer() -> TurnVoicer:
    settings = get_settings()
    return TurnVoicer(get_synthesizer(), turn_cache(settings.data_dir), engine=settings.tts.engine)


def _query(params: PodcastParams) -> str:
    return " ".join(part for part in (params.topic, params.instructions) if part)


def _retrieve(library: Library, collection: str, query: str, needed: float) -> list[Passage]:
    found = library.search(collection, query, limit=SEARCH_LIMIT) if query.strip() else []
    chosen = {p.id: p for p in found}
    have = sum(len(words(p.text)) for p in found)
    for passage in library.passages(collection):
        if have >= needed * SPARE_CONTENT:
            break
        if passage.id not in chosen:
            chosen[passage.id] = passage
            have += len(words(passage.text))
    return list(chosen.values())


def _passage_json(passage: Passage) -> dict[str, Any]:
    return {
        "id": passage.id,
        "collection_id": passage.collection_id,
        "document_id": passage.document_id,
        "document_name": passage.document_name,
        "position": passage.position,
        "text": passage.text,
        "heading": passage.heading,
        "start": passage.start,
        "end": passage.end,
        "score": passage.score,
    }


def _estimate(turn: Turn) -> float:
    return estimated_seconds(turn) + TURN_PAUSE_S


def _voiced_of(
    turns: Sequence[Turn],
    voiced: Mapping[str, float],
    key: Callable[[Turn], str],
    *,
    fitted_to: float | None,
) -> tuple[float, float]:
    """Seconds of ``turns`` voiced so far, and of the episode in all: the script's, its
    unvoiced turns estimated, or the length it is fitted to where that is more (the
    turns a fit round adds to reach it are not written yet). Voicing by turns, the bar
    reached nine tenths of the step with a third of its time ahead, and stood there."""
    done = sum(voiced.get(key(t), 0.0) for t in turns)
    whole = sum(voiced.get(key(t), _estimate(t)) for t in turns)
    return done, max(whole, fitted_to or 0.0)


def _drop_ungrounded(draft: Draft, params: PodcastParams) -> int:
    """Drop each beat with a turn whose content words are in none of its sources (nor
    in the writer's own phrases, as translated)."""
    names = [s.name for s in _speakers(params)]
    documents = [s.passage.document_name for s in draft.sections]
    headings = [s.passage.heading or "" for s in draft.sections]
    allowed = [params.topic or "", params.instructions or "", *names, *documents, *headings]
    allowed += draft.phrases.values()
    dropped = 0
    for section in draft.sections:
        kept = [
            beat
            for beat in section.beats
            if not any(ungrounded_words(t.text, [section.passage.text], allowed) for t in beat)
        ]
        dropped += sum(len(b) for b in section.beats) - sum(len(b) for b in kept)
        section.beats = kept
    return dropped


def _time_chapters(script: Script, duration: float) -> None:
    """Each chapter from its first turn's start to the next chapter's (a script written
    by hand may have none)."""
    following: list[Chapter | None] = [*script.chapters[1:], None] if script.chapters else []
    for chapter, after in zip(script.chapters, following, strict=True):
        chapter.start = script.turns[chapter.first_turn].start
        chapter.end = script.turns[after.first_turn].start if after else duration


def episode_stem(script: Script) -> str:
    """The episode's files' name: its title's words, lower case, joined by dashes, in
    any script ("Fähren nach Oslo" is ``fähren-nach-oslo``)."""
    slug = re.sub(r"[\W_]+", "-", script.title.lower()).strip("-")[:40].strip("-")
    return slug or "podcast"


def _write_script_files(
    ctx: StepContext[PodcastParams], script: Script, stem: str, *, vtt: bool
) -> None:
    files = [
        (
            f"{stem}.script.json",
            json.dumps(script.model_dump(mode="json"), indent=2),
            "application/json",
        ),
        (
            f"{stem}.md",
            to_markdown(script, sources=sources_heading(Language.find(ctx.params.language))),
            "text/markdown",
        ),
    ]
    if vtt:
        files.append((f"{stem}.vtt", to_vtt(script.turns), "text/vtt"))
    for name, text, media_type in files:
        path = ctx.workdir / name
        path.write_text(text, encoding="utf-8")
        ctx.add_output(path, media_type=media_type)


register(
    JobKind(
        name="podcast",
        description=(
            "A grounded episode from a collection: a host and an expert (1 to 4 voices) talk "
            "through what its documents say, every turn citing its passages; the script "
            "(JSON, Markdown), a WebVTT transcript and chapters come with the audio. Give "
            "script_only to edit the script first, then voice it with script."
        ),
        params=PodcastParams,
        steps=[
            Step("loading_models", load_models, weight=10),
            Step("retrieving_content", retrieve_content, weight=20),
            Step("generating_script", generate_script, weight=10),
            Step("parsing_turns", parse_turns, weight=10),
            Step("generating_audio", generate_audio, weight=40),
            Step("combining_audio", combine_audio, weight=5),
            Step("storing_audio", store_audio, weight=5),
        ],
        min_inputs=0,
        max_inputs=1,
        input_types=("application/json", "text/"),
        check=check,
    )
)
