"""Task Library metadata for our embedders, and Task Library embedding calls (TF-FREE module).

tflite-support 0.4.4 cannot share a process with TensorFlow (see models/compat.py), so this module
never imports TensorFlow: callers in a TensorFlow process reach it through
``models.compat.call_tflite(function, ...)``, which runs it in a prepared child process. Only
paths and small lists cross that boundary.

tflite-support 0.4.4 has no text- or image-embedder metadata writer, so both go through the generic
``MetadataWriter.create_from_metadata_info`` route (PLATFORM.md "Writing embedder metadata"):
  * text: an ``InputTextTensorMd`` with a ``RegexTokenizerMd`` (delimiter regex + vocab file); the
    vocab is packed into the model as an associated file, so the ``.tflite`` is self-contained.
  * BERT-like text (three int32 inputs ``ids`` / ``mask`` / ``segment_ids``): ``BertInputTensorsMd``
    with a ``BertTokenizerMd`` (WordPiece vocab packed). The Task Library finds the three tensors
    by these metadata names, lower-cases ASCII and writes ``[CLS] ... [SEP]`` + padding (see
    models/encoders/bert_tokenizer.py). tflite-support has no BERT *embedder* writer either, so the
    ``BertInputTensorsMd`` parts go through ``MetadataWriter.create_from_metadata``.
  * image: an ``InputImageTensorMd`` with mean 0 / std 1 (the model normalises its raw 0..255 input
    itself, so the Task Library must pass pixels through unchanged) and RGB colour space.
"""

from __future__ import annotations

import numpy as np

from beamlens.models.io.files import write_bytes_atomically

DELIM_REGEX = r"[^\w']+"
"""The RegexTokenizer delimiter: everything but word characters and apostrophes splits tokens
(the pattern Model Maker's text searcher uses; our Python tokenizer mirrors it)."""


def _write_single_input_metadata(model_path: str, out_path: str, name: str, description: str, input_md: object,
                                 associated_files: list[str] | None = None) -> None:
    """Populate one-input / one-``embedding``-output metadata into a copy of the model at ``out_path``."""
    from tensorflow_lite_support.metadata.python.metadata_writers import (  # noqa: PLC0415
        metadata_info,
        metadata_writer,
    )

    with open(model_path, "rb") as stream:
        model = stream.read()
    writer = metadata_writer.MetadataWriter.create_from_metadata_info(
        model,
        general_md=metadata_info.GeneralMd(name=name, description=description),
        input_md=[input_md],
        output_md=[metadata_info.TensorMd(name="embedding")],
        associated_files=associated_files,
    )
    write_bytes_atomically(out_path, writer.populate())


def write_text_embedder_metadata(model_path: str, vocab_path: str, out_path: str, name: str = "beamlens_text_encoder") -> None:
    """Attach RegexTokenizer metadata (vocab packed) to a token-id text model."""
    from tensorflow_lite_support.metadata.python.metadata_writers import metadata_info  # noqa: PLC0415

    input_md = metadata_info.InputTextTensorMd(name="ids", tokenizer_md=metadata_info.RegexTokenizerMd(DELIM_REGEX, vocab_path))
    _write_single_input_metadata(model_path, out_path, name, "beamlens dual encoder: caption -> unit vector", input_md,
                                 associated_files=[vocab_path])


def _input_name(names: list[str], wanted: str) -> str:
    """The model tensor that stands for ``wanted`` ("ids" may come out as "serving_default_ids:0")."""
    def bare(name: str) -> str:
        return name.split(":")[0].removeprefix("serving_default_")
    found = [n for n in names if bare(n) == wanted]
    if len(found) != 1:
        raise ValueError(f"cannot tell the {wanted!r} input among the model's inputs {names}")
    return found[0]


def write_bert_text_embedder_metadata(model_path: str, vocab_path: str, out_path: str,
                                      name: str = "beamlens_text_encoder") -> None:
    """Attach BertTokenizer metadata (WordPiece vocab packed) to an ids/mask/segment_ids model."""
    from tensorflow_lite_support.metadata.python.metadata_writers import (  # noqa: PLC0415
        metadata_info,
        metadata_writer,
        writer_utils,
    )

    with open(model_path, "rb") as stream:
        model = stream.read()
    names = writer_utils.get_input_tensor_names(model)
    inputs = metadata_info.BertInputTensorsMd(
        model, _input_name(names, "ids"), _input_name(names, "mask"), _input_name(names, "segment_ids"),
        tokenizer_md=metadata_info.BertTokenizerMd(vocab_path))
    general = metadata_info.GeneralMd(name=name, description="beamlens dual encoder (BERT text backbone): caption -> unit vector")
    writer = metadata_writer.MetadataWriter.create_from_metadata(
        model,
        model_metadata=general.create_metadata(),
        input_metadata=inputs.create_input_tesnor_metadata(),
        output_metadata=[metadata_info.TensorMd(name="embedding").create_metadata()],
        associated_files=inputs.get_tokenizer_associated_files(),
        input_process_units=inputs.create_input_process_unit_metadata(),
    )
    write_bytes_atomically(out_path, writer.populate())


def write_image_embedder_metadata(model_path: str, out_path: str, name: str = "beamlens_image_encoder") -> None:
    """Attach image input metadata (RGB, mean 0 / std 1: the model normalises inside)."""
    from tensorflow_lite_support.metadata import metadata_schema_py_generated as schema  # noqa: PLC0415
    from tensorflow_lite_support.metadata import schema_py_generated as model_schema  # noqa: PLC0415
    from tensorflow_lite_support.metadata.python.metadata_writers import metadata_info  # noqa: PLC0415

    input_md = metadata_info.InputImageTensorMd(
        name="image", description="RGB pixels 0..255", norm_mean=[0.0], norm_std=[1.0],
        color_space_type=schema.ColorSpaceType.RGB, tensor_type=model_schema.TensorType.FLOAT32)
    _write_single_input_metadata(model_path, out_path, name, "beamlens dual encoder: image -> unit vector", input_md)


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
