"""benchmarks/hard_vectors.py: the hardness measure orders easy and hard sets, the generator keeps
the real vectors' shape, and the calibration never returns a set easier than the real ones."""

from __future__ import annotations

import numpy as np

from benchmarks import hard_vectors as hv


def _clustered(count: int, clusters: int, spread: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = hv.unit(rng.normal(size=(clusters, 32)))
    return hv.unit(centres[rng.integers(clusters, size=count)] + spread * rng.normal(size=(count, 32)) / np.sqrt(32))


def test_tight_clusters_are_easier_than_a_uniform_sphere() -> None:
    queries = _clustered(200, 20, 0.2, seed=1)
    easy = hv.hardness(_clustered(2000, 20, 0.2), queries)
    hard = hv.hardness(hv.unit(np.random.default_rng(2).normal(size=(2000, 32))), queries)
    assert easy.num_leaves == hard.num_leaves == 45
    assert easy.scanned_share < hard.scanned_share and easy.leaves_needed < hard.leaves_needed
    assert 0 < easy.scanned_share <= 1 and "of 45 leaves" in easy.describe()


def test_the_generator_keeps_the_mean_direction_and_flattening_evens_the_spectrum() -> None:
    real = _clustered(3000, 5, 0.5)
    for flatten in (0.0, 1.0):
        samples = hv.Generator.fit(real, flatten).sample(4000, seed=3)
        np.testing.assert_allclose(np.linalg.norm(samples, axis=1), 1.0, atol=1e-5)
        cosine = float((hv.unit(samples.mean(0, keepdims=True)) @ hv.unit(real.mean(0, keepdims=True)).T)[0, 0])
        assert cosine > 0.9, (flatten, cosine)
    spectrum = lambda rows: np.sort(np.linalg.eigvalsh(np.cov(rows, rowvar=False)))[::-1]  # noqa: E731
    steep = spectrum(hv.Generator.fit(real, 0.0).sample(4000, seed=4))
    flat = spectrum(hv.Generator.fit(real, 1.0).sample(4000, seed=4))
    assert steep[0] / steep[10] > 3 * flat[0] / flat[10]


def test_calibration_is_at_least_as_hard_as_every_real_set() -> None:
    queries = _clustered(150, 8, 0.3, seed=5)
    real_sets = [("clustered", _clustered(1500, 8, 0.3), queries), ("looser", _clustered(600, 8, 0.8, seed=6), queries)]
    found = hv.calibrate(real_sets[0][1], real_sets)
    assert found.generator.flatten in hv.FLATTEN_STEPS
    pairs = list(zip(found.real, found.synthetic))
    assert [name for (name, _), _ in pairs] == ["clustered", "looser"]
    assert found.generator.flatten == hv.FLATTEN_STEPS[-1] or all(
        synthetic.scanned_share >= real.scanned_share for (_, real), (_, synthetic) in pairs)
