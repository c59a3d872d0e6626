"""Tokenizer parity with the Task Library, encoder shapes, the reference loss."""

from __future__ import annotations

import numpy as np
import pytest

from beamlens.models import compat
from beamlens.models.export import metadata as tflite_metadata
from beamlens.models.errors import BeamlensError
from beamlens.models.encoders.regex_tokenizer import Vocabulary, build_vocabulary


def _id_echo_embedder(tmp_path, vocab: Vocabulary, length: int) -> str:
    """A TFLite 'embedder' whose output is its input ids: shows exactly what the Task Library feeds."""
    import keras
    import tensorflow as tf

    from beamlens.models.export.encoders import to_tflite

    ids = keras.Input((length,), dtype="int32", name="ids")
    model = keras.Model(ids, keras.layers.Lambda(lambda x: tf.cast(x, tf.float32))(ids))
    raw, vocab_path, out = tmp_path / "raw.tflite", tmp_path / "vocab.txt", tmp_path / "echo.tflite"
    to_tflite(model, tf.TensorSpec([1, length], tf.int32), str(raw))
    vocab.save(str(vocab_path))
    compat.call_tflite(tflite_metadata.write_text_embedder_metadata, str(raw), str(vocab_path), str(out))
    return str(out)


def test_tokenizer_matches_task_library_regex_tokenizer(tmp_path):
    vocab = build_vocabulary(["a red circle left of a blue square", "don't stop", "x_y two 2 cats"])
    texts = ["a red circle", "A RED Circle, left-of a BLUE square!", "don't   stop x_y", "",
             "café red", "unknownword red red red red red red red red red red red", "2 cats two"]
    length = 8
    echo = _id_echo_embedder(tmp_path, vocab, length)
    got = compat.call_tflite(tflite_metadata.text_embeddings, echo, texts)
    want = vocab.encode_batch(texts, length)
    np.testing.assert_array_equal(got.astype(np.int32), want)
    assert want[0, 0] == 1 and want[3].tolist() == [1] + [0] * 7
    assert want[1, 1] == want[0, 1]  # case variants share the id


def test_vocabulary_round_trip_and_errors(tmp_path):
    vocab = build_vocabulary(["b a a", "c a b"], min_count=2)
    assert vocab.words == ["a", "b"]
    vocab.save(str(tmp_path / "v.txt"))
    assert Vocabulary.load(str(tmp_path / "v.txt")).words == ["a", "b"]
    with pytest.raises(BeamlensError, match="no words"):
        build_vocabulary(["", "  ,. "])


def test_encoders_output_unit_vectors():
    from beamlens.models.encoders.towers import EncoderConfig, build_text_encoder, build_vision_encoder

    config = EncoderConfig(image_size=32, embedding_dim=16, max_tokens=8, vocab_size=20, num_projection_layers=2)
    vision, text = build_vision_encoder(config), build_text_encoder(config)
    v = np.asarray(vision(np.random.default_rng(0).uniform(0, 255, (3, 32, 32, 3)).astype(np.float32)))
    t = np.asarray(text(np.array([[1, 4, 5, 0, 0, 0, 0, 0]] * 2, np.int32)))
    assert v.shape == (3, 16) and t.shape == (2, 16)
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(t, axis=1), 1.0, atol=1e-5)
    names = [layer.name for layer in vision.layers]
    assert "vision_gelu_1" in names and "vision_norm_1" in names


def test_reference_loss_matches_numpy():
    from beamlens.models.encoders.dual import make_loss

    rng = np.random.default_rng(1)
    c = rng.normal(size=(5, 4)).astype(np.float32)
    i = rng.normal(size=(5, 4)).astype(np.float32)
    t = 0.5
    got = np.asarray(make_loss(4, t)(None, np.concatenate([c, i], axis=1)))

    def softmax(x):
        e = np.exp(x - x.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)

    logits = c @ i.T / t
    targets = softmax((c @ c.T + i @ i.T) / (2 * t))
    ce_c = -(targets * np.log(softmax(logits))).sum(axis=1)
    ce_i = -(targets.T * np.log(softmax(logits.T))).sum(axis=1)
    np.testing.assert_allclose(got, (ce_c + ce_i) / 2, rtol=1e-4)
