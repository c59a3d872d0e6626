"""``beamlens build-searcher`` end to end from shards, and every bad input it must refuse cleanly."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import tensorflow as tf  # noqa: F401  (the TF side of the split, as in the real command)

from beamlens.models.errors import BeamlensError
from beamlens.models.searcher import read_searcher
from beamlens.pipelines import build_searcher, cli
from tests import searcher_tasklib_helpers as h
from tests.conftest import TFLITE_SUPPORT_DATA

REGEX_EMBEDDER = str(TFLITE_SUPPORT_DATA / "regex_one_embedding_with_metadata.tflite")


def _unit(n: int, d: int = 16, seed: int = 0) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def _run(shards, out, *extra: str) -> dict:
    return build_searcher.run(build_searcher.build_parser().parse_args(["--shards", str(shards), "--out", str(out), *extra]))


def _assert_refused(shards, out, match: str, *extra: str) -> None:
    with pytest.raises(BeamlensError, match=match):
        _run(shards, out, *extra)
    leftovers = os.listdir(out) if os.path.isdir(out) else []
    assert leftovers == [], f"a failed build left {leftovers}"


def test_cli_end_to_end_text_and_index(tmp_path, capsys):
    vectors = _unit(600)
    captions = [[f"caption {i}", f"another {i}"] for i in range(600)]
    h.write_shards(tmp_path / "shards", h.records_for(vectors, captions=captions), num_shards=3)
    out = tmp_path / "out"
    code = cli.main(["build-searcher", "--shards", str(tmp_path / "shards"), "--out", str(out),
                     "--text-embedder", REGEX_EMBEDDER, "--format", "tflite", "--format", "scann_index_file",
                     "--userinfo", "hello"])
    assert code == 0
    assert sorted(os.listdir(out)) == ["index.ldb", "searcher_report.json", "text_searcher.tflite"]
    err = capsys.readouterr().err
    assert "read 600 records: 600 items" in err and "why:" in err and "recall@10 by leaves searched" in err
    report = json.loads((out / "searcher_report.json").read_text())
    assert report["records_read"] == 600 and report["build"]["num_items"] == 600
    assert report["build"]["num_leaves"] == 1 and report["build"]["search_fraction"] == 1.0  # small N: one leaf
    assert report["build"]["score"] in ("ah", "brute_force") and report["build"]["reasons"]
    info = read_searcher(str(out / "text_searcher.tflite"), first_items=600)
    assert info.num_items == 600 and info.user_info == "hello"
    items = [json.loads(m) for m in info.first_items]
    by_id = {m["id"]: m for m in items}
    assert by_id["img000007"] == {"id": "img000007", "uri": "file:///corpus/img000007.jpg", "captions": ["caption 7", "another 7"]}
    assert info.first_items[0] == json.dumps(items[0], separators=(",", ":"))  # compact JSON
    assert read_searcher(str(out / "index.ldb")).num_items == 600


def test_explicit_options_and_tiny_data(tmp_path):
    h.write_shards(tmp_path / "shards", h.records_for(_unit(2000, seed=3)), num_shards=2)
    report = _run(tmp_path / "shards", tmp_path / "out", "--format", "scann_index_file", "--num-leaves", "20",
                  "--leaves-to-search", "3", "--score", "ah", "--dimensions-per-block", "2", "--lookup-type", "int16")
    build = report["build"]
    assert (build["num_leaves"], build["num_leaves_to_search"], build["score"]) == (20, 3, "ah")
    info = read_searcher(str(tmp_path / "out" / "index.ldb"))
    assert (info.num_leaves, info.num_leaves_to_search, info.embedding_type) == (20, 3, "UINT8")
    assert info.embedding_dim == 8 and info.query_dimension == 16  # 16 dims / 2 per block = 8 code bytes
    assert info.asymmetric_hashing["lookup_type"] == "int16"
    assert sum(info.partition_sizes) == 2000
    # tiny N: AH cannot train (LUT256 needs 256 points) -> float brute force, one leaf
    h.write_shards(tmp_path / "tiny", h.records_for(_unit(40, seed=4)), num_shards=1)
    tiny = _run(tmp_path / "tiny", tmp_path / "tiny_out", "--format", "scann_index_file")["build"]
    assert (tiny["score"], tiny["num_leaves"], tiny["search_fraction"]) == ("brute_force", 1, 1.0)
    assert any("256" in r for r in tiny["reasons"])
    _assert_refused(tmp_path / "tiny", tmp_path / "tiny_ah", "at least 256 items", "--format", "scann_index_file", "--score", "ah")


def test_num_leaves_alone_leaves_the_leaves_searched_to_the_sweep(tmp_path):
    h.write_shards(tmp_path / "shards", h.records_for(_clustered(3000)), num_shards=2)
    build = _run(tmp_path / "shards", tmp_path / "out", "--format", "scann_index_file", "--num-leaves", "30",
                 "--target-recall", "0.9")["build"]
    assert build["num_leaves"] == 30 and 1 <= build["num_leaves_to_search"] < 30
    assert build["estimated_recall_at_10"] >= 0.9
    with pytest.raises(BeamlensError, match=r"0 <= num_leaves_to_search <= num_leaves .*got 31 of 30"):
        _run(tmp_path / "shards", tmp_path / "bad", "--format", "scann_index_file", "--num-leaves", "30",
             "--leaves-to-search", "31")


def test_duplicates_identical_are_dropped_different_refused(tmp_path):
    vectors = _unit(300)
    records = h.records_for(vectors)
    h.write_shards(tmp_path / "dup", records + records[:7], num_shards=2)  # a runner re-ran a step
    report = _run(tmp_path / "dup", tmp_path / "out", "--format", "scann_index_file")
    assert report["duplicates_dropped"] == 7 and report["build"]["num_items"] == 300
    clash = h.records_for(_unit(1, seed=9), ids=["img000005"])
    h.write_shards(tmp_path / "clash", records + clash, num_shards=2)
    _assert_refused(tmp_path / "clash", tmp_path / "out2", "duplicate image id 'img000005'.*DIFFERENT vector",
                    "--format", "scann_index_file")


def test_bad_vectors_are_refused_naming_the_item(tmp_path):
    vectors = _unit(50)
    bad = vectors.copy()
    bad[17, 3] = np.nan
    h.write_shards(tmp_path / "nan", h.records_for(bad), num_shards=2)
    _assert_refused(tmp_path / "nan", tmp_path / "o1", "img000017.*NaN", "--format", "scann_index_file")
    big = vectors.copy()
    big[9] *= 3.0
    h.write_shards(tmp_path / "norm", h.records_for(big), num_shards=1)
    _assert_refused(tmp_path / "norm", tmp_path / "o2", "img000009.*norm is 3.0000.*--normalize", "--format", "scann_index_file")
    fixed = _run(tmp_path / "norm", tmp_path / "o3", "--format", "scann_index_file", "--normalize")
    assert fixed["normalized"] == 1
    mixed = h.records_for(vectors[:10]) + h.records_for(_unit(2, d=8), ids=["odd1", "odd2"])
    h.write_shards(tmp_path / "mixed", mixed, num_shards=1, dimension=16)
    _assert_refused(tmp_path / "mixed", tmp_path / "o4", "mixed dimensions: image id 'odd1'.*8-d.*16-d",
                    "--format", "scann_index_file")


def test_missing_shards_and_manifest(tmp_path):
    (tmp_path / "empty").mkdir()
    _assert_refused(tmp_path / "empty", tmp_path / "o1", "no embedding shards", "--format", "scann_index_file")
    _assert_refused(tmp_path / "nowhere", tmp_path / "o2", "shards folder not found", "--format", "scann_index_file")
    h.write_shards(tmp_path / "nomanifest", h.records_for(_unit(30)), num_shards=2, manifest=False)
    _assert_refused(tmp_path / "nomanifest", tmp_path / "o3", "no manifest.json.*--allow-missing-manifest",
                    "--format", "scann_index_file")
    report = _run(tmp_path / "nomanifest", tmp_path / "o4", "--format", "scann_index_file", "--allow-missing-manifest")
    assert report["build"]["num_items"] == 30 and not report["manifest_found"] and report["warnings"]


def test_bad_embedders_are_refused_before_anything_is_written(tmp_path):
    h.write_shards(tmp_path / "shards", h.records_for(_unit(30, d=8)), num_shards=1)
    not_a_model = tmp_path / "embedder.tflite"
    not_a_model.write_bytes(b"this is not a flatbuffer" * 10)
    _assert_refused(tmp_path / "shards", tmp_path / "o1", "embedder.tflite is not a TFLite model",
                    "--text-embedder", str(not_a_model))
    # The Task Library would happily search a 16-d embedder against 8-d vectors: we refuse.
    _assert_refused(tmp_path / "shards", tmp_path / "o2", "outputs 16-d embeddings but the shards hold 8-d",
                    "--text-embedder", REGEX_EMBEDDER)
    _assert_refused(tmp_path / "shards", tmp_path / "o3", "embedder not found", "--image-embedder", str(tmp_path / "nope.tflite"))


def test_cli_reports_user_errors_with_exit_2(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    code = cli.main(["build-searcher", "--shards", str(tmp_path / "empty"), "--out", str(tmp_path / "out"),
                     "--format", "scann_index_file"])
    assert code == 2
    assert "beamlens build-searcher: error: no embedding shards" in capsys.readouterr().err


def test_several_embedding_runs_merge_into_one_index(tmp_path):
    """The demo indexes the train and val runs together: ids from both, one index, counts add up."""
    vectors = _unit(500, seed=3)
    h.write_shards(tmp_path / "train", h.records_for(vectors[:300], ids=[f"t{i}" for i in range(300)]))
    h.write_shards(tmp_path / "val", h.records_for(vectors[300:], ids=[f"v{i}" for i in range(200)]))
    out = tmp_path / "out"
    code = cli.main(["build-searcher", "--shards", str(tmp_path / "train"), "--shards", str(tmp_path / "val"),
                     "--out", str(out), "--format", "scann_index_file", "--score", "brute_force"])
    assert code == 0
    info = read_searcher(str(out / "index.ldb"), first_items=500)
    assert info.num_items == 500
    ids = {json.loads(m)["id"] for m in info.first_items}
    assert ids == {f"t{i}" for i in range(300)} | {f"v{i}" for i in range(200)}
    report = json.loads((out / "searcher_report.json").read_text())
    assert report["records_read"] == 500 and report["shards"] == [str(tmp_path / "train"), str(tmp_path / "val")]


def test_runs_of_different_models_are_refused(tmp_path):
    vectors = _unit(40, seed=4)
    h.write_shards(tmp_path / "a", h.records_for(vectors[:20], ids=[f"a{i}" for i in range(20)], fingerprint="sha256:one"),
                   fingerprint="sha256:one")
    h.write_shards(tmp_path / "b", h.records_for(vectors[20:], ids=[f"b{i}" for i in range(20)], fingerprint="sha256:two"),
                   fingerprint="sha256:two")
    out = tmp_path / "out"
    with pytest.raises(BeamlensError, match="2 different models"):
        build_searcher.run(build_searcher.build_parser().parse_args(
            ["--shards", str(tmp_path / "a"), "--shards", str(tmp_path / "b"), "--out", str(out),
             "--format", "scann_index_file"]))
    assert not os.path.exists(out) or os.listdir(out) == []


def _clustered(n: int, d: int = 32, clusters: int = 40, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, d))
    v = centres[rng.integers(0, clusters, n)] + 0.35 * rng.normal(size=(n, d))
    return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)


def test_size_budget_and_target_recall_decide_the_scoring(tmp_path):
    """The automatic branches: float scoring when it fits the budget and AH cannot reach the target;
    AH (or a warned best effort) when the float vectors are over --max-index-mb."""
    vectors = _clustered(3000)
    h.write_shards(tmp_path / "shards", h.records_for(vectors), num_shards=2)
    float_mb = vectors.nbytes / 1e6  # 0.38 MB
    roomy = _run(tmp_path / "shards", tmp_path / "roomy", "--format", "scann_index_file", "--target-recall", "0.99",
                 "--max-index-mb", "200")["build"]
    assert roomy["score"] == "brute_force" and roomy["estimated_recall_at_10"] >= 0.99
    assert roomy["recall_queries"].startswith("300 held-out vectors of the indexed items (image-like queries")
    assert any(r.startswith("not AH") and "reaches only" in r for r in roomy["reasons"])

    half = f"{float_mb / 2:.3f}"
    cheap = _run(tmp_path / "shards", tmp_path / "cheap", "--format", "scann_index_file", "--target-recall", "0.5")["build"]
    assert cheap["score"] == "ah" and cheap["estimated_recall_at_10"] >= 0.5  # the smallest that reaches it
    assert cheap["vector_bytes"] < vectors.nbytes / 2

    over = _run(tmp_path / "shards", tmp_path / "over", "--format", "scann_index_file", "--target-recall", "0.99",
                "--max-index-mb", half)["build"]
    assert over["score"] == "ah" and over["vector_bytes"] < vectors.nbytes / 2  # float would not fit
    assert f"not float brute force: 0.4 MB is over the {float(half):.3g} MB budget" in over["reasons"]

    squeezed = _run(tmp_path / "shards", tmp_path / "squeezed", "--format", "scann_index_file", "--target-recall", "0.99",
                    "--max-index-mb", "0.05")["build"]
    assert squeezed["score"] == "ah" and squeezed["dimensions_per_block"] == 2  # 3000 x 32 bytes at 1 dim/block: 0.096 MB
    assert any(w.startswith("the 0.05 MB budget forced 2 dimensions per AH block; 1 dimension per block (0.1 MB of codes: "
                            "--max-index-mb 1)") for w in squeezed["warnings"]), squeezed["warnings"]
    warning = " ".join(over["warnings"])
    assert f"no scoring reaches recall@10 0.99 within {float(half):.3g} MB" in warning
    assert "(float brute force would reach it: allow 0.384 MB with max_index_mb)" in warning
