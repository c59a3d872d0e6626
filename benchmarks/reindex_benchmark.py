"""Re-index with 1% new images vs a full build of the same corpus, measured side by side in one run.

    TF_CPP_MIN_LOG_LEVEL=2 .venv/bin/python benchmarks/reindex_benchmark.py --images 1000 [--runner FnApiRunner]

Both timings are whole ``beamlens reindex`` runs (listing, hashing, join, embedding, shard
writing, count check, searcher build, publishing):

1. full build: an empty root, every image embedded;
2. incremental: 1% new images added, the rest carried over (hashed, not embedded).

The encoder is a MobileNetV3-Small (random weights, 224x224 input, 16-d head) so that inference
costs what a real on-device-sized encoder costs; a toy encoder would make embedding look free and
the ratio meaningless. Images are the COCO-mini photos, each copy made unique by a few trailing
bytes (decoders ignore data after the JPEG end marker; the content hash changes).
Target from issue 6: incremental <= 10% of the full build.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TEXT_EMBEDDER = ROOT.parent / "shared" / "testdata" / "tflite-support" / "regex_one_embedding_with_metadata.tflite"
PHOTOS = ROOT.parent / "shared" / "testdata" / "coco-mini-cc" / "val2017"


def build_encoder(path: Path, dim: int = 16) -> Path:
    import keras  # noqa: PLC0415

    keras.utils.set_random_seed(0)
    inputs = keras.Input((224, 224, 3))
    x = keras.layers.Rescaling(1.0 / 127.5, offset=-1.0)(inputs)
    backbone = keras.applications.MobileNetV3Small(input_shape=(224, 224, 3), include_top=False, weights=None,
                                                   pooling="avg", include_preprocessing=False)
    x = backbone(x)
    x = keras.layers.Dense(dim)(x)
    keras.Model(inputs, keras.layers.UnitNormalization()(x)).save(path)
    return path


def write_images(folder: Path, start: int, count: int) -> None:
    photos = sorted(PHOTOS.glob("*.jpg"))
    folder.mkdir(parents=True, exist_ok=True)
    for n in range(start, start + count):
        data = photos[n % len(photos)].read_bytes() + f"beamlens-benchmark-{n}".encode()
        (folder / f"img{n:07d}.jpg").write_bytes(data)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--new-fraction", type=float, default=0.01)
    parser.add_argument("--runner", default="FnApiRunner")
    parser.add_argument("--num-shards", type=int, default=4)
    parser.add_argument("--workdir", default=None)
    args = parser.parse_args(argv)

    from tests import embed_helpers  # noqa: PLC0415

    embed_helpers.install_coco_shim()
    from beamlens.pipelines import reindex  # noqa: PLC0415

    work = Path(args.workdir or tempfile.mkdtemp(prefix="reindex-bench-"))
    images, out = work / "images", work / "index"
    shutil.rmtree(out, ignore_errors=True)
    encoder = build_encoder(work / "encoder.keras")
    write_images(images, 0, args.images)
    common = ["--output-root", str(out), "--input-glob", str(images / "*.jpg"), "--model", str(encoder),
              "--text-embedder", str(TEXT_EMBEDDER), "--num-shards", str(args.num_shards), "--max-batch-size", "32",
              "--runner", args.runner]

    started = time.perf_counter()
    full = reindex.run(common, save_main_session=False)
    full_seconds = time.perf_counter() - started

    new = max(1, round(args.images * args.new_fraction))
    write_images(images, args.images, new)
    started = time.perf_counter()
    incremental = reindex.run(common, save_main_session=False)
    inc_seconds = time.perf_counter() - started

    ratio = inc_seconds / full_seconds
    print(f"\ncorpus {args.images} images, +{new} new ({args.new_fraction:.1%}), runner {args.runner}, cpu count {os.cpu_count()}")
    print(f"full build : {full_seconds:8.2f} s  (beam {full['beam_seconds']:.2f} s, searcher {full['searcher'].get('seconds')} s, embedded {full['plan']['embedded']})")
    print(f"incremental: {inc_seconds:8.2f} s  (beam {incremental['beam_seconds']:.2f} s, searcher {incremental['searcher'].get('seconds')} s, "
          f"embedded {incremental['plan']['embedded']}, carried {incremental['plan']['counts']['carry']})")
    print(f"ratio incremental / full = {ratio:.3f}  (target <= 0.10: {'met' if ratio <= 0.10 else 'NOT met'})")
    if not args.workdir:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
