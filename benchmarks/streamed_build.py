"""The searcher build at 1M and 10M items: time and peak memory of the streamed build (issue 26).

    .venv/bin/python -m benchmarks.streamed_build                      # 1,000,000 and 10,000,000
    .venv/bin/python -m benchmarks.streamed_build --sizes 1000000

The vectors (128-d, unit length, a Gaussian with a decaying spectrum: no model needed) are written
chunk by chunk into a memory-mapped ``.npy`` on disk, as ``build-searcher``'s shard reader writes
them, so this process never holds them either. Each build runs in its own process with the
builder's default choices (target recall@10 0.95, 200 MB budget, held-out vectors as queries) and
reports its wall time and peak RSS (``ru_maxrss``): the builder trains the tree and codebooks on
samples and streams the assignment and the encoding, so memory grows with the codes and the
metadata (what the index file holds), not with N x d floats.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run by path too, not only with -m

from benchmarks.child_build import build  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DIM = 128
CHUNK = 250_000


def write_vectors(path: Path, count: int, seed: int = 0) -> None:
    """``count`` unit vectors into a memory-mapped .npy, one chunk in memory at a time."""
    rng = np.random.default_rng(seed)
    scales = (1.0 / np.sqrt(1.0 + np.arange(DIM))).astype(np.float32)  # a decaying spectrum
    mean = rng.normal(size=DIM).astype(np.float32) * 0.3
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(count, DIM))
    for start in range(0, count, CHUNK):
        size = min(CHUNK, count - start)
        rows = mean + rng.standard_normal((size, DIM), dtype=np.float32) * scales
        out[start:start + size] = rows / np.linalg.norm(rows, axis=1, keepdims=True)
    out.flush()
    del out


def write_metadata(path: Path, count: int) -> None:
    with open(path, "w", encoding="utf-8") as stream:
        for start in range(0, count, CHUNK):
            stream.write("".join(f'{{"id":"{i}","uri":"gs://bucket/images/{i:08d}.jpg","captions":[]}}\n'
                                 for i in range(start, min(count, start + CHUNK))))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1000000,10000000")
    parser.add_argument("--workdir", type=Path, default=ROOT / "build" / "streamed-build")
    args = parser.parse_args(argv)
    args.workdir.mkdir(parents=True, exist_ok=True)
    print("| items | vectors on disk | leaves (searched) | scoring | promised recall@10 | index MB | build time | "
          "build peak RSS |\n|---|---|---|---|---|---|---|---|", flush=True)
    for size in (int(s) for s in args.sizes.split(",")):
        npy, meta, out = (args.workdir / f"{size}{suffix}" for suffix in (".npy", ".jsonl", ".ldb"))
        write_vectors(npy, size)
        write_metadata(meta, size)
        built = build({"npy": str(npy), "meta": str(meta), "out": str(out)}, show_progress=True)
        r = built["report"]
        score = f"AH {r['dimensions_per_block']} dim/block {r['lookup_type']}" if r["score"] == "ah" else r["score"]
        print(f"| {size:,} | {npy.stat().st_size / 1e9:.2f} GB | {r['num_leaves']} ({r['num_leaves_to_search']}) | "
              f"{score} | {r['estimated_recall_at_10']:.3f} | {r['index_bytes'] / 1e6:.1f} | {built['seconds']:.0f} s | "
              f"{built['peak_rss_mb'] / 1024:.2f} GB |", flush=True)
        for path in (npy, meta, out):
            path.unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
