"""Listing images (COCO caption file or a glob) and reading their bytes through Beam filesystems.

Every path goes through the filesystem facade (models/io/files.py, over Beam's FileSystems), so local folders, ``gs://``
and any other registered Beam filesystem work the same way; the one exception is matching a local
glob (:func:`_match_local_entries`: Beam's drops entries it cannot stat, such as dangling links).

Why listing is one ``Create`` + ``ParDo`` and not ``fileio.MatchFiles``/``ReadFromText``:
the DaskRunner only runs Create, ParDo, GroupByKey and Flatten (no ``Read``), and we want ONE code
path on every runner. The listing step also numbers the images (0, 1, 2, ...), which lets
:class:`BatchImageRefs` form exact batches with a GroupByKey on ``index // batch_size``. That
GroupByKey replaces the Reshuffle that ``MatchFiles`` needs (it does not split work on its own),
and it is the batching Dask needs (elements a DoFn emits in ``finish_bundle``, as
``BatchElements`` does, are dropped on Dask). Only small references (id, path, captions) are
listed and shuffled; image bytes are read after the shuffle, on the worker that embeds them.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import itertools
import os
import posixpath
import re
from dataclasses import dataclass
from typing import Iterable, Iterator, NamedTuple

import apache_beam as beam
from apache_beam.io.filesystem import FileSystem
from apache_beam.metrics import Metrics

from beamlens.models.io import files
from beamlens.models.corpora.coco import default_image_root, parse_coco_captions
from beamlens.models.errors import BeamlensError
from beamlens.models.faults import checkpoint

METRICS_NAMESPACE = "beamlens.embed"


class ImageRef(NamedTuple):
    """What we know about an image before reading it."""

    image_id: str  # COCO id as text, or the path for glob input
    uri: str
    captions: tuple[str, ...] = ()


class ImageError(NamedTuple):
    """A dead-letter record: the image was listed but could not be embedded."""

    image_id: str
    uri: str
    reason: str
    stage: str  # "read", "decode" or "inference"

    def to_json_dict(self) -> dict:
        return {"image_id": self.image_id, "uri": self.uri, "reason": self.reason, "stage": self.stage}


class ImageReadError(BeamlensError):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class ImageSource:
    """Where the images come from: a COCO caption file (+ image root) or a glob."""

    captions_file: str | None = None
    image_root: str | None = None
    input_glob: str | None = None

    def __post_init__(self) -> None:
        if bool(self.captions_file) == bool(self.input_glob):
            raise BeamlensError("give either --captions (with --images) or --input-glob, not both or neither")

    def resolved_image_root(self) -> str:
        """The image folder of a COCO source: --images, or the split folder its caption file implies."""
        return self.image_root or default_image_root(self.captions_file)

    def describe(self) -> str:
        """One line for the log and the manifest, naming the image folder really used (given or default)."""
        if self.input_glob:
            return f"glob {self.input_glob}"
        if self.image_root:
            return f"COCO captions {self.captions_file} (images under {self.image_root})"
        try:
            root = self.resolved_image_root()
        except BeamlensError:  # a caption file name without a split: listing reports it, describing must not fail
            return f"COCO captions {self.captions_file} (no --images, and its name implies no image folder)"
        return f"COCO captions {self.captions_file} (images under {root}, the default for that caption file)"


def read_text_file(path: str) -> bytes:
    """The whole file through Beam's filesystems (local or gs://), with a clear error if missing."""
    try:
        return files.read_bytes(path)
    except Exception as error:  # OSError, BeamIOError, filesystem-specific errors
        raise BeamlensError(f"cannot read {path}: {error}") from None


def iter_image_refs(source: ImageSource) -> Iterator[ImageRef]:
    """Every image of the source, in a stable order (COCO file order, or sorted paths)."""
    if source.input_glob:
        for path in sorted(match_entries(source.input_glob)):
            yield ImageRef(image_id=path, uri=path)
        return
    image_root = source.resolved_image_root()
    data = read_text_file(source.captions_file)
    for image in parse_coco_captions(data, source=source.captions_file, image_root=image_root):
        yield ImageRef(image_id=str(image.image_id), uri=image.path, captions=tuple(image.captions))


@contextlib.contextmanager
def _matching(pattern: str) -> Iterator[None]:
    """Any failure to match ``pattern`` as a BeamlensError naming it (ours pass through)."""
    try:
        yield
    except BeamlensError:
        raise
    except Exception as error:
        raise BeamlensError(f"cannot match {pattern}: {error}") from None


def match_entries(pattern: str) -> list[str]:
    """Every path the glob matches, directories excepted: remote filesystems through
    ``FileSystems.match``, local ones through :func:`_match_local_entries` (see there why)."""
    with _matching(pattern):
        if not files.is_remote(pattern):
            return _match_local_entries(files.local_path(pattern))
        return files.match_paths(pattern)


def count_entries(pattern: str, limit: int) -> int:
    """How many paths the glob matches, counted up to ``limit`` and none kept: a local glob is
    walked lazily (:func:`_iter_local_entries`), a remote filesystem asked for at most ``limit``."""
    with _matching(pattern):
        if not files.is_remote(pattern):
            return sum(1 for _ in itertools.islice(_iter_local_entries(files.local_path(pattern)), limit))
        return files.count_matches(pattern, limit)


def _match_local_entries(pattern: str) -> list[str]:
    """Every directory entry a local glob matches (:func:`_iter_local_entries`), as a list."""
    return list(_iter_local_entries(pattern))


def _iter_local_entries(pattern: str) -> Iterator[str]:
    """Every directory entry a local glob matches, with Beam's glob meaning, directories excepted,
    yielded as each folder is read (``os.scandir``): a caller that needs only the first match
    (:func:`has_images`) reads one folder's first entries, not the whole listing.

    Why not ``FileSystems.match``: Beam's LocalFileSystem (2.77) walks the folder and stats every
    file for its size, and drops the ones whose ``os.path.getsize`` fails (``except OSError:
    pass`` in ``LocalFileSystem._list``; a pattern without wildcards goes through
    ``os.path.exists``). A dangling symbolic link, or an entry of a folder we may read but not
    search (its stat: permission denied), vanished: not embedded, not dead-lettered, not counted. Listing
    needs names only, so here nothing is stat-ed; such an entry is listed, fails when it is read,
    and becomes a dead letter with its reason (:func:`read_image_bytes`).

    The pattern means what it means to Beam (``FileSystem.translate_pattern``: ``*`` stays within
    one folder, ``**`` crosses folders), so a glob lists the same paths on every filesystem.
    Directories, and links to directories, are skipped: a folder is not an entry a user means as an
    image (Beam's listing skips them too). A folder the pattern could reach but that cannot be
    listed is an error: its entries cannot be counted, and guessing would break
    ``listed == embedded + dead-lettered``.
    """
    if pattern.endswith(("/", "\\")):
        pattern += "*"  # as Beam does
    prefix = re.match(r"^[^[*?]*", pattern).group(0)
    if prefix == pattern:  # no wildcard: the entry itself, if it is there (a dangling link is)
        if os.path.lexists(pattern) and not os.path.isdir(pattern):
            yield pattern
        return
    root = posixpath.dirname(prefix)
    if not os.path.isdir(root):
        return
    matches = re.compile(FileSystem.translate_pattern(pattern)).match
    # Most "/" a match can have ("*" matches none, "?" and "[...]" one, "**" any): deeper folders
    # are not walked, so an unlistable folder out of the pattern's reach is no error.
    depth = None if "**" in pattern else pattern.count("/") + pattern.count("?") + pattern.count("[")

    def unlistable(error: OSError) -> None:
        if not isinstance(error, FileNotFoundError):  # a folder removed meanwhile held nothing to count
            raise BeamlensError(f"cannot list {error.filename}: {error.strerror or error}; "
                                f"the entries of {pattern} in it cannot be counted") from None

    pending = [root]
    while pending:
        folder = pending.pop()
        # Entries in a deeper folder would have more "/" than any match: not walked.
        walk_deeper = depth is None or os.path.join(folder, "sub", "name").count("/") <= depth
        try:
            with os.scandir(folder) as entries:
                for entry in entries:
                    if _is_folder(entry):  # a link to a folder is skipped, never walked (as os.walk)
                        if walk_deeper and not entry.is_symlink():
                            pending.append(entry.path)
                    elif matches(entry.path):
                        yield entry.path
        except OSError as error:
            unlistable(error)


def _is_folder(entry: os.DirEntry) -> bool:
    try:
        return entry.is_dir()
    except OSError:  # as os.walk: an entry we cannot stat is listed, and fails when it is read
        return False


def count_images(source: ImageSource, limit: int) -> int:
    """How many images the source lists, counted up to ``limit`` and none kept: a glob through
    :func:`count_entries`, a COCO file parsed."""
    if source.input_glob:
        return count_entries(source.input_glob, limit)
    return sum(1 for _ in itertools.islice(iter_image_refs(source), limit))


def has_images(source: ImageSource) -> bool:
    """Whether a glob source matches anything, from its first match only (the launcher must not
    list a corpus of 100M files to learn that it is not empty). A COCO captions file says so only
    once parsed, which is the pipeline's job: True here, and an empty listing fails the run."""
    return not source.input_glob or count_entries(source.input_glob, 1) > 0


class _ListAndNumber(beam.DoFn):
    """One worker lists the source and numbers the images; the count is the ``read`` counter."""

    def __init__(self) -> None:
        self._listed = Metrics.counter(METRICS_NAMESPACE, "read")

    def process(self, source: ImageSource) -> Iterator[tuple[int, ImageRef]]:
        for index, ref in enumerate(iter_image_refs(source)):
            self._listed.inc()
            yield index, ref
        checkpoint("listing")


class ListImages(beam.PTransform):
    """PBegin -> PCollection[(index, ImageRef)]."""

    def __init__(self, source: ImageSource) -> None:
        super().__init__()
        self._source = source

    def expand(self, pbegin):
        return pbegin | "Source" >> beam.Create([self._source]) | "ListAndNumber" >> beam.ParDo(_ListAndNumber())


def _batch_key(indexed: tuple[int, ImageRef], batch_size: int) -> tuple[int, tuple[int, ImageRef]]:
    return indexed[0] // batch_size, indexed


def _sorted_batch(keyed: tuple[int, Iterable[tuple[int, ImageRef]]]) -> list[ImageRef]:
    # Sorting makes batches identical on every runner (GroupByKey gives no order).
    return [ref for _, ref in sorted(keyed[1], key=lambda item: item[0])]


class BatchImageRefs(beam.PTransform):
    """PCollection[(index, ImageRef)] -> PCollection[list[ImageRef]] of at most ``batch_size``."""

    def __init__(self, batch_size: int) -> None:
        super().__init__()
        if batch_size < 1:
            raise BeamlensError(f"batch size must be at least 1, got {batch_size}")
        self._batch_size = batch_size

    def expand(self, indexed):
        return (
            indexed
            | "KeyByBatch" >> beam.Map(_batch_key, self._batch_size)
            | "GroupBatches" >> beam.GroupByKey()
            | "SortBatch" >> beam.Map(_sorted_batch)
        )


def read_image_bytes(uri: str) -> bytes:
    """Bytes of one image; a missing or unreadable file raises :class:`ImageReadError`."""
    try:
        return files.read_bytes(uri)
    except Exception as error:  # FileNotFoundError, PermissionError, BeamIOError, remote errors...
        raise ImageReadError(read_failure_reason(uri, error)) from None


def read_failure_reason(uri: str, error: Exception) -> str:
    """The dead letter's reason for a failed read, short and the same for every such file.

    A listed entry that is a dangling link says where it points, so the user can see which target
    went missing (the listing keeps such links: :func:`_match_local_entries`).
    """
    text = str(error)
    if isinstance(error, PermissionError) or getattr(error, "errno", None) in (errno.EACCES, errno.EPERM) \
            or "permission denied" in text.lower():
        return "permission denied"
    if isinstance(error, FileNotFoundError) or "No such file" in text or "not found" in text.lower():
        if not files.is_remote(uri) and os.path.islink(uri):
            return f"dangling symbolic link -> {os.readlink(uri)}"
        return "file not found"
    return f"cannot read file: {type(error).__name__}: {text[:300]}"


def file_stamp(uri: str) -> tuple[int, int] | None:
    """(size in bytes, modification time in microseconds) of a file, or None if it cannot be had.

    A re-index compares it with the stamp stored at embedding time and hashes only files whose
    stamp changed (the quick check of rsync and make); local files are stat-ed, others matched
    through Beam's filesystems (on object stores the time is the upload's).
    """
    try:
        if not files.is_remote(uri):
            info = os.stat(uri)
            return info.st_size, info.st_mtime_ns // 1000  # exact: no float rounding of local stamps
        stamp = files.size_and_mtime(uri)
    except Exception:  # missing, unreadable, or a filesystem that cannot match: no stamp, so it is hashed
        return None
    return None if stamp is None else (stamp[0], int(round(stamp[1] * 1e6)))


def content_hash(data: bytes) -> str:
    """sha256 hex of the file bytes: re-indexing compares it to find changed images."""
    return hashlib.sha256(data).hexdigest()
