"""``beamlens evaluate`` and its numpy metrics: exact search, accuracy, recall, latency, report."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from beamlens.models.search import evaluation as ev
from beamlens.models.errors import BeamlensError
from beamlens.models.search.runtime import embed_text
from beamlens.models.searcher import read_searcher, rewrite_leaves_to_search
from beamlens.models.io.files import write_text_atomically
from beamlens.models.shards.records import EmbeddingRecord, Manifest, encode_record
from beamlens.pipelines import evaluate
from tests import search_fixtures
from tests.conftest import TESTDATA, TFLITE_SUPPORT_DATA

REGEX_EMBEDDER = str(TFLITE_SUPPORT_DATA / "regex_one_embedding_with_metadata.tflite")
IMAGE_EMBEDDER = str(TESTDATA / "models" / "mobilenet_v3_small_075_224_embedder.tflite")
NUM_ITEMS = 240


# ---------------------------------------------------------------------------------------------
# Metrics
# ---------------------------------------------------------------------------------------------
def test_exact_search_matches_a_naive_ranking_for_both_distances() -> None:
    rng = np.random.default_rng(1)
    database = rng.normal(size=(300, 8)).astype(np.float32)
    queries = rng.normal(size=(7, 8)).astype(np.float32)
    indices, distances = ev.exact_search(queries, database, 5, ev.DOT_PRODUCT, chunk=3)
    naive = -(queries @ database.T)
    np.testing.assert_array_equal(indices, np.argsort(naive, axis=1, kind="stable")[:, :5])
    np.testing.assert_allclose(distances, np.sort(naive, axis=1)[:, :5], rtol=1e-5)
    indices, distances = ev.exact_search(queries, database, 4, ev.SQUARED_L2)
    naive_l2 = ((queries[:, None, :] - database[None]) ** 2).sum(-1)
    np.testing.assert_array_equal(indices, np.argsort(naive_l2, axis=1, kind="stable")[:, :4])
    np.testing.assert_allclose(distances, np.sort(naive_l2, axis=1)[:, :4], rtol=1e-4)
    # k above N returns all N; exact ties keep the lower index first.
    tied = np.ones((3, 2), np.float32)
    indices, _ = ev.exact_search(np.ones((1, 2), np.float32), tied, 10)
    assert indices.tolist() == [[0, 1, 2]]
    with pytest.raises(BeamlensError, match="same dimension"):
        ev.exact_search(queries, database[:, :4], 3)


def test_accuracy_recall_and_short_lists() -> None:
    ann = [["a", "b"], ["x", "c", "y"], []]
    exact = [["a", "b", "z"], ["c", "x", "q"], ["e", "f", "g"]]
    expected = ["b", "c", "e"]
    assert ev.top_k_accuracy(ann, expected, [1, 2, 3]) == {1: 0.0, 2: 2 / 3, 3: 2 / 3}
    assert ev.top_k_accuracy(exact, expected, [1, 2]) == {1: 2 / 3, 2: 1.0}
    recall = ev.ann_recall(ann, exact, [1, 3])
    assert recall[1] == pytest.approx((1 + 0 + 0) / 3)
    assert recall[3] == pytest.approx((2 / 3 + 2 / 3 + 0) / 3)
    assert ev.short_result_counts(ann, [1, 3], num_items=10) == {1: 1, 3: 2}
    assert ev.short_result_counts(ann, [3], num_items=2) == {3: 1}


def test_distance_recall_forgives_ties_but_not_misses() -> None:
    exact = np.array([[-3.0, -2.0, -2.0, -1.0]])
    # The searcher broke the tie at rank 2 the other way: still a perfect recall@2.
    assert ev.ann_recall_by_distance([np.array([-3.0, -2.0])], exact, [2]) == {2: 1.0}
    # It returned a farther item (or fewer items): a miss.
    assert ev.ann_recall_by_distance([np.array([-3.0, -1.0])], exact, [2]) == {2: 0.5}
    assert ev.ann_recall_by_distance([np.array([-3.0])], exact, [1, 4]) == {1: 1.0, 4: 0.25}
    database = np.eye(3, dtype=np.float32)
    np.testing.assert_allclose(ev.true_distances(np.array([1.0, 2.0, 0.0], np.float32), [1, 0], database), [-2.0, -1.0])


def test_latency_summary_and_sweep_values() -> None:
    summary = ev.latency_summary(list(range(1, 101)))
    assert summary["p50"] == pytest.approx(50.5) and summary["p99"] == pytest.approx(99.01)
    assert summary["count"] == 100
    assert ev.leaves_sweep_values(10) == [1, 2, 4, 8, 10]
    assert ev.leaves_sweep_values(64) == [1, 2, 4, 8, 16, 32]
    assert ev.leaves_sweep_values(1) == [1]


def test_caption_files_in_three_shapes_and_bad_ones(tmp_path: Path) -> None:
    coco = {"images": [{"id": 7}], "annotations": [{"image_id": 7, "caption": " a dog "}, {"image_id": 8, "caption": ""}]}
    (tmp_path / "coco.json").write_text(json.dumps(coco))
    assert ev.load_caption_queries(str(tmp_path / "coco.json")) == [ev.CaptionQuery("7", "a dog")]
    (tmp_path / "list.json").write_text(json.dumps([{"image_id": "s1", "caption": "x"}]))
    assert ev.load_caption_queries(str(tmp_path / "list.json")) == [ev.CaptionQuery("s1", "x")]
    (tmp_path / "map.json").write_text(json.dumps({"s1": ["x", "y"], "s2": "z"}))
    assert len(ev.load_caption_queries(str(tmp_path / "map.json"))) == 3
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(BeamlensError, match="bad.json is not readable JSON"):
        ev.load_caption_queries(str(tmp_path / "bad.json"))
    (tmp_path / "norec.json").write_text(json.dumps([{"caption": "x"}]))
    with pytest.raises(BeamlensError, match="record 0 lacks image_id"):
        ev.load_caption_queries(str(tmp_path / "norec.json"))
    with pytest.raises(BeamlensError, match="caption file not found"):
        ev.load_caption_queries(str(tmp_path / "absent.json"))
    queries = [ev.CaptionQuery(str(i % 5), f"c{i}") for i in range(20)]
    chosen, missing = ev.select_queries(queries, {"0", "1", "2"}, max_queries=5)
    assert missing == 8 and len(chosen) == 5 and all(q.image_id in {"0", "1", "2"} for q in chosen)


# ---------------------------------------------------------------------------------------------
# End to end: shards, captions and searchers over sentence embeddings
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> dict:
    """Items s0..sN whose 'image' vector is the L2-normalized embedding of its own caption.

    With an exact index every caption must then find its own item first (cosine 1).
    """
    import tensorflow as tf

    folder = tmp_path_factory.mktemp("evaluate")
    sentences = search_fixtures.regex_sentences(str(TFLITE_SUPPORT_DATA / "vocab_for_regex_tokenizer.txt"), NUM_ITEMS, seed=3)
    vectors = embed_text(REGEX_EMBEDDER, sentences, l2_normalize=True)
    # Two embedding runs (train: even ids, val: odd ids), as a searcher built over both sees them;
    # val repeats item s0, which is read once.
    shard_dirs = []
    for split, ids in (("train", range(0, NUM_ITEMS, 2)), ("val", [*range(1, NUM_ITEMS, 2), 0])):
        shards = folder / "shards" / split
        shards.mkdir(parents=True)
        name = "embeddings-00000-of-00001.tfrecord"
        with tf.io.TFRecordWriter(str(shards / name)) as writer:
            for i in ids:
                writer.write(encode_record(EmbeddingRecord(f"s{i}", f"/corpus/s{i}.png", vectors[i], (sentences[i],))))
        manifest = Manifest(count=len(ids), dimension=vectors.shape[1], model_fingerprint="test", shards=[name])
        write_text_atomically(str(shards / "manifest.json"), manifest.to_json())
        shard_dirs.append(str(shards))
    annotations = [{"image_id": f"s{i}", "caption": s} for i, s in enumerate(sentences)]
    annotations.append({"image_id": "not-indexed", "caption": "the film"})
    (folder / "captions.json").write_text(json.dumps({"annotations": annotations}))
    np.save(folder / "vectors.npy", vectors)
    metadata = [search_fixtures.item_metadata(f"s{i}", f"/corpus/s{i}.png", [s]) for i, s in enumerate(sentences)]
    searchers = {}
    for leaves, searched in [(1, 1), (8, 8)]:
        path = str(folder / f"searcher_{leaves}_{searched}.tflite")
        search_fixtures.build_float_searcher(REGEX_EMBEDDER, str(folder / "vectors.npy"), metadata, path, leaves, searched)
        searchers[(leaves, searched)] = path
    # The same index searching one leaf of eight, made the way the sweep makes its variants.
    searchers[(8, 1)] = rewrite_leaves_to_search(searchers[(8, 8)], str(folder / "searcher_8_1.tflite"), 1)
    return {"folder": folder, "shards": shard_dirs, "captions": str(folder / "captions.json"), "searchers": searchers}


def _run(corpus: dict, searcher: str, out: Path, *extra: str) -> int:
    return evaluate.main(
        ["--searcher", searcher, "--text-embedder", REGEX_EMBEDDER, "--captions", corpus["captions"],
         "--shards", corpus["shards"][0], "--shards", corpus["shards"][1], "--out", str(out), "--max-queries", "60", "--sweep-queries", "40", *extra]
    )


def test_exact_searcher_report(corpus, tmp_path: Path, capsys) -> None:
    out = tmp_path / "report"
    assert _run(corpus, corpus["searchers"][(8, 8)], out, "--leaves", "1,2,4,8,16") == 0
    report = json.loads((out / "report.json").read_text())
    assert {"ks", "top_k_accuracy", "ann_recall", "latency_ms", "size_bytes", "leaves_sweep", "examples", "notes"} <= set(report)
    encoder = report["text_embedder_latency_ms"]  # the encoder's share of a query, timed alone
    assert 0 < encoder["p50"] <= encoder["p99"] and encoder["count"] >= 1
    assert report["num_items"] == NUM_ITEMS and report["num_queries"] == 60 and report["num_captions"] == NUM_ITEMS + 1
    assert (report["num_leaves"], report["leaves_to_search"], report["distance"]) == (8, 8, "dot_product")
    assert read_searcher(corpus["searchers"][(8, 1)]).num_leaves_to_search == 1
    for k in ("1", "5", "10", "100"):
        assert report["top_k_accuracy"]["exact"][k] == 1.0
        assert report["top_k_accuracy"]["searcher"][k] == 1.0  # all leaves searched: exact
        assert report["ann_recall"][k] == pytest.approx(1.0)
    assert report["short_result_lists"] == {"1": 0, "5": 0, "10": 0, "100": 0}
    lat = report["latency_ms"]
    assert 0 < lat["p50"] <= lat["p95"] <= lat["p99"] and lat["count"] == 60
    assert set(report["latency_ms_by_k"]) == {"10", "100"} and report["latency_ms_by_k"]["10"]["count"] == 60
    assert report["size_bytes"]["index"] > NUM_ITEMS * 16 * 4
    assert report["size_bytes"]["searcher"] > report["size_bytes"]["index"]
    sweep = report["leaves_sweep"]
    assert [s["leaves_to_search"] for s in sweep] == [1, 2, 4, 8]  # capped at the 8 leaves
    assert sweep[-1]["recall_at_10"] == pytest.approx(1.0)
    assert [s["recall_at_10"] for s in sweep] == sorted(s["recall_at_10"] for s in sweep)
    assert any("not in the shards" in note for note in report["notes"])
    assert any("1 duplicate image ids" in note for note in report["notes"])
    assert report["shards"] == corpus["shards"]
    png = (out / "recall_vs_latency.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    page = (out / "report.html").read_text()
    assert "data:image/png;base64," in page and "Example queries" in page and "max_results = 10<" in page
    assert "TextEmbedder alone (the encoder&#x27;s share)<" in page  # html-escaped cell
    for example in report["examples"]:
        assert example["result_image_ids"][0] == example["expected_image_id"]
        assert example["caption"] in page
    assert "report.html" in capsys.readouterr().out


def test_one_leaf_of_eight_misses_and_reports_short_lists(corpus, tmp_path: Path) -> None:
    out = tmp_path / "report"
    assert _run(corpus, corpus["searchers"][(8, 1)], out, "--no-sweep", "--ks", "100,1,5") == 0
    report = json.loads((out / "report.json").read_text())
    assert report["ks"] == [1, 5, 100] and set(report["top_k_accuracy"]["searcher"]) == {"1", "5", "100"}
    # 240 items in 8 leaves: one leaf cannot hold 100 results for every query.
    assert report["short_result_lists"]["100"] > 0
    assert any("fewer results than k" in note for note in report["notes"])
    assert report["ann_recall"]["100"] < 1.0
    assert report["top_k_accuracy"]["exact"]["100"] == 1.0
    assert report["top_k_accuracy"]["searcher"]["1"] <= report["top_k_accuracy"]["exact"]["1"]
    assert report["leaves_sweep"] == [] and not (out / "recall_vs_latency.png").exists()


def test_bad_inputs_are_named(corpus, tmp_path: Path) -> None:
    base = ["--text-embedder", REGEX_EMBEDDER, "--captions", corpus["captions"], "--shards", corpus["shards"][0], "--out", str(tmp_path)]
    with pytest.raises(BeamlensError, match="searcher file not found"):
        evaluate.main(["--searcher", str(tmp_path / "none.tflite"), *base])
    searcher = corpus["searchers"][(1, 1)]
    with pytest.raises(BeamlensError, match="and no manifest.json in"):
        evaluate.main(["--searcher", searcher, *base[:4], "--shards", str(tmp_path), "--out", str(tmp_path)])
    other = tmp_path / "other.json"
    other.write_text(json.dumps([{"image_id": "zzz", "caption": "a cat"}]))
    with pytest.raises(BeamlensError, match="none of the captions"):
        evaluate.main(["--searcher", searcher, "--text-embedder", REGEX_EMBEDDER, "--captions", str(other), *base[4:]])
    with pytest.raises(BeamlensError, match="cannot be opened as a text embedder"):
        evaluate.main(["--searcher", searcher, "--text-embedder", IMAGE_EMBEDDER, *base[2:], "--no-sweep"])
    assert not os.path.exists(tmp_path / "report.json")


def test_images_folders_give_the_report_its_thumbnails(corpus, tmp_path: Path) -> None:
    """Items' URIs (/corpus/sN.png) do not exist here; --images DIR finds them by name."""
    from PIL import Image  # noqa: PLC0415

    photos = tmp_path / "photos"
    photos.mkdir()
    colours = {}
    for i in range(NUM_ITEMS):
        colours[f"s{i}"] = (i % 256, 40, 200)
        Image.new("RGB", (24, 24), colours[f"s{i}"]).save(photos / f"s{i}.png")
    without, with_images = tmp_path / "without", tmp_path / "with"
    assert _run(corpus, corpus["searchers"][(8, 8)], without, "--no-sweep", "--examples", "3") == 0
    assert _run(corpus, corpus["searchers"][(8, 8)], with_images, "--no-sweep", "--examples", "3", "--images", str(photos)) == 0
    bare, illustrated = (p / "report.html" for p in (without, with_images))
    assert "data:image/jpeg;base64," not in bare.read_text()
    page = illustrated.read_text()
    report = json.loads((with_images / "report.json").read_text())
    shown = {i for example in report["examples"] for i in example["result_image_ids"]}
    assert page.count("data:image/jpeg;base64,") == sum(len(e["result_image_ids"]) for e in report["examples"])
    assert shown and all(f'alt="{i}"' in page for i in shown)
