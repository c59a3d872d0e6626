"""A stable fingerprint of a saved model, so every embedding says which encoder made it.

Shards from different encoders must never be mixed in one index (their vectors live in different
spaces). Each record and the manifest carry this fingerprint; the searcher builder and the
re-index job compare it. It is a hash of the file bytes, not of the path or modification time, so
copying a model to ``gs://`` or another machine keeps its fingerprint, and re-saving changed
weights changes it.
"""

from __future__ import annotations

import hashlib
import os

from beamlens.models.errors import BeamlensError
from beamlens.models.io import files

FINGERPRINT_PREFIX = "sha256:"
FINGERPRINT_HEX_CHARS = 16  # 64 bits: plenty to tell a handful of models apart, short per record
_CHUNK = 1 << 20


def _hash_file(digest: "hashlib._Hash", path: str) -> None:
    with files.open_read(path) as stream:
        while True:
            chunk = stream.read(_CHUNK)
            if not chunk:
                break
            digest.update(chunk)


def model_fingerprint(path: str) -> str:
    """``sha256:<16 hex>`` of a model file (``.keras``, ``.tflite``) or of a model folder.

    For a folder (a SavedModel), every file's relative path and bytes are hashed in sorted order.
    """
    is_folder = files.is_folder(path)
    if not is_folder and not files.exists(path):
        raise BeamlensError(f"model not found: {path}")
    digest = hashlib.sha256()
    if is_folder:
        found = files.walk_files(path)
        if not found:
            raise BeamlensError(f"model folder is empty: {path}")
        for relative in found:
            digest.update(relative.replace(os.sep, "/").encode("utf-8") + b"\0")
            _hash_file(digest, f"{path.rstrip('/')}/{relative}")
    else:
        _hash_file(digest, path)
    return FINGERPRINT_PREFIX + digest.hexdigest()[:FINGERPRINT_HEX_CHARS]
