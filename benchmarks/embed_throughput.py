"""Hand-run benchmark: ``beamlens embed`` throughput against bare batched ``model.predict``.

Both are measured in one run, on the same images, on the same machine:

* bare:     the images decoded once with the shared preprocessing, then ``model.predict`` in
            batches (the model's own speed, no I/O, no decoding: the ceiling);
* pipeline: ``beamlens embed`` on DirectRunner ``multi_processing`` with 2 workers (listing,
            reading, decoding, RunInference, shard writing, the count check).

The pipeline's fixed start-up (worker processes importing TensorFlow, loading the model) is
separated from its steady rate by running two corpus sizes: marginal rate = extra images / extra
seconds. Ratio = pipeline images/s over bare images/s; target >= 0.8.

    .venv/bin/python benchmarks/embed_throughput.py [--model vision_encoder.keras] [--images 1200]

Without --model it builds a default-sized encoder like the offline default (small conv base,
128-d projection head, 64x64 input). The corpus is COCO-MINI photos (real JPEGs, ~640x480),
copied under new names to reach the requested count.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from tests.conftest import COCO_MINI  # noqa: E402


def build_default_sized_encoder(path: Path, image_size: int = 64, dim: int = 128) -> Path:
    """Conv base (4 stages) + projection head (Dense, GELU, Dense, Dropout, Add, LayerNorm) + L2."""
    import keras  # noqa: PLC0415

    keras.utils.set_random_seed(0)
    inputs = keras.Input((image_size, image_size, 3))
    x = keras.layers.Rescaling(1 / 127.5, offset=-1)(inputs)
    for filters in (32, 64, 128, 256):
        x = keras.layers.Conv2D(filters, 3, padding="same", activation="relu")(x)
        x = keras.layers.Conv2D(filters, 3, padding="same", activation="relu")(x)
        x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    projected = keras.layers.Dense(dim)(x)
    h = keras.layers.Dense(dim)(keras.activations.gelu(projected))
    h = keras.layers.Dropout(0.1)(h)
    x = keras.layers.LayerNormalization()(keras.layers.Add()([projected, h]))
    outputs = keras.layers.UnitNormalization()(x)
    keras.Model(inputs, outputs).save(path)
    return path


def make_corpus(folder: Path, count: int) -> list[Path]:
    photos = sorted((COCO_MINI / "val2017").glob("*.jpg")) + sorted((COCO_MINI / "train2017").glob("*.jpg"))
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for n in range(count):
        target = folder / f"img{n:06d}.jpg"
        shutil.copy(photos[n % len(photos)], target)
        paths.append(target)
    return paths


def cpu_seconds() -> float:
    """User + system CPU of this process and its finished children (the Beam worker processes)."""
    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        usage = resource.getrusage(who)
        total += usage.ru_utime + usage.ru_stime
    return total


def make_default_corpus(folder: Path, count: int) -> list[Path]:
    """The offline default corpus (synthetic scenes, 128x128), train split only; images moved into ``folder``."""
    from beamlens.models.corpora.synthetic import CorpusOptions, corpus_paths, write_corpus  # noqa: PLC0415

    write_corpus(folder.parent / f"{folder.name}-corpus", CorpusOptions(num_images=count, image_size=128, val_fraction=0.01))
    source = corpus_paths(folder.parent / f"{folder.name}-corpus")["images"]["train"]
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for image in sorted(source.iterdir()):
        target = folder / (image.stem + ".jpg" if image.suffix.lower() in (".jpg", ".jpeg") else image.name)
        shutil.move(str(image), target)
        paths.append(target)
    return paths


def bare_predict(model_path: Path, paths: list[Path], image_size: int, batch_size: int) -> tuple[float, float, float]:
    """(decode images/s, predict images/s, predict CPU seconds per image) in this process."""
    import keras  # noqa: PLC0415

    from beamlens.models.encoders.preprocessing import preprocess_image_bytes  # noqa: PLC0415

    started = time.perf_counter()
    pixels = np.stack([preprocess_image_bytes(p.read_bytes(), image_size) for p in paths])
    decode_rate = len(paths) / (time.perf_counter() - started)
    model = keras.models.load_model(model_path)
    model.predict(pixels[:batch_size], batch_size=batch_size, verbose=0)  # warm-up / tracing
    started, cpu = time.perf_counter(), cpu_seconds()
    model.predict(pixels, batch_size=batch_size, verbose=0)
    predict_rate = len(paths) / (time.perf_counter() - started)
    return decode_rate, predict_rate, (cpu_seconds() - cpu) / len(paths)


def pipeline_seconds(model_path: Path, folder: Path, out: Path, batch_size: int, workers: int,
                     engine: str = "auto") -> tuple[float, float]:
    """(wall seconds, CPU seconds incl. worker processes) of one ``beamlens embed`` run."""
    from beamlens.pipelines import embed_images  # noqa: PLC0415

    started, cpu = time.perf_counter(), cpu_seconds()
    embed_images.run(
        ["--input-glob", str(folder / "*"), "--model", str(model_path), "--output", str(out),
         "--num-shards", "4", "--max-batch-size", str(batch_size), "--runner", "DirectRunner",
         "--direct_running_mode", "multi_processing", "--direct_num_workers", str(workers), "--engine", engine],
        save_main_session=False,
    )
    return time.perf_counter() - started, cpu_seconds() - cpu


class TreeMemorySampler:
    """Peak summed RSS of this process and all its descendants (the Beam workers), sampled from /proc,
    each descendant's own peak (``peak_by_pid``: the largest worker is what sizes a machine) and
    the peak of the descendants' sum alone (``peak_descendants_kb``: the workers without the launcher).

    ``getrusage(RUSAGE_CHILDREN)`` alone misleads here: a worker forked from this process starts
    with this process's RSS on its books, so its maximum is at least ours.
    """

    def __init__(self, interval: float = 0.5) -> None:
        import threading  # noqa: PLC0415

        self.peak_kb = 0
        self.peak_by_pid: dict[int, int] = {}
        self.peak_descendants_kb = 0
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def _rss_kb(pid: int) -> int:
        try:
            with open(f"/proc/{pid}/status") as status:
                for line in status:
                    if line.startswith("VmRSS:"):
                        return int(line.split()[1])
        except OSError:
            pass
        return 0

    @staticmethod
    def _children(pid: int) -> list[int]:
        found = []
        try:
            for task in os.listdir(f"/proc/{pid}/task"):
                with open(f"/proc/{pid}/task/{task}/children") as children:
                    found += [int(c) for c in children.read().split()]
        except OSError:
            pass
        return found

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            pending, total, descendants = [os.getpid()], 0, 0
            while pending:
                pid = pending.pop()
                rss = self._rss_kb(pid)
                total += rss
                if pid != os.getpid():
                    descendants += rss
                    self.peak_by_pid[pid] = max(self.peak_by_pid.get(pid, 0), rss)
                pending += self._children(pid)
            self.peak_kb = max(self.peak_kb, total)
            self.peak_descendants_kb = max(self.peak_descendants_kb, descendants)

    def __enter__(self) -> "TreeMemorySampler":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help="a vision encoder .keras file (default: build a default-sized one)")
    parser.add_argument("--images", type=int, default=1200, help="images in the large run (the small run uses a quarter)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--engine", choices=("auto", "keras", "tflite"), default="auto",
                        help="embed's --engine (auto: a model folder's image_embedder.tflite twin when it has one)")
    parser.add_argument("--corpus", choices=("coco-mini", "default"), default="coco-mini",
                        help="coco-mini: real ~640x480 JPEGs (decoding is costly); default: the synthetic 128x128 corpus")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="beamlens-bench-"))
    try:
        model_path = Path(args.model) if args.model else build_default_sized_encoder(work / "encoder.keras")
        from beamlens.models.encoders.inputs import model_image_size  # noqa: PLC0415

        image_size = model_image_size(str(model_path))
        small_n, large_n = max(args.images // 4, args.batch_size), args.images
        make = make_corpus if args.corpus == "coco-mini" else make_default_corpus
        small = make(work / "small", small_n)
        large = make(work / "large", large_n)
        small_n, large_n = len(small), len(large)
        suffix = {p.suffix for p in large}
        assert len(suffix) == 1, suffix
        print(f"corpus {args.corpus} ({suffix.pop()}), model {model_path.name}, input {image_size}x{image_size}, batch {args.batch_size}, "
              f"workers {args.workers}, images {small_n} and {large_n}, cores {os.cpu_count()}", flush=True)

        decode_rate, predict_rate, predict_cpu = bare_predict(model_path, large, image_size, args.batch_size)
        (t_small, cpu_small) = pipeline_seconds(model_path, work / "small", work / "out-small", args.batch_size, args.workers, args.engine)
        with TreeMemorySampler() as tree:
            (t_large, cpu_large) = pipeline_seconds(model_path, work / "large", work / "out-large", args.batch_size, args.workers, args.engine)
        end_to_end = large_n / t_large
        marginal = (large_n - small_n) / max(t_large - t_small, 1e-9)
        pipeline_cpu = (cpu_large - cpu_small) / (large_n - small_n)
        _, predict_rate_after, _ = bare_predict(model_path, large, image_size, args.batch_size)
        self_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        children_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        print(f"bare decode (1 process):          {decode_rate:8.1f} images/s")
        print(f"bare model.predict (1 process):   {predict_rate:8.1f} images/s before the pipeline runs, {predict_rate_after:.1f} after")
        predict_rate = (predict_rate + predict_rate_after) / 2
        print(f"bare decode+predict, serial:      {1 / (1 / decode_rate + 1 / predict_rate):8.1f} images/s")
        print(f"pipeline end to end ({large_n}):     {end_to_end:8.1f} images/s ({t_large:.1f} s incl. start-up)")
        if t_large > t_small * 1.05:
            print(f"pipeline steady ({small_n}->{large_n}):  {marginal:8.1f} images/s (start-up ~{t_large - large_n / marginal:.1f} s)")
            print(f"ratio steady pipeline / bare predict:  {marginal / predict_rate:.2f}   (target >= 0.8)")
        else:  # other load on the machine made the small run slower than the large one
            print(f"pipeline steady: not measurable this run (small run {t_small:.1f} s, large run {t_large:.1f} s)")
        print(f"ratio end-to-end pipeline / bare predict: {end_to_end / predict_rate:.2f}")
        print(f"CPU per image: bare predict {predict_cpu * 1000:.1f} ms, pipeline (marginal, incl. read+decode+write) "
              f"{pipeline_cpu * 1000:.1f} ms; CPU efficiency ratio {predict_cpu / pipeline_cpu:.2f} "
              "(load-independent: the machine is shared)")
        print(f"peak RSS (getrusage): this process {self_kb / 1024:.0f} MB, largest child {children_kb / 1024:.0f} MB")
        print(f"peak RSS summed over this process + Beam workers during the large run: {tree.peak_kb / 1024:.0f} MB")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
