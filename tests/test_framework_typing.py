"""A kind author's code type-checks: mypy --strict over the README's plugin example
and over ``tests/plugin_kinds.py``, the kinds the other tests run."""

from __future__ import annotations

import re
from pathlib import Path

from conftest import assert_mypy_strict

ROOT = Path(__file__).resolve().parent.parent
MARKER = "<!-- plugin-example"
CODE_BLOCK = re.compile(r"```python\n(.*?)```", re.S)


def readme_example() -> str:
    """The first Python code block after the plugin-example marker in the README."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    start = readme.index(MARKER)
    block = CODE_BLOCK.search(readme, start)
    assert block is not None, "no ```python block after the plugin-example marker"
    return block.group(1)


def test_readme_example_is_the_block_after_the_marker() -> None:
    code = readme_example()
    assert "from longplay.framework import" in code
    assert "ctx.params.words" in code
    assert "register(" in code


def test_plugin_examples_pass_mypy_strict(tmp_path: Path) -> None:
    example = tmp_path / "readme_plugin_example.py"
    example.write_text(readme_example(), encoding="utf-8")
    assert_mypy_strict(example, ROOT / "tests" / "plugin_kinds.py", cwd=tmp_path)
