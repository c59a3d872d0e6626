"""The image size an encoder file takes, read from the file itself (no model is loaded).

``beamlens embed`` and ``beamlens reindex`` resize images to what the model was built for: a
``.keras`` vision encoder's input shape is in its ``config.json``; a Task Library image embedder
``.tflite`` states it in its input tensor (read without TensorFlow).
"""

from __future__ import annotations

import io
import json
import zipfile
from typing import Any

from beamlens.models.errors import BeamlensError
from beamlens.models.io import files


def _find_batch_shape(node: Any) -> list | None:
    """First InputLayer ``batch_shape`` in a Keras 3 config (functional, sequential or nested)."""
    if isinstance(node, dict):
        if node.get("class_name") == "InputLayer":
            shape = node.get("config", {}).get("batch_shape") or node.get("config", {}).get("batch_input_shape")
            if shape:
                return list(shape)
        for value in node.values():
            found = _find_batch_shape(value)
            if found:
                return found
    elif isinstance(node, list):
        for value in node:
            found = _find_batch_shape(value)
            if found:
                return found
    return None


def model_image_size(model_path: str) -> int:
    """Read S from the ``.keras`` file's input shape [None, S, S, 3] without loading weights."""
    try:
        with zipfile.ZipFile(io.BytesIO(files.read_bytes(model_path))) as archive:
            config = json.loads(archive.read("config.json"))
    except (zipfile.BadZipFile, KeyError, OSError, ValueError) as error:
        raise BeamlensError(f"{model_path} is not a Keras 3 .keras file ({error}); RunInference loads .keras files only") from None
    shape = _find_batch_shape(config)
    if not shape or len(shape) != 4 or shape[1] is None or shape[1] != shape[2] or shape[3] != 3:
        raise BeamlensError(f"{model_path}: expected an image input [None, S, S, 3], found {shape}; give --image-size")
    return int(shape[1])


def tflite_image_size(model_path: str) -> int:
    """S of a square image embedder ``.tflite`` input [1, S, S, 3] (read from the file, no TF)."""
    from beamlens.models.encoders.tflite_image_embedder import read_input_spec  # noqa: PLC0415

    local = model_path
    if files.is_remote(model_path):
        import tempfile  # noqa: PLC0415

        with tempfile.NamedTemporaryFile(suffix=".tflite", delete=False) as copy:
            copy.write(files.read_bytes(model_path))
        local = copy.name
    spec = read_input_spec(local)
    if spec.height != spec.width:
        raise BeamlensError(f"{model_path}: the image input is {spec.height}x{spec.width}; only square inputs are supported")
    return spec.height


def model_input_size(model_path: str, requested: int = 0) -> int:
    """The square size to resize to: the file's own, which ``requested`` (if given) must match
    for a ``.tflite`` (its input is fixed) and overrides for a ``.keras`` file."""
    if model_path.endswith(".tflite"):
        size = tflite_image_size(model_path)
        if requested and requested != size:
            raise BeamlensError(f"--image-size {requested}: the .tflite model takes {size}x{size} images")
        return size
    return requested or model_image_size(model_path)
