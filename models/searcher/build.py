"""Build the searchers of one index: read the shards, choose and build the ScaNN index, attach it.

``build_searchers(SearcherRequest(...))`` is what ``beamlens build-searcher`` and ``beamlens
reindex`` both call (a library call, never another command's parser). Two halves, because
tflite-support cannot live beside TensorFlow (PLATFORM.md):

1. here the shards are streamed through THE shard reader (models/shards/reader.py) into an
   N x d float32 ``.npy`` and a metadata file, checking every record;
2. the index is built and attached in the tflite-support process from those files
   (:func:`models.searcher.build_index` / :func:`models.searcher.attach_index`).

Outputs are staged under temporary names and renamed only when everything succeeded, so a failed
build leaves nothing behind.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

from beamlens.models.progress import progress_printer
from beamlens.models.errors import BeamlensError
from beamlens.models.io import model_file
from beamlens.models.searcher.options import DOT_PRODUCT, AutoOptions, ScaNNOptions, options_to_dict
from beamlens.models.searcher.tuning_queries import TUNE_ON, TuningQueries, choose_texts, text_tuning_queries
from beamlens.models.shards.reader import read_shards

TEXT_SEARCHER = "text_searcher.tflite"
IMAGE_SEARCHER = "image_searcher.tflite"
INDEX_FILE = "index.ldb"
REPORT_FILE = "searcher_report.json"
FORMATS = ("tflite", "scann_index_file")


_progress = progress_printer("[build-searcher]")


@dataclass(frozen=True)
class SearcherRequest:
    """What to build: from which shard folders, into which folder, with which embedders and options."""

    shards: Sequence[str]
    out: str
    text_embedder: Optional[str] = None
    image_embedder: Optional[str] = None
    formats: Sequence[str] = ()  # default: tflite when an embedder is given
    scann: ScaNNOptions = field(default_factory=ScaNNOptions)
    auto: AutoOptions = field(default_factory=AutoOptions)
    userinfo: Optional[str] = None
    normalize: bool = False
    allow_missing_manifest: bool = False
    compression: bool = True
    # Which queries leaves and scoring are tuned on (models/searcher/tuning_queries.py): "auto"
    # tunes a text searcher on text queries (these captions, else the corpus's, else generated),
    # "image" on held-out indexed vectors.
    tune_on: str = "auto"
    tune_captions: Optional[str] = None

    def index_record(self) -> dict[str, Any]:
        """The options that decide the index (not where it is read from or written to), as JSON:
        ``reindex`` reuses the previous searchers only when these are the same."""
        return {"formats": list(self.formats), "scann": options_to_dict(self.scann), "auto": dataclasses.asdict(self.auto),
                "userinfo": self.userinfo, "normalize": self.normalize,
                "allow_missing_manifest": self.allow_missing_manifest, "compression": self.compression,
                "tune_on": self.tune_on, "tune_captions": self.tune_captions}

    def chosen_formats(self) -> list[str]:
        formats = list(self.formats) or (["tflite"] if (self.text_embedder or self.image_embedder) else [])
        if not formats:
            raise BeamlensError("nothing to write: give --text-embedder/--image-embedder or --format scann_index_file")
        if "tflite" in formats and not (self.text_embedder or self.image_embedder):
            raise BeamlensError("--format tflite needs --text-embedder and/or --image-embedder")
        if self.userinfo is not None and "\x00" in self.userinfo:
            raise BeamlensError("--userinfo must not contain NUL bytes")
        self._check_tuning()
        return formats

    def _check_tuning(self) -> None:
        if self.tune_on not in TUNE_ON:
            raise BeamlensError(f"--tune-on must be one of {', '.join(TUNE_ON)}, got {self.tune_on!r}")
        if self.tune_captions is None:
            return
        if not self.text_embedder:
            raise BeamlensError("--tune-captions needs --text-embedder: the captions are embedded by it")
        if self.tune_on == "image":
            raise BeamlensError("--tune-captions and --tune-on image contradict each other")
        if not os.path.isfile(self.tune_captions):
            raise BeamlensError(f"caption file not found: {self.tune_captions}")

    def tunes_on_text(self) -> bool:
        """Whether the index is tuned for a TextSearcher's queries (the text searcher is built)."""
        return self.tune_on == "auto" and bool(self.text_embedder) and "tflite" in self.chosen_formats()


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


def _default_userinfo(shards: Any, request: SearcherRequest) -> str:
    return json.dumps({
        "beamlens": 1, "model_fingerprint": shards.model_fingerprint, "num_items": shards.count,
        "dimension": shards.dimension, "distance": request.scann.distance_measure,
        "options": options_to_dict(request.scann),
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }, separators=(",", ":"))


def build_searchers(request: SearcherRequest) -> dict[str, Any]:
    """Build the index and the searchers asked for; returns the summary also written as searcher_report.json."""
    started = time.perf_counter()
    request.scann.validate()
    formats = request.chosen_formats()
    embedders = {TEXT_SEARCHER: _check_embedder(request.text_embedder), IMAGE_SEARCHER: _check_embedder(request.image_embedder)}
    os.makedirs(request.out, exist_ok=True)
    work = tempfile.mkdtemp(prefix=".build-searcher-", dir=request.out)
    try:
        staged, summary = _build_in(work, request, formats, embedders)
        summary["seconds"] = round(time.perf_counter() - started, 3)
        with open(os.path.join(work, REPORT_FILE), "w", encoding="utf-8") as stream:
            json.dump(summary, stream, indent=2, sort_keys=True)
        staged[REPORT_FILE] = os.path.join(work, REPORT_FILE)
        for name, path in staged.items():  # same filesystem: each rename is atomic
            os.replace(path, os.path.join(request.out, name))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    for name in sorted(staged):
        _progress(f"wrote {os.path.join(request.out, name)}")
    return summary


def _build_in(work: str, request: SearcherRequest, formats: list[str],
              embedders: dict[str, Optional[str]]) -> tuple[dict[str, str], dict[str, Any]]:
    """Read, build and attach inside the scratch folder ``work``: (files staged there, summary)."""
    from beamlens.models.searcher import attach_index, build_index  # noqa: PLC0415

    unit_norm = request.scann.distance_measure == DOT_PRODUCT
    shards = read_shards(list(request.shards), work, unit_norm, request.normalize, request.allow_missing_manifest)
    if "tflite" in formats:
        for path in embedders.values():
            _check_embedder(path, shards.dimension)
    userinfo = request.userinfo if request.userinfo is not None else _default_userinfo(shards, request)
    index_path = os.path.join(work, INDEX_FILE)
    tuning = _tuning_queries(request, shards, work)
    _, report = build_index(shards.vectors_path, shards.metadata_path, request.scann, index_path, userinfo,
                            request.auto, compression=request.compression, tuning=tuning)
    for line in report.lines():
        _progress(line)
    staged: dict[str, str] = {}
    if "scann_index_file" in formats:
        staged[INDEX_FILE] = index_path
    if "tflite" in formats:
        for name, embedder in embedders.items():
            if embedder:
                _progress(f"attaching the index to {embedder} -> {name}")
                staged[name] = attach_index(embedder, index_path, os.path.join(work, name))
    summary = {
        "shards": list(request.shards), "records_read": shards.records_read,
        "duplicates_dropped": shards.duplicates_dropped, "normalized": shards.normalized,
        "manifest_found": shards.manifest_found, "warnings": shards.warnings,
        "model_fingerprint": shards.model_fingerprint, "outputs": sorted(staged),
        "embedders": {k: v for k, v in embedders.items() if v}, "userinfo": userinfo, "build": report.to_dict(),
    }
    return staged, summary


def _tuning_queries(request: SearcherRequest, shards: Any, work: str) -> Optional[TuningQueries]:
    """Text queries for a text searcher (embedded by its own text embedder), else None (image queries)."""
    if not request.tunes_on_text():
        return None
    texts = choose_texts(request.tune_captions, shards.metadata_path, shards.count, request.auto.num_queries,
                         request.auto.seed)
    _progress(f"embedding {len(texts.texts)} tuning queries ({texts.source})")
    return text_tuning_queries(request.text_embedder, texts, os.path.join(work, "tuning_queries.npy"))


def build_searchers_anywhere(request: SearcherRequest) -> dict[str, Any]:
    """:func:`build_searchers` for shard folders, embedders and an output folder on any Beam
    filesystem: remote inputs are copied to a local scratch folder first and the outputs uploaded
    afterwards (the index builder and the Task Library metadata writer work on local files)."""
    from dataclasses import replace  # noqa: PLC0415

    from beamlens.models.io import files  # noqa: PLC0415

    paths = [*request.shards, request.out, request.text_embedder or "", request.image_embedder or "",
             request.tune_captions or ""]
    if not any(files.is_remote(p) for p in paths):
        return build_searchers(request)
    scratch = tempfile.mkdtemp(prefix="beamlens-searchers-")
    try:
        def local(path: Optional[str], name: str) -> Optional[str]:
            if not path or not files.is_remote(path):
                return path
            return files.copy_into([path], os.path.join(scratch, name))[0]

        shards = []
        for number, folder in enumerate(request.shards):
            if files.is_remote(folder):
                local_folder = os.path.join(scratch, f"shards-{number}")
                files.copy_into(files.list_folder(folder), local_folder)
                folder = local_folder
            shards.append(folder)
        out = os.path.join(scratch, "out") if files.is_remote(request.out) else request.out
        summary = build_searchers(replace(request, shards=shards, out=out, text_embedder=local(request.text_embedder, "text"),
                                          image_embedder=local(request.image_embedder, "image"),
                                          tune_captions=local(request.tune_captions, "captions")))
        if out != request.out:
            files.copy_into(files.list_folder(out), request.out)
        return summary
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


@dataclass(frozen=True)
class SearcherBuild:
    """What :func:`build_searcher` wrote; ``report`` is ``<out>/searcher_report.json``."""

    out: str
    outputs: Sequence[str]  # file names in ``out``: text_searcher.tflite, image_searcher.tflite, index.ldb
    records_read: int
    duplicates_dropped: int
    estimated_recall_at_10: Optional[float]
    seconds: float
    report: dict[str, Any]


def build_searcher(request: SearcherRequest) -> SearcherBuild:
    """The searchers a request asks for, on any Beam filesystem (``beamlens build-searcher``)."""
    summary = build_searchers_anywhere(request)
    return SearcherBuild(request.out, tuple(summary["outputs"]) + (REPORT_FILE,), summary["records_read"],
                         summary["duplicates_dropped"], summary["build"].get("estimated_recall_at_10"),
                         summary.get("seconds", 0.0), summary)
