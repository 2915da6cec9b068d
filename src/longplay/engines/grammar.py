"""Text from a llama.cpp model held to a grammar, checking only the token it picks.

llama-cpp-python's own sampler chain runs the grammar over the whole vocabulary before
every token. With Gemma 3's 262,144 tokens that costs more than the model itself (about
three times slower on two CPU cores). llama.cpp's own tools do it the other way round,
and so does :func:`generate_held`: pick the token first, ask the grammar about that one
token, and only when the grammar refuses it filter the whole vocabulary and pick again.
The text is the same; the whole-vocabulary pass runs only where the model strays.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable
from typing import Any

import numpy as np

GRAMMAR_ROOT = b"root"
TOP_K = 40
"""Tokens sampled among when the temperature is above zero."""
FEW = 64
"""Tokens the grammar checks before it checks them all, when it refused the pick."""


def generate_held(
    llama: Any,
    prompt: str,
    grammar: str,
    *,
    max_tokens: int,
    temperature: float = 0.0,
    seed: int = 0,
    on_tokens: Callable[[int, int], None] | None = None,
) -> str:
    """What ``llama`` (a ``llama_cpp.Llama``) writes after ``prompt``, every token one the
    GBNF ``grammar`` allows, until the grammar is complete or ``max_tokens`` are written.
    Greedy at ``temperature`` 0; otherwise sampled among the top tokens with ``seed``.
    ``on_tokens`` is told the prompt's tokens read and the answer's written so far,
    after each batch of the prompt (llama.cpp's own, so the logits are the same) and
    each token of the answer."""
    import llama_cpp

    vocab = llama._model.vocab
    n_vocab = llama.n_vocab()
    sampler = llama_cpp.llama_sampler_init_grammar(vocab, grammar.encode(), GRAMMAR_ROOT)
    if not sampler:
        raise ValueError("llama.cpp could not parse the grammar")
    rng = np.random.default_rng(seed)
    one = (llama_cpp.llama_token_data * 1)()
    one_array = llama_cpp.llama_token_data_array(data=one, size=1, selected=-1, sorted=False)
    every = (llama_cpp.llama_token_data * n_vocab)()
    every_array = llama_cpp.llama_token_data_array(
        data=every, size=n_vocab, selected=-1, sorted=False
    )
    ids = np.arange(n_vocab, dtype=np.int32)
    written: list[int] = []
    try:
        llama.reset()
        prompt_tokens = llama.tokenize(prompt.encode(), add_bos=True, special=False)
        for start in range(0, len(prompt_tokens), llama.n_batch):
            llama.eval(prompt_tokens[start : start + llama.n_batch])
            if on_tokens is not None:
                on_tokens(min(start + llama.n_batch, len(prompt_tokens)), 0)
        for _ in range(max_tokens):
            logits = np.ctypeslib.as_array(llama._ctx.get_logits_ith(-1), shape=(n_vocab,))
            token = _pick(logits, temperature, rng)
            one[0] = llama_cpp.llama_token_data(token, float(logits[token]), 0.0)
            one_array.size, one_array.selected = 1, -1
            llama_cpp.llama_sampler_apply(sampler, ctypes.byref(one_array))
            if not np.isfinite(one[0].logit):  # refused: the best few, else every token
                few = np.argpartition(logits, -FEW)[-FEW:]
                choice = _allowed(sampler, logits, few, rng, temperature, every, every_array)
                if choice is None:
                    choice = _allowed(sampler, logits, ids, rng, temperature, every, every_array)
                if choice is None:  # the grammar allows nothing more
                    break
                token = choice
            if llama_cpp.llama_vocab_is_eog(vocab, token):
                break
            llama_cpp.llama_sampler_accept(sampler, token)
            written.append(token)
            if on_tokens is not None:
                on_tokens(len(prompt_tokens), len(written))
            llama.eval([token])
    finally:
        llama_cpp.llama_sampler_free(sampler)
    return bytes(llama.detokenize(written)).decode("utf-8", errors="replace")


def _allowed(
    sampler: Any,
    logits: np.ndarray,
    candidates: np.ndarray,
    rng: np.random.Generator,
    temperature: float,
    buffer: Any,
    array: Any,
) -> int | None:
    """The pick among ``candidates`` the grammar allows; None when it allows none."""
    import llama_cpp

    view = np.ctypeslib.as_array(buffer)[: len(candidates)]
    view["id"], view["logit"], view["p"] = candidates, logits[candidates], 0.0
    array.size, array.selected, array.sorted = len(candidates), -1, False
    llama_cpp.llama_sampler_apply(sampler, ctypes.byref(array))
    allowed = np.ctypeslib.as_array(buffer)[: array.size]
    finite = allowed[np.isfinite(allowed["logit"])]
    if len(finite) == 0:
        return None
    scores = np.full(len(logits), -np.inf, dtype=np.float32)
    scores[finite["id"]] = finite["logit"]
    return _pick(scores, temperature, rng)


def _pick(logits: np.ndarray, temperature: float, rng: np.random.Generator) -> int:
    if temperature <= 0:
        return int(np.argmax(logits))
    top = np.argpartition(logits, -TOP_K)[-TOP_K:]
    top = top[np.isfinite(logits[top])]
    if len(top) == 0:
        return int(np.argmax(logits))
    scaled = logits[top] / temperature
    weights = np.exp(scaled - scaled.max())
    return int(rng.choice(top, p=weights / weights.sum()))
