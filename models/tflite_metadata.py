"""Task Library metadata for our embedders, and Task Library embedding calls (TF-FREE module).

tflite-support 0.4.4 cannot share a process with TensorFlow (see models/compat.py), so this module
never imports TensorFlow: callers in a TensorFlow process reach it through
``models.compat.call_tflite(function, ...)``, which runs it in a prepared child process. Only
paths and small lists cross that boundary.

tflite-support 0.4.4 has no text- or image-embedder metadata writer, so both go through the generic
``MetadataWriter.create_from_metadata_info`` route (PLATFORM.md "Writing embedder metadata"):
  * text: an ``InputTextTensorMd`` with a ``RegexTokenizerMd`` (delimiter regex + vocab file); the
    vocab is packed into the model as an associated file, so the ``.tflite`` is self-contained.
  * image: an ``InputImageTensorMd`` with mean 0 / std 1 (the model normalises its raw 0..255 input
    itself, so the Task Library must pass pixels through unchanged) and RGB colour space.
"""

from __future__ import annotations

import numpy as np

from models.atomic_files import write_bytes_atomically

DELIM_REGEX = r"[^\w']+"
"""The RegexTokenizer delimiter: everything but word characters and apostrophes splits tokens
(the pattern Model Maker's text searcher uses; our Python tokenizer mirrors it)."""


def write_text_embedder_metadata(model_path: str, vocab_path: str, out_path: str, name: str = "beamlens_text_encoder") -> None:
    """Attach RegexTokenizer metadata (vocab packed) to a token-id text model."""
    from tensorflow_lite_support.metadata.python.metadata_writers import (  # noqa: PLC0415
        metadata_info,
        metadata_writer,
    )

    with open(model_path, "rb") as stream:
        model = stream.read()
    writer = metadata_writer.MetadataWriter.create_from_metadata_info(
        model,
        general_md=metadata_info.GeneralMd(name=name, description="beamlens dual encoder: caption -> unit vector"),
        input_md=[metadata_info.InputTextTensorMd(
            name="ids", tokenizer_md=metadata_info.RegexTokenizerMd(DELIM_REGEX, vocab_path))],
        output_md=[metadata_info.TensorMd(name="embedding")],
        associated_files=[vocab_path],
    )
    write_bytes_atomically(out_path, writer.populate())


def write_image_embedder_metadata(model_path: str, out_path: str, name: str = "beamlens_image_encoder") -> None:
    """Attach image input metadata (RGB, mean 0 / std 1: the model normalises inside)."""
    from tensorflow_lite_support.metadata import metadata_schema_py_generated as schema  # noqa: PLC0415
    from tensorflow_lite_support.metadata import schema_py_generated as model_schema  # noqa: PLC0415
    from tensorflow_lite_support.metadata.python.metadata_writers import (  # noqa: PLC0415
        metadata_info,
        metadata_writer,
    )

    with open(model_path, "rb") as stream:
        model = stream.read()
    writer = metadata_writer.MetadataWriter.create_from_metadata_info(
        model,
        general_md=metadata_info.GeneralMd(name=name, description="beamlens dual encoder: image -> unit vector"),
        input_md=[metadata_info.InputImageTensorMd(
            name="image", description="RGB pixels 0..255", norm_mean=[0.0], norm_std=[1.0],
            color_space_type=schema.ColorSpaceType.RGB, tensor_type=model_schema.TensorType.FLOAT32)],
        output_md=[metadata_info.TensorMd(name="embedding")],
    )
    write_bytes_atomically(out_path, writer.populate())


def text_embeddings(model_path: str, texts: list[str]) -> np.ndarray:
    """Task Library ``TextEmbedder`` outputs (raw, not re-normalised) for each text: [N, D]."""
    from tflite_support.task import core, text  # noqa: PLC0415

    embedder = text.TextEmbedder.create_from_options(
        text.TextEmbedderOptions(base_options=core.BaseOptions(file_name=model_path, num_threads=1)))
    rows = [np.asarray(embedder.embed(t).embeddings[0].feature_vector.value, dtype=np.float32) for t in texts]
    return np.stack(rows)


def image_embeddings(model_path: str, image_paths: list[str]) -> np.ndarray:
    """Task Library ``ImageEmbedder`` outputs for image files (the Task Library resizes): [N, D]."""
    from tflite_support.task import core, vision  # noqa: PLC0415

    embedder = vision.ImageEmbedder.create_from_options(
        vision.ImageEmbedderOptions(base_options=core.BaseOptions(file_name=model_path, num_threads=1)))
    rows = []
    for path in image_paths:
        image = vision.TensorImage.create_from_file(path)
        rows.append(np.asarray(embedder.embed(image).embeddings[0].feature_vector.value, dtype=np.float32))
    return np.stack(rows)
