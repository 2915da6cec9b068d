"""``longplay.framework.testing``, what a kind's author tests their steps with: the steps
run in order, state passed through JSON, ``ctx.map`` run in process, and what the
steps report kept for the test."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pydantic
import pytest
from pydantic import BaseModel, Field

from longplay.framework import ItemContext, JobKind, PermanentError, Step, StepContext
from longplay.framework.testing import input_file, run_steps


class Words(BaseModel):
    words: int = Field(3, ge=1)


def count(ctx: StepContext[Words]) -> None:
    ctx.state["said"] = {1: ("one",)}  # a number key and a tuple, as JSON gives them back
    text = ctx.inputs[0].path.read_text() if ctx.inputs else ""
    for word in range(ctx.params.words):
        ctx.advance(word + 1, ctx.params.words, word=word + 1, read=len(text))


def square(_item_ctx: ItemContext[Words], item: int) -> int:
    return item * item


def write(ctx: StepContext[Words]) -> None:
    out = ctx.workdir / "squares.txt"
    squares = ctx.map(square, range(ctx.params.words))
    out.write_text(f"{ctx.state['said']} {squares}")
    ctx.add_output(out, media_type="text/plain")


SQUARES = JobKind(name="squares", params=Words, steps=[Step("count", count), Step("write", write)])


def test_steps_run_as_a_job_runs_them(tmp_path: Path) -> None:
    source = tmp_path / "in.txt"
    source.write_text("four")

    ctx = run_steps(SQUARES, {"words": 3}, [input_file(source, "text/plain")], tmp_path / "work")

    assert ctx.fractions("count") == [1 / 3, 2 / 3, 1.0]
    assert ctx.details("count")[-1] == {"word": 3, "read": 4}
    [out] = ctx.outputs("write")
    assert out.path.read_text() == "{'1': ['one']} [0, 1, 4]", "state and items through JSON"


def test_params_are_validated_and_outputs_checked_as_a_run_would(tmp_path: Path) -> None:
    with pytest.raises(pydantic.ValidationError):
        run_steps(SQUARES, {"words": 0}, [], tmp_path / "work")

    def stray(ctx: StepContext[Words]) -> None:
        ctx.add_output(tmp_path / "elsewhere.txt")

    with pytest.raises(PermanentError) as refused:
        run_steps(JobKind(name="stray", params=Words, steps=[Step("s", stray)]), {}, [], tmp_path)
    assert refused.value.code == "invalid_output"


def test_the_readme_shows_a_test_that_passes(tmp_path: Path) -> None:
    """The README's plugin example, then its example of a test of it, run as written
    (the kind built, not registered, in this process)."""
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    start = readme.index("<!-- plugin-example")
    example, test = re.findall(r"```python\n(.*?)```", readme[start:], re.S)[:2]
    assert "run_steps" in test, "the second block after the marker is the test"
    names: dict[str, object] = {"tmp_path": tmp_path}
    exec(example.replace("register(", "(lambda kind: kind)("), names)
    exec(test, names)


def test_a_weight_is_any_real_number_but_text_or_a_truth_value() -> None:
    assert Step("numpy", count, weight=np.int64(2)).weight == 2  # a computed weight
    for wrong in ("1", True, None):
        with pytest.raises(TypeError, match="weight must be a number"):
            Step("wrong", count, weight=wrong)  # type: ignore[arg-type]
