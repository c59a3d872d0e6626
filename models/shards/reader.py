"""THE shard reader: every record of one or more embedding runs, checked by one set of rules.

``beamlens build-searcher``, ``beamlens evaluate`` and the test helpers read shards through
:func:`read_shards`; the embed and re-index pipelines check their own output with the same
:func:`check_record_vector` and :data:`NORM_TOLERANCE`. The rules:

* the folder holds exactly the shard files its ``manifest.json`` lists (both directions), and
  the records the manifest counts (``records.check_manifest_files`` / ``check_manifest_counts``);
  a folder without a manifest is refused unless ``allow_missing_manifest``;
* every vector has the first one's dimension, finite values and (``unit_norm``) an L2 norm within
  :data:`NORM_TOLERANCE` of 1, or is normalised (``normalize``);
* **duplicate policy**: the same image id with an identical vector (a runner that wrote an
  element twice, or train and val runs sharing an image) is dropped and counted; the same id with
  a different vector is an error (two embedding runs mixed);
* all records come from one model (fingerprints agree).

Records are streamed one at a time into an N x d float32 ``.npy`` (memory-mapped, N from the
manifests) and a metadata file (one compact JSON line per item), so 10M items never sit in a
Python list.
"""

from __future__ import annotations

import glob
import json
import os
from dataclasses import dataclass, field
from typing import Any, Iterator, Optional, Sequence

import numpy as np

from beamlens.models.progress import progress_printer
from beamlens.models.errors import BeamlensError
from beamlens.models.io.tfrecord import CorruptRecordError, read_records
from beamlens.models.shards import records as sf

NORM_TOLERANCE = 1e-2
PROGRESS_EVERY = 100_000


_progress = progress_printer("[read-shards]")


def check_record_vector(vector: np.ndarray, where: str, unit_norm: bool = True, hint: str = "") -> None:
    """The per-vector rules every reader applies: non-empty, finite, unit norm when asked."""
    if vector.size == 0:
        raise BeamlensError(f"{where}: the vector is empty")
    if not np.all(np.isfinite(vector)):
        raise BeamlensError(f"{where}: the vector has NaN or infinite values")
    norm = float(np.linalg.norm(vector))
    if unit_norm and abs(norm - 1.0) > NORM_TOLERANCE:
        raise BeamlensError(f"{where}: the vector's L2 norm is {norm:.4f}, not 1 (tolerance {NORM_TOLERANCE}){hint}")


@dataclass
class ShardReadResult:
    vectors_path: str
    metadata_path: str
    count: int
    dimension: int
    records_read: int
    duplicates_dropped: int
    normalized: int
    shards: list[str]
    model_fingerprint: str
    manifest_found: bool
    warnings: list[str] = field(default_factory=list)


def find_shards(shards_dir: str, allow_missing_manifest: bool) -> tuple[list[str], Optional[Any], list[str]]:
    """The shard files of one embedding run, its manifest (None without one) and warnings.

    With a manifest the folder must hold exactly the shard files it lists, no fewer and no
    others (``shard_format.check_manifest_files``); their record counts are held to the manifest
    while they are read (:func:`_read_folder`).
    """
    if not os.path.isdir(shards_dir):
        raise BeamlensError(f"shards folder not found: {shards_dir}")
    manifest_path = os.path.join(shards_dir, sf.MANIFEST_NAME)
    found = sorted(glob.glob(os.path.join(glob.escape(shards_dir), sf.SHARD_GLOB)))
    warnings: list[str] = []
    if os.path.isfile(manifest_path):
        try:
            with open(manifest_path, encoding="utf-8") as stream:
                manifest = sf.Manifest.from_json(stream.read())
        except (ValueError, TypeError) as error:
            raise BeamlensError(f"{manifest_path} is not a valid manifest: {error}") from error
        present = {os.path.basename(path) for path in found}
        present |= {name for name in manifest.shards if os.path.isfile(os.path.join(shards_dir, name))}
        sf.check_manifest_files(shards_dir, manifest, present)
        return [os.path.join(shards_dir, s) for s in manifest.shards], manifest, warnings
    if not found:
        raise BeamlensError(f"no embedding shards ({sf.SHARD_GLOB}) and no {sf.MANIFEST_NAME} in {shards_dir}")
    if not allow_missing_manifest:
        raise BeamlensError(
            f"{shards_dir} has shards but no {sf.MANIFEST_NAME}: the embedding run did not finish. "
            "Re-run `beamlens embed`, or pass --allow-missing-manifest to index what is there"
        )
    warning = f"{shards_dir} has no {sf.MANIFEST_NAME}; reading {len(found)} shard files as found"
    _progress(f"warning: {warning}")
    warnings.append(warning)
    return found, None, warnings


def shard_records(path: str) -> Iterator[bytes]:
    """The serialized records of one shard; a damaged file is a BeamlensError naming it."""
    try:
        yield from read_records(path)
    except CorruptRecordError as error:
        raise BeamlensError(f"{path} is not a readable TFRecord shard: {error}") from error


def _records_held(shards: Sequence[str]) -> dict[str, int]:
    """Records in each shard (by file name), counted without decoding: for naming a mismatch."""
    return {os.path.basename(shard): sum(1 for _ in shard_records(shard)) for shard in shards}


class _CapacityExceeded(BeamlensError):
    """More distinct items than the manifests count: the matrix (sized from them) is full."""


class _Rows:
    """The N x d matrix and metadata lines that :func:`read_shards` fills, one checked record at a time.

    One object holds what every record is checked against (dimension so far, ids seen, models),
    so the folders of several embedding runs are read into one index by the same checks.
    """

    def __init__(self, raw_path: str, capacity: int, meta_out: Any, unit_norm: bool, normalize: bool, num_shards: int) -> None:
        self.raw_path, self.capacity, self.meta_out = raw_path, capacity, meta_out
        self.unit_norm, self.normalize, self.num_shards = unit_norm, normalize, num_shards
        self.matrix: Optional[np.ndarray] = None
        self.dimension: Optional[int] = None
        self.dim_source = ""
        self.seen: dict[str, int] = {}
        self.rows = self.read = self.duplicates = self.normalized = 0
        self.fingerprints: set[str] = set()

    def add(self, raw: bytes, shard: str) -> tuple[str, int, bool]:
        """Check and store one serialized record: (its image id, its row, whether it is new).

        An identical copy of a stored item is dropped and counted; a different vector under a
        stored id, a mixed dimension, non-finite values or (for dot_product) a non-unit norm raise.
        """
        try:
            record = sf.decode_record(raw)
        except Exception as error:  # noqa: BLE001 (a damaged record)
            raise BeamlensError(f"{shard}: record {self.read} cannot be parsed: {error}") from error
        self.read += 1
        vector, name = record.embedding, os.path.basename(shard)
        where = f"image id {record.image_id!r} in {name}"
        if not record.image_id:
            raise BeamlensError(f"{shard}: record {self.read - 1} has no image id")
        if self.dimension is None:
            self.dimension, self.dim_source = vector.size, where
            self.matrix = np.lib.format.open_memmap(self.raw_path, mode="w+", dtype=np.float32,
                                                    shape=(self.capacity, self.dimension))
        elif vector.size != self.dimension:
            raise BeamlensError(
                f"mixed dimensions: {where} has a {vector.size}-d vector, but {self.dim_source} has {self.dimension}-d"
            )
        check_record_vector(vector, where, self.unit_norm and not self.normalize, _UNIT_NORM_HINT)
        prepared = _normalized(vector, where) if self.normalize else vector
        if record.image_id in self.seen:
            row = self.seen[record.image_id]
            if np.array_equal(self.matrix[row], prepared):
                self.duplicates += 1
                return record.image_id, row, False
            raise BeamlensError(
                f"duplicate image id {record.image_id!r} (again in {name}) with a DIFFERENT vector; "
                "the shards mix two embedding runs"
            )
        if prepared is not vector:
            self.normalized += 1
        if self.rows >= self.capacity:
            raise _CapacityExceeded(
                f"the shards hold more distinct items than the manifest's count {self.capacity}; the manifest "
                f"does not belong to these shards ({name})"
            )
        self.matrix[self.rows] = prepared
        self.seen[record.image_id] = row = self.rows
        self.rows += 1
        if record.model_fingerprint:
            self.fingerprints.add(record.model_fingerprint)
        meta = {"id": record.image_id, "uri": record.uri, "captions": list(record.captions)}
        self.meta_out.write(json.dumps(meta, separators=(",", ":"), ensure_ascii=False).encode("utf-8") + b"\n")
        if self.read % PROGRESS_EVERY == 0:
            _progress(f"read {self.read} records ({self.rows} items) from {self.num_shards} shards")
        return record.image_id, row, True


def _read_folder(rows: _Rows, folder: str, shards: Sequence[str], manifest: Optional[Any]) -> None:
    """Read one embedding run's shards into ``rows``, then hold them to its manifest (if any).

    The manifest's counts are checked here, after its shards are read, because only reading
    counts records (a TFRecord has no header). "Distinct" means distinct within this folder: an
    image that an earlier folder also holds (train and val sharing one) still counts here.
    """
    start, held, distinct, again = rows.rows, {}, 0, set()
    try:
        for shard in shards:
            records = 0
            for raw in shard_records(shard):
                image_id, row, new = rows.add(raw, shard)
                records += 1
                if new or (row < start and image_id not in again):
                    distinct += 1
                    if not new:
                        again.add(image_id)
            held[os.path.basename(shard)] = records
    except _CapacityExceeded:
        if manifest is not None:  # name the counts: count this folder's records to the end
            sf.check_manifest_counts(folder, manifest, _records_held(shards), None)
        raise
    if manifest is not None:
        sf.check_manifest_counts(folder, manifest, held, distinct)


def read_shards(shards_dirs: str | Sequence[str], work_dir: str, unit_norm: bool = True, normalize: bool = False,
                allow_missing_manifest: bool = False) -> ShardReadResult:
    """Stream every record of one or more embedding runs into work_dir/vectors.npy +
    work_dir/metadata.jsonl, validating as it goes (ids are de-duplicated across runs too), and
    hold each run's shards to its manifest in both directions (files and record counts)."""
    dirs = [shards_dirs] if isinstance(shards_dirs, str) else list(shards_dirs)
    shards_dir = ", ".join(dirs)
    found = [find_shards(folder, allow_missing_manifest) for folder in dirs]
    shards = [shard for folder_shards, _, _ in found for shard in folder_shards]
    manifests = [folder_manifest for _, folder_manifest, _ in found]
    warnings = [warning for _, _, folder_warnings in found for warning in folder_warnings]
    manifest_fingerprints = {m.model_fingerprint for m in manifests if m is not None and m.model_fingerprint}
    if len(manifest_fingerprints) > 1:
        raise BeamlensError(
            f"the embedding runs in {shards_dir} were made by {len(manifest_fingerprints)} different models: "
            f"{sorted(manifest_fingerprints)}"
        )
    manifest = manifests[0] if all(m is not None for m in manifests) else None
    if manifest is not None:
        capacity = sum(int(m.count) for m in manifests)
    else:
        _progress("counting records (no manifest)")
        capacity = sum(1 for s in shards for _ in shard_records(s))
    if capacity == 0:
        for folder, (folder_shards, folder_manifest, _) in zip(dirs, found):  # "0 records" may be the lie
            if folder_manifest is not None:
                sf.check_manifest_counts(folder, folder_manifest, _records_held(folder_shards), None)
        raise BeamlensError(f"the shards in {shards_dir} hold no records")
    raw_path = os.path.join(work_dir, "vectors-raw.npy")
    metadata_path = os.path.join(work_dir, "metadata.jsonl")
    with open(metadata_path, "wb") as meta_out:
        rows = _Rows(raw_path, capacity, meta_out, unit_norm, normalize, len(shards))
        for folder, (folder_shards, folder_manifest, _) in zip(dirs, found):
            _read_folder(rows, folder, folder_shards, folder_manifest)
    _progress(f"read {rows.read} records: {rows.rows} items, {rows.duplicates} identical duplicates dropped")
    if rows.rows == 0:
        raise BeamlensError(f"the shards in {shards_dir} hold no records")
    if len(rows.fingerprints) > 1:
        raise BeamlensError(f"the shards mix embeddings of {len(rows.fingerprints)} different models: {sorted(rows.fingerprints)}")
    assert rows.matrix is not None and rows.dimension is not None
    vectors_path = _final_matrix(rows, os.path.join(work_dir, "vectors.npy"))
    dimension = rows.dimension
    fingerprint = (manifest.model_fingerprint if manifest is not None else "") or next(iter(rows.fingerprints), "")
    for folder, folder_manifest in zip(dirs, manifests):
        if folder_manifest is not None and folder_manifest.dimension and folder_manifest.dimension != dimension:
            raise BeamlensError(
                f"the manifest in {folder} says {folder_manifest.dimension}-d but the shards hold {dimension}-d vectors"
            )
    return ShardReadResult(vectors_path, metadata_path, rows.rows, dimension, rows.read, rows.duplicates, rows.normalized,
                           [os.path.basename(s) for s in shards], fingerprint, manifest is not None, warnings)


def _final_matrix(rows: _Rows, vectors_path: str) -> str:
    """vectors.npy with exactly the stored rows: the raw file renamed, or its first rows copied
    when identical duplicates left the capacity partly unused."""
    matrix = rows.matrix
    matrix.flush()
    rows.matrix = None
    if rows.rows == rows.capacity:
        del matrix
        os.replace(rows.raw_path, vectors_path)
        return vectors_path
    final = np.lib.format.open_memmap(vectors_path, mode="w+", dtype=np.float32, shape=(rows.rows, rows.dimension))
    for start in range(0, rows.rows, 65536):
        final[start : start + 65536] = matrix[start : min(rows.rows, start + 65536)]
    final.flush()
    del final, matrix
    os.remove(rows.raw_path)
    return vectors_path


_UNIT_NORM_HINT = ("; dot_product search needs unit vectors (pass --normalize to normalise them, "
                   "or use --distance squared_l2)")


def _normalized(vector: np.ndarray, where: str) -> np.ndarray:
    """``--normalize``: the vector scaled to unit length (the same object when it already is)."""
    norm = float(np.linalg.norm(vector))
    if norm == 0.0:
        raise BeamlensError(f"{where}: the vector is all zeros and cannot be normalised")
    return (vector / norm).astype(np.float32) if abs(norm - 1.0) > 1e-6 else vector


