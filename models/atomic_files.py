"""Atomic local file output: readers see the old file or the whole new one, never half of one.

Every beamlens output a reader may open while a job runs (searchers, indexes, manifests, vocab
files, reports) is written to a temp file in the destination folder and renamed into place only
when it is complete; a failure removes the temp file, so a crashed run leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from typing import IO, Iterator


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO]:
    """Open a temp file beside ``path`` for writing; rename it onto ``path`` on a clean exit."""
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_output writes whole files: mode must be 'w' or 'wb', not {mode!r}")
    target = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(target))
    os.makedirs(folder, exist_ok=True)
    handle, temp_path = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix="-" + os.path.basename(target))
    try:
        with os.fdopen(handle, mode, **({"encoding": "utf-8"} if mode == "w" else {})) as stream:
            yield stream
        os.replace(temp_path, target)
    except BaseException:
        if os.path.exists(temp_path):
            os.remove(temp_path)
        raise


def write_bytes_atomically(path: str | os.PathLike, data: bytes) -> None:
    with atomic_output(path, "wb") as stream:
        stream.write(data)


def write_text_atomically(path: str | os.PathLike, text: str) -> None:
    with atomic_output(path, "w") as stream:
        stream.write(text)
