"""The searcher builder: embeddings -> on-device ScaNN index -> TFLite searcher (Model Maker's job).

Stable API (other commands code against these names):

- options: :class:`ScaNNOptions`, :class:`Tree`, :class:`ScoreAH`, :class:`ScoreBruteForce`,
  :class:`ExportFormat`, :class:`AutoOptions` (target recall, size budget), :class:`BuildReport`.
- ``build_index(embeddings_npy_path, metadata_path, options=None, out_path=..., userinfo="",
  auto=None) -> (index_path, BuildReport)``: N x d float32 .npy + one metadata line per item in,
  LevelDB table out (models.searcher.scann_build).
- ``attach_index(embedder_path, index_path, out_path)``: the TFLITE export (models.searcher.attach).
- ``read_searcher(path) -> SearcherInfo``; ``rewrite_leaves_to_search(path, out_path, leaves)``;
  ``item_metadata(path, ids)``; ``metadata_json(path)`` (models.searcher.reader).

Every function may be called from a TensorFlow process: tflite-support work goes through
``models.compat.call_tflite`` and the readers are pure Python.
"""

from beamlens.models.searcher.attach import INDEX_NAME, attach_index
from beamlens.models.searcher.options import (
    DEFAULT_MAX_INDEX_MB,
    DEFAULT_TARGET_RECALL,
    AutoOptions,
    BuildReport,
    ExportFormat,
    ScaNNOptions,
    ScoreAH,
    ScoreBruteForce,
    Tree,
)
from beamlens.models.searcher.reader import SearcherInfo, item_metadata, metadata_json, read_searcher, rewrite_leaves_to_search
from beamlens.models.searcher.scann_build import build_index

__all__ = [
    "INDEX_NAME", "DEFAULT_MAX_INDEX_MB", "DEFAULT_TARGET_RECALL", "AutoOptions", "BuildReport", "ExportFormat",
    "ScaNNOptions", "ScoreAH", "ScoreBruteForce", "Tree", "SearcherInfo", "attach_index", "build_index",
    "item_metadata", "metadata_json", "read_searcher", "rewrite_leaves_to_search",
]
