"""A million items on the phone (issue 26): on-device recall, latency, size and build cost, one run.

    .venv/bin/beamlens demo --workdir build/demo          # makes build/demo/caption-free
    .venv/bin/python -m benchmarks.million_on_device --model-dir build/demo/caption-free

Items: realistic synthetic vectors, a Gaussian with the mean and covariance of REAL image
embeddings (the model's vision encoder over the 1,000 Flickr8k dev photos), its spectrum flattened
until it is at least as hard to partition as the real set against real text queries
(benchmarks/hard_vectors.py). Queries: real human captions (Flickr8k dev) embedded by the model's
own text embedder, the student tower a phone runs; the builder is tuned on 300 of them
(``--tune-captions``), recall and latency are measured on 1,000 OTHER captions.

For each size (123,287, the seed's, and 1,000,000): the builder's own choice (default options,
target recall@10 0.95, 200 MB budget), built in a child process so its peak RSS is its own; the
Task Library ``TextSearcher`` on ONE thread: recall@10 against exact search, p50/p99 per query
(text encoder included), searcher MB; the builder's promise beside the measured recall; and
scann's pybind searcher on the same vectors and leaves as the server-side reference (its own tree
and anisotropic AH codes, 1 dim/block, no re-scoring, like the device).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run by path too, not only with -m

from benchmarks import hard_vectors  # noqa: E402
from benchmarks.child_build import build  # noqa: E402
from benchmarks.searcher_benchmark import _pct, _recall  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("BEAMLENS_SHARED", ROOT.parent / "shared"))
FLICKR_DEV = SHARED / "testdata" / "flickr8k" / "dev"
SIZES = (123_287, 1_000_000)
TUNING_CAPTIONS = 300
MEASURED_QUERIES = 1000


def emit(line: str) -> None:
    print(line, flush=True)


def real_vectors(model_dir: Path, embedder: str) -> tuple[np.ndarray, list[str]]:
    """(unit image vectors of the dev photos, every dev caption): what the synthetic items imitate."""
    from beamlens.models.corpora.coco import load_coco_captions  # noqa: PLC0415

    from benchmarks.text_query_speed import image_vectors  # noqa: PLC0415

    images = load_coco_captions(str(FLICKR_DEV / "annotations" / "captions.json"), str(FLICKR_DEV / "images"))
    emit(f"[million] embedding {len(images)} Flickr8k dev photos with {model_dir / 'vision_encoder.keras'}")
    vectors = image_vectors(model_dir / "vision_encoder.keras", [image.path for image in images])
    return vectors, [caption for image in images for caption in image.captions]


def split_captions(captions: list[str], seed: int = 7) -> tuple[list[str], list[str]]:
    """(tuning captions, measured captions): disjoint random samples."""
    order = np.random.default_rng(seed).permutation(len(captions))
    tuning = [captions[i] for i in order[:TUNING_CAPTIONS]]
    measured = [captions[i] for i in order[TUNING_CAPTIONS:TUNING_CAPTIONS + MEASURED_QUERIES]]
    return tuning, measured


def one_size(size: int, generator: hard_vectors.Generator, embedder: str, tuning: np.ndarray, queries: np.ndarray,
             captions: list[str], work: Path) -> str:
    """Build, search on the device and on scann at one size: one markdown table row."""
    from beamlens.models import compat  # noqa: PLC0415
    from beamlens.models.knn import exact_knn  # noqa: PLC0415
    from beamlens.models.searcher import attach_index  # noqa: PLC0415

    from benchmarks.searcher_benchmark import scann_side_by_side, time_text  # noqa: PLC0415

    npy, meta, tuning_npy, index = (work / f"{size}{suffix}" for suffix in (".npy", ".jsonl", "-tuning.npy", ".ldb"))
    vectors = generator.sample(size, seed=2)
    np.save(npy, vectors)
    meta.write_text("".join(f'{{"id":"{i}","uri":"","captions":[]}}\n' for i in range(size)))
    np.save(tuning_npy, tuning)
    emit(f"[million] {size:,} items: building (child process)")
    built = build({"npy": str(npy), "meta": str(meta), "out": str(index), "tuning": str(tuning_npy),
                   "tuning_description": f"text queries: {len(tuning)} Flickr8k dev captions"}, show_progress=True)
    report = built["report"]
    searcher = attach_index(embedder, str(index), str(work / f"{size}-searcher.tflite"))
    exact = exact_knn(queries, vectors, 10)[0]
    del vectors
    emit(f"[million] {size:,} items: {len(captions)} TextSearcher queries, one thread")
    latencies, ids = compat.call_tflite(time_text, searcher, captions, True)
    leaves = report["num_leaves_to_search"]
    emit(f"[million] {size:,} items: scann pybind reference, {report['num_leaves']} leaves, {leaves} searched")
    scann = compat.call_tflite(scann_side_by_side, str(npy), queries, report["num_leaves"], [leaves], "ah")[leaves]
    row = (f"| {size:,} | {leaves}/{report['num_leaves']} | {report['score']}"
           f"{' ' + str(report['lookup_type']) if report['lookup_type'] else ''} | "
           f"{report['estimated_recall_at_10']:.3f} | **{_recall(ids, exact):.3f}** | {_pct(latencies, 50):.2f} / "
           f"{_pct(latencies, 99):.2f} | {os.path.getsize(searcher) / 1e6:.1f} | {built['seconds']:.0f} s / "
           f"{built['peak_rss_mb'] / 1024:.2f} GB | {_recall(scann[1], exact):.3f} / {_pct(scann[0], 50):.2f} |")
    for name, points in report["sweeps"].items():
        emit(f"[million] {size:,} items, builder's sweep on the tuning captions [{name}]: "
             + ", ".join(f"{p['leaves_to_search']}:{p['recall_at_10']:.3f}" for p in points))
    for path in (npy, meta, tuning_npy, index):
        path.unlink(missing_ok=True)
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-dir", type=Path, default=ROOT / "build" / "demo" / "caption-free",
                        help="a model folder (vision_encoder.keras + text_embedder.tflite), e.g. a demo's caption-free")
    parser.add_argument("--sizes", default=",".join(str(s) for s in SIZES))
    parser.add_argument("--workdir", type=Path, default=ROOT / "build" / "million-on-device")
    args = parser.parse_args(argv)
    embedder = args.model_dir / "text_embedder.tflite"
    if not embedder.is_file() or not (args.model_dir / "vision_encoder.keras").is_file():
        parser.error(f"--model-dir {args.model_dir}: needs vision_encoder.keras and text_embedder.tflite "
                     "(run `beamlens demo` or `beamlens export-pretrained` first)")
    from beamlens.models.encoders.tflite_text_embedder import embed_text  # noqa: PLC0415

    args.workdir.mkdir(parents=True, exist_ok=True)
    items, captions = real_vectors(args.model_dir, str(embedder))
    tuning_captions, measured_captions = split_captions(captions)
    tuning, queries = embed_text(str(embedder), tuning_captions), embed_text(str(embedder), measured_captions)
    calibration = hard_vectors.calibrate(items, [("Flickr8k dev", items, queries)])
    for (name, real), (_, synthetic) in zip(calibration.real, calibration.synthetic):
        emit(f"- {name}: real {real.describe()}; synthetic (flatten {calibration.generator.flatten}) {synthetic.describe()}")
    emit("\n| items | leaves searched | scoring | builder's promise (text) | TextSearcher recall@10 | p50 / p99 ms "
         "| searcher MB | build time / peak RSS | scann pybind recall@10 / p50 ms |\n|---|---|---|---|---|---|---|---|---|")
    for size in (int(s) for s in args.sizes.split(",")):
        emit(one_size(size, calibration.generator, str(embedder), tuning, queries, measured_captions, args.workdir))
    return 0


if __name__ == "__main__":
    sys.exit(main())
