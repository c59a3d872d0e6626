"""The builder tunes a text searcher on text queries (issue 26): which texts, and that its promise is
what the Task Library TextSearcher then delivers on those queries."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tensorflow as tf  # noqa: F401  (the TF side of the split, as in the real command)

from beamlens.models import compat
from beamlens.models.errors import BeamlensError
from beamlens.models.knn import exact_knn
from beamlens.models.searcher import tuning_queries as tq
from beamlens.pipelines import build_searcher, cli
from tests import searcher_tasklib_helpers as h
from tests.conftest import TFLITE_SUPPORT_DATA

REGEX_EMBEDDER = str(TFLITE_SUPPORT_DATA / "regex_one_embedding_with_metadata.tflite")
WORDS = ("dog", "cat", "red", "car", "street", "man", "woman", "beach", "ball", "tree", "snow", "water", "child",
         "bicycle", "horse", "grass", "the", "a", "runs", "sits", "on", "in", "with", "weather", "sunny", "day")


def _captions(n: int, seed: int = 3) -> list[list[str]]:
    rng = np.random.default_rng(seed)
    return [[" ".join(rng.choice(WORDS, 6)) + "." for _ in range(2)] for _ in range(n)]


def _vectors(n: int, d: int = 16, seed: int = 2) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(30, d))
    v = centres[rng.integers(0, 30, n)] + 0.5 * rng.normal(size=(n, d))
    return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """3,000 16-d items (the regex embedder's space) with two captions each: enough for leaves."""
    folder = tmp_path_factory.mktemp("tuning")
    vectors, captions = _vectors(3000), _captions(3000)
    h.write_shards(folder / "shards", h.records_for(vectors, captions=captions), num_shards=2)
    return folder, vectors


def _build(shards, out, *extra: str) -> dict:
    args = ["--shards", str(shards), "--out", str(out), "--text-embedder", REGEX_EMBEDDER, *extra]
    return build_searcher.run(build_searcher.build_parser().parse_args(args))


def test_corpus_captions_are_sampled_one_per_item(tmp_path):
    lines = [{"id": str(i), "uri": "", "captions": [f"first {i}", f"second {i}"] if i % 2 else []} for i in range(400)]
    (tmp_path / "m.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    texts = tq.corpus_caption_texts(str(tmp_path / "m.jsonl"), 400, 50, seed=0)
    assert len(texts.texts) == 50 and texts.source.startswith("50 of the corpus's own captions")
    items = [int(t.split()[1]) for t in texts.texts]
    assert len(set(items)) == 50 and all(i % 2 for i in items)  # distinct items, only those with captions
    again = tq.corpus_caption_texts(str(tmp_path / "m.jsonl"), 400, 50, seed=0)
    assert list(again.texts) == list(texts.texts)  # reproducible


def test_a_corpus_without_captions_gets_generated_caption_like_texts(tmp_path):
    (tmp_path / "m.jsonl").write_text("".join(json.dumps({"id": str(i), "captions": []}) + "\n" for i in range(100)))
    chosen = tq.choose_texts(None, str(tmp_path / "m.jsonl"), 100, 40, seed=1)
    assert len(chosen.texts) == 40 and chosen.source.startswith("40 generated caption-like texts")
    assert all(t.startswith(("a ", "there is a ")) and t.endswith(".") for t in chosen.texts)
    assert len(set(chosen.texts)) > 30


def test_a_caption_file_comes_first(tmp_path):
    (tmp_path / "caps.json").write_text(json.dumps({"1": ["a dog on the beach"], "2": "a red car"}))
    chosen = tq.choose_texts(str(tmp_path / "caps.json"), "/nonexistent.jsonl", 10, 300, seed=0)
    assert list(chosen.texts) == ["a dog on the beach", "a red car"]
    assert chosen.source == f"2 captions from {tmp_path / 'caps.json'}"


def test_text_searcher_promise_is_what_the_task_library_delivers(corpus, tmp_path):
    """Tuned on captions, the promised recall@10 is the TextSearcher's own recall on the same
    captions against exact search (the builder simulates the device, quantization included)."""
    folder, vectors = corpus
    caps = tmp_path / "caps.json"
    caps.write_text(json.dumps([{"image_id": i, "caption": c[0]} for i, c in enumerate(_captions(500, seed=5))]))
    report = _build(folder / "shards", tmp_path / "out", "--target-recall", "0.9", "--tune-captions", str(caps))["build"]
    assert report["recall_query_kind"] == "text" and report["num_leaves"] == 55
    assert report["recall_queries"].startswith(f"text queries: 300 captions from {caps}")
    assert report["recall_queries"].endswith("embedded by regex_one_embedding_with_metadata.tflite")
    texts = list(tq.caption_file_texts(str(caps), 300, seed=0).texts)  # the builder's sample (seed 0)
    queries = compat.call_tflite(h.text_embed, REGEX_EMBEDDER, texts)
    exact = exact_knn(queries, vectors, 10)[0]
    found = compat.call_tflite(h.text_search_many, str(tmp_path / "out" / "text_searcher.tflite"), texts)
    ids = [f"img{i:06d}" for i in range(len(vectors))]
    hits = [len({ids[j] for j in row} & {json.loads(m)["id"] for m, _ in got}) for row, got in zip(exact, found)]
    measured = sum(hits) / (10 * len(hits))
    assert abs(report["estimated_recall_at_10"] - measured) <= 0.01, (report["estimated_recall_at_10"], measured)
    assert report["estimated_recall_at_10"] >= 0.9 and report["num_leaves_to_search"] < 55


def test_the_corpus_captions_are_the_default_text_queries(corpus, tmp_path):
    folder, _ = corpus
    report = _build(folder / "shards", tmp_path / "out")["build"]
    assert report["recall_query_kind"] == "text"
    assert report["recall_queries"].startswith("text queries: 300 of the corpus's own captions (one per sampled item)")


def test_tune_on_image_keeps_image_vectors_and_small_caption_files_are_used_whole(corpus, tmp_path):
    folder, _ = corpus
    image = _build(folder / "shards", tmp_path / "image", "--tune-on", "image")["build"]
    assert image["recall_query_kind"] == "image" and image["recall_queries"].startswith("300 held-out vectors")
    (tmp_path / "caps.json").write_text(json.dumps([{"image_id": 1, "caption": c[0]} for c in _captions(120, seed=9)]))
    given = _build(folder / "shards", tmp_path / "given", "--tune-captions", str(tmp_path / "caps.json"))["build"]
    assert given["recall_queries"].startswith(f"text queries: 120 captions from {tmp_path / 'caps.json'}")
    assert given["recall_query_kind"] == "text"


def test_an_image_searcher_alone_is_tuned_on_image_vectors(corpus, tmp_path):
    folder, _ = corpus
    report = build_searcher.run(build_searcher.build_parser().parse_args(
        ["--shards", str(folder / "shards"), "--out", str(tmp_path / "o"), "--format", "scann_index_file"]))["build"]
    assert report["recall_query_kind"] == "image"


@pytest.mark.parametrize("extra, message", [
    (["--tune-captions", "/no/such.json"], "caption file not found: /no/such.json"),
    (["--tune-captions", "{caps}", "--tune-on", "image"], "--tune-captions and --tune-on image contradict"),
    (["--tune-on", "text"], "argument --tune-on: invalid choice: 'text'"),
])
def test_bad_tuning_options_exit_2(corpus, tmp_path, capsys, extra, message):
    folder, _ = corpus
    (tmp_path / "caps.json").write_text("[]")
    extra = [e.replace("{caps}", str(tmp_path / "caps.json")) for e in extra]
    try:
        code = cli.main(["build-searcher", "--shards", str(folder / "shards"), "--out", str(tmp_path / "o"),
                         "--text-embedder", REGEX_EMBEDDER, *extra])
    except SystemExit as stop:  # argparse's own refusal
        code = stop.code
    assert code == 2
    err = capsys.readouterr().err
    assert "beamlens build-searcher: error:" in err and message in err
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


def test_tune_captions_needs_a_text_embedder(corpus, tmp_path):
    folder, _ = corpus
    (tmp_path / "caps.json").write_text('{"1": "a dog"}')
    with pytest.raises(BeamlensError, match="--tune-captions needs --text-embedder"):
        build_searcher.run(build_searcher.build_parser().parse_args(
            ["--shards", str(folder / "shards"), "--out", str(tmp_path / "o"), "--format", "scann_index_file",
             "--tune-captions", str(tmp_path / "caps.json")]))
