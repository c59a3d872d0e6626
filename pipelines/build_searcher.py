"""``beamlens build-searcher``: merge embedding shards into an on-device ScaNN index and export searchers.

    beamlens build-searcher --shards out/embeddings --out out/searcher \\
        --text-embedder text_embedder.tflite --image-embedder image_embedder.tflite

writes ``<out>/text_searcher.tflite`` (text -> image search), ``<out>/image_searcher.tflite``
(image -> image), with ``--format scann_index_file`` ``<out>/index.ldb``, and always
``<out>/searcher_report.json`` (what was chosen and why, measured recall). Both searchers share
ONE built index.

Two halves, because tflite-support cannot live beside TensorFlow (PLATFORM.md):
1. here (TensorFlow side) the shards are STREAMED with tf.data, one record at a time, into an
   N x d float32 ``.npy`` (memory-mapped; N from the manifest) and a metadata file (one compact
   JSON line per item), checking every record: dimension, finite values, unit norm for
   dot_product, duplicate ids (identical duplicates are dropped and counted; the same id with a
   different vector is an error);
2. the index is built and attached in the tflite-support process from those files
   (models.searcher.build_index / attach_index), never by pickling the matrix.
Outputs are staged under temporary names and renamed only when everything succeeded, so a
failed build leaves nothing behind.
"""

from __future__ import annotations

import argparse
import datetime
import glob
import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

import numpy as np

from models.errors import BeamlensError
from models.searcher import model_file
from models.searcher.options import (
    DEFAULT_MAX_INDEX_MB,
    DEFAULT_TARGET_RECALL,
    DISTANCE_MEASURES,
    DOT_PRODUCT,
    LOOKUP_TYPES,
    AutoOptions,
    ScaNNOptions,
    ScoreAH,
    ScoreBruteForce,
    Tree,
    options_to_dict,
)

TEXT_SEARCHER = "text_searcher.tflite"
IMAGE_SEARCHER = "image_searcher.tflite"
INDEX_FILE = "index.ldb"
REPORT_FILE = "searcher_report.json"
NORM_TOLERANCE = 1e-2
PROGRESS_EVERY = 100_000


def _progress(message: str) -> None:
    print(f"[build-searcher] {message}", file=sys.stderr, flush=True)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="beamlens build-searcher", description=__doc__.split("\n\n")[0])
    p.add_argument("--shards", required=True, action="append", metavar="DIR",
                   help="folder written by `beamlens embed` (manifest.json + shards); repeat it to merge several "
                        "embedding runs (for example the train and val splits) into one index")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--text-embedder", help="text embedder .tflite: writes text_searcher.tflite")
    p.add_argument("--image-embedder", help="image embedder .tflite: writes image_searcher.tflite")
    p.add_argument("--format", choices=["tflite", "scann_index_file"], action="append",
                   help="tflite (default when an embedder is given) and/or scann_index_file (index.ldb); repeatable")
    p.add_argument("--distance", choices=DISTANCE_MEASURES, default=DOT_PRODUCT)
    p.add_argument("--num-leaves", type=int, help="k-means leaves (default: about sqrt(N))")
    p.add_argument("--leaves-to-search", type=int, help="leaves searched per query (default: from a recall sweep)")
    p.add_argument("--score", choices=["auto", "ah", "brute_force"], default="auto")
    p.add_argument("--dimensions-per-block", type=int, default=None, help="AH dimensions per block (default 1)")
    p.add_argument("--anisotropic-threshold", type=float, default=None, help="AH anisotropic quantization threshold")
    p.add_argument("--lookup-type", choices=LOOKUP_TYPES, default="int8", help="AH on-device lookup table (with --score ah)")
    p.add_argument("--target-recall", type=float, default=DEFAULT_TARGET_RECALL)
    p.add_argument("--max-index-mb", type=float, default=DEFAULT_MAX_INDEX_MB, help="budget for the index vectors")
    p.add_argument("--userinfo", default=None, help="user info string stored in the index (default: a JSON summary)")
    p.add_argument("--normalize", action="store_true", help="L2-normalise vectors instead of refusing non-unit ones")
    p.add_argument("--allow-missing-manifest", action="store_true",
                   help="read shards from a folder without manifest.json (an unfinished or foreign run)")
    p.add_argument("--no-compression", action="store_true", help="store index blocks uncompressed")
    return p


def options_from_args(args: argparse.Namespace) -> ScaNNOptions:
    tree = None
    if args.num_leaves is not None:
        tree = Tree(num_leaves=args.num_leaves, num_leaves_to_search=args.leaves_to_search or 0)
    elif args.leaves_to_search is not None:
        raise BeamlensError("--leaves-to-search needs --num-leaves")
    score_ah = score_bf = None
    if args.score == "ah":
        threshold = args.anisotropic_threshold
        if threshold is None:
            threshold = 0.2 if args.distance == DOT_PRODUCT else float("nan")
        score_ah = ScoreAH(args.dimensions_per_block or 1, threshold, lookup_type=args.lookup_type)
    elif args.score == "brute_force":
        score_bf = ScoreBruteForce()
    elif args.dimensions_per_block is not None:
        raise BeamlensError("--dimensions-per-block needs --score ah")
    options = ScaNNOptions(args.distance, tree, score_ah, score_bf)
    options.validate()
    return options


# ---------------------------------------------------------------------------------------------
# Reading the shards (TensorFlow side)
# ---------------------------------------------------------------------------------------------
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
    from models import shard_format as sf  # noqa: PLC0415

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


def _records(path: str):
    from models.tfrecord import CorruptRecordError, read_records  # noqa: PLC0415

    try:
        yield from read_records(path)
    except CorruptRecordError as error:
        raise BeamlensError(f"{path} is not a readable TFRecord shard: {error}") from error


def _records_held(shards: Sequence[str]) -> dict[str, int]:
    """Records in each shard (by file name), counted without decoding: for naming a mismatch."""
    return {os.path.basename(shard): sum(1 for _ in _records(shard)) for shard in shards}


class _CapacityExceeded(BeamlensError):
    """More distinct items than the manifests count: the matrix (sized from them) is full."""


class _Rows:
    """The N x d matrix and metadata lines that :func:`read_shards` fills, one checked record at a time.

    One object holds what every record is checked against (dimension so far, ids seen, models),
    so the folders of several embedding runs are read into one index by the same checks.
    """

    def __init__(self, raw_path: str, capacity: int, meta_out: Any, distance: str, normalize: bool, num_shards: int) -> None:
        self.raw_path, self.capacity, self.meta_out = raw_path, capacity, meta_out
        self.distance, self.normalize, self.num_shards = distance, normalize, num_shards
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
        from models import shard_format as sf  # noqa: PLC0415

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
        if not np.all(np.isfinite(vector)):
            raise BeamlensError(f"{where}: the vector has NaN or infinite values")
        prepared = _prepared(vector, self.distance, self.normalize, where)
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
    from models import shard_format as sf  # noqa: PLC0415

    start, held, distinct, again = rows.rows, {}, 0, set()
    try:
        for shard in shards:
            records = 0
            for raw in _records(shard):
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


def read_shards(shards_dirs: str | Sequence[str], work_dir: str, distance: str, normalize: bool,
                allow_missing_manifest: bool) -> ShardReadResult:
    """Stream every record of one or more embedding runs into work_dir/vectors.npy +
    work_dir/metadata.jsonl, validating as it goes (ids are de-duplicated across runs too), and
    hold each run's shards to its manifest in both directions (files and record counts)."""
    from models import shard_format as sf  # noqa: PLC0415

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
        capacity = sum(1 for s in shards for _ in _records(s))
    if capacity == 0:
        for folder, (folder_shards, folder_manifest, _) in zip(dirs, found):  # "0 records" may be the lie
            if folder_manifest is not None:
                sf.check_manifest_counts(folder, folder_manifest, _records_held(folder_shards), None)
        raise BeamlensError(f"the shards in {shards_dir} hold no records")
    raw_path = os.path.join(work_dir, "vectors-raw.npy")
    metadata_path = os.path.join(work_dir, "metadata.jsonl")
    with open(metadata_path, "wb") as meta_out:
        rows = _Rows(raw_path, capacity, meta_out, distance, normalize, len(shards))
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


def _prepared(vector: np.ndarray, distance: str, normalize: bool, where: str) -> np.ndarray:
    norm = float(np.linalg.norm(vector))
    if normalize:
        if norm == 0.0:
            raise BeamlensError(f"{where}: the vector is all zeros and cannot be normalised")
        if abs(norm - 1.0) > 1e-6:
            return (vector / norm).astype(np.float32)
        return vector
    if distance == DOT_PRODUCT and abs(norm - 1.0) > NORM_TOLERANCE:
        raise BeamlensError(
            f"{where}: the vector's L2 norm is {norm:.4f}, not 1; dot_product search needs unit vectors "
            "(pass --normalize to normalise them, or use --distance squared_l2)"
        )
    return vector


# ---------------------------------------------------------------------------------------------
# The command
# ---------------------------------------------------------------------------------------------
def _check_embedder(path: Optional[str], dimension: Optional[int] = None) -> Optional[str]:
    if path is None:
        return None
    if not os.path.isfile(path):
        raise BeamlensError(f"embedder not found: {path}")
    with open(path, "rb") as stream:
        data = stream.read()
    info = model_file.read_model_file(data, path)
    if dimension is not None:
        out = info.outputs[model_file.searcher_output_index(info)].shape
        if not out or out[-1] != dimension:
            raise BeamlensError(
                f"{path} outputs {out[-1] if out else '?'}-d embeddings but the shards hold {dimension}-d vectors; "
                "the index must be built from this embedder's space"
            )
    return path


def run(args: argparse.Namespace) -> dict[str, Any]:
    from models.searcher import attach_index, build_index  # noqa: PLC0415

    started = time.perf_counter()
    options = options_from_args(args)
    formats = args.format or (["tflite"] if (args.text_embedder or args.image_embedder) else [])
    if not formats:
        raise BeamlensError("nothing to write: give --text-embedder/--image-embedder or --format scann_index_file")
    if "tflite" in formats and not (args.text_embedder or args.image_embedder):
        raise BeamlensError("--format tflite needs --text-embedder and/or --image-embedder")
    if args.userinfo is not None and "\x00" in args.userinfo:
        raise BeamlensError("--userinfo must not contain NUL bytes")
    embedders = {TEXT_SEARCHER: _check_embedder(args.text_embedder), IMAGE_SEARCHER: _check_embedder(args.image_embedder)}
    os.makedirs(args.out, exist_ok=True)
    work = tempfile.mkdtemp(prefix=".build-searcher-", dir=args.out)
    staged: dict[str, str] = {}
    try:
        shards = read_shards(args.shards, work, args.distance, args.normalize, args.allow_missing_manifest)
        if "tflite" in formats:
            for name, path in embedders.items():
                _check_embedder(path, shards.dimension)
        userinfo = args.userinfo
        if userinfo is None:
            userinfo = json.dumps({
                "beamlens": 1, "model_fingerprint": shards.model_fingerprint, "num_items": shards.count,
                "dimension": shards.dimension, "distance": args.distance, "options": options_to_dict(options),
                "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            }, separators=(",", ":"))
        index_path = os.path.join(work, INDEX_FILE)
        auto = AutoOptions(target_recall=args.target_recall, max_index_mb=args.max_index_mb)
        _, report = build_index(shards.vectors_path, shards.metadata_path, options, index_path, userinfo, auto,
                                compression=not args.no_compression)
        for line in report.lines():
            _progress(line)
        if "scann_index_file" in formats:
            staged[INDEX_FILE] = index_path
        if "tflite" in formats:
            for name, embedder in embedders.items():
                if embedder:
                    _progress(f"attaching the index to {embedder} -> {name}")
                    staged[name] = attach_index(embedder, index_path, os.path.join(work, name))
        summary = {
            "shards": args.shards, "records_read": shards.records_read, "duplicates_dropped": shards.duplicates_dropped,
            "normalized": shards.normalized, "manifest_found": shards.manifest_found, "warnings": shards.warnings,
            "model_fingerprint": shards.model_fingerprint, "outputs": sorted(staged),
            "embedders": {k: v for k, v in embedders.items() if v}, "userinfo": userinfo,
            "seconds": round(time.perf_counter() - started, 3), "build": report.to_dict(),
        }
        with open(os.path.join(work, REPORT_FILE), "w", encoding="utf-8") as stream:
            json.dump(summary, stream, indent=2, sort_keys=True)
        staged[REPORT_FILE] = os.path.join(work, REPORT_FILE)
        for name, path in staged.items():  # same filesystem: each rename is atomic
            os.replace(path, os.path.join(args.out, name))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    for name in sorted(staged):
        _progress(f"wrote {os.path.join(args.out, name)}")
    return summary


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(list(argv) if argv is not None else None)
    run(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
