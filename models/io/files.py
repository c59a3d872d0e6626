"""THE filesystem facade: local paths and every Beam filesystem (gs://, s3://, hdfs:// ...) alike.

Everything in beamlens that reads or writes a path that may be remote goes through these few
functions, which go through Apache Beam's ``FileSystems`` (so a bucket works wherever a folder
does, with the credentials Beam already uses). :func:`write_atomic` is THE atomic writer: a
reader sees the old file or the whole new one, never half of one.

* local: a temp file beside the target, flushed and fsync-ed, then ``os.replace`` (atomic on
  POSIX); a failure removes the temp file;
* remote: a temp object beside the target, then ``FileSystems.rename`` (on object stores a new
  object appears whole, and replacing a small object is atomic there).

``is_remote`` is the one place that tells the two apart.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import tempfile
from typing import IO, Iterable, Iterator, Union

from beamlens.models.errors import BeamlensError


def is_remote(path: str) -> bool:
    """True for a URI of a Beam filesystem other than the local disk (``scheme://...``)."""
    return "://" in path and not path.startswith("file://")


def local_path(path: str) -> str:
    """A local path without its ``file://`` prefix (Beam's own spelling of the local disk)."""
    return path[len("file://"):] if path.startswith("file://") else path


def warm_up() -> None:
    """Import Beam's filesystems now (seconds), so that the first remote read does not wait for it."""
    _beam()


def _beam():
    from apache_beam.io.filesystems import FileSystems  # noqa: PLC0415 (only remote paths need Beam)

    return FileSystems


def join(folder: str, *names: str) -> str:
    if is_remote(folder):
        return "/".join([folder.rstrip("/"), *names])
    return os.path.join(folder, *names)


def basename(path: str) -> str:
    return path.rstrip("/").rsplit("/", 1)[-1]


def dirname(path: str) -> str:
    """The folder holding ``path`` (``.`` for a bare name), local or ``scheme://``."""
    head = path.rstrip("/").rsplit("/", 1)
    return head[0] if len(head) == 2 else "."


def exists(path: str) -> bool:
    return _beam().exists(path) if is_remote(path) else os.path.exists(local_path(path))


def read_bytes(path: str) -> bytes:
    with open_read(path) as stream:
        return stream.read()


def read_text(path: str) -> str:
    return read_bytes(path).decode("utf-8")


def open_read(path: str) -> IO[bytes]:
    """A binary stream of the file (remote: Beam's, uncompressed whatever the file name)."""
    if is_remote(path):
        from apache_beam.io.filesystem import CompressionTypes  # noqa: PLC0415

        return _beam().open(path, compression_type=CompressionTypes.UNCOMPRESSED)
    return open(local_path(path), "rb")


def is_folder(path: str) -> bool:
    """A local directory, or a remote prefix that holds at least one object."""
    if is_remote(path):
        return bool(match_paths(path.rstrip("/") + "/**"))
    return os.path.isdir(path)


def walk_files(folder: str) -> list[str]:
    """Relative paths of every file below ``folder``, sorted so that the walk order cannot matter."""
    if is_remote(folder):
        prefix = folder.rstrip("/") + "/"
        return [path[len(prefix):] for path in match_paths(prefix + "**")]
    found = []
    for root, _, names in os.walk(folder):
        found += [os.path.relpath(os.path.join(root, name), folder) for name in names]
    return sorted(found)


def match_paths(pattern: str) -> list[str]:
    """Paths a glob matches, sorted (Beam's matching rules, local and remote alike)."""
    return sorted(m.path for m in _beam().match([pattern])[0].metadata_list)


def count_matches(pattern: str, limit: int) -> int:
    """How many paths a glob matches, asking the filesystem for at most ``limit``."""
    return len(_beam().match([pattern], limits=[limit])[0].metadata_list)


def delete(paths: Iterable[str]) -> None:
    paths = list(paths)
    if paths:
        _beam().delete(paths)


def size_and_mtime(path: str) -> tuple[int, float] | None:
    """(bytes, modification time in seconds) of one file, or None when it has none (missing)."""
    if not is_remote(path):
        info = os.stat(local_path(path))
        return info.st_size, info.st_mtime_ns / 1e9
    matched = _beam().match([path])[0].metadata_list
    if len(matched) != 1 or matched[0].last_updated_in_seconds is None:
        return None
    return int(matched[0].size_in_bytes), float(matched[0].last_updated_in_seconds)


def check_readable_file(path: str | os.PathLike, what: str) -> str:
    """Return the absolute path, or raise a BeamlensError naming the file."""
    path = os.fspath(path)
    if not path:
        raise BeamlensError(f"no {what} given")
    if not os.path.exists(path):
        raise BeamlensError(f"{what} not found: {path}")
    if not os.path.isfile(path):
        raise BeamlensError(f"{what} is not a file: {path}")
    if not os.access(path, os.R_OK):
        raise BeamlensError(f"{what} is not readable: {path}")
    return os.path.abspath(path)


def mkdirs(folder: str) -> None:
    if is_remote(folder):
        if not _beam().exists(folder):
            _beam().mkdirs(folder)
    else:
        os.makedirs(folder, exist_ok=True)


def list_folder(folder: str) -> list[str]:
    """Full paths of the entries directly in ``folder``, sorted. Object stores have no folders:
    there the entries are the first path components of the objects under the prefix."""
    if is_remote(folder):
        prefix = folder.rstrip("/") + "/"
        return sorted({prefix + path[len(prefix):].split("/", 1)[0] for path in match_paths(prefix + "**")
                       if path.startswith(prefix)})
    if not os.path.isdir(folder):
        return []
    return sorted(os.path.join(folder, name) for name in os.listdir(folder))


def copy_into(sources: Iterable[str], folder: str) -> list[str]:
    """Copy files into ``folder`` keeping their names (any mix of local and remote paths)."""
    sources = list(sources)
    mkdirs(folder)
    targets = [join(folder, basename(source)) for source in sources]
    for source, target in zip(sources, targets):
        if not is_remote(source) and not is_remote(target):
            shutil.copyfile(source, target)
        else:
            write_atomic(target, read_bytes(source))
    return targets


def remove_tree(path: str) -> None:
    if is_remote(path):
        delete(match_paths(join(path, "**")))
    else:
        shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def atomic_output(path: Union[str, "os.PathLike[str]"], mode: str = "wb") -> Iterator[IO]:
    """Stream a local file into place: a temp file beside ``path``, renamed onto it on a clean exit
    (for large outputs such as searchers and corpora); a failure removes the temp file."""
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_output writes whole files: mode must be 'w' or 'wb', not {mode!r}")
    target = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(target))
    os.makedirs(folder, exist_ok=True)
    handle, temp_path = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix="-" + os.path.basename(target))
    try:
        with os.fdopen(handle, mode, **({"encoding": "utf-8"} if mode == "w" else {})) as stream:
            yield stream
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temp_path, target)
    except BaseException:
        if os.path.exists(temp_path):
            os.remove(temp_path)
        raise


@contextlib.contextmanager
def atomic_stream(path: str) -> Iterator[IO[bytes]]:
    """Stream a file of any size onto any filesystem, atomically: the bytes go to ``<path>.tmp-<hex>``
    beside the target, renamed onto ``path`` on a clean exit (a run killed midway leaves only the
    temp file, which the next run's clean-up globs by that name); a failure removes it."""
    temp = f"{path}.tmp-{secrets.token_hex(6)}"
    remote = is_remote(path)
    try:
        with (_beam().create(temp) if remote else open(temp, "wb")) as stream:
            yield stream
            if not remote:
                stream.flush()
                os.fsync(stream.fileno())
        if remote:
            _beam().rename([temp], [path])
        else:
            os.replace(temp, path)
    except BaseException:
        if not remote and os.path.exists(temp):
            os.remove(temp)
        raise


@contextlib.contextmanager
def atomic_path(path: str, suffix: str = "") -> Iterator[str]:
    """A temp path beside the local ``path`` (ending in ``suffix``, for writers that need a file
    name, such as ``keras.Model.save`` or ``numpy.save``), renamed onto ``path`` on a clean exit."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    handle, temp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=suffix)
    os.close(handle)
    try:
        yield temp
        os.replace(temp, path)
    finally:
        if os.path.exists(temp):
            os.remove(temp)


def write_atomic(path: Union[str, "os.PathLike[str]"], data: Union[bytes, str]) -> None:
    """THE atomic writer: readers never see part of the file (see the module docstring)."""
    payload = data.encode("utf-8") if isinstance(data, str) else data
    path = os.fspath(path)
    with (atomic_stream(path) if is_remote(path) else atomic_output(path, "wb")) as stream:
        stream.write(payload)


def write_json(path: str, doc: object) -> None:
    """A JSON document (indented, keys sorted: stable diffs), written atomically."""
    import json  # noqa: PLC0415

    write_atomic(path, json.dumps(doc, indent=2, sort_keys=True))


# The names earlier modules use for the same writer.
write_bytes_atomically = write_text_atomically = write_atomic


def require_file(path: str, what: str) -> str:
    """``path`` if it exists, else a BeamlensError naming what it was meant to be."""
    if not exists(path):
        raise BeamlensError(f"{what} {path}: file not found")
    return path
