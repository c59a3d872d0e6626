"""The streamed index build (issue 26): scann trains on samples, every point is assigned and encoded
in chunks from the memory map, and the result is what scann itself would have assigned."""

from __future__ import annotations

import os
import tempfile

import numpy as np
import pytest

from beamlens.models import compat
from beamlens.models.searcher import options as o
from beamlens.models.searcher import read_searcher
from beamlens.models.searcher.scann_build import build_index


def _clustered(n: int, d: int = 32, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(60, d))
    v = centres[rng.integers(0, 60, n)] + 0.8 * rng.normal(size=(n, d))
    return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)


def _assignments(vectors: np.ndarray, distance: str, spherical: bool) -> tuple[np.ndarray, np.ndarray]:
    """(scann's own datapoint_to_token, beamlens' chunked assign_leaves on scann's centroids)."""
    from beamlens.models.searcher import scann_build  # noqa: PLC0415
    from beamlens.models.searcher.wire import read_scann_partitioner_centroids  # noqa: PLC0415

    pybind = compat.import_scann_pybind()
    builder = pybind.builder(vectors, 10, distance).tree(num_leaves=70, num_leaves_to_search=1,
                                                          training_sample_size=len(vectors), spherical=spherical)
    searcher = pybind.create_searcher(vectors, scann_build._scann_config(builder.score_brute_force()), 1)
    folder = tempfile.mkdtemp()
    searcher.serialize(folder)
    with open(os.path.join(folder, "serialized_partitioner.pb"), "rb") as stream:
        centroids = read_scann_partitioner_centroids(stream.read())
    scann_tokens = np.load(os.path.join(folder, "datapoint_to_token.npy")).ravel()
    return scann_tokens, scann_build.assign_leaves(vectors, centroids, chunk=1000)


@pytest.mark.parametrize("distance, spherical", [("dot_product", False), ("squared_l2", False), ("dot_product", True)])
def test_chunked_assignment_is_scanns_own(distance, spherical):
    """Once scann's k-means has converged (60k points) its tokens are the nearest centroids in L2;
    on a few thousand points its tokens are those of the last iteration, before the last centroid
    update (84% agree at 5k), and the builder keeps the nearest centroid, which it indexes and measures."""
    scann_tokens, ours = compat.call_tflite(_assignments, _clustered(60000), distance, spherical)
    assert len(ours) == 60000
    assert np.array_equal(scann_tokens, ours)


def test_tree_and_codebooks_from_samples_index_every_point(tmp_path):
    """3,000 points, the tree trained on 600 and AH on 400: all 3,000 are in the index and the
    sweep's recall is that of a working index."""
    vectors = _clustered(3000)
    np.save(tmp_path / "v.npy", vectors)
    (tmp_path / "m.jsonl").write_text("".join(f'{{"id":"{i}"}}\n' for i in range(3000)))
    options = o.ScaNNOptions("dot_product", o.Tree(40, 0, training_sample_size=600),
                             score_ah=o.ScoreAH(1, 0.2, training_sample_size=400, lookup_type="int16"))
    _, report = build_index(str(tmp_path / "v.npy"), str(tmp_path / "m.jsonl"), options, str(tmp_path / "i.ldb"),
                            auto=o.AutoOptions(target_recall=0.9))
    info = read_searcher(str(tmp_path / "i.ldb"))
    assert info.num_items == 3000 and info.num_leaves == 40
    assert report.num_leaves_to_search < 40 and report.estimated_recall_at_10 >= 0.9
    assert any(r.startswith("a query scores about ") for r in report.reasons)
