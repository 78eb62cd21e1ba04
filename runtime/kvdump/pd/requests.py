"""Prompts to requests: the token ids both roles derive from the same prompt arguments."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from kvdump.errors import KvdumpValueError


class RequestError(KvdumpValueError):
    """The prompts asked for cannot run on the configured model (empty, or too long)."""


@dataclass(frozen=True)
class Request:
    """One prompt, named for reports; its token ids decide its block hashes."""

    name: str
    tokens: tuple[int, ...]


def text_to_tokens(text: str, vocab_size: int) -> list[int]:
    """A stand-in tokenizer for the reference model: each UTF-8 byte ``b`` becomes ``b % vocab_size``.
    Deterministic and process-independent, which is all PD needs from it."""
    return [b % vocab_size for b in text.encode("utf-8")]


def random_prompts(count: int, length: int, seed: int, vocab_size: int) -> list[list[int]]:
    """``count`` prompts of ``length`` uniform token ids from ``random.Random(seed)``."""
    rng = random.Random(seed)
    return [[rng.randrange(vocab_size) for _ in range(length)] for _ in range(count)]


def make_requests(
    texts: Sequence[str],
    random_count: int,
    random_length: int,
    seed: int,
    vocab_size: int,
) -> list[Request]:
    """The requests both roles run: the ``texts`` first, then the random prompts, named
    ``req-0``, ``req-1``, ... in that order. Raises :class:`RequestError` for an empty prompt."""
    prompts = [text_to_tokens(t, vocab_size) for t in texts]
    if random_count:
        if random_length < 1:
            raise RequestError(f"--prompt-len must be >= 1 for random prompts, got {random_length}")
        prompts += random_prompts(random_count, random_length, seed, vocab_size)
    for index, prompt in enumerate(prompts):
        if not prompt:
            raise RequestError(f"prompt {index} is empty; every prompt needs at least one token")
    return [Request(f"req-{i}", tuple(p)) for i, p in enumerate(prompts)]
