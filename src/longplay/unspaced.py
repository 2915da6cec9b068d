"""The scripts written without spaces between words: Chinese characters and Japanese kana.

Each such character is about a word, and a token, of its own: the text layer counts and
cuts text by them, and the store indexes each as a word for full-text search. The one
list of their ranges sits at the bottom of the layers so that both read it.
"""

from __future__ import annotations

import re

DENSE_SCRIPT = re.compile(
    r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0003ffff]"
)
"""A Chinese character (the unified ideographs, their extensions and compatibility
forms) or a Japanese kana."""
