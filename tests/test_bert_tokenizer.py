"""beamlens.models.encoders.bert_tokenizer gives exactly the ids / mask / segment ids the Task Library's BertTokenizer feeds."""

from __future__ import annotations

import numpy as np
import pytest

from beamlens.models import compat
from beamlens.models.export import metadata as tflite_metadata
from beamlens.models.encoders.bert_tokenizer import BertTokenizer, is_wordpiece_vocab, load_caption_tokenizer, split_words
from beamlens.models.errors import BeamlensError
from beamlens.models.encoders.regex_tokenizer import Vocabulary

LENGTH = 16
TRICKY = [
    "a red circle",
    "A Red Circle, left-of the BLUE squares!",
    "",
    "   leading and trailing   ",
    "tab\tnew\nline\r\nform\ffeed",
    "don't stop: A.B.C 123 456.78 $5 & 50% off",
    "Café naïve résumé ÉCOLE дом Дом ω Ω",
    "北京欢迎你 and 東京",
    "em—dash «quoted» ¿qué? ¡sí!",
    "nbsp\u00a0joined vertical\u000btab",
    "emoji 😀 ok ﬁne",
    "unaffable tokenization of supercalifragilisticexpialidocious words",
    "x" * 150 + " tail",
    "one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen",
    "Two dogs are playing in the snow.",
]


@pytest.fixture(scope="module")
def tokenizer() -> BertTokenizer:
    from beamlens.models.encoders.backbones.minilm import vocab_path

    return BertTokenizer.load(vocab_path())


def _bert_echo_embedder(folder, vocab: str, length: int) -> str:
    """A TFLite 'embedder' whose output is its three inputs: shows exactly what the Task Library feeds."""
    import keras

    from beamlens.models.export.encoders import bert_input_specs, to_tflite

    inputs = {n: keras.Input((length,), dtype="int32", name=n) for n in ("ids", "mask", "segment_ids")}
    echoed = keras.layers.Concatenate()([keras.ops.cast(inputs[n], "float32") for n in ("ids", "mask", "segment_ids")])
    raw, out = folder / "echo_raw.tflite", folder / "echo.tflite"
    to_tflite(keras.Model(inputs, echoed), bert_input_specs(length), str(raw))
    compat.call_tflite(tflite_metadata.write_bert_text_embedder_metadata, str(raw), vocab, str(out))
    return str(out)


def test_tokenizer_matches_task_library_bert_tokenizer(tmp_path, tokenizer):
    echo = _bert_echo_embedder(tmp_path, tokenizer.path, LENGTH)
    got = compat.call_tflite(tflite_metadata.text_embeddings, echo, TRICKY).astype(np.int64)
    want = tokenizer.encode_batch(TRICKY, LENGTH)
    for row, text in enumerate(TRICKY):
        device = {"ids": got[row, :LENGTH], "mask": got[row, LENGTH:2 * LENGTH], "segment_ids": got[row, 2 * LENGTH:]}
        for name in ("ids", "mask", "segment_ids"):
            assert device[name].tolist() == want[name][row].tolist(), (text, name, [tokenizer.tokens[i] for i in device["ids"]])
    # the cases are not vacuous: truncation keeps [SEP], unknown words and CJK characters are seen
    cls, sep, unk = (tokenizer.id_of(t) for t in ("[CLS]", "[SEP]", "[UNK]"))
    assert want["ids"][2][:3].tolist() == [cls, sep, 0]
    assert want["ids"][13][-1] == sep and want["mask"][13].all()
    assert unk in want["ids"][6] and unk in want["ids"][12]
    assert tokenizer.tokenize("дом Дом ω Ω") == ["д", "##о", "##м", "[UNK]", "ω", "[UNK]"]  # ASCII-only lower-casing
    assert len(tokenizer.tokenize(TRICKY[7])) >= 6


def test_basic_split_and_wordpieces(tokenizer):
    assert split_words("a,b  c!d\u00a0e") == ["a", ",", "b", "c", "!", "d\u00a0e"]
    assert tokenizer.tokenize("Unaffable!") == ["una", "##ffa", "##ble", "!"]
    assert tokenizer.tokenize("HELLO") == ["hello"]  # ASCII lower-casing
    assert tokenizer.tokenize("x" * 101) == ["[UNK]"]  # over 100 bytes
    encoded = tokenizer.encode("hello world", 6)
    assert encoded["ids"].tolist() == [101, 7592, 2088, 102, 0, 0]
    assert encoded["mask"].tolist() == [1, 1, 1, 1, 0, 0] and not encoded["segment_ids"].any()
    with pytest.raises(BeamlensError, match="at least 2"):
        tokenizer.encode("x", 1)


def test_vocab_kinds_and_caption_tokenizer_choice(tmp_path, tokenizer):
    regex_vocab = tmp_path / "regex_vocab.txt"
    Vocabulary(["red", "circle"]).save(str(regex_vocab))
    assert is_wordpiece_vocab(tokenizer.path) and not is_wordpiece_vocab(str(regex_vocab))
    assert isinstance(load_caption_tokenizer(tokenizer.path, "minilm"), BertTokenizer)
    assert isinstance(load_caption_tokenizer(str(regex_vocab), "scratch_text"), Vocabulary)
    assert isinstance(load_caption_tokenizer(tokenizer.path), BertTokenizer)  # sniffed from the file
    assert isinstance(load_caption_tokenizer(str(regex_vocab)), Vocabulary)
    with pytest.raises(BeamlensError, match="not a BERT WordPiece vocab"):
        BertTokenizer.load(str(regex_vocab))
    with pytest.raises(BeamlensError, match="not found: .*nowhere.txt"):
        BertTokenizer.load(str(tmp_path / "nowhere.txt"))
