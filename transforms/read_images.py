"""What is known of an image before and after reading it, and reading its bytes through Beam filesystems.

Every path goes through the filesystem facade (models/io/files.py, over Beam's FileSystems), so local
folders, ``gs://`` and any other registered Beam filesystem work the same way. Listing a source's
images lives in transforms/listing.py; here are the records it produces (:class:`ImageRef`), the
dead letter of an image that could not be embedded (:class:`ImageError`), and the reads of one
image's bytes, stamp and hash on the worker that embeds it.
"""

from __future__ import annotations

import errno
import hashlib
import os
from dataclasses import dataclass
from typing import NamedTuple

from beamlens.models.io import files
from beamlens.models.corpora.coco import default_image_root
from beamlens.models.errors import BeamlensError

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
    """Where the images come from: a COCO caption file (+ image root), a glob, or a list of paths
    (``input_list``: a text file, one path or URI per line, as a bucket inventory or ``gsutil ls``
    writes; the one source of a remote corpus whose listing splits across workers)."""

    captions_file: str | None = None
    image_root: str | None = None
    input_glob: str | None = None
    input_list: str | None = None

    def __post_init__(self) -> None:
        if sum(bool(given) for given in (self.captions_file, self.input_glob, self.input_list)) != 1:
            raise BeamlensError("give either --captions (with --images), --input-glob or --input-list: exactly one")

    def resolved_image_root(self) -> str:
        """The image folder of a COCO source: --images, or the split folder its caption file implies."""
        return self.image_root or default_image_root(self.captions_file)

    def describe(self) -> str:
        """One line for the log and the manifest, naming the image folder really used (given or default)."""
        if self.input_glob:
            return f"glob {self.input_glob}"
        if self.input_list:
            return f"list {self.input_list}"
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


def read_image_bytes(uri: str) -> bytes:
    """Bytes of one image; a missing or unreadable file raises :class:`ImageReadError`."""
    try:
        return files.read_bytes(uri)
    except Exception as error:  # FileNotFoundError, PermissionError, BeamIOError, remote errors...
        raise ImageReadError(read_failure_reason(uri, error)) from None


def read_failure_reason(uri: str, error: Exception) -> str:
    """The dead letter's reason for a failed read, short and the same for every such file.

    A listed entry that is a dangling link says where it points, so the user can see which target
    went missing (the listing keeps such links: ``listing.LocalGlob.walk``).
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
