"""Caption-free search (models/encoders/caption_free.py, ``beamlens export-pretrained``) and training from it.

* the heads compute exactly the caption-free vectors at initialisation (the numpy formula);
* ``export-pretrained`` writes a complete folder that goes through the real chain on uncaptioned
  shared photos (Beam embed -> build-searcher -> Task Library TextSearcher) and finds photos
  from their human captions;
* ``beamlens train`` picks the pretrained pair by default and says why, starts from the
  caption-free model and reports R@k before and after, never ending below the start;
* a prompt file with no prompts and a class-name file with no classes exit 2.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from beamlens.models.compat import call_tflite
from beamlens.pipelines import cli
from tests import searcher_tasklib_helpers
from tests.conftest import COCO_MINI

VAL_CAPTIONS = COCO_MINI / "annotations" / "captions_val2017.json"
TRAIN_CAPTIONS = COCO_MINI / "annotations" / "captions_train2017.json"


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


@pytest.mark.parametrize("residual_units", [0, 16])
def test_heads_at_initialisation_are_the_caption_free_vectors(residual_units):
    """Epoch 0 = caption-free: image unit((softmax((f W + b) / T) @ (E - mean)) @ U), text unit((t - mean) @ U)."""
    from beamlens.models.encoders import caption_free as cf

    rng = np.random.default_rng(0)
    classes, width, image_width = 50, 24, 40
    vectors = _unit(rng.normal(size=(classes, width))).astype(np.float32)
    alignment = cf.fit_alignment(vectors, 8, temperature=3.0)
    kernel, bias = rng.normal(size=(image_width, classes)).astype(np.float32), rng.normal(size=classes).astype(np.float32)
    vision, text = cf.build_heads(image_width, width, alignment, (kernel, bias), residual_units, "i", "t")
    features, sentences = rng.normal(size=(7, image_width)).astype(np.float32), _unit(rng.normal(size=(5, width)))

    logits = (features @ kernel + bias) / 3.0
    probabilities = np.exp(logits - logits.max(1, keepdims=True))
    probabilities /= probabilities.sum(1, keepdims=True)
    mean = vectors.mean(0)
    expected_images = _unit(probabilities @ (vectors - mean) @ alignment.basis)
    expected_texts = _unit((sentences - mean) @ alignment.basis)
    np.testing.assert_allclose(vision.predict(features, verbose=0), expected_images, atol=1e-5)
    np.testing.assert_allclose(text.predict(sentences.astype(np.float32), verbose=0), expected_texts, atol=1e-5)
    assert 0 < alignment.explained_variance < 1


def test_prompt_file_without_prompts_and_class_file_without_classes_exit_2(tmp_path, capsys):
    empty = tmp_path / "prompts.txt"
    empty.write_text("# only a comment\n\n")
    assert cli.main(["export-pretrained", "--out", str(tmp_path / "a"), "--prompts", str(empty)]) == 2
    assert f"beamlens export-pretrained: error: the prompt file {empty} has no prompts" in capsys.readouterr().err
    no_braces = tmp_path / "nobraces.txt"
    no_braces.write_text("a photo\n")
    assert cli.main(["export-pretrained", "--out", str(tmp_path / "a"), "--prompts", str(no_braces)]) == 2
    assert "has no {} for the class name" in capsys.readouterr().err
    classes = tmp_path / "classes.txt"
    classes.write_text("\n")
    assert cli.main(["export-pretrained", "--out", str(tmp_path / "a"), "--class-names", str(classes)]) == 2
    assert f"the class-name file {classes} has no classes" in capsys.readouterr().err
    classes.write_text("cat\ndog\n")
    assert cli.main(["export-pretrained", "--out", str(tmp_path / "a"), "--class-names", str(classes)]) == 2
    assert "has 2 classes; the classifier has 1000" in capsys.readouterr().err
    assert not (tmp_path / "a").exists()


@pytest.fixture(scope="module")
def caption_free_model(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("caption-free") / "model"
    assert cli.main(["export-pretrained", "--out", str(out)]) == 0
    return out


def test_export_pretrained_writes_a_complete_folder(caption_free_model):
    names = sorted(p.name for p in caption_free_model.iterdir())
    assert names == sorted(["vision_encoder.keras", "text_encoder.keras", "image_embedder.tflite", "text_embedder.tflite",
                            "vocab.txt", "encoder_config.json"])
    config = json.loads((caption_free_model / "encoder_config.json").read_text())
    assert config["embedding_dim"] == 128 and config["image_backbone"] == "efficientnet_lite0"
    assert config["text_backbone"] == "minilm" and config["extra"]["head"] == "caption_free"
    assert config["extra"]["caption_free"]["temperature"] == 3.0 and config["trained"] is False


def test_uncaptioned_photos_are_found_by_their_captions_through_the_task_library(caption_free_model, tmp_path):
    """export-pretrained -> embed (a folder of photos, no captions) -> build-searcher -> TextSearcher."""
    doc = json.loads(VAL_CAPTIONS.read_text())
    chosen = doc["images"][:12]
    photos = tmp_path / "photos"
    photos.mkdir()
    for image in chosen:
        shutil.copy(COCO_MINI / "val2017" / image["file_name"], photos / image["file_name"])
    shards, searchers = tmp_path / "shards", tmp_path / "searchers"
    assert cli.main(["embed", "--input-glob", str(photos / "*.jpg"), "--model", str(caption_free_model / "vision_encoder.keras"),
                     "--output", str(shards), "--num-shards", "1", "--runner", "FnApiRunner", "--resize", "task_library"]) == 0
    assert cli.main(["build-searcher", "--shards", str(shards), "--out", str(searchers),
                     "--text-embedder", str(caption_free_model / "text_embedder.tflite"),
                     "--image-embedder", str(caption_free_model / "image_embedder.tflite")]) == 0
    first_caption = {}
    for annotation in doc["annotations"]:
        first_caption.setdefault(annotation["image_id"], annotation["caption"])
    queries = [(image["file_name"], first_caption[image["id"]]) for image in chosen]
    found = call_tflite(searcher_tasklib_helpers.text_search_many, str(searchers / "text_searcher.tflite"),
                        [q for _, q in queries], 3)
    hits = sum(name in [Path(json.loads(meta)["id"]).name for meta, _ in neighbours[:3]]
               for (name, _), neighbours in zip(queries, found))
    print("own photo in the top 3 of 12:", hits)
    assert hits >= 8, hits  # chance 3/12 per query; measured 11

    import keras

    from beamlens.models.encoders.bert_tokenizer import BertTokenizer

    text = keras.models.load_model(caption_free_model / "text_encoder.keras")
    keras_vectors = text.predict(BertTokenizer.load(str(caption_free_model / "vocab.txt")).encode_batch(
        [q for _, q in queries], 24), verbose=0)
    device = call_tflite(searcher_tasklib_helpers.text_embed, str(caption_free_model / "text_embedder.tflite"),
                         [q for _, q in queries])
    assert (np.sum(_unit(keras_vectors) * _unit(device), axis=1)).min() > 0.99


def test_train_by_default_uses_the_pretrained_pair_starts_caption_free_and_never_ends_below(tmp_path, capsys):
    from beamlens.pipelines import train

    out = tmp_path / "model"
    assert train.main(["--captions", str(TRAIN_CAPTIONS), "--out", str(out), "--epochs", "2"]) == 0
    printed = capsys.readouterr().out
    first = printed.splitlines()[0]
    assert first.startswith("backbones: efficientnet_lite0 + minilm, because their pretrained weights are installed"), first
    assert "caption-free start (linear maps only" in printed
    assert "held-out R@1/5/10 (6 photos): before training (caption-free)" in printed
    history = json.loads((out / "history.json").read_text())
    mean = lambda r: np.mean([r[k] for k in ("1", "5", "10")])  # noqa: E731
    assert mean(history["recall_after"]) >= mean(history["recall_before"])
    assert history["val_recall@10"][0] == history["recall_before"]["10"]  # epoch 0 = the caption-free start
    config = json.loads((out / "encoder_config.json").read_text())
    assert config["extra"]["head"] == "caption_free" and config["training"]["recall_before"] == history["recall_before"]


def test_train_with_the_scratch_pair_says_it_was_asked_for(tmp_path, capsys):
    from beamlens.models.errors import BeamlensError
    from beamlens.pipelines import train

    empty = tmp_path / "c.json"
    empty.write_text('{"images": [], "annotations": []}')
    with pytest.raises(BeamlensError):
        train.main(["--captions", str(empty), "--out", str(tmp_path / "m"), "--image-backbone", "scratch_cnn",
                    "--text-backbone", "scratch_text"])
    assert capsys.readouterr().out.splitlines()[0] == "backbones: scratch_cnn + scratch_text, as given"


def test_demo_plans_caption_free_search_of_the_scikit_image_photos(tmp_path):
    from beamlens.pipelines import demo

    source = demo.skimage_data_dir()
    assert source is not None, "scikit-image is installed with the project (setup.py)"
    photos = demo.stage_real_photos(tmp_path, source)
    assert sorted(p.name for p in photos.iterdir()) == sorted(demo.REAL_PHOTOS)
    steps = demo.plan_real_photo_steps(tmp_path, photos)
    assert [step.argv[3] for step in steps] == ["export-pretrained", "embed", "build-searcher", "search", "search", "search"]
    assert {expected for _, expected in demo.REAL_QUERIES} <= set(demo.REAL_PHOTOS)


def test_a_corpus_folder_with_no_decodable_photo_exits_2(caption_free_model, tmp_path, capsys):
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "a.jpg").write_text("not a photo")
    (photos / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    code = cli.main(["embed", "--input-glob", str(photos / "*"), "--model", str(caption_free_model / "vision_encoder.keras"),
                     "--output", str(tmp_path / "shards"), "--runner", "FnApiRunner"])
    assert code == 2
    assert "beamlens embed: error: none of the 2 files read decodes as a photo" in capsys.readouterr().err
