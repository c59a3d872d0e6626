"""Listing a source's images inside the pipeline, split into parts that workers list side by side.

Why parts: one worker listing a 10M-image glob holds and sorts every path (~150 B each, ~1.5 GB)
and lists at one thread's pace, however many workers the job has. So the listing is planned
first (:func:`plan_parts`: cheap, only the upper folders of a local glob are read, names only),
the parts are spread over the workers by a GroupByKey, and each worker lists and sorts only its
own part. An image's place is a :class:`ListPosition` (part, index within the part): batches
(:class:`BatchImageRefs`) are formed within a part, exactly and identically on every runner.

What splits: a local glob (a local disk, or an NFS / GCS-fuse mount on every worker) splits by
folder, breadth-first, until there are about ``max_parts`` parts: each folder above that level
is a part of its own files, each folder at that level a part with everything below it. A list of
paths (``--input-list``: a text file, one path or URI a line, such as a bucket inventory) splits
by byte ranges of ``list_part_bytes``: a line belongs to the part its first byte falls in, and a
part streams its lines (file order, nothing sorted or held). What does not split: a remote glob
(``gs://``, ``s3://``: Beam's ``FileSystems.match`` lists a prefix in one call and returns it
whole: give such a corpus as a list), a pattern without subfolders to split by (one flat folder),
and a COCO caption file (one JSON document, parsed whole). Each is one part, as before.

Why a GroupByKey and not ``Reshuffle`` or ``fileio.MatchAll``: the DaskRunner runs only Create,
ParDo, GroupByKey and Flatten (no ``Read``), and we want ONE code path on every runner. The
numbering lets :class:`BatchImageRefs` form exact batches with a GroupByKey on
``(part, index // batch_size)``: that GroupByKey is also the batching Dask needs (elements a DoFn
emits in ``finish_bundle``, as ``BatchElements`` does, are dropped on Dask). Only small
references (id, path, captions) are listed and shuffled; image bytes are read after the shuffle,
on the worker that embeds them.

Globs mean what they mean to Beam (``FileSystem.translate_pattern``: ``*`` stays within one
folder, ``**`` crosses folders) on every filesystem; local ones are walked here, not by
``FileSystems.match`` (see :meth:`LocalGlob.walk` for why).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import posixpath
import re
import sys
from dataclasses import dataclass
from typing import Iterable, Iterator, NamedTuple

import apache_beam as beam
from apache_beam.io.filesystem import FileSystem
from apache_beam.metrics import Metrics

from beamlens.models.corpora.coco import parse_coco_captions
from beamlens.models.errors import BeamlensError
from beamlens.models.faults import checkpoint
from beamlens.models.io import files
from beamlens.transforms.read_images import METRICS_NAMESPACE, ImageRef, ImageSource, read_text_file

# About this many parts per listing: enough to keep a few hundred workers listing at once, few
# enough that planning reads only the upper folders of a corpus laid out in folders.
DEFAULT_LISTING_PARTS = 256
# A list of paths is read in parts of this many bytes (about a million lines of gs:// URIs each).
LIST_PART_BYTES = 64 * 2**20


class ListPosition(NamedTuple):
    """Where a listed image sits: its part, and its index within that part's sorted listing."""

    part: int
    index: int


class ListingPart(NamedTuple):
    """One worker's share of a listing."""

    number: int  # its place in the listing's order
    source: ImageSource
    folder: str | None = None  # a local glob's part: the folder it lists; None: the whole source
    deep: bool = True  # whether it lists the folder's subfolders too (False: they are parts of their own)
    span: tuple[int, int] | None = None  # a list's part: the bytes [start, end) its lines start in


@contextlib.contextmanager
def _matching(pattern: str) -> Iterator[None]:
    """Any failure to match ``pattern`` as a BeamlensError naming it (ours pass through)."""
    try:
        yield
    except BeamlensError:
        raise
    except Exception as error:
        raise BeamlensError(f"cannot match {pattern}: {error}") from None


@dataclass(frozen=True)
class LocalGlob:
    """A local glob with a wildcard, walked folder by folder (:meth:`walk`), split by folder (:meth:`subfolders`)."""

    pattern: str
    root: str  # the deepest folder holding every match
    depth: int | None  # most "/" a match can have; None: any ("**")

    @classmethod
    def parse(cls, pattern: str) -> "LocalGlob | None":
        """The glob of a local pattern, or None for a pattern without wildcards (one entry, not a walk)."""
        if pattern.endswith(("/", "\\")):
            pattern += "*"  # as Beam does
        prefix = re.match(r"^[^[*?]*", pattern).group(0)
        if prefix == pattern:
            return None
        # "*" matches no "/", "?" and "[...]" one, "**" any: deeper folders are not walked, so an
        # unlistable folder out of the pattern's reach is no error.
        depth = None if "**" in pattern else pattern.count("/") + pattern.count("?") + pattern.count("[")
        return cls(pattern, posixpath.dirname(prefix), depth)

    def reaches_below(self, folder: str) -> bool:
        """Whether a match can lie in a subfolder of ``folder``."""
        return self.depth is None or os.path.join(folder, "sub", "name").count("/") <= self.depth

    def walk(self, folder: str, deep: bool = True) -> Iterator[str]:
        """Every entry under ``folder`` (in it only, unless ``deep``) the pattern matches, directories
        excepted, yielded as each folder is read (``os.scandir``): a caller that needs only the first
        match reads one folder's first entries, not the whole listing.

        Why not ``FileSystems.match``: Beam's LocalFileSystem (2.77) stats every file for its size and
        drops the ones whose ``os.path.getsize`` fails (``except OSError: pass`` in
        ``LocalFileSystem._list``). A dangling symbolic link, or an entry of a folder we may read but
        not search, vanished: not embedded, not dead-lettered, not counted. Listing needs names only,
        so here nothing is stat-ed; such an entry is listed, fails when it is read, and becomes a dead
        letter with its reason (``read_images.read_image_bytes``). Directories, and links to
        directories, are skipped (as Beam does); links to folders are never walked (as ``os.walk``).
        A folder the pattern could reach but that cannot be listed is an error: its entries cannot be
        counted, and guessing would break ``listed == embedded + dead-lettered``.
        """
        matches = re.compile(FileSystem.translate_pattern(self.pattern)).match
        pending = [folder]
        while pending:
            current = pending.pop()
            descend = deep and self.reaches_below(current)
            try:
                with os.scandir(current) as entries:
                    for entry in entries:
                        if _is_folder(entry):
                            if descend and not entry.is_symlink():
                                pending.append(entry.path)
                        elif matches(entry.path):
                            yield entry.path
            except OSError as error:
                self._unlistable(error)

    def subfolders(self, folder: str) -> list[str]:
        """The folders :meth:`walk` would enter from ``folder``, sorted (names only are read)."""
        if not self.reaches_below(folder):
            return []
        try:
            with os.scandir(folder) as entries:
                return sorted(entry.path for entry in entries if _is_folder(entry) and not entry.is_symlink())
        except OSError as error:
            self._unlistable(error)
            return []

    def _unlistable(self, error: OSError) -> None:
        if not isinstance(error, FileNotFoundError):  # a folder removed meanwhile held nothing to count
            raise BeamlensError(f"cannot list {error.filename}: {error.strerror or error}; "
                                f"the entries of {self.pattern} in it cannot be counted") from None


def _is_folder(entry: os.DirEntry) -> bool:
    try:
        return entry.is_dir()
    except OSError:  # as os.walk: an entry we cannot stat is listed, and fails when it is read
        return False


def _iter_local_entries(pattern: str) -> Iterator[str]:
    """Every entry a local glob matches (:meth:`LocalGlob.walk`); a pattern without wildcards
    matches the entry itself if it is there (a dangling link is) and is not a folder."""
    glob = LocalGlob.parse(pattern)
    if glob is None:
        if os.path.lexists(pattern) and not os.path.isdir(pattern):
            yield pattern
        return
    if os.path.isdir(glob.root):
        yield from glob.walk(glob.root)


def match_entries(pattern: str) -> list[str]:
    """Every path the glob matches, directories excepted: remote filesystems through
    ``FileSystems.match``, local ones walked (:meth:`LocalGlob.walk`: see there why)."""
    with _matching(pattern):
        if not files.is_remote(pattern):
            return list(_iter_local_entries(files.local_path(pattern)))
        return files.match_paths(pattern)


def count_entries(pattern: str, limit: int) -> int:
    """How many paths the glob matches, counted up to ``limit`` and none kept: a local glob is
    walked lazily, a remote filesystem asked for at most ``limit``."""
    with _matching(pattern):
        if not files.is_remote(pattern):
            return sum(1 for _ in itertools.islice(_iter_local_entries(files.local_path(pattern)), limit))
        return files.count_matches(pattern, limit)


def _splittable_glob(source: ImageSource) -> LocalGlob | None:
    """The local glob of a source whose listing can be split by folder, else None."""
    if not source.input_glob or files.is_remote(source.input_glob):
        return None
    glob = LocalGlob.parse(files.local_path(source.input_glob))
    return glob if glob is not None and os.path.isdir(glob.root) else None


def plan_parts(source: ImageSource, max_parts: int = DEFAULT_LISTING_PARTS,
               list_part_bytes: int = LIST_PART_BYTES) -> list[ListingPart]:
    """The listing's parts, in the listing's order: a list split by bytes (:func:`_plan_list`); a
    splittable local glob split by folder, breadth-first, one level at a time until a level holds
    ``max_parts`` folders or there is none below; anything else one part. Reads the names of the
    folders above the last level only."""
    if source.input_list:
        return _plan_list(source, list_part_bytes)
    with _matching(source.input_glob or source.captions_file or ""):
        glob = _splittable_glob(source) if max_parts > 1 else None
        if glob is None:
            return [ListingPart(0, source)]
        own_files_only: list[str] = []  # folders above the last level: a part each for their own files
        level = [glob.root]
        while len(level) < max_parts:
            below = [subfolder for folder in level for subfolder in glob.subfolders(folder)]
            if not below:
                break
            own_files_only += level
            level = below
    folders = [(folder, False) for folder in own_files_only] + [(folder, True) for folder in level]
    return [ListingPart(number, source, folder, deep) for number, (folder, deep) in enumerate(folders)]


def _plan_list(source: ImageSource, part_bytes: int) -> list[ListingPart]:
    """A list's parts: byte ranges of ``part_bytes`` over the file (one part for an empty file)."""
    if part_bytes < 1:
        raise BeamlensError(f"a list part must hold at least one byte, got {part_bytes}")
    try:
        stamp = files.size_and_mtime(source.input_list)
    except Exception as error:  # missing, unreadable, a filesystem that cannot match
        raise BeamlensError(f"cannot read --input-list {source.input_list}: {error}") from None
    if stamp is None:
        raise BeamlensError(f"cannot read --input-list {source.input_list}: not found")
    size = stamp[0]
    spans = [(start, min(start + part_bytes, size)) for start in range(0, max(size, 1), part_bytes)]
    return [ListingPart(number, source, span=span) for number, span in enumerate(spans)]


def iter_list_paths(path: str, span: tuple[int, int] = (0, sys.maxsize)) -> Iterator[str]:
    """The paths on the lines of the list ``path`` that start in the bytes ``[start, end)``, in file
    order, streamed: a line that started before ``start`` is the previous part's, a line that
    starts before ``end`` is read to its end. Blank lines are skipped; line ends (LF or CRLF) are
    not part of a path, anything else on the line is."""
    start, end = span
    with files.open_read(path) as stream:
        position = 0
        if start > 0:
            stream.seek(start - 1)
            position = start - 1 + len(stream.readline())  # finishes the line the byte before start is on
        while position < end:
            line = stream.readline()
            if not line:
                return
            try:
                text = line.rstrip(b"\r\n").decode("utf-8")
            except UnicodeDecodeError:
                raise BeamlensError(f"{path}: the line at byte {position} is not UTF-8 text") from None
            position += len(line)
            if text.strip():
                yield text


def iter_part_refs(part: ListingPart) -> Iterator[ImageRef]:
    """One part's images in a stable order: a list's lines in file order, a local glob's folder as
    sorted paths, a whole source as sorted matches (glob) or in the COCO file's order."""
    source = part.source
    if source.input_list:
        return (ImageRef(image_id=path, uri=path) for path in iter_list_paths(source.input_list, part.span))
    if source.input_glob:
        pattern = source.input_glob
        if part.folder is None:
            paths = sorted(match_entries(pattern))  # names its own failures
        else:
            with _matching(pattern):
                paths = sorted(LocalGlob.parse(files.local_path(pattern)).walk(part.folder, part.deep))
        return (ImageRef(image_id=path, uri=path) for path in paths)
    return _iter_coco_refs(source)


def _iter_coco_refs(source: ImageSource) -> Iterator[ImageRef]:
    image_root = source.resolved_image_root()
    data = read_text_file(source.captions_file)
    for image in parse_coco_captions(data, source=source.captions_file, image_root=image_root):
        yield ImageRef(image_id=str(image.image_id), uri=image.path, captions=tuple(image.captions))


def iter_image_refs(source: ImageSource, max_parts: int = DEFAULT_LISTING_PARTS) -> Iterator[ImageRef]:
    """Every image of the source, in the pipeline's listing order (part by part)."""
    for part in plan_parts(source, max_parts):
        yield from iter_part_refs(part)


def count_images(source: ImageSource, limit: int) -> int:
    """How many images the source lists, counted up to ``limit`` and none kept: a glob through
    :func:`count_entries`, a list's lines read up to ``limit``, a COCO file parsed."""
    if source.input_glob:
        return count_entries(source.input_glob, limit)
    if source.input_list:
        return sum(1 for _ in itertools.islice(iter_list_paths(source.input_list), limit))
    return sum(1 for _ in itertools.islice(_iter_coco_refs(source), limit))


def has_images(source: ImageSource) -> bool:
    """Whether a glob or a list names any image, from its first match or line only (the launcher
    must not list a corpus of 100M files to learn that it is not empty). A COCO captions file says
    so only once parsed, which is the pipeline's job: True here, and an empty listing fails the run."""
    return bool(source.captions_file) or count_images(source, 1) > 0


class _ListPart(beam.DoFn):
    """A worker lists one part and numbers its images; the count is the ``read`` counter."""

    def __init__(self) -> None:
        self._listed = Metrics.counter(METRICS_NAMESPACE, "read")

    def process(self, part: ListingPart) -> Iterator[tuple[ListPosition, ImageRef]]:
        for index, ref in enumerate(iter_part_refs(part)):
            self._listed.inc()
            yield ListPosition(part.number, index), ref
        checkpoint("listing")


def _keyed_by_number(part: ListingPart) -> tuple[int, ListingPart]:
    return part.number, part


def _the_parts(keyed: tuple[int, Iterable[ListingPart]]) -> Iterable[ListingPart]:
    return keyed[1]


class ListImages(beam.PTransform):
    """PBegin -> PCollection[(ListPosition, ImageRef)]: planned in one worker, listed part by part in many."""

    def __init__(self, source: ImageSource, max_parts: int = DEFAULT_LISTING_PARTS,
                 list_part_bytes: int = LIST_PART_BYTES) -> None:
        super().__init__()
        self._source = source
        self._max_parts = max_parts
        self._list_part_bytes = list_part_bytes

    def expand(self, pbegin):
        return (
            pbegin
            | "Source" >> beam.Create([self._source])
            | "PlanParts" >> beam.FlatMap(plan_parts, self._max_parts, self._list_part_bytes)
            | "KeyByPart" >> beam.Map(_keyed_by_number)
            | "SpreadParts" >> beam.GroupByKey()
            | "Parts" >> beam.FlatMap(_the_parts)
            | "ListParts" >> beam.ParDo(_ListPart())
        )


def _batch_key(indexed: tuple[ListPosition, ImageRef], batch_size: int) -> tuple[tuple[int, int], tuple[ListPosition, ImageRef]]:
    position = indexed[0]
    return (position[0], position[1] // batch_size), indexed


def _sorted_batch(keyed: tuple[tuple[int, int], Iterable[tuple[ListPosition, ImageRef]]]) -> list[ImageRef]:
    # Sorting makes batches identical on every runner (GroupByKey gives no order).
    return [ref for _, ref in sorted(keyed[1], key=lambda item: tuple(item[0]))]


class BatchImageRefs(beam.PTransform):
    """PCollection[(ListPosition, ImageRef)] -> PCollection[list[ImageRef]] of at most ``batch_size``, within a part."""

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
