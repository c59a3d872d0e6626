"""``from beamlens.model_maker import searcher``: the seed's Model Maker code, unchanged, makes a
searcher the real Task Library loads and answers with the right neighbours."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf  # noqa: F401  (load TF first: Task Library work then goes to the worker process)

from beamlens.model_maker import searcher
from beamlens.models import compat
from beamlens.models.errors import BeamlensError
from beamlens.models.searcher import read_searcher
from tests import searcher_tasklib_helpers as h
from tests.conftest import TESTDATA

IMAGE_EMBEDDER = str(TESTDATA / "models" / "mobilenet_v3_small_075_224_embedder.tflite")


@pytest.fixture(scope="module")
def corpus():
    """5,000 1024-d items: 85 real photos (the Task Library's own ImageEmbedder on coco-mini-cc) + random unit vectors."""
    photos = sorted(str(p) for p in (TESTDATA / "coco-mini-cc" / "train2017").glob("*.jpg"))
    embedded = compat.call_tflite(h.image_embed_files, IMAGE_EMBEDDER, photos)
    noise = np.random.default_rng(3).normal(size=(5000 - len(photos), embedded.shape[1])).astype(np.float32)
    vectors = np.concatenate([embedded, noise])
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    metadata = [Path(p).name for p in photos] + [f"noise {i}" for i in range(len(noise))]
    return {"photos": photos, "vectors": vectors, "metadata": metadata}


# The seed's code, as written for Model Maker (only its import line differs); run as written.
SEED_SNIPPET = """
scann_options = searcher.ScaNNOptions(
      distance_measure='dot_product',
      tree=searcher.Tree(num_leaves=351, num_leaves_to_search=4),
      score_ah=searcher.ScoreAH(1, anisotropic_quantization_threshold=0.2))
data = searcher.DataLoader(tflite_embedder_path, image_embeddings, metadata)
model = searcher.Searcher.create_from_data(data, scann_options)
model.export(export_filename='searcher.tflite', userinfo='', export_format=searcher.ExportFormat.TFLITE)
"""


def _seed_snippet(tflite_embedder_path: str, image_embeddings: np.ndarray, metadata: list[str]) -> None:
    exec(SEED_SNIPPET, {"searcher": searcher, "tflite_embedder_path": tflite_embedder_path,  # noqa: S102
                        "image_embeddings": image_embeddings, "metadata": metadata})


def test_the_seed_snippet_runs_unchanged_and_the_task_library_finds_each_photo(corpus, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _seed_snippet(IMAGE_EMBEDDER, corpus["vectors"], corpus["metadata"])
    info = read_searcher(str(tmp_path / "searcher.tflite"))
    assert (info.num_items, info.num_leaves, info.num_leaves_to_search) == (5000, 351, 4)
    assert info.asymmetric_hashing is not None and info.user_info == ""
    results = compat.call_tflite(h.image_search_files, str(tmp_path / "searcher.tflite"), corpus["photos"], 3)
    found = np.mean([Path(p).name.encode() in [m for m, _ in r] for p, r in zip(corpus["photos"], results)])
    # 4 of 351 leaves and int8 lookups trade recall for speed, and k-means on this mostly-noise corpus
    # varies from run to run (0.45-0.79 measured): a wrong index or metadata order finds ~0. The exact
    # check is the next one: every distance returned is that item's own.
    assert found >= 0.25, found
    rows = {name: row for row, name in enumerate(corpus["metadata"])}
    queries = compat.call_tflite(h.image_embed_files, IMAGE_EMBEDDER, corpus["photos"])
    for query, result in zip(queries, results):  # each distance is -dot(query, that item), up to quantization
        exact = np.array([-query @ corpus["vectors"][rows[m.decode()]] for m, _ in result])
        assert np.allclose([d for _, d in result], exact, atol=0.05 * np.linalg.norm(query)), (result, exact)


def test_scann_index_file_export_and_userinfo(corpus, tmp_path):
    data = searcher.DataLoader(IMAGE_EMBEDDER, corpus["vectors"], corpus["metadata"])
    options = searcher.ScaNNOptions(distance_measure="dot_product",
                                    tree=searcher.Tree(num_leaves=20, num_leaves_to_search=20),
                                    score_brute_force=searcher.ScoreBruteForce())
    model = searcher.Searcher.create_from_data(data, options)
    index = model.export(searcher.ExportFormat.SCANN_INDEX_FILE, str(tmp_path / "index.ldb"), userinfo=b"mine")
    image = model.export(searcher.ExportFormat.TFLITE, str(tmp_path / "image.tflite"), userinfo="mine")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["image.tflite", "index.ldb"]  # no scratch left behind
    info = read_searcher(index)
    assert (info.kind, info.num_items, info.num_leaves, info.user_info) == ("index", 5000, 20, "mine")
    results = compat.call_tflite(h.image_search_files, image, corpus["photos"], 1)
    assert [r[0][0] for r in results] == [Path(p).name.encode() for p in corpus["photos"]]  # all leaves, floats: exact


def test_from_shards_indexes_embed_output_without_loading_it_here(corpus, tmp_path):
    ids = [Path(p).stem for p in corpus["photos"]] + [f"noise{i}" for i in range(2000 - len(corpus["photos"]))]
    h.write_shards(tmp_path / "shards", h.records_for(corpus["vectors"][:2000], ids), num_shards=2)
    data = searcher.DataLoader.from_shards(str(tmp_path / "shards"), IMAGE_EMBEDDER)
    assert len(data) == 0 and data.shards == [str(tmp_path / "shards")]
    options = searcher.ScaNNOptions(tree=searcher.Tree(num_leaves=10, num_leaves_to_search=10),
                                    score_brute_force=searcher.ScoreBruteForce())
    out = searcher.Searcher.create_from_data(data, options).export(searcher.ExportFormat.TFLITE, str(tmp_path / "s.tflite"))
    assert read_searcher(out).num_items == 2000
    results = compat.call_tflite(h.image_search_files, out, corpus["photos"][:10], 1)
    assert [json.loads(r[0][0])["id"] for r in results] == ids[:10]


def test_append_joins_loaders_like_model_maker(corpus):
    first = searcher.DataLoader(IMAGE_EMBEDDER, corpus["vectors"][:10], corpus["metadata"][:10])
    first.append(searcher.DataLoader(None, corpus["vectors"][10:15], corpus["metadata"][10:15]))
    assert len(first) == 15 and first.metadata[-1] == corpus["metadata"][14].encode()
    with pytest.raises(BeamlensError, match="cannot append 8-d embeddings to 1024-d"):
        first.append(searcher.DataLoader(None, np.ones((1, 8)), ["x"]))


@pytest.mark.parametrize("make, message", [
    (lambda: searcher.DataLoader(IMAGE_EMBEDDER, np.ones((3, 1024)), ["a", "b"]), "3 embeddings but 2 metadata items"),
    (lambda: searcher.DataLoader(IMAGE_EMBEDDER, np.ones(1024), []), "N x d array"),
    (lambda: searcher.DataLoader(IMAGE_EMBEDDER, np.ones((1, 1024)), ["two\nlines"]), "contains a newline"),
    (lambda: searcher.Searcher.create_from_data(searcher.DataLoader(None, np.ones((1, 1024)), ["a"]), searcher.ScaNNOptions())
     .export(searcher.ExportFormat.TFLITE, "x.tflite"), "needs the DataLoader's embedder_path"),
    (lambda: searcher.Searcher.create_from_data(searcher.DataLoader(IMAGE_EMBEDDER, np.ones((1, 1024)), ["a"]), searcher.ScaNNOptions())
     .export("TFLITE", "x.tflite"), "ExportFormat.TFLITE or SCANN_INDEX_FILE"),
])
def test_bad_input_is_refused_with_a_clear_message(make, message, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(BeamlensError, match=message):
        make()
    assert list(tmp_path.iterdir()) == []
