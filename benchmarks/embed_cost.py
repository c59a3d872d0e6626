"""What embedding a corpus costs: per-core rates on real photos, worker memory, and the launcher.

    .venv/bin/python -m benchmarks.embed_cost [--model-dir build/model] [--photos 1600]
                                              [--launcher-sizes 10000 1000000] [--skip-worker]

One run, three parts (issue 27):

* **bare, per core**: one thread (TensorFlow and the TFLite interpreter at 1), real photos at
  their real size (../shared COCO, ~640x480 JPEGs): decode and model in series, for each engine
  (``keras``: vision_encoder.keras; ``tflite``: its image_embedder.tflite twin). The ceiling.
* **pipeline, per core**: ``embed`` on DirectRunner ``multi_processing`` with 2 workers over the
  same photos (copied under new names to reach ``--photos``), at two corpus sizes. Steady rate
  per core = 1 / (extra CPU seconds, all processes, / extra images), which other load on a shared
  machine does not move; wall-clock steady rate and start-up beside it; peak RSS of the largest
  worker process and of the workers summed, sampled from /proc.
* **launcher**: ``embed`` against a Dask cluster running in its own processes, over ``N`` tiny
  8x8 PNGs and the cheapest encoder (it measures the launcher, not the model), at each
  ``--launcher-sizes``: the launcher process's peak RSS (``wait4``) and wall time. The target is
  flat (+-10%) from 10,000 to 1,000,000 files.

Then the cost table deploy/README.md quotes: vCPU-hours per 100M images at the measured steady
per-core rate (a Dataflow vCPU runs one worker thread; on paper, no cloud here).
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

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.embed_throughput import TreeMemorySampler, cpu_seconds  # noqa: E402
from benchmarks.encoder_engines import SHARED, decode_all, run_keras, run_tflite, single_thread  # noqa: E402

ENGINES = ("keras", "tflite")


@dataclass(frozen=True)
class PipelineCost:
    """One engine's pipeline figures from the two-size run."""

    engine: str
    cpu_ms_per_image: float
    steady_wall_rate: float
    startup_seconds: float
    largest_worker_mb: float
    workers_summed_mb: float


def coco_photos() -> list[Path]:
    photos = sorted((SHARED / "coco-mini-cc").rglob("*.jpg"))
    if not photos:
        raise SystemExit(f"no COCO photos under {SHARED}: set BEAMLENS_SHARED to the shared folder")
    return photos


def copy_corpus(folder: Path, count: int) -> Path:
    """``count`` real photos under new names (the real files cycled), at their real size."""
    photos = coco_photos()
    folder.mkdir(parents=True, exist_ok=True)
    for n in range(count):
        shutil.copy(photos[n % len(photos)], folder / f"img{n:07d}.jpg")
    return folder


def bare_per_core(model_dir: Path, count: int) -> dict[str, float]:
    """Images/s of decode + model in series on one thread, per engine (the per-core ceiling)."""
    from beamlens.models.export import model_folder  # noqa: PLC0415

    single_thread()
    config = model_folder.read_config(str(model_dir), [model_folder.VISION_ENCODER, model_folder.IMAGE_EMBEDDER])
    found = coco_photos()
    photos = (found * (1 + count // len(found)))[:count]
    pixels, decode_rate = decode_all(photos, int(config["image_size"]))
    keras_run = run_keras(str(model_dir / model_folder.VISION_ENCODER), pixels, 32)
    tflite_run = run_tflite(str(model_dir / model_folder.IMAGE_EMBEDDER), pixels, 32)
    print(f"bare, one thread, {count} COCO photos at {config['image_size']} px: decode {decode_rate:.1f} img/s, "
          f"keras {keras_run.images_per_second:.1f}, tflite {tflite_run.images_per_second:.1f}", flush=True)
    return {run.name: 1.0 / (1.0 / decode_rate + 1.0 / run.images_per_second) for run in (keras_run, tflite_run)}


def embed_once(model: Path, folder: Path, out: Path, engine: str) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process and its finished children) of one embed run."""
    from apache_beam.options.pipeline_options import PipelineOptions  # noqa: PLC0415

    from beamlens import EmbedRequest, embed  # noqa: PLC0415

    options = PipelineOptions(["--runner", "DirectRunner", "--direct_running_mode", "multi_processing",
                               "--direct_num_workers", "2"])
    request = EmbedRequest(model=str(model), output=str(out), input_glob=str(folder / "*.jpg"), engine=engine,
                           pipeline_options=options)
    started, cpu = time.perf_counter(), cpu_seconds()
    embed(request)
    return time.perf_counter() - started, cpu_seconds() - cpu


def pipeline_cost(model_dir: Path, work: Path, engine: str, small: Path, large: Path) -> PipelineCost:
    """Two sizes, one engine: marginal CPU and wall per image, start-up, memory of the large run."""
    from beamlens.models.export import model_folder  # noqa: PLC0415

    model = model_dir / model_folder.VISION_ENCODER
    small_n, large_n = len(list(small.iterdir())), len(list(large.iterdir()))
    wall_small, cpu_small = embed_once(model, small, work / f"out-{engine}-small", engine)
    with TreeMemorySampler(interval=0.25) as tree:
        wall_large, cpu_large = embed_once(model, large, work / f"out-{engine}-large", engine)
    extra = large_n - small_n
    wall_rate = extra / max(wall_large - wall_small, 1e-9)
    largest = max(tree.peak_by_pid.values(), default=0)
    return PipelineCost(engine, 1000 * (cpu_large - cpu_small) / extra, wall_rate,
                        wall_large - large_n / wall_rate, largest / 1024, tree.peak_descendants_kb / 1024)


def worker_part(model_dir: Path, work: Path, photos: int) -> None:
    bare = bare_per_core(model_dir, min(photos, 400))
    small = copy_corpus(work / "small", photos // 4)
    large = copy_corpus(work / "large", photos)
    costs = [pipeline_cost(model_dir, work, engine, small, large) for engine in ENGINES]
    print(f"\n{'engine':<7} {'bare/core':>10} {'pipeline/core':>14} {'ratio':>6} {'CPU ms/img':>11} "
          f"{'steady wall img/s':>18} {'start-up s':>11} {'worker MB':>10} {'workers MB':>11} {'vCPU-h/100M':>12}")
    for cost in costs:
        per_core = 1000.0 / cost.cpu_ms_per_image
        print(f"{cost.engine:<7} {bare[cost.engine]:10.1f} {per_core:14.1f} {per_core / bare[cost.engine]:6.2f} "
              f"{cost.cpu_ms_per_image:11.1f} {cost.steady_wall_rate:18.1f} {cost.startup_seconds:11.1f} "
              f"{cost.largest_worker_mb:10.0f} {cost.workers_summed_mb:11.0f} {1e8 / per_core / 3600:12.0f}")
    keras, tflite = costs
    print(f"tflite / keras, pipeline per core: {keras.cpu_ms_per_image / tflite.cpu_ms_per_image:.2f}x")
    print("worker MB: peak RSS of the largest Beam worker process; workers MB: peak of the two workers' sum "
          "(the launcher, which under DirectRunner also runs the shuffle, is not counted)", flush=True)


def main(argv: list[str] | None = None) -> int:
    from benchmarks.launcher_memory import launcher_part  # noqa: PLC0415

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-dir", default=str(ROOT / "build" / "model"),
                        help="a model folder with vision_encoder.keras and image_embedder.tflite (export-pretrained/train output)")
    parser.add_argument("--photos", type=int, default=1600,
                        help="real photos in the large pipeline run (the small run: a quarter); the steady rate is the "
                             "difference of the two runs, so below ~1,600 it swings from run to run")
    parser.add_argument("--launcher-sizes", type=int, nargs="*", default=[10_000, 1_000_000])
    parser.add_argument("--skip-worker", action="store_true", help="only the launcher part")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="beamlens-cost-") as work:
        if not args.skip_worker:
            worker_part(Path(args.model_dir), Path(work), args.photos)
        if args.launcher_sizes:
            launcher_part(Path(work), args.launcher_sizes)
    return 0


if __name__ == "__main__":
    sys.exit(main())
