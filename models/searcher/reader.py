"""Read searcher files (ours and Model Maker's) and change their leaves-to-search cheaply. Pure Python.

    info = read_searcher("text_searcher.tflite")   # or a bare index .ldb
    info.num_leaves, info.num_leaves_to_search, info.distance_measure, info.num_items, info.user_info
    rewrite_leaves_to_search("text_searcher.tflite", "variant.tflite", leaves_to_search=8)

``read_searcher`` needs neither TensorFlow nor the Task Library (it reads the model flatbuffer,
the appended zip and the LevelDB table itself), so it runs in any process. ``rewrite_leaves_to_search``
re-encodes only the table block holding ``INDEX_CONFIG`` and re-zips: seconds even for large
indexes, no rebuild; the evaluate command uses it to sweep leaves searched.
"""

from __future__ import annotations

import io
import json
import os
import zipfile
from dataclasses import asdict, dataclass, field
from typing import Any, Optional

from beamlens.models.errors import BeamlensError
from beamlens.models.io import model_file
from beamlens.models.searcher.sstable import Table, TableError, replace_value
from beamlens.models.searcher.wire import (
    decode_index_config,
    fraction_for_leaves,
    with_search_fraction,
)

INDEX_CONFIG_KEY = b"INDEX_CONFIG"


@dataclass
class SearcherInfo:
    path: str
    kind: str  # "tflite" or "index"
    index_name: Optional[str]
    index_bytes: int
    embedding_type: str
    embedding_dim: int  # as stored: the vector dimension (FLOAT) or bytes per code (UINT8)
    query_dimension: Optional[int]
    distance_measure: str
    num_leaves: int  # 0 for an index without partitioner (searches everything)
    num_leaves_to_search: int
    search_fraction: Optional[float]
    num_items: int
    partition_sizes: list[int]
    asymmetric_hashing: Optional[dict[str, Any]]
    user_info: str
    compressed: bool
    first_items: list[str] = field(default_factory=list)
    inputs: list[dict[str, Any]] = field(default_factory=list)
    outputs: list[dict[str, Any]] = field(default_factory=list)
    metadata: Optional[dict[str, Any]] = None
    packed_files: dict[str, int] = field(default_factory=dict)

    def get(self, name: str, default: Any = None) -> Any:
        return getattr(self, name, default)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _load(path: str) -> tuple[bytes, str, Optional[str], bytes, Optional[model_file.ModelFileInfo]]:
    """(file bytes, kind, index name, index bytes, model info)."""
    if not os.path.isfile(path):
        raise BeamlensError(f"file not found: {path}")
    with open(path, "rb") as stream:
        data = stream.read()
    if model_file.is_tflite_model(data):
        info = model_file.read_model_file(data, path)
        names = model_file.index_file_names(info)
        if not names:
            raise BeamlensError(f"{path} is a TFLite model without an attached ScaNN index (not a searcher)")
        try:
            index = model_file.read_packed_file(data, names[0])
        except KeyError as error:
            raise BeamlensError(f"{path}: its metadata names {names[0]} but the file is not packed in it") from error
        return data, "tflite", names[0], index, info
    return data, "index", None, data, None


def read_searcher(path: str, first_items: int = 5) -> SearcherInfo:
    """Describe a searcher .tflite or a bare .ldb index (see :class:`SearcherInfo`)."""
    _, kind, name, index, info = _load(path)
    try:
        table = Table(index, name or path)
        config_bytes = table.get(INDEX_CONFIG_KEY)
    except TableError as error:
        raise BeamlensError(f"{path}: {error}") from error
    if config_bytes is None:
        raise BeamlensError(f"{path}: the index has no INDEX_CONFIG entry (not an on-device ScaNN index)")
    config = decode_index_config(config_bytes, with_arrays=True)
    offsets = config["global_partition_offsets"]
    part = config["partitioner"]
    num_partitions = max(len(offsets), 1)
    last = table.get(f"E_{num_partitions - 1}".encode()) or b""
    per_item = config["embedding_dim"] * (4 if config["embedding_type"] == "FLOAT" else 1)
    last_size = len(last) // per_item if per_item else 0
    start = offsets[-1] if offsets else 0
    total = start + last_size
    sizes = [b - a for a, b in zip(offsets, offsets[1:])] + [last_size]
    ah = config["asymmetric_hashing"]
    if ah:
        query_dim = int(sum(book.shape[1] for book in ah.pop("codebooks")))
    else:
        query_dim = config["embedding_dim"] if config["embedding_type"] == "FLOAT" else None
    distance = config["query_distance"]
    if distance == "unspecified":
        distance = (ah or {}).get("query_distance") or (part or {}).get("query_distance") or "unspecified"
    items = [v.decode("utf-8", "replace") for _, v in _first_items(table, first_items)]
    user = table.get(b"USER_INFO") or b""
    result = SearcherInfo(
        path=path, kind=kind, index_name=name, index_bytes=len(index),
        embedding_type=config["embedding_type"], embedding_dim=config["embedding_dim"], query_dimension=query_dim,
        distance_measure=distance,
        num_leaves=part["num_leaves"] if part else 0,
        num_leaves_to_search=part["num_leaves_to_search"] if part else 1,
        search_fraction=part["search_fraction"] if part else None,
        num_items=total, partition_sizes=sizes, asymmetric_hashing=ah,
        user_info=user.decode("utf-8", "replace"), compressed=table.compressed(), first_items=items,
    )
    if info is not None:
        result.inputs = [asdict(t) for t in info.inputs]
        result.outputs = [asdict(t) for t in info.outputs]
        result.metadata = info.metadata
        result.packed_files = info.packed_files
    return result


def _first_items(table: Table, count: int) -> list[tuple[bytes, bytes]]:
    out = []
    for i in range(count):
        value = table.get(f"M_{i}".encode())
        if value is None:
            break
        out.append((f"M_{i}".encode(), value))
    return out


def item_metadata(path: str, ids: list[int]) -> list[bytes]:
    """Raw metadata bytes of items by global id (the Task Library's result order ids)."""
    _, _, name, index, _ = _load(path)
    table = Table(index, name or path)
    return [table.get(f"M_{i}".encode()) or b"" for i in ids]


def rewrite_leaves_to_search(searcher_path: str, out_path: str, leaves_to_search: int) -> str:
    """Write a copy of a searcher (or index) that searches ``leaves_to_search`` leaves per query."""
    from beamlens.models.io.files import write_bytes_atomically  # noqa: PLC0415

    data, kind, name, index, _ = _load(searcher_path)
    table = Table(index, name or searcher_path)
    config_bytes = table.get(INDEX_CONFIG_KEY)
    config = decode_index_config(config_bytes)
    if not config["partitioner"]:
        raise BeamlensError(f"{searcher_path}: the index has no partitioner; every query already scans all items")
    num_leaves = config["partitioner"]["num_leaves"]
    if not 1 <= leaves_to_search <= num_leaves:
        raise BeamlensError(f"leaves_to_search must be between 1 and {num_leaves}, got {leaves_to_search}")
    new_index = replace_value(index, INDEX_CONFIG_KEY, with_search_fraction(config_bytes, fraction_for_leaves(num_leaves, leaves_to_search)))
    if kind == "index":
        write_bytes_atomically(out_path, new_index)
        return out_path
    offset = model_file.zip_offset(data)
    out = io.BytesIO(data[:offset])
    out.seek(0, io.SEEK_END)
    with zipfile.ZipFile(io.BytesIO(data)) as source, zipfile.ZipFile(out, "a") as target:
        for entry in source.infolist():
            target.writestr(entry.filename, new_index if entry.filename == name else source.read(entry.filename))
    write_bytes_atomically(out_path, out.getvalue())
    return out_path


def metadata_json(path: str) -> Optional[dict[str, Any]]:
    """The metadata JSON as tflite-support's MetadataDisplayer prints it (runs via call_tflite)."""
    from beamlens.models import compat  # noqa: PLC0415

    text = compat.call_tflite(_metadata_json_here, os.path.abspath(path))
    return json.loads(text) if text else None


def _metadata_json_here(path: str) -> Optional[str]:
    from tflite_support import metadata as md  # noqa: PLC0415

    try:
        return md.MetadataDisplayer.with_model_file(path).get_metadata_json()
    except ValueError:
        return None
