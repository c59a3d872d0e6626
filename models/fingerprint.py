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

from models.errors import BeamlensError

FINGERPRINT_PREFIX = "sha256:"
FINGERPRINT_HEX_CHARS = 16  # 64 bits: plenty to tell a handful of models apart, short per record
_CHUNK = 1 << 20


def _is_remote(path: str) -> bool:
    return "://" in path


def _open_binary(path: str):
    if _is_remote(path):
        import tensorflow as tf  # noqa: PLC0415 (only remote paths need gfile)

        return tf.io.gfile.GFile(path, "rb")
    return open(path, "rb")


def _list_files(folder: str) -> list[str]:
    """Relative paths of every file below ``folder``, sorted so the walk order cannot matter."""
    if _is_remote(folder):
        import tensorflow as tf  # noqa: PLC0415

        found = []
        for root, _, names in tf.io.gfile.walk(folder):
            found += [os.path.relpath(f"{root.rstrip('/')}/{n}", folder) for n in names]
        return sorted(found)
    found = []
    for root, _, names in os.walk(folder):
        found += [os.path.relpath(os.path.join(root, n), folder) for n in names]
    return sorted(found)


def _isdir(path: str) -> bool:
    if _is_remote(path):
        import tensorflow as tf  # noqa: PLC0415

        return tf.io.gfile.isdir(path)
    return os.path.isdir(path)


def _exists(path: str) -> bool:
    if _is_remote(path):
        import tensorflow as tf  # noqa: PLC0415

        return tf.io.gfile.exists(path)
    return os.path.exists(path)


def _hash_file(digest: "hashlib._Hash", path: str) -> None:
    with _open_binary(path) as stream:
        while True:
            chunk = stream.read(_CHUNK)
            if not chunk:
                break
            digest.update(chunk)


def model_fingerprint(path: str) -> str:
    """``sha256:<16 hex>`` of a model file (``.keras``, ``.tflite``) or of a model folder.

    For a folder (a SavedModel), every file's relative path and bytes are hashed in sorted order.
    """
    if not _exists(path):
        raise BeamlensError(f"model not found: {path}")
    digest = hashlib.sha256()
    if _isdir(path):
        files = _list_files(path)
        if not files:
            raise BeamlensError(f"model folder is empty: {path}")
        for relative in files:
            digest.update(relative.replace(os.sep, "/").encode("utf-8") + b"\0")
            _hash_file(digest, f"{path.rstrip('/')}/{relative}")
    else:
        _hash_file(digest, path)
    return FINGERPRINT_PREFIX + digest.hexdigest()[:FINGERPRINT_HEX_CHARS]
