"""Caption tokenizer that produces exactly the ids the Task Library RegexTokenizer feeds the model.

The exported ``text_embedder.tflite`` carries RegexTokenizer metadata (delimiter regex + vocab),
and the phone tokenizes queries itself; the text encoder must be trained on the same ids or the
device sees a different model. Behaviour measured against tflite-support 0.4.4's TextEmbedder
with an id-echo model (see tests/test_encoders.py):
  * text is split on the delimiter regex ``[^\\w']+`` where ``\\w`` is ASCII only (RE2): accented
    letters are delimiters, ``_`` and ``'`` stay inside tokens;
  * lookup is case-sensitive (no lower-casing), so the vocab lists each word in lower, Capitalised
    and UPPER case, all with one id — queries in any of those cases reach the same row;
  * ``<START>`` (id 1) comes first, unknown tokens become ``<UNKNOWN>`` (2), ``<PAD>`` (0) fills up
    to the input length; longer texts are cut.
"""

from __future__ import annotations

import collections
import re
from dataclasses import dataclass
from typing import Iterable

import numpy as np

from beamlens.models.io.files import write_text_atomically
from beamlens.models.errors import BeamlensError

PAD, START, UNKNOWN, UNUSED = "<PAD>", "<START>", "<UNKNOWN>", "<UNUSED>"
SPECIAL_TOKENS = (PAD, START, UNKNOWN, UNUSED)
PAD_ID, START_ID, UNKNOWN_ID = 0, 1, 2
DEFAULT_MAX_TOKENS = 24
_DELIM = re.compile(r"[^A-Za-z0-9_']+")  # RE2's ASCII \w plus apostrophe, as the Task Library splits


def split_words(text: str) -> list[str]:
    return [piece for piece in _DELIM.split(text) if piece]


def _case_variants(word: str) -> list[str]:
    return list(dict.fromkeys([word, word.capitalize(), word.upper()]))


@dataclass
class Vocabulary:
    """Lower-case words in id order (ids start after the special tokens)."""

    words: list[str]

    def __post_init__(self) -> None:
        self._ids: dict[str, int] = {}
        for index, word in enumerate(self.words):
            for variant in _case_variants(word):
                self._ids.setdefault(variant, index + len(SPECIAL_TOKENS))

    @property
    def size(self) -> int:
        return len(self.words) + len(SPECIAL_TOKENS)

    def encode(self, text: str, max_tokens: int = DEFAULT_MAX_TOKENS) -> np.ndarray:
        ids = [START_ID] + [self._ids.get(w, UNKNOWN_ID) for w in split_words(text)]
        ids = ids[:max_tokens] + [PAD_ID] * max(0, max_tokens - len(ids))
        return np.asarray(ids, dtype=np.int32)

    def encode_batch(self, texts: Iterable[str], max_tokens: int = DEFAULT_MAX_TOKENS) -> np.ndarray:
        rows = [self.encode(t, max_tokens) for t in texts]
        return np.stack(rows) if rows else np.zeros((0, max_tokens), np.int32)

    def save(self, path: str) -> None:
        """Task Library vocab format: ``token id`` per line; case variants share the id."""
        lines = [f"{token} {i}" for i, token in enumerate(SPECIAL_TOKENS)]
        for index, word in enumerate(self.words):
            lines += [f"{variant} {index + len(SPECIAL_TOKENS)}" for variant in _case_variants(word)]
        write_text_atomically(path, "\n".join(lines) + "\n")

    @classmethod
    def load(cls, path: str) -> "Vocabulary":
        words: dict[int, str] = {}
        with open(path, encoding="utf-8") as stream:
            for line in stream:
                token, _, number = line.rstrip("\n").rpartition(" ")
                index = int(number)
                if index >= len(SPECIAL_TOKENS) and index not in words:
                    words[index] = token
        return cls([words[i] for i in sorted(words)])


def build_vocabulary(captions: Iterable[str], min_count: int = 1, max_size: int = 20000) -> Vocabulary:
    """Most frequent lower-cased caption words (ties broken alphabetically, so builds repeat)."""
    counts = collections.Counter(w.lower() for c in captions for w in split_words(c))
    if not counts:
        raise BeamlensError("no words in the training captions: cannot build a vocabulary")
    ranked = sorted((w for w, n in counts.items() if n >= min_count), key=lambda w: (-counts[w], w))
    return Vocabulary(ranked[: max(0, max_size - len(SPECIAL_TOKENS))])
