"""The search API through the real Task Library: results, metadata, lifetime and bad input."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from PIL import Image

from beamlens.models import compat
from beamlens.models.errors import BeamlensError
from beamlens.models.search.runtime import IMAGE, Searcher, embed_text
from beamlens.models.search.results import SearchHit, parse_item_metadata
from tests import search_fixtures
from tests.conftest import TESTDATA, TFLITE_SUPPORT_DATA

REGEX_SEARCHER = str(TFLITE_SUPPORT_DATA / "regex_searcher.tflite")
REGEX_EMBEDDER = str(TFLITE_SUPPORT_DATA / "regex_one_embedding_with_metadata.tflite")
IMAGE_EMBEDDER = str(TESTDATA / "models" / "mobilenet_v3_small_075_224_embedder.tflite")
IMAGE_INDEX = str(TFLITE_SUPPORT_DATA / "searcher_index.ldb")
BURGER = str(TFLITE_SUPPORT_DATA / "burger.jpg")
MODEL_MAKER_SENTENCES = {
    "The weather was excellent.",
    "The sun was shining on that day.",
    "The cat is chasing after the mouse.",
    "It was a sunny day.",
    "He was very happy with his newly bought car.",
}


def test_model_maker_searcher_returns_sorted_plain_text_hits() -> None:
    with Searcher(REGEX_SEARCHER, max_results=5) as searcher:
        assert searcher.user_info == "userinfo"
        results = searcher.search("The weather was excellent.")
    assert results.requested_k == 5 and results.modality == "text"
    assert [hit.rank for hit in results.hits] == [1, 2, 3, 4, 5]
    assert set(results.image_ids) == MODEL_MAKER_SENTENCES
    top = results.hits[0]
    # Model Maker metadata is plain text: it becomes the id, and there is no URI.
    assert top.image_id == "The weather was excellent." and top.uri == "" and top.captions == ()
    assert top.metadata_raw == b"The weather was excellent."
    assert top.distance == pytest.approx(0.88966, abs=1e-3)
    distances = [hit.distance for hit in results.hits]
    assert distances == sorted(distances)


def test_asking_for_more_than_max_results_reopens_and_fewer_truncates() -> None:
    with Searcher(REGEX_SEARCHER, max_results=2) as searcher:
        assert len(searcher.search("It was a sunny day.").hits) == 2
        assert len(searcher.search("It was a sunny day.", k=4).hits) == 4
        assert len(searcher.search("It was a sunny day.", k=1).hits) == 1
        many = searcher.search_many(["It was a sunny day.", "The cat is chasing after the mouse."], k=3)
    assert [len(r.hits) for r in many] == [3, 3]
    assert many[1].query == "The cat is chasing after the mouse."


def test_searches_run_in_an_isolated_worker_beside_tensorflow() -> None:
    import tensorflow as tf  # noqa: F401 (the point: TensorFlow is loaded in this process)

    assert not compat.is_tflite_process()
    with Searcher(REGEX_SEARCHER, max_results=1) as searcher:
        assert searcher.search("The weather was excellent.").hits[0].image_id == "The weather was excellent."


def test_closed_searcher_refuses_queries_and_frees_the_worker_state() -> None:
    from beamlens.models.search import runtime as search_api

    searcher = Searcher(REGEX_SEARCHER)
    handle = searcher._handle
    assert compat.call_tflite(search_api._search, handle, [("text", "a day")], 1)
    searcher.close()
    searcher.close()  # closing twice is harmless
    with pytest.raises(BeamlensError, match="closed"):
        searcher.search("anything")
    with pytest.raises(BeamlensError, match=f"handle {handle} is not open"):
        compat.call_tflite(search_api._search, handle, [("text", "a day")], 1)
    with pytest.raises(BeamlensError, match="num_threads"):
        Searcher(REGEX_SEARCHER, num_threads=0)


def test_a_searcher_dropped_without_close_is_freed_by_the_next_call() -> None:
    import gc

    from beamlens.models.search import runtime as search_api

    dropped = Searcher(REGEX_SEARCHER)
    handle = dropped._handle
    assert handle in compat.call_tflite(search_api._open_handles)
    del dropped
    gc.collect()
    with Searcher(REGEX_SEARCHER) as other:
        assert handle not in compat.call_tflite(search_api._open_handles)
        assert other._handle in compat.call_tflite(search_api._open_handles)


def test_image_queries_as_path_bytes_and_array_agree() -> None:
    # A standalone Task Library test index (bird, burger, car, cat, dog) next to a 1024-d embedder.
    with Searcher(IMAGE_EMBEDDER, modality=IMAGE, max_results=5, index_file=IMAGE_INDEX) as searcher:
        by_path = searcher.search(BURGER)
        with open(BURGER, "rb") as stream:
            by_bytes = searcher.search(stream.read())
        pixels = np.asarray(Image.open(BURGER).convert("RGB"))
        by_array = searcher.search(pixels)
    assert set(by_path.image_ids) == {"bird", "burger", "car", "cat", "dog"}
    assert by_bytes.image_ids == by_path.image_ids
    assert [h.distance for h in by_bytes.hits] == pytest.approx([h.distance for h in by_path.hits])
    assert by_array.image_ids[:2] == by_path.image_ids[:2]
    assert by_path.query == BURGER


def test_unreadable_query_image_names_the_file(tmp_path) -> None:
    not_an_image = tmp_path / "notes.jpg"
    not_an_image.write_text("not pixels")
    with Searcher(IMAGE_EMBEDDER, modality=IMAGE, index_file=IMAGE_INDEX) as searcher:
        with pytest.raises(BeamlensError, match=r"notes\.jpg: not an image"):
            searcher.search(str(not_an_image))
        with pytest.raises(BeamlensError, match="query image not found"):
            searcher.search(str(tmp_path / "absent.jpg"))
        with pytest.raises(BeamlensError, match="HxWx3"):
            searcher.search(np.zeros((4, 4, 7), np.uint8))


@pytest.mark.parametrize(
    "make_path, message",
    [
        (lambda tmp: str(tmp / "missing.tflite"), "searcher file not found"),
        (lambda tmp: _write(tmp / "plain.tflite", "hello"), "not a TFLite model at all"),
        (lambda tmp: REGEX_EMBEDDER, "without a ScaNN index, not a searcher"),
        (lambda tmp: str(tmp), "not a file"),
    ],
)
def test_bad_searcher_files_get_clear_errors(tmp_path, make_path, message) -> None:
    with pytest.raises(BeamlensError, match=message):
        Searcher(make_path(tmp_path))


def test_wrong_modality_and_bad_queries_are_refused() -> None:
    with pytest.raises(BeamlensError, match="cannot be opened as an image searcher"):
        Searcher(REGEX_SEARCHER, modality=IMAGE)
    with pytest.raises(BeamlensError, match="modality"):
        Searcher(REGEX_SEARCHER, modality="audio")
    with pytest.raises(BeamlensError, match="k must be a positive"):
        Searcher(REGEX_SEARCHER, max_results=0)
    with Searcher(REGEX_SEARCHER) as searcher:
        with pytest.raises(BeamlensError, match="query is empty"):
            searcher.search("   ")
        with pytest.raises(BeamlensError, match="k must be a positive"):
            searcher.search("a day", k=0)


def test_embed_text_uses_the_task_library_embedder() -> None:
    vectors = embed_text(REGEX_EMBEDDER, ["The weather was excellent.", "It was a sunny day.", "The weather was excellent."])
    assert vectors.shape == (3, 16) and vectors.dtype == np.float32
    np.testing.assert_array_equal(vectors[0], vectors[2])
    assert not np.allclose(vectors[0], vectors[1])
    unit = embed_text(REGEX_EMBEDDER, ["It was a sunny day."], l2_normalize=True)
    assert np.linalg.norm(unit[0]) == pytest.approx(1.0, abs=1e-5)
    with pytest.raises(BeamlensError, match="cannot be opened as a text embedder"):
        embed_text(IMAGE_EMBEDDER, ["a dog"])


def test_metadata_parsing_handles_beamlens_json_and_plain_text() -> None:
    item = parse_item_metadata(json.dumps({"id": 42, "uri": "/x/42.jpg", "captions": ["a dog", "a pet"]}).encode())
    assert (item.image_id, item.uri, item.captions) == ("42", "/x/42.jpg", ("a dog", "a pet"))
    assert parse_item_metadata(b"burger").image_id == "burger"
    assert parse_item_metadata(b"[1, 2]").image_id == "[1, 2]"
    assert parse_item_metadata(b'{"uri": "no id"}').image_id == '{"uri": "no id"}'
    assert parse_item_metadata("caf\u00e9".encode()).image_id == "caf\u00e9"
    hit = SearchHit.from_neighbor(1, b'{"id": "7", "uri": "u"}', -0.5)
    assert hit.to_dict() == {"rank": 1, "distance": -0.5, "image_id": "7", "uri": "u", "captions": [], "metadata_raw": '{"id": "7", "uri": "u"}'}


def _write(path, text: str) -> str:
    path.write_text(text)
    return os.fspath(path)


# ---------------------------------------------------------------------------------------------
# An exact (float, one leaf) searcher over a few hundred sentence embeddings
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def sentence_searcher(tmp_path_factory) -> tuple[str, list[str], np.ndarray]:
    folder = tmp_path_factory.mktemp("sentences")
    sentences = search_fixtures.regex_sentences(str(TFLITE_SUPPORT_DATA / "vocab_for_regex_tokenizer.txt"), 300)
    vectors = embed_text(REGEX_EMBEDDER, sentences)
    np.save(folder / "vectors.npy", vectors)
    metadata = [search_fixtures.item_metadata(f"s{i}", f"/corpus/s{i}.jpg", [s]) for i, s in enumerate(sentences)]
    path = search_fixtures.build_float_searcher(REGEX_EMBEDDER, str(folder / "vectors.npy"), metadata, str(folder / "exact.tflite"))
    return path, sentences, vectors


def test_exact_searcher_matches_numpy_brute_force(sentence_searcher) -> None:
    path, sentences, vectors = sentence_searcher
    queries = [sentences[3], sentences[150], "the movie was not good", "a film with his friends"]
    query_vectors = embed_text(REGEX_EMBEDDER, queries)
    with Searcher(path, max_results=20) as searcher:
        results = searcher.search_many(queries, k=20)
    for query_vector, result in zip(query_vectors, results):
        distances = -(vectors @ query_vector)
        expected = np.argsort(distances, kind="stable")[:20]
        assert result.image_ids == [f"s{i}" for i in expected]
        np.testing.assert_allclose([h.distance for h in result.hits], distances[expected], rtol=1e-4, atol=1e-7)
        top = result.hits[0]
        row = int(top.image_id[1:])
        assert top.uri == f"/corpus/{top.image_id}.jpg" and top.captions == (sentences[row],)
