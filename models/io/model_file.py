"""Read a .tflite file without TensorFlow or the Task Library: I/O tensors, metadata, packed files.

Uses the flatbuffer schemas shipped as plain Python in tflite-support 0.4.4
(``schema_py_generated``, ``metadata_schema_py_generated``; both only need ``flatbuffers``), so
it runs in any process. Associated files are an uncompressed zip appended to the model.
"""

from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass, field
from typing import Any, Optional

from beamlens.models.errors import BeamlensError

TFLITE_IDENTIFIER = b"TFL3"
METADATA_NAME = "TFLITE_METADATA"
TENSOR_TYPES = {0: "float32", 1: "float16", 2: "int32", 3: "uint8", 4: "int64", 5: "string", 6: "bool", 7: "int16", 9: "int8"}
ASSOCIATED_FILE_TYPES = {0: "UNKNOWN", 1: "DESCRIPTIONS", 2: "TENSOR_AXIS_LABELS", 3: "TENSOR_VALUE_LABELS",
                         4: "TENSOR_AXIS_SCORE_CALIBRATION", 5: "VOCABULARY", 6: "SCANN_INDEX_FILE"}
SCANN_INDEX_FILE = 6


@dataclass
class TensorInfo:
    name: str
    type: str
    shape: list[int]


@dataclass
class ModelFileInfo:
    inputs: list[TensorInfo]
    outputs: list[TensorInfo]
    metadata: Optional[dict[str, Any]] = None  # a compact summary of the metadata flatbuffer
    packed_files: dict[str, int] = field(default_factory=dict)  # name -> size
    zip_offset: Optional[int] = None  # where the appended zip starts


def is_tflite_model(data: bytes) -> bool:
    return len(data) >= 8 and data[4:8] == TFLITE_IDENTIFIER


def check_tflite_model(data: bytes, path: str) -> None:
    if not is_tflite_model(data):
        raise BeamlensError(f"{path} is not a TFLite model (no 'TFL3' flatbuffer identifier)")


def _shape(tensor: Any) -> list[int]:
    sig = tensor.ShapeSignatureAsNumpy() if tensor.ShapeSignatureLength() else None
    if sig is not None and not isinstance(sig, int):
        return [int(x) for x in sig]
    shape = tensor.ShapeAsNumpy()
    return [] if isinstance(shape, int) else [int(x) for x in shape]


def zip_offset(data: bytes) -> Optional[int]:
    """Where the appended zip of associated files begins, or None."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            infos = archive.infolist()
            return min(i.header_offset for i in infos) if infos else None
    except zipfile.BadZipFile:
        return None


def read_packed_file(data: bytes, name: str) -> bytes:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        return archive.read(name)


def read_model_file(data: bytes, path: str = "model") -> ModelFileInfo:
    from tensorflow_lite_support.metadata import metadata_schema_py_generated as mfb  # noqa: PLC0415
    from tensorflow_lite_support.metadata import schema_py_generated as sfb  # noqa: PLC0415

    check_tflite_model(data, path)
    try:
        model = sfb.Model.GetRootAsModel(data, 0)
        graph = model.Subgraphs(0)

        def tensor(i: int) -> TensorInfo:
            t = graph.Tensors(i)
            return TensorInfo((t.Name() or b"").decode(), TENSOR_TYPES.get(t.Type(), str(t.Type())), _shape(t))

        inputs = [tensor(graph.Inputs(i)) for i in range(graph.InputsLength())]
        outputs = [tensor(graph.Outputs(i)) for i in range(graph.OutputsLength())]
        meta_summary = None
        for i in range(model.MetadataLength()):
            entry = model.Metadata(i)
            if (entry.Name() or b"").decode() == METADATA_NAME:
                buffer = model.Buffers(entry.Buffer()).DataAsNumpy().tobytes()
                meta = mfb.ModelMetadataT.InitFromObj(mfb.ModelMetadata.GetRootAsModelMetadata(buffer, 0))
                meta_summary = summarize_metadata(meta)
    except BeamlensError:
        raise
    except Exception as error:  # noqa: BLE001 (a damaged flatbuffer)
        raise BeamlensError(f"{path} is not a readable TFLite model: {error}") from error
    info = ModelFileInfo(inputs, outputs, meta_summary)
    info.zip_offset = zip_offset(data)
    if info.zip_offset is not None:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            info.packed_files = {i.filename: i.file_size for i in archive.infolist()}
    return info


def _decode(value: Any) -> Any:
    return value.decode() if isinstance(value, bytes) else value


def _files(files: Any) -> list[dict[str, Any]]:
    return [
        {"name": _decode(f.name), "description": _decode(f.description),
         "type": ASSOCIATED_FILE_TYPES.get(f.type, str(f.type))}
        for f in (files or [])
    ]


def summarize_metadata(meta: Any) -> dict[str, Any]:
    """The parts of ModelMetadata a person inspecting a searcher wants (names, associated files)."""
    graphs = []
    for g in meta.subgraphMetadata or []:
        graphs.append({
            "input_tensors": [{"name": _decode(t.name), "associated_files": _files(t.associatedFiles),
                               "process_units": len(t.processUnits or [])} for t in (g.inputTensorMetadata or [])],
            "output_tensors": [{"name": _decode(t.name), "associated_files": _files(t.associatedFiles)}
                               for t in (g.outputTensorMetadata or [])],
            "input_process_units": len(g.inputProcessUnits or []),
            "associated_files": _files(g.associatedFiles),
        })
    return {
        "name": _decode(meta.name), "description": _decode(meta.description),
        "version": _decode(meta.version), "min_parser_version": _decode(meta.minParserVersion),
        "associated_files": _files(meta.associatedFiles), "subgraphs": graphs,
    }


def searcher_output_index(info: ModelFileInfo) -> int:
    """Which output carries the index: 1 for a Universal-Sentence-Encoder-like model (3 inputs and no
    subgraph tokenizer), else 0 — the rule of Model Maker's export and the Task Library."""
    units = 0
    if info.metadata and info.metadata["subgraphs"]:
        units = info.metadata["subgraphs"][0]["input_process_units"]
    return 1 if len(info.inputs) == 3 and units == 0 and len(info.outputs) > 1 else 0


def index_file_names(info: ModelFileInfo) -> list[str]:
    """Names of the SCANN_INDEX_FILE associated files of the searcher's output tensor."""
    if not info.metadata or not info.metadata["subgraphs"]:
        return []
    outputs = info.metadata["subgraphs"][0]["output_tensors"]
    index = searcher_output_index(info)
    if index >= len(outputs):
        return []
    return [f["name"] for f in outputs[index]["associated_files"] if f["type"] == "SCANN_INDEX_FILE"]
