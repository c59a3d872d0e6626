"""Where beamlens keeps results that are slow to make and cheap to keep (class vectors, the
distilled text student): ``$BEAMLENS_CACHE``, else ``$XDG_CACHE_HOME/beamlens``, else
``~/.cache/beamlens``; one file per content key, so a changed input makes a new file."""

from __future__ import annotations

import hashlib
import json
import os

CACHE_ENV = "BEAMLENS_CACHE"


def cache_root() -> str:
    return os.environ.get(CACHE_ENV) or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "beamlens")


def cache_file(prefix: str, key: dict, suffix: str) -> str:
    """``<root>/<prefix>-<digest of key><suffix>``: the key is anything JSON-serialisable."""
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]
    return os.path.join(cache_root(), f"{prefix}-{digest}{suffix}")


def file_stamp(path: str) -> dict:
    """Path, size and mtime: a cheap key for a large input file (weights) that changes rarely."""
    stat = os.stat(path)
    return {"path": os.path.abspath(path), "size": stat.st_size, "mtime": int(stat.st_mtime)}
