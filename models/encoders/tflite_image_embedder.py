"""Run a Task Library image embedder ``.tflite`` the way the Task Library does, in a TensorFlow process.

Why: an image searcher's index must be built in the embedder's own space, from the pixels the
Task Library will feed it at query time. A foreign embedder (the shared MobileNetV3 ``.tflite``)
has no Keras twin, so the Beam pipeline runs the ``.tflite`` itself with ``tf.lite.Interpreter``
(tflite-support's ``ImageEmbedder`` cannot share a process with TensorFlow, see models/compat.py).

What the Task Library does to an image (tflite-support 0.4.4 ``ImagePreprocessor``), reproduced:

1. decode to RGB uint8 (we use PIL, the Task Library stb_image: same pixels for PNG, near-same
   for JPEG);
2. resize the whole image, no crop, to the input tensor's H x W with libyuv bilinear filtering:
   half-pixel centres, **no antialiasing** (measured on the 15 RGB shared photos with the MobileNetV3
   embedder: cosine to the Task Library's own embedding 0.9997 mean / 0.9988 min for this resize
   rounded to uint8, against 0.957 mean / 0.895 min for PIL's antialiased bilinear);
3. float32 inputs: ``(pixel - mean) / std`` with the ``NormalizationOptions`` of the input tensor
   metadata (required: the Task Library refuses a float model without them); uint8 inputs: as is;
4. output tensor 0 is the embedding (``[1, N]`` or ``[1, 1, 1, N]``; uint8 outputs dequantized).
   The Task Library does not L2-normalise unless asked; the pipeline does so for the index.
"""

from __future__ import annotations

import threading
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

from beamlens.models.errors import BeamlensError
from beamlens.models.encoders.preprocessing import DEFAULT_MAX_IMAGE_PIXELS, decode_guard, decode_image


@dataclass(frozen=True)
class ImageInputSpec:
    """What an image embedder's input expects, read from the model file and its metadata."""

    height: int
    width: int
    dtype: str  # "float32" | "uint8"
    mean: tuple[float, ...]  # per channel (length 1 or 3); empty for uint8 inputs
    std: tuple[float, ...]
    output_dim: int


def _normalization(data: bytes) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
    """Mean/std of the input tensor's NormalizationOptions process unit, or None."""
    from tensorflow_lite_support.metadata import metadata_schema_py_generated as mfb  # noqa: PLC0415 (pure Python)
    from tensorflow_lite_support.metadata import schema_py_generated as sfb  # noqa: PLC0415

    model = sfb.Model.GetRootAsModel(data, 0)
    for i in range(model.MetadataLength()):
        entry = model.Metadata(i)
        if (entry.Name() or b"").decode() != "TFLITE_METADATA":
            continue
        buffer = model.Buffers(entry.Buffer()).DataAsNumpy().tobytes()
        meta = mfb.ModelMetadataT.InitFromObj(mfb.ModelMetadata.GetRootAsModelMetadata(buffer, 0))
        graphs = meta.subgraphMetadata or []
        tensors = (graphs[0].inputTensorMetadata or []) if graphs else []
        for unit in (tensors[0].processUnits or []) if tensors else []:
            if unit.optionsType == mfb.ProcessUnitOptions.NormalizationOptions:
                mean = tuple(float(v) for v in unit.options.mean)
                std = tuple(float(v) for v in unit.options.std)
                return mean, std
    return None


def read_input_spec(path: str) -> ImageInputSpec:
    """The input size, type and normalization of an image embedder ``.tflite`` (no TF needed)."""
    from beamlens.models.io import model_file  # noqa: PLC0415

    try:
        with open(path, "rb") as stream:
            data = stream.read()
    except OSError as error:
        raise BeamlensError(f"cannot read the image embedder {path}: {error}") from None
    info = model_file.read_model_file(data, path)
    if len(info.inputs) != 1:
        raise BeamlensError(f"{path}: an image embedder has exactly one input, this model has {len(info.inputs)}")
    shape, kind = info.inputs[0].shape, info.inputs[0].type
    if len(shape) != 4 or shape[3] != 3 or shape[1] <= 0 or shape[2] <= 0:
        raise BeamlensError(f"{path}: expected an image input [1, H, W, 3], found {shape}")
    if kind not in ("float32", "uint8"):
        raise BeamlensError(f"{path}: the image input is {kind}; the Task Library takes float32 or uint8")
    out = info.outputs[0].shape if info.outputs else []
    if not out or out[-1] <= 0:
        raise BeamlensError(f"{path}: cannot tell the embedding size from output 0 (shape {out})")
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()
    if kind == "float32":
        found = _normalization(data)
        if found is None:
            raise BeamlensError(
                f"{path}: float32 image input without NormalizationOptions metadata; the Task Library refuses "
                "such a model (write the metadata, e.g. models.export.metadata.write_image_embedder_metadata)")
        mean, std = found
        if len(mean) not in (1, 3) or len(std) not in (1, 3) or any(s == 0 for s in std):
            raise BeamlensError(f"{path}: unusable NormalizationOptions mean {mean} std {std}")
    return ImageInputSpec(int(shape[1]), int(shape[2]), kind, mean, std, int(out[-1]))


def _axis(out_size: int, in_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Source indices and weights of half-pixel-centre bilinear sampling along one axis."""
    position = (np.arange(out_size, dtype=np.float64) + 0.5) * (in_size / out_size) - 0.5
    low = np.floor(position)
    fraction = (position - low).astype(np.float32)
    low_index = np.clip(low, 0, in_size - 1).astype(np.intp)
    high_index = np.clip(low + 1, 0, in_size - 1).astype(np.intp)
    return low_index, high_index, fraction


def resize_like_task_library(rgb: np.ndarray, height: int, width: int) -> np.ndarray:
    """uint8 [h, w, 3] -> uint8 [height, width, 3]: bilinear, half-pixel centres, no antialiasing.

    Only the source rows that are sampled become float32 (``height`` rows, not all ``h``): the same
    arithmetic as converting the whole image first, without 12 bytes per pixel of a huge image."""
    rgb = np.asarray(rgb)
    if rgb.shape[:2] == (height, width):
        return np.asarray(rgb, dtype=np.uint8)
    top, bottom, fy = _axis(height, rgb.shape[0])
    left, right, fx = _axis(width, rgb.shape[1])
    upper = rgb[top].astype(np.float32)
    lower = rgb[bottom].astype(np.float32)
    rows = upper * (1.0 - fy)[:, None, None] + lower * fy[:, None, None]
    out = rows[:, left] * (1.0 - fx)[None, :, None] + rows[:, right] * fx[None, :, None]
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def preprocess_image_bytes_like_task_library(
    data: bytes, image_size: int, max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS
) -> np.ndarray:
    """Bytes -> float32 [S, S, 3] pixels 0..255, resized as the Task Library resizes a query image.

    A drop-in for ``models.encoders.preprocessing.preprocess_image_bytes``: same signature, same decoder and
    pixel budget, and like it raises only ImageDecodeError (the resize can run out of memory too)."""
    image = decode_image(data, max_pixels)
    with decode_guard(max_pixels):
        rgb = np.asarray(image, dtype=np.uint8)
        return resize_like_task_library(rgb, image_size, image_size).astype(np.float32)


class TFLiteImageEmbedder:
    """A ``.tflite`` image embedder in ``tf.lite.Interpreter``: raw 0..255 pixels in, raw embeddings out.

    Pixels must already have the input's H x W (the pipeline decodes them so). One interpreter is not
    thread-safe, so calls are serialised (RunInference may share one loaded model among threads)."""

    def __init__(self, path: str, num_threads: int = 1) -> None:
        import tensorflow as tf  # noqa: PLC0415

        self.path = path
        self.spec = read_input_spec(path)
        try:
            with warnings.catch_warnings():  # TF 2.21 warns that tf.lite.Interpreter moves to ai_edge_litert
                warnings.simplefilter("ignore", UserWarning)
                self._interpreter = tf.lite.Interpreter(model_path=path, num_threads=num_threads)
            self._interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as error:
            raise BeamlensError(f"{path}: the TFLite interpreter cannot load it: {error}") from None
        self._input = self._interpreter.get_input_details()[0]
        self._output = self._interpreter.get_output_details()[0]
        self._lock = threading.Lock()

    def _prepare(self, pixels: np.ndarray) -> np.ndarray:
        spec = self.spec
        if pixels.shape != (spec.height, spec.width, 3):
            raise BeamlensError(f"{self.path}: expected pixels of shape {(spec.height, spec.width, 3)}, got {pixels.shape}")
        if spec.dtype == "uint8":
            return np.clip(np.rint(pixels), 0, 255).astype(np.uint8)[None]
        mean = np.asarray(spec.mean, dtype=np.float32)
        std = np.asarray(spec.std, dtype=np.float32)
        return ((np.asarray(pixels, dtype=np.float32) - mean) / std)[None]

    def _embedding(self) -> np.ndarray:
        raw = self._interpreter.get_tensor(self._output["index"]).reshape(-1)
        if raw.dtype == np.uint8 or raw.dtype == np.int8:
            scale, zero_point = self._output.get("quantization", (0.0, 0))
            return ((raw.astype(np.float32) - zero_point) * (scale or 1.0)).astype(np.float32)
        return raw.astype(np.float32)

    def embed(self, batch: np.ndarray | list[np.ndarray]) -> np.ndarray:
        """[B, H, W, 3] pixels 0..255 -> [B, D] embeddings, one interpreter call per image."""
        rows = []
        with self._lock:
            for pixels in batch:
                self._interpreter.set_tensor(self._input["index"], self._prepare(np.asarray(pixels)))
                self._interpreter.invoke()
                rows.append(self._embedding())
        return np.stack(rows)

    def __getstate__(self) -> Any:
        raise TypeError("a loaded TFLiteImageEmbedder is not picklable; pickle its path instead")
