"""Attach an on-device index to an embedder: the TFLITE export of Model Maker's searcher.

``attach_index(embedder_path, index_path, out_path)`` writes ``out_path``: the embedder with the
index packed as ``on_device_scann_index.ldb``, an AssociatedFile of type SCANN_INDEX_FILE in the
metadata of the output tensor the Task Library searches (output 1 for a USE-like 3-input model
without tokenizer metadata, else 0). An embedder without metadata gets empty tensor metadata,
as Model Maker did. It checks first what the Task Library does not: that the file is a TFLite
model and that its output dimension equals the index's query dimension.

The populator work runs where tflite-support can (``compat.call_tflite``). An embedder that
already carries an index (a searcher) has it removed first, so searchers can be re-attached.
"""

from __future__ import annotations

import io
import os
import zipfile

from beamlens.models.io.files import write_bytes_atomically
from beamlens.models.errors import BeamlensError
from beamlens.models.io import model_file

INDEX_NAME = "on_device_scann_index.ldb"
INDEX_DESCRIPTION = "On-device Scann Index file with LevelDB format."


def attach_index(embedder_path: str, index_path: str, out_path: str) -> str:
    """Write the searcher ``out_path`` (atomically) and return it."""
    from beamlens.models import compat  # noqa: PLC0415

    return compat.call_tflite(_attach_here, os.path.abspath(embedder_path), os.path.abspath(index_path), os.path.abspath(out_path))


def index_query_dimension(index_bytes: bytes, name: str = "index") -> int:
    """The query dimension an index expects (float: embedding_dim; AH: sum of block widths)."""
    from beamlens.models.searcher.sstable import Table  # noqa: PLC0415
    from beamlens.models.searcher.wire import decode_index_config  # noqa: PLC0415

    config_bytes = Table(index_bytes, name).get(b"INDEX_CONFIG")
    if config_bytes is None:
        raise BeamlensError(f"{name} has no INDEX_CONFIG: not an on-device ScaNN index")
    config = decode_index_config(config_bytes, with_arrays=True)
    if config["asymmetric_hashing"]:
        return int(sum(book.shape[1] for book in config["asymmetric_hashing"]["codebooks"]))
    return int(config["embedding_dim"])


def _strip_index_files(data: bytes, info: model_file.ModelFileInfo) -> tuple[bytes, set[str]]:
    """The model bytes without packed SCANN_INDEX_FILE entries (other packed files kept)."""
    names = set(model_file.index_file_names(info))
    if not names or info.zip_offset is None:
        return data, names
    prefix = data[: info.zip_offset]
    out = io.BytesIO(prefix)
    out.seek(0, io.SEEK_END)
    with zipfile.ZipFile(io.BytesIO(data)) as source, zipfile.ZipFile(out, "a") as target:
        for entry in source.infolist():
            if entry.filename not in names:
                target.writestr(entry.filename, source.read(entry.filename))
    stripped = out.getvalue()
    return (prefix if stripped == prefix else stripped), names


def _attach_here(embedder_path: str, index_path: str, out_path: str) -> str:
    import flatbuffers  # noqa: PLC0415
    from tflite_support import metadata as md  # noqa: PLC0415
    from tflite_support import metadata_schema_py_generated as fb  # noqa: PLC0415

    with open(embedder_path, "rb") as stream:
        model = stream.read()
    model_file.check_tflite_model(model, embedder_path)
    info = model_file.read_model_file(model, embedder_path)
    with open(index_path, "rb") as stream:
        index = stream.read()
    query_dim = index_query_dimension(index, index_path)
    output_index = model_file.searcher_output_index(info)
    if output_index >= len(info.outputs):
        raise BeamlensError(f"{embedder_path} has no output tensor {output_index}")
    out_shape = info.outputs[output_index].shape
    if not out_shape or out_shape[-1] != query_dim:
        raise BeamlensError(
            f"{embedder_path} outputs {out_shape} (dimension {out_shape[-1] if out_shape else '?'}) but the index "
            f"{index_path} holds {query_dim}-d vectors; build the index from this embedder's embeddings"
        )
    model, stripped = _strip_index_files(model, info)

    if info.metadata is not None:
        buffer = md.MetadataDisplayer.with_model_buffer(model).get_metadata_buffer()
        meta = fb.ModelMetadataT.InitFromObj(fb.ModelMetadata.GetRootAsModelMetadata(buffer, 0))
    else:
        meta = fb.ModelMetadataT()
        graph = fb.SubGraphMetadataT()
        graph.inputTensorMetadata = [fb.TensorMetadataT() for _ in info.inputs]
        graph.outputTensorMetadata = [fb.TensorMetadataT() for _ in info.outputs]
        meta.subgraphMetadata = [graph]
    output = meta.subgraphMetadata[0].outputTensorMetadata[output_index]
    kept = [f for f in (output.associatedFiles or []) if f.type != fb.AssociatedFileType.SCANN_INDEX_FILE]
    attached = fb.AssociatedFileT()
    attached.name = INDEX_NAME
    attached.description = INDEX_DESCRIPTION
    attached.type = fb.AssociatedFileType.SCANN_INDEX_FILE
    output.associatedFiles = kept + [attached]
    builder = flatbuffers.Builder(0)
    builder.Finish(meta.Pack(builder), md.MetadataPopulator.METADATA_FILE_IDENTIFIER)

    import tempfile  # noqa: PLC0415

    with tempfile.TemporaryDirectory(prefix="beamlens-attach-") as folder:
        staged = os.path.join(folder, INDEX_NAME)
        with open(staged, "wb") as stream:
            stream.write(index)
        populator = md.MetadataPopulator.with_model_buffer(model)
        populator.load_metadata_buffer(builder.Output())
        populator.load_associated_files([staged])
        try:
            populator.populate()
        except ValueError as error:
            raise BeamlensError(f"could not attach the index to {embedder_path}: {error}") from error
        result = populator.get_model_buffer()
    write_bytes_atomically(out_path, result)
    return out_path
