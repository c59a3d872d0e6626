"""``beamlens export-text-embedder``: a trained folder's text encoder re-exported as int8 still agrees."""

from __future__ import annotations

import numpy as np
import pytest

from beamlens.models import compat
from beamlens.models.export import metadata as tflite_metadata
from beamlens.models.errors import BeamlensError
from beamlens.pipelines import export_text_embedder
from tests.encoder_helpers import trained_model


def test_trained_text_encoder_exports_as_int8(tmp_path_factory, tmp_path, capsys):
    import keras

    from beamlens.models.encoders.regex_tokenizer import Vocabulary

    model_dir, _ = trained_model(tmp_path_factory)
    out = tmp_path / "text_int8.tflite"
    assert export_text_embedder.main(["--model-dir", str(model_dir), "--out", str(out), "--quantize", "int8"]) == 0
    assert "int8, 16 tokens, output 128-d" in capsys.readouterr().out
    captions = ["a red circle left of a blue square", "A GREEN triangle", "two small squares", "zebra unicorn"]
    keras_vectors = np.asarray(keras.saving.load_model(model_dir / "text_encoder.keras").predict(
        Vocabulary.load(str(model_dir / "vocab.txt")).encode_batch(captions, 16), verbose=0))
    task_vectors = compat.call_tflite(tflite_metadata.text_embeddings, str(out), captions)
    cosines = (keras_vectors * task_vectors).sum(1) / np.linalg.norm(task_vectors, axis=1)
    assert cosines.min() >= 0.98, cosines
    assert out.stat().st_size < (model_dir / "text_embedder.tflite").stat().st_size


def test_not_a_model_folder_is_a_clear_error(tmp_path):
    with pytest.raises(BeamlensError, match="not a trained model folder .*text_encoder.keras"):
        export_text_embedder.main(["--model-dir", str(tmp_path), "--out", str(tmp_path / "x.tflite")])
