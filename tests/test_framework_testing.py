"""``longplay.framework.testing``, what a kind's author tests their steps with: the steps
run in order, state passed through JSON, ``ctx.map`` run in process, and what the
steps report kept for the test."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import plugin_kinds  # noqa: F401  (registers `mistakes`, which the service tests run)
import pydantic
import pytest
from pydantic import BaseModel, Field

from longplay.framework import (
    InvalidParams,
    ItemContext,
    JobKind,
    PermanentError,
    Step,
    StepContext,
    get_kind,
)
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


class NanDefault(BaseModel):
    words: int = 3
    ratio: float = float("nan")


class InfiniteDefault(BaseModel):
    limit: float = Field(float("inf"), ge=0)


class BytesDefault(BaseModel):
    blob: bytes = b"\xff\xfe"


@pytest.mark.parametrize(
    ("model", "field"),
    [
        (NanDefault, "NanDefault.ratio"),
        (InfiniteDefault, "InfiniteDefault.limit"),
        (BytesDefault, "BytesDefault.blob"),
    ],
)
def test_a_default_json_cannot_carry_is_refused_when_the_kind_is_made(
    model: type[BaseModel], field: str
) -> None:
    """A default that is no JSON value registered, then failed the OpenAPI document (NaN)
    or every submission of the kind (bytes that are no UTF-8)."""
    with pytest.raises(TypeError) as refused:
        JobKind(name="defaults", params=model, steps=[Step("count", count)])
    message = str(refused.value)
    assert message.startswith(f"job kind 'defaults': the default of {field} ("), message
    assert "cannot be written as JSON" in message


def test_a_map_of_a_lambda_is_refused_here_as_on_the_service(tmp_path: Path) -> None:
    def lambda_map(ctx: StepContext[Words]) -> None:
        ctx.map(lambda _, item: item, [1])

    with pytest.raises(PermanentError) as refused:
        run_steps(
            JobKind(name="lambdas", params=Words, steps=[Step("m", lambda_map)]), {}, [], tmp_path
        )
    assert refused.value.code == "invalid_map"
    assert "ctx.map needs a module-level function" in refused.value.message


def unlucky(_item_ctx: ItemContext[Words], item: int) -> int:
    if item == 2:
        raise PermanentError("two is unlucky", code="unlucky")
    return item


def test_an_item_that_fails_names_its_index(tmp_path: Path) -> None:
    def mapped(ctx: StepContext[Words]) -> None:
        ctx.map(unlucky, range(ctx.params.words))

    kind = JobKind(name="unlucky", params=Words, steps=[Step("m", mapped)])
    with pytest.raises(PermanentError) as failed:
        run_steps(kind, {}, [], tmp_path)
    assert (failed.value.code, failed.value.message) == (
        "unlucky",
        "ctx.map: item 2 failed: two is unlucky",
    )


def test_an_output_in_a_folder_under_the_workdir_is_kept(tmp_path: Path) -> None:
    def nested(ctx: StepContext[Words]) -> None:
        out = ctx.workdir / "sub" / "a.txt"
        out.parent.mkdir()
        out.write_text("nested")
        ctx.add_output(out)

    ctx = run_steps(
        JobKind(name="nested", params=Words, steps=[Step("s", nested)]), {}, [], tmp_path
    )
    assert [(o.name, o.path.read_text()) for o in ctx.outputs("s")] == [("a.txt", "nested")]


@pytest.mark.parametrize(
    ("mistake", "code", "message"),
    [
        ("state", "invalid_state", "ctx.state['when'] is a datetime, which a checkpoint"),
        (
            "outputs",
            "invalid_step",
            "ctx.outputs: mistakes has no step 'mistak'; its steps: mistake, after",
        ),
        ("twice", "invalid_output", "was already added in this step"),
    ],
)
def test_a_mistake_is_refused_here_as_the_service_refuses_it(
    tmp_path: Path, mistake: str, code: str, message: str
) -> None:
    """The ``mistakes`` kind that test_kind_mistakes runs on the service, run here:
    the same code, and the message the service gives."""
    kind = get_kind("mistakes")
    assert kind is not None
    with pytest.raises(PermanentError) as refused:
        run_steps(kind, {"mistake": mistake}, [], tmp_path)
    assert refused.value.code == code
    assert message in refused.value.message


def test_a_step_that_returns_a_value_is_told_here_as_on_the_service(tmp_path: Path) -> None:
    kind = get_kind("mistakes")
    assert kind is not None
    ctx = run_steps(kind, {"mistake": "returns"}, [], tmp_path)
    [warning] = ctx.warnings
    assert warning["code"] == "step_returned_value"
    assert "'mistake' returned a PosixPath" in warning["message"]
    assert "ctx.add_output" in warning["message"]
    assert ctx.notes == [warning["message"]]


def test_a_name_the_params_do_not_take_is_refused_as_a_submission_is(tmp_path: Path) -> None:
    with pytest.raises(InvalidParams) as refused:
        run_steps(SQUARES, {"wrods": 3}, [], tmp_path / "work")
    assert (refused.value.code, refused.value.message) == (
        "invalid_params",
        "squares has no parameter 'wrods'; its parameters: words",
    )


def test_params_of_the_wrong_json_type_are_refused_as_a_submission_is(tmp_path: Path) -> None:
    """The API refuses ``"3"`` for a number (a 422): a kind's test that sent it passed,
    and the kind's first real submission did not."""
    with pytest.raises(pydantic.ValidationError) as refused:
        run_steps(SQUARES, {"words": "3"}, [], tmp_path / "work")
    [problem] = refused.value.errors()
    assert (problem["loc"], problem["type"]) == (("words",), "int_type")
