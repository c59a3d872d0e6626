"""Which engine should a CPU worker run the vision encoder with? Keras vs the exported .tflite.

    .venv/bin/python -m benchmarks.encoder_engines [--model-dir build/demo/model] [--photos 400]

One run, one thread (TensorFlow's intra/inter-op pools and the TFLite interpreter both at 1), on
real photos at their real size from ../shared (COCO photos, then Flickr8k dev when present):

* decode: JPEG bytes -> the encoder's input pixels (the shared preprocessing), images/s;
* keras: the model folder's ``vision_encoder.keras`` through the compiled forward pass the Beam
  handler uses (``transforms.inference.predict_on_batch``), batches of ``--batch``, images/s;
* tflite: the same folder's ``image_embedder.tflite`` (the file ImageSearcher loads; XNNPACK) in
  ``tf.lite.Interpreter`` through the TFLite handler's embedder, one call per image, images/s;
* tflite-int8: the same encoder exported with dynamic-range int8 weights (``quantize="int8"``),
  to see whether int8 holds the bar (it did not: see README);
* agreement: cosine between the engines' unit vectors of the same pixels (min and mean), the
  bar issue 27 sets for swapping engines being 0.999;
* per core: 1 / (1/decode + 1/model), the rate a single-threaded worker would reach with decode
  and inference in series, for each engine.

The ratio tflite/keras is measured side by side in this one run; absolute rates depend on the
machine. It measures the model, not the pipeline (benchmarks/embed_throughput.py does that).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SHARED = Path(os.environ.get("BEAMLENS_SHARED", ROOT.parent / "shared")) / "testdata"

import numpy as np  # noqa: E402

from benchmarks.hard_vectors import unit  # noqa: E402


@dataclass(frozen=True)
class EngineRun:
    """One engine's rate on the photos and the vectors it gave (unit length)."""

    name: str
    images_per_second: float
    vectors: np.ndarray


def real_photo_paths(count: int) -> list[Path]:
    """Up to ``count`` real photos: COCO (~640x480) first, then Flickr8k dev (224x224) if present."""
    found = sorted((SHARED / "coco-mini-cc").rglob("*.jpg")) + sorted((SHARED / "flickr8k" / "dev" / "images").glob("*.jpg"))
    if not found:
        raise SystemExit(f"no photos under {SHARED}: set BEAMLENS_SHARED to the shared folder")
    return found[:count]


def single_thread() -> None:
    """TensorFlow on one thread, as a phone-sized or per-core budget; before any op runs."""
    import tensorflow as tf  # noqa: PLC0415

    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)


def decode_all(paths: list[Path], image_size: int) -> tuple[np.ndarray, float]:
    """(pixels [N, S, S, 3], images/s) with the shared preprocessing."""
    from beamlens.models.encoders.preprocessing import preprocess_image_bytes  # noqa: PLC0415

    blobs = [path.read_bytes() for path in paths]
    started = time.perf_counter()
    pixels = np.stack([preprocess_image_bytes(blob, image_size) for blob in blobs])
    return pixels, len(blobs) / (time.perf_counter() - started)


def run_keras(path: str, pixels: np.ndarray, batch: int) -> EngineRun:
    import keras  # noqa: PLC0415

    from beamlens.transforms.inference import predict_on_batch  # noqa: PLC0415

    model = keras.models.load_model(path, compile=False)
    predict_on_batch(model, list(pixels[:batch]), None)  # trace once, outside the clock
    started, rows = time.perf_counter(), []
    for start in range(0, len(pixels), batch):
        rows += [result.inference for result in predict_on_batch(model, list(pixels[start:start + batch]), None)]
    return EngineRun("keras", len(pixels) / (time.perf_counter() - started), unit(np.stack(rows)))


def run_tflite(path: str, pixels: np.ndarray, batch: int, name: str = "tflite") -> EngineRun:
    from beamlens.models.encoders.tflite_image_embedder import TFLiteImageEmbedder  # noqa: PLC0415

    embedder = TFLiteImageEmbedder(path, num_threads=1)
    embedder.embed(pixels[:1])  # XNNPACK prepares on the first call
    started, rows = time.perf_counter(), []
    for start in range(0, len(pixels), batch):
        rows.append(embedder.embed(pixels[start:start + batch]))
    return EngineRun(name, len(pixels) / (time.perf_counter() - started), unit(np.concatenate(rows)))


def export_int8(keras_path: str, image_size: int, out_path: str) -> str:
    """The vision encoder as an image embedder with dynamic-range int8 weights."""
    import keras  # noqa: PLC0415

    from beamlens.models.export.encoders import export_image_embedder  # noqa: PLC0415

    return export_image_embedder(keras.models.load_model(keras_path, compile=False), image_size, out_path, quantize="int8")


def report(decode_rate: float, runs: list[EngineRun]) -> None:
    keras_run = runs[0]
    print(f"\n{'engine':<12} {'model img/s':>12} {'per core (decode + model)':>26} {'vs keras':>9}")
    for run in runs:
        per_core = 1.0 / (1.0 / decode_rate + 1.0 / run.images_per_second)
        print(f"{run.name:<12} {run.images_per_second:12.1f} {per_core:26.1f} "
              f"{run.images_per_second / keras_run.images_per_second:8.2f}x")
    for run in runs[1:]:
        cosine = np.sum(run.vectors * keras_run.vectors, axis=1)
        print(f"{run.name} vs keras, cosine of the same photos' vectors: min {cosine.min():.5f}, "
              f"mean {cosine.mean():.5f} (the bar: 0.999)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-dir", default=str(ROOT / "build" / "demo" / "model"),
                        help="a model folder (train / export-pretrained output)")
    parser.add_argument("--photos", type=int, default=400)
    parser.add_argument("--batch", type=int, default=32)
    args = parser.parse_args(argv)
    single_thread()
    from beamlens.models.export import model_folder  # noqa: PLC0415

    config = model_folder.read_config(args.model_dir, [model_folder.VISION_ENCODER, model_folder.IMAGE_EMBEDDER])
    paths = real_photo_paths(args.photos)
    pixels, decode_rate = decode_all(paths, int(config["image_size"]))
    print(f"{len(paths)} real photos, {config.get('image_backbone')} at {config['image_size']} px, one thread; "
          f"decode {decode_rate:.1f} img/s", flush=True)
    keras_path = os.path.join(args.model_dir, model_folder.VISION_ENCODER)
    runs = [run_keras(keras_path, pixels, args.batch),
            run_tflite(os.path.join(args.model_dir, model_folder.IMAGE_EMBEDDER), pixels, args.batch)]
    with tempfile.TemporaryDirectory() as work:
        int8 = export_int8(keras_path, int(config["image_size"]), os.path.join(work, "image_embedder_int8.tflite"))
        runs.append(run_tflite(int8, pixels, args.batch, name="tflite-int8"))
    report(decode_rate, runs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
