"""``beamlens evaluate-encoder`` on the tiny trained model, and the metric definitions."""

from __future__ import annotations

import json

import numpy as np
import pytest

from beamlens.models.training.evaluation import attribute_recall, top_k_accuracy
from beamlens.models.errors import BeamlensError
from tests.encoder_helpers import trained_model


def test_metrics_on_hand_made_vectors():
    images = np.eye(4, dtype=np.float32)
    captions = np.array([[1, 0, 0, 0], [0, 0.9, 0.1, 0], [0, 0, 0.1, 1]], np.float32)
    report = top_k_accuracy(captions, np.array([0, 2, 3]), images, ks=(1, 2))
    assert report["top_k_accuracy"] == {"1": 2 / 3, "2": 1.0} and report["chance"] == {"1": 0.25, "2": 0.5}
    attr = attribute_recall(captions, [np.array([0]), np.array([2, 3]), np.array([1])], images, ks=(1, 2))
    assert attr["recall"] == {"1": 1 / 3, "2": 2 / 3}
    assert attr["precision"]["2"] == pytest.approx((0.5 + 0.5 + 0) / 3)
    assert attr["chance_recall"]["1"] == pytest.approx((0.25 + 0.5 + 0.25) / 3)


def test_evaluate_encoder_cli(tmp_path_factory, tmp_path, capsys):
    from beamlens.pipelines import evaluate_encoder

    model_dir, corpus = trained_model(tmp_path_factory)
    ann = corpus / "annotations"
    out = tmp_path / "report.json"
    assert evaluate_encoder.main([
        "--model-dir", str(model_dir), "--captions", str(ann / "captions_val.json"), "--images", str(corpus / "val"),
        "--train-captions", str(ann / "captions_train.json"), "--train-images", str(corpus / "train"),
        "--corpus-dir", str(corpus), "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    held = report["splits"]["held_out"]
    assert held["images"] == 12 and held["queries"] == 36
    assert set(held["top_k_accuracy"]) == {"1", "5", "10", "100"}
    assert held["chance"]["1"] == pytest.approx(1 / 12) and held["chance"]["5"] == pytest.approx(5 / 12)
    accuracy = [held["top_k_accuracy"][k] for k in ("1", "5", "10")]
    assert accuracy == sorted(accuracy) and all(abs(a * 36 - round(a * 36)) < 1e-9 for a in accuracy)  # whole queries
    recall = held["attributes"]["recall"]
    assert recall["1"] <= recall["5"] <= recall["10"] and held["attributes"]["queries"] == 36
    assert report["splits"]["train"]["images"] == 36
    assert (tmp_path / "report_training_curves.png").stat().st_size > 1000
    assert "held_out: 36 captions x 12 images" in capsys.readouterr().out


def test_evaluate_encoder_needs_a_model_folder(tmp_path):
    from beamlens.pipelines import evaluate_encoder

    with pytest.raises(BeamlensError, match="not a trained model folder"):
        evaluate_encoder.main(["--model-dir", str(tmp_path), "--captions", "x.json"])
