"""Image-to-image search with no training, end to end through the real Task Library ImageSearcher.

Two pretrained embedders, each: Beam embed of the shared photos -> build-searcher -> ImageSearcher.
* ``efficientnet_lite0``: ``beamlens export-pretrained`` (.keras for Beam, .tflite for the phone);
* the shared MobileNetV3 ``.tflite`` as is (1024-d, not normalised), embedded by the pipeline's
  TFLite route.
Checks: near-duplicates of the burger photo find it in their top 2; the searcher's results equal
exact NumPy search over the index vectors; corpus embeddings agree with the Task Library's own.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from beamlens.models import compat
from tests import searcher_tasklib_helpers as h
from tests.conftest import TESTDATA, TFLITE_SUPPORT_DATA
from tests.embed_helpers import read_shards

MOBILENET = TESTDATA / "models" / "mobilenet_v3_small_075_224_embedder.tflite"
K = 5


def _photos() -> list[Path]:
    return sorted([p for p in TFLITE_SUPPORT_DATA.iterdir() if p.suffix in (".jpg", ".png")]
                  + [p for p in (TESTDATA / "skimage").iterdir() if p.suffix in (".jpg", ".png")])


def _rgb(paths: list[Path]) -> list[Path]:
    """The Task Library's ImageSearcher takes RGB files only: the queries are the RGB photos."""
    from PIL import Image

    return [p for p in paths if Image.open(p).mode == "RGB"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("photos")
    for photo in _photos():
        shutil.copy(photo, folder / photo.name)
    return folder


def _build(root: Path, corpus: Path, embed_model: str, embedder: str, extra: list[str]) -> dict:
    from beamlens.pipelines import build_searcher, embed_images

    shards, out = root / "shards", root / "searcher"
    embed_images.run(["--runner", "FnApiRunner", "--input-glob", str(corpus / "*"), "--model", embed_model,
                      "--output", str(shards), "--num-shards", "2", "--max-batch-size", "8", *extra],
                     save_main_session=False)
    summary = build_searcher.run(build_searcher.build_parser().parse_args(
        ["--shards", str(shards), "--out", str(out), "--image-embedder", embedder]))
    records = read_shards(shards)
    ids = sorted(records)
    return {"embedder": embedder, "searcher": str(out / "image_searcher.tflite"), "summary": summary, "shards": shards,
            "ids": ids, "vectors": np.stack([records[i].embedding for i in ids]),
            "manifest": json.loads((shards / "manifest.json").read_text())}


@pytest.fixture(scope="module", params=["efficientnet_lite0", "mobilenet_v3_tflite"])
def searcher(request, tmp_path_factory, corpus) -> dict:
    root = tmp_path_factory.mktemp(request.param)
    if request.param == "efficientnet_lite0":
        from beamlens.pipelines import export_pretrained

        assert export_pretrained.main(["--out", str(root / "model"), "--image-only"]) == 0
        built = _build(root, corpus, str(root / "model" / "vision_encoder.keras"),
                       str(root / "model" / "image_embedder.tflite"), ["--resize", "task_library"])
        assert built["vectors"].shape[1] == 1280
    else:
        built = _build(root, corpus, str(MOBILENET), str(MOBILENET), [])
        assert built["vectors"].shape[1] == 1024
    built["name"] = request.param
    return built


def _name(metadata: bytes) -> str:
    return Path(json.loads(metadata)["id"]).name


def test_every_photo_is_indexed_as_a_unit_vector(searcher):
    assert sorted(Path(i).name for i in searcher["ids"]) == sorted(p.name for p in _photos())
    np.testing.assert_allclose(np.linalg.norm(searcher["vectors"], axis=1), 1.0, atol=1e-5)
    assert searcher["manifest"]["extra"]["resize"] == "task_library"


def test_burger_crop_and_rotation_find_the_burger_in_their_top_2(searcher):
    queries = [TFLITE_SUPPORT_DATA / "burger_crop.jpg", TFLITE_SUPPORT_DATA / "burger_rotation180.jpg"]
    results = compat.call_tflite(h.image_search_files, searcher["searcher"], [str(q) for q in queries], K)
    for query, neighbours in zip(queries, results):
        top = [_name(m) for m, _ in neighbours]
        print(searcher["name"], query.name, [(n, round(d, 4)) for n, (_, d) in zip(top, neighbours)])
        assert top[0] == query.name  # itself
        assert "burger.jpg" in top[:2], f"{query.name}: {top}"


@pytest.mark.parametrize("partitions", ["automatic", "3 leaves"])
def test_searcher_results_equal_exact_search(searcher, partitions, tmp_path):
    """Task Library ImageSearcher (the index inside the .tflite) vs brute-force NumPy over the index vectors:
    with the builder's automatic choice (one leaf here) and with a k-means tree of 3 leaves, all searched."""
    from beamlens.pipelines import build_searcher

    path = searcher["searcher"]
    if partitions != "automatic":
        build_searcher.run(build_searcher.build_parser().parse_args(
            ["--shards", str(searcher["shards"]), "--out", str(tmp_path), "--image-embedder", searcher["embedder"],
             "--num-leaves", "3", "--leaves-to-search", "3", "--score", "brute_force"]))
        report = json.loads((tmp_path / "searcher_report.json").read_text())
        assert report["build"]["num_leaves"] == 3, report["build"]
        path = str(tmp_path / "image_searcher.tflite")
    queries = [str(p) for p in _rgb(_photos())]
    assert len(queries) >= 12
    results = compat.call_tflite(h.image_search_files, path, queries, K)
    raw = compat.call_tflite(h.image_embed_files, searcher["embedder"], queries)  # the searcher's own query vectors
    names = [Path(i).name for i in searcher["ids"]]
    for query, q, neighbours in zip(queries, raw, results):
        scores = searcher["vectors"] @ q
        exact = [names[i] for i in np.argsort(-scores, kind="stable")[:K]]
        found = [_name(m) for m, _ in neighbours]
        assert found == exact, f"{query}: searcher {found} vs exact {exact}"
        # dot_product distances are negative dot products with the raw (unnormalised) query
        np.testing.assert_allclose([d for _, d in neighbours], -np.sort(scores)[::-1][:K], rtol=2e-3, atol=2e-3)


def test_corpus_vectors_match_the_task_library_embedder(searcher):
    """The index was built in the on-device embedder's own space: same model, same resize."""
    photos = _rgb(_photos())
    device = compat.call_tflite(h.image_embed_files, searcher["embedder"], [str(p) for p in photos])
    device /= np.linalg.norm(device, axis=1, keepdims=True)
    row = {Path(i).name: n for n, i in enumerate(searcher["ids"])}
    corpus = searcher["vectors"][[row[p.name] for p in photos]]
    cosines = np.sum(corpus * device, axis=1)
    print(searcher["name"], "corpus vs Task Library cosine: mean", round(float(cosines.mean()), 5),
          "min", round(float(cosines.min()), 5))
    assert cosines.min() > 0.995 and cosines.mean() > 0.999


def test_export_refuses_a_backbone_without_pretrained_weights(tmp_path, capsys):
    from beamlens.pipelines import cli

    assert cli.main(["export-pretrained", "--out", str(tmp_path), "--backbone", "scratch_cnn"]) == 2
    assert "has no pretrained weights of its own: give --weights" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())
