"""The real Task Library reads what the searcher builder writes (TextSearcher, ImageSearcher)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tensorflow as tf  # noqa: F401  (load TF first: Task Library work then goes to the worker process)

from beamlens.models import compat
from beamlens.models.searcher import metadata_json, read_searcher, rewrite_leaves_to_search
from beamlens.pipelines import build_searcher
from tests import searcher_tasklib_helpers as h
from tests.conftest import TESTDATA, TFLITE_SUPPORT_DATA
from tests.search_fixtures import regex_sentences

REGEX_EMBEDDER = str(TFLITE_SUPPORT_DATA / "regex_one_embedding_with_metadata.tflite")
IMAGE_EMBEDDER = str(TESTDATA / "models" / "mobilenet_v3_small_075_224_embedder.tflite")
GOLDEN_JSON = TESTDATA / "models" / "mobilenet_v3_small_100_224_embedder_scann.json"


def _ids(results):
    return [[json.loads(m)["id"] for m, _ in r] for r in results]


@pytest.fixture(scope="module")
def text_20k(tmp_path_factory):
    """20,000 16-d items: 2,000 real sentence embeddings (regex TextEmbedder) + 18,000 random unit vectors."""
    folder = tmp_path_factory.mktemp("text20k")
    sentences = regex_sentences(str(TFLITE_SUPPORT_DATA / "vocab_for_regex_tokenizer.txt"), 2200)
    embedded = compat.call_tflite(h.text_embed, REGEX_EMBEDDER, sentences)
    rng = np.random.default_rng(7)
    noise = rng.normal(size=(18000, 16)).astype(np.float32)
    real = embedded[:2000] / np.linalg.norm(embedded[:2000], axis=1, keepdims=True)
    vectors = np.concatenate([real, noise / np.linalg.norm(noise, axis=1, keepdims=True)]).astype(np.float32)
    ids = [f"s{i}" for i in range(2000)] + [f"r{i}" for i in range(18000)]
    captions = [[s] for s in sentences[:2000]] + [[] for _ in range(18000)]
    h.write_shards(folder / "shards", h.records_for(vectors, ids, captions), num_shards=3)
    out = folder / "out"
    summary = build_searcher.run(build_searcher.build_parser().parse_args(
        ["--shards", str(folder / "shards"), "--out", str(out), "--text-embedder", REGEX_EMBEDDER,
         "--format", "tflite", "--format", "scann_index_file"]))
    return {"folder": folder, "out": out, "vectors": vectors, "ids": ids, "queries": sentences[2000:],
            "query_vectors": embedded[2000:], "summary": summary}


def test_text_searcher_recall_at_10_with_automatic_defaults(text_20k):
    searcher = str(text_20k["out"] / "text_searcher.tflite")
    results = compat.call_tflite(h.text_search_many, searcher, text_20k["queries"], 10)
    exact = np.argsort(-(text_20k["query_vectors"] @ text_20k["vectors"].T), axis=1)[:, :10]
    ids = text_20k["ids"]
    recall = np.mean([len(set(got) & {ids[j] for j in ex}) / 10 for got, ex in zip(_ids(results), exact)])
    assert recall >= 0.95, recall
    build = text_20k["summary"]["build"]
    assert build["num_items"] == 20000 and build["num_leaves"] == 141  # about sqrt(20,000)
    assert build["estimated_recall_at_10"] >= 0.95
    assert 1 <= build["num_leaves_to_search"] < build["num_leaves"]
    # distances are negative dot products of the (unnormalised) query with the unit items
    first = results[0][0]
    top = ids.index(json.loads(first[0])["id"])
    assert first[1] == pytest.approx(-float(text_20k["query_vectors"][0] @ text_20k["vectors"][top]), abs=1e-5)
    info = read_searcher(searcher)
    assert info.num_items == 20000 and info.num_leaves == 141
    assert info.num_leaves_to_search == build["num_leaves_to_search"]
    user = json.loads(compat.call_tflite(h.text_user_info, searcher))
    assert user["num_items"] == 20000 and user["dimension"] == 16 and user["model_fingerprint"] == "sha256:test"


def test_bare_index_and_searcher_agree(text_20k):
    queries = text_20k["queries"][:20]
    packed = compat.call_tflite(h.text_search_many, str(text_20k["out"] / "text_searcher.tflite"), queries, 5)
    bare = compat.call_tflite(h.text_search_many, REGEX_EMBEDDER, queries, 5, str(text_20k["out"] / "index.ldb"))
    assert _ids(packed) == _ids(bare)


def test_rewrite_leaves_to_search_is_what_the_task_library_searches(text_20k, tmp_path):
    searcher = str(text_20k["out"] / "text_searcher.tflite")
    info = read_searcher(searcher)
    one, every = str(tmp_path / "one.tflite"), str(tmp_path / "all.tflite")
    rewrite_leaves_to_search(searcher, one, 1)
    rewrite_leaves_to_search(searcher, every, info.num_leaves)
    assert read_searcher(one).num_leaves_to_search == 1 and read_searcher(every).num_leaves_to_search == 141
    queries = text_20k["queries"][:30]
    # One leaf holds ~140 items: asking for 500 returns only that leaf's items.
    few = compat.call_tflite(h.text_search_many, one, queries, 500)
    assert all(len(r) <= max(info.partition_sizes) for r in few)
    # All leaves + float scoring = exact search: the same 10 best distances (sentence embeddings
    # have near-ties, so ids may swap within float rounding, distances may not).
    full = compat.call_tflite(h.text_search_many, every, queries, 10)
    exact = -np.sort(text_20k["query_vectors"][:30] @ text_20k["vectors"].T, axis=1)[:, ::-1][:, :10]
    got = np.array([[d for _, d in r] for r in full])
    np.testing.assert_allclose(got, exact, atol=1e-6)


def test_same_top1_as_the_model_maker_searcher(tmp_path):
    model_maker = str(TFLITE_SUPPORT_DATA / "regex_searcher.tflite")
    sentences = read_searcher(model_maker, first_items=100).first_items  # Model Maker's metadata IS the sentence
    assert len(sentences) == 5
    # Model Maker stored L2-normalised embeddings (TextDataLoader l2_normalize=True) under squared L2.
    vectors = compat.call_tflite(h.text_embed, REGEX_EMBEDDER, sentences)
    ids = [f"s{i}" for i in range(len(sentences))]
    h.write_shards(tmp_path / "shards", h.records_for(vectors, ids, [[s] for s in sentences]), num_shards=1)
    build_searcher.main(["--shards", str(tmp_path / "shards"), "--out", str(tmp_path / "out"),
                         "--text-embedder", REGEX_EMBEDDER, "--distance", "squared_l2", "--normalize"])
    ours = str(tmp_path / "out" / "text_searcher.tflite")
    queries = sentences + ["a sunny day with a cat", "the mouse", "bought a new car", "excellent weather"]
    theirs = compat.call_tflite(h.text_search_many, model_maker, queries, 1)
    mine = compat.call_tflite(h.text_search_many, ours, queries, 1)
    their_top = [r[0][0].decode() for r in theirs]
    my_top = [json.loads(r[0][0])["captions"][0] for r in mine]
    assert my_top == their_top
    assert my_top[:5] == sentences
    assert [r[0][1] for r in mine] == pytest.approx([r[0][1] for r in theirs], abs=1e-4)


def test_image_searcher_finds_the_photo_itself_and_metadata_matches_model_maker(tmp_path):
    from PIL import Image  # noqa: PLC0415

    sources = sorted(
        [p for p in TFLITE_SUPPORT_DATA.iterdir() if p.suffix in (".jpg", ".png")]
        + [p for p in (TESTDATA / "skimage").iterdir() if p.suffix in (".jpg", ".png")]
    )
    photos = []  # the Task Library takes RGB files: grayscale/RGBA photos are converted once
    for source in sources:
        target = tmp_path / "photos" / (source.stem + ".png")
        target.parent.mkdir(exist_ok=True)
        Image.open(source).convert("RGB").save(target)
        photos.append(str(target))
    vectors = compat.call_tflite(h.image_embed_files, IMAGE_EMBEDDER, photos)
    ids = [p.rsplit("/", 1)[-1] for p in photos]
    h.write_shards(tmp_path / "shards", h.records_for(vectors, ids), num_shards=2)
    build_searcher.main(["--shards", str(tmp_path / "shards"), "--out", str(tmp_path / "out"),
                         "--image-embedder", IMAGE_EMBEDDER, "--normalize"])
    searcher = str(tmp_path / "out" / "image_searcher.tflite")
    results = compat.call_tflite(h.image_search_files, searcher, photos, 3)
    assert [r[0] for r in _ids(results)] == ids
    assert len(photos) >= 20
    # Metadata layout as Model Maker wrote it (golden JSON from tensorflow/examples).
    golden = json.loads(GOLDEN_JSON.read_text())
    ours = metadata_json(searcher)
    golden_file = golden["subgraph_metadata"][0]["output_tensor_metadata"][0]["associated_files"]
    our_files = ours["subgraph_metadata"][0]["output_tensor_metadata"][0]["associated_files"]
    assert our_files == golden_file
    assert ours["min_parser_version"] == golden["min_parser_version"] == "1.4.0"


@pytest.mark.parametrize("lookup", ["int8", "int16"])
def test_recall_simulation_matches_the_device_ah_search(text_20k, tmp_path, lookup):
    """The builder's recall sweep re-implements the device's AH scoring (fixed-point LUT included):
    its top 10 for a query must be the Task Library's top 10."""
    from beamlens.models.searcher import ScaNNOptions, ScoreAH, Tree, build_index  # noqa: PLC0415
    from beamlens.models.searcher.autotune import AHModel, device_distances  # noqa: PLC0415
    from beamlens.models.searcher.sstable import Table  # noqa: PLC0415
    from beamlens.models.searcher.wire import decode_index_config  # noqa: PLC0415

    vectors = text_20k["vectors"][:2000]
    np.save(tmp_path / "v.npy", vectors)
    (tmp_path / "m.jsonl").write_text("".join(f'{{"id":"{i}"}}\n' for i in range(len(vectors))))
    options = ScaNNOptions("dot_product", Tree(10, 10), ScoreAH(2, 0.2, lookup_type=lookup))
    build_index(str(tmp_path / "v.npy"), str(tmp_path / "m.jsonl"), options, str(tmp_path / "i.ldb"))
    table = Table((tmp_path / "i.ldb").read_bytes())
    config = decode_index_config(table.get(b"INDEX_CONFIG"), with_arrays=True)
    blocks = config["embedding_dim"]
    codes = np.concatenate([np.frombuffer(table.get(f"E_{p}".encode()), np.uint8).reshape(-1, blocks) for p in range(10)])
    model = AHModel(config["asymmetric_hashing"]["codebooks"], codes, lookup)
    queries = text_20k["queries"][:25]
    device = compat.call_tflite(h.text_search_many, REGEX_EMBEDDER, queries, 10, str(tmp_path / "i.ldb"))
    for query, got in zip(text_20k["query_vectors"][:25], device):
        simulated = np.sort(device_distances(query, model, "dot_product"))[:10]
        # Fixed-point sums tie often, so compare the ten best distances, not ids.
        np.testing.assert_allclose([d for _, d in got], simulated, rtol=1e-4, atol=1e-6)
