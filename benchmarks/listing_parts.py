"""The listing step on its own, one part against parts, side by side in one run.

    .venv/bin/python -m benchmarks.listing_parts [--files 1000000 --folders 1000 --workers 2 --list-part-mb 4]

A corpus of ``--files`` empty files in ``--folders`` folders (listing reads names, never bytes) is
listed by ``ListImages`` on the DirectRunner with ``--workers`` worker processes, twice:
``max_parts=1`` (how the listing ran before issue 27's split: one worker lists and sorts every
path) and the default (parts by folder, spread over the workers by a GroupByKey). After the
listing each worker only counts what it listed (a combiner, so no shuffle of the listing), which
isolates the listing's own cost: wall time, the largest worker's peak RSS, how the listed paths
spread over the worker processes, and that every file was listed once. Then the same paths as a
list (``--input-list``: one path a line), read as one part and in parts of ``--list-part-mb``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


@dataclass(frozen=True)
class ListingRun:
    """One listing of the corpus: how it was split and what it cost."""

    how: str
    listed: int
    seconds: float
    largest_worker_mb: float
    listed_per_worker: list[int]


def write_empty_corpus(root: Path, files: int, folders: int) -> Path:
    """``files`` empty ``.jpg`` files spread evenly over ``folders`` folders under ``root``."""
    for folder in range(folders):
        (root / f"{folder:05d}").mkdir(parents=True, exist_ok=True)
    for n in range(files):
        with open(root / f"{n % folders:05d}" / f"i{n:09d}.jpg", "wb"):
            pass
    return root


def _pid_of(_item) -> tuple[int, int]:
    return os.getpid(), 1


def _write_count(pair: tuple[int, int], folder: str) -> None:
    with open(os.path.join(folder, f"{pair[0]}.count"), "w") as out:
        out.write(str(pair[1]))


def write_path_list(corpus: Path, out: Path) -> Path:
    """Every file of the corpus, one path a line (what an inventory of a bucket would hold)."""
    with open(out, "w") as lines:
        for folder in sorted(corpus.iterdir()):
            for entry in sorted(os.listdir(folder)):
                lines.write(f"{folder / entry}\n")
    return out


def list_once(source, how: str, workers: int, counts_dir: Path, **split) -> ListingRun:
    """List the source with ``ListImages(source, **split)``; each worker process's count lands in ``counts_dir``."""
    import apache_beam as beam  # noqa: PLC0415
    from apache_beam.options.pipeline_options import PipelineOptions  # noqa: PLC0415

    from benchmarks.embed_throughput import TreeMemorySampler  # noqa: PLC0415
    from beamlens.transforms.listing import ListImages  # noqa: PLC0415
    counts_dir.mkdir(parents=True)
    options = PipelineOptions(runner="DirectRunner", direct_num_workers=workers, direct_running_mode="multi_processing")
    started = time.perf_counter()
    with TreeMemorySampler(interval=0.2) as memory:
        with beam.Pipeline(options=options) as pipeline:
            per_worker = (pipeline | ListImages(source, **split)
                          | "ByWorker" >> beam.Map(_pid_of) | "Count" >> beam.CombinePerKey(sum))
            _ = per_worker | "WriteCounts" >> beam.Map(_write_count, str(counts_dir))
    seconds = time.perf_counter() - started
    per_process = sorted((int(path.read_text()) for path in counts_dir.glob("*.count")), reverse=True)
    return ListingRun(how, sum(per_process), seconds, max(memory.peak_by_pid.values(), default=0) / 1024, per_process)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=1_000_000)
    parser.add_argument("--folders", type=int, default=1_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--list-part-mb", type=float, default=4.0, help="part size of the list run (the default 64 MiB suits 100M-line lists)")
    parser.add_argument("--keep", default=None, help="reuse/keep the corpus in this folder (default: a temporary one)")
    args = parser.parse_args(argv)
    from beamlens.transforms.listing import DEFAULT_LISTING_PARTS  # noqa: PLC0415
    from beamlens.transforms.read_images import ImageSource  # noqa: PLC0415

    root = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="beamlens-listing-"))
    try:
        started = time.perf_counter()
        for stale in root.glob("counts-*"):
            shutil.rmtree(stale)
        if not (root / "corpus").exists():
            write_empty_corpus(root / "corpus", args.files, args.folders)
        print(f"corpus: {args.files:,} empty files in {args.folders:,} folders ({time.perf_counter() - started:.0f} s to write)")
        glob = ImageSource(input_glob=str(root / "corpus" / "**.jpg"))
        paths = ImageSource(input_list=str(write_path_list(root / "corpus", root / "paths.txt")))
        part_bytes = int(args.list_part_mb * 2**20)
        runs = [list_once(glob, "glob, one part", args.workers, root / "counts-1", max_parts=1),
                list_once(glob, f"glob, max_parts={DEFAULT_LISTING_PARTS}", args.workers, root / "counts-n",
                          max_parts=DEFAULT_LISTING_PARTS),
                list_once(paths, "list, one part", args.workers, root / "counts-l1", list_part_bytes=2**62),
                list_once(paths, f"list, parts of {args.list_part_mb:g} MiB", args.workers, root / "counts-ln",
                          list_part_bytes=part_bytes)]
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    print("| listing | listed | wall s | largest worker peak RSS MB | listed per worker process |")
    print("|---|---|---|---|---|")
    for run in runs:
        print(f"| {run.how} | {run.listed:,} | {run.seconds:.1f} | {run.largest_worker_mb:.0f} | "
              f"{' + '.join(f'{n:,}' for n in run.listed_per_worker)} |")
    for one, split in (runs[0:2], runs[2:4]):
        print(f"{split.how} / {one.how}: wall {split.seconds / one.seconds:.2f}x, "
              f"largest worker {split.largest_worker_mb / one.largest_worker_mb:.2f}x")
    return 0 if all(run.listed == args.files for run in runs) else 1


if __name__ == "__main__":
    raise SystemExit(main())
