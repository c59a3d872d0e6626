"""TFLite Model Maker's ``searcher`` API on beamlens's builder: the seed's code runs unchanged.

Model Maker (``tflite_model_maker.searcher``) no longer installs; this module keeps its names and
call shapes so code written for it needs only a new import line::

    from beamlens.model_maker import searcher

    scann_options = searcher.ScaNNOptions(
        distance_measure="dot_product",
        tree=searcher.Tree(num_leaves=351, num_leaves_to_search=4),
        score_ah=searcher.ScoreAH(1, anisotropic_quantization_threshold=0.2))
    data = searcher.DataLoader(tflite_embedder_path, image_embeddings, metadata)
    model = searcher.Searcher.create_from_data(data, scann_options)
    model.export(export_filename="searcher.tflite", userinfo="", export_format=searcher.ExportFormat.TFLITE)

The file written is the one ``beamlens build-searcher`` writes (the same index builder and attach
step), so the Task Library's ``TextSearcher`` / ``ImageSearcher`` load it. Beyond Model Maker,
:meth:`DataLoader.from_shards` indexes ``beamlens embed`` output: it keeps the folders, not the
vectors, and the export streams them (a corpus of millions never sits in this process).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from typing import Optional, Sequence, Union

import numpy as np

from beamlens.models.errors import BeamlensError
from beamlens.models.searcher.attach import attach_index
from beamlens.models.searcher.options import (
    DOT_PRODUCT,
    ExportFormat,
    ScaNNOptions,
    ScoreAH,
    ScoreBruteForce,
    Tree,
)
from beamlens.models.searcher.scann_build import build_index
from beamlens.models.shards.reader import read_shards

__all__ = ["DataLoader", "ExportFormat", "ScaNNOptions", "ScoreAH", "ScoreBruteForce", "Searcher", "Tree"]

Metadata = Union[str, bytes]


def _metadata_bytes(metadata: Sequence[Metadata]) -> list[bytes]:
    """Each item's metadata as bytes; one line each in the builder's metadata file, so no newlines."""
    encoded = [item.encode("utf-8") if isinstance(item, str) else bytes(item) for item in metadata]
    for number, item in enumerate(encoded):
        if b"\n" in item:
            raise BeamlensError(f"metadata item {number} contains a newline, which the index's metadata cannot hold")
    return encoded


class DataLoader:
    """Embeddings and their metadata to index, with the embedder that made them (Model Maker's
    ``searcher.DataLoader``): ``DataLoader(embedder_path, dataset, metadata)`` with ``dataset`` an
    N x d float array and ``metadata`` N strings or bytes."""

    def __init__(self, embedder_path: Optional[str] = None, dataset: Optional[np.ndarray] = None,
                 metadata: Optional[Sequence[Metadata]] = None) -> None:
        self._embedder_path = embedder_path
        self._dataset = np.zeros((0, 0), np.float32) if dataset is None else np.asarray(dataset, np.float32)
        self._metadata = _metadata_bytes(metadata or [])
        self._shards: list[str] = []
        if self._dataset.ndim != 2:
            raise BeamlensError(f"dataset must be an N x d array of embeddings, got shape {self._dataset.shape}")
        if len(self._metadata) != self._dataset.shape[0]:
            raise BeamlensError(f"{self._dataset.shape[0]} embeddings but {len(self._metadata)} metadata items: "
                                "give one metadata item per embedding")

    @classmethod
    def from_shards(cls, shards: Union[str, Sequence[str]], embedder_path: Optional[str] = None) -> DataLoader:
        """The output folder(s) of ``beamlens embed`` / ``reindex``, read (and checked against their
        manifests) only when the searcher is exported."""
        loader = cls(embedder_path)
        loader._shards = [shards] if isinstance(shards, str) else list(shards)
        if not loader._shards:
            raise BeamlensError("from_shards needs at least one shard folder")
        return loader

    @property
    def embedder_path(self) -> Optional[str]:
        return self._embedder_path

    @property
    def dataset(self) -> np.ndarray:
        return self._dataset

    @property
    def metadata(self) -> list[bytes]:
        return list(self._metadata)

    @property
    def shards(self) -> list[str]:
        return list(self._shards)

    def __len__(self) -> int:
        return self._dataset.shape[0]

    def append(self, other: DataLoader) -> None:
        """Add another loader's embeddings (same dimension) and metadata, as Model Maker's does."""
        if self._shards or other._shards:
            raise BeamlensError("append joins in-memory embeddings; give several folders to from_shards instead")
        if len(self) and len(other) and other.dataset.shape[1] != self._dataset.shape[1]:
            raise BeamlensError(f"cannot append {other.dataset.shape[1]}-d embeddings to {self._dataset.shape[1]}-d ones")
        self._dataset = other.dataset if not len(self) else np.concatenate([self._dataset, other.dataset])
        self._metadata += other.metadata
        self._embedder_path = self._embedder_path or other.embedder_path


@dataclass
class _Inputs:
    """The builder's input files: an N x d float32 .npy and one metadata line per item."""

    vectors_path: str
    metadata_path: str


def _write_inputs(data: DataLoader, work: str, distance_measure: str) -> _Inputs:
    if data.shards:
        shards = read_shards(data.shards, work, unit_norm=distance_measure == DOT_PRODUCT)
        return _Inputs(shards.vectors_path, shards.metadata_path)
    if not len(data):
        raise BeamlensError("the DataLoader holds no embeddings: nothing to index")
    vectors_path, metadata_path = os.path.join(work, "vectors.npy"), os.path.join(work, "metadata.lines")
    np.save(vectors_path, data.dataset)
    with open(metadata_path, "wb") as stream:
        stream.write(b"".join(item + b"\n" for item in data.metadata))
    return _Inputs(vectors_path, metadata_path)


class Searcher:
    """An index to be built from a :class:`DataLoader` with fixed ScaNN options (Model Maker's
    ``searcher.Searcher``). Not the query runtime: that is :class:`beamlens.Searcher`."""

    def __init__(self, data: DataLoader, scann_options: ScaNNOptions) -> None:
        scann_options.validate()
        self._data = data
        self._options = scann_options

    @classmethod
    def create_from_data(cls, data: DataLoader, scann_options: ScaNNOptions, cache_dir: Optional[str] = None) -> Searcher:
        """Model Maker's constructor. ``cache_dir`` is accepted for its signature; the build runs at export."""
        del cache_dir
        return cls(data, scann_options)

    def export(self, export_format: ExportFormat, export_filename: str, userinfo: Union[str, bytes] = "",
               compression: bool = True) -> str:
        """Build the index and write ``export_filename``: a searcher .tflite (the loader's embedder
        with the index attached) for ``ExportFormat.TFLITE``, the bare index for ``SCANN_INDEX_FILE``."""
        if not isinstance(export_format, ExportFormat):
            raise BeamlensError(f"export_format must be searcher.ExportFormat.TFLITE or SCANN_INDEX_FILE, got {export_format!r}")
        if export_format is ExportFormat.TFLITE and not self._data.embedder_path:
            raise BeamlensError("ExportFormat.TFLITE needs the DataLoader's embedder_path (the .tflite the index is attached to)")
        text = userinfo.decode("utf-8") if isinstance(userinfo, bytes) else userinfo
        out_dir = os.path.dirname(os.path.abspath(export_filename))
        os.makedirs(out_dir, exist_ok=True)
        work = tempfile.mkdtemp(prefix=".model-maker-", dir=out_dir)
        try:
            inputs = _write_inputs(self._data, work, self._options.distance_measure)
            index_path, _ = build_index(inputs.vectors_path, inputs.metadata_path, self._options,
                                        os.path.join(work, "index.ldb"), text, compression=compression)
            if export_format is ExportFormat.TFLITE:
                return attach_index(self._data.embedder_path, index_path, export_filename)
            os.replace(index_path, export_filename)  # the scratch folder is beside it: an atomic rename
            return export_filename
        finally:
            shutil.rmtree(work, ignore_errors=True)
