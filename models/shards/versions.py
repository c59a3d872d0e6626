"""Versioned output folders under one root, and an atomic ``LATEST`` pointer file.

    ROOT/v-20261123-013000-1a2b3c/   one finished re-index run (shards/, searchers/, reindex_report.json)
    ROOT/v-20261124-013000-4d5e6f/   the next one
    ROOT/LATEST                      a small text file holding the name of the newest finished version

Why a pointer FILE and not a symlink: object stores (gs://, s3://) have no symlinks, but replacing
one small object is atomic there, and on a local/POSIX filesystem ``os.replace`` of a temp file is
atomic too. Readers (the app, the publish step, the next re-index) read ``LATEST`` and open
``ROOT/<name>``; they can never see a half-written version, because a version is created under its
own fresh name and the pointer moves only after the version's completion marker is written.

A version is *finished* when :func:`version_problem` finds nothing wrong: its completion marker
(``reindex_report.json``) exists, its ``shards/manifest.json`` parses and every shard it lists is
there, and the searchers its report says were made are there. ``set_latest`` and ``read_latest``
apply that same check, so the pointer can only name a version a reader can open. A version that
is not finished is the remains of a crashed run: :func:`clean_partial_versions` removes it, and
``beamlens reindex`` calls it only while holding the root's lock (models/shards/lock.py), the
proof that no live run still writes there.

Every path goes through the one filesystem facade (models/io/files.py): local folders and any
Beam filesystem alike.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import secrets
from dataclasses import dataclass
from typing import Any, Optional

from beamlens.models.errors import BeamlensError
from beamlens.models.io import files

POINTER_NAME = "LATEST"
VERSION_PREFIX = "v-"
COMPLETE_MARKER = "reindex_report.json"
SHARDS_DIR = "shards"
SEARCHERS_DIR = "searchers"


# The facade's functions, under the names this module's callers have always used.
join, exists, read_text, write_text_atomic = files.join, files.exists, files.read_text, files.write_atomic


def _version_time(name: str) -> Optional[_dt.datetime]:
    """The time a version name carries: to the microsecond (``v-YYYYmmdd-HHMMSS-ffffff-xxxx``), or
    to the second for names of earlier releases (``v-YYYYmmdd-HHMMSS-xxxxxx``), taken as the
    second's end so that a new name made in that second still sorts after it."""
    parts = name[len(VERSION_PREFIX):].split("-")
    try:
        if len(parts) == 4:
            return _dt.datetime.strptime("-".join(parts[:3]), "%Y%m%d-%H%M%S-%f").replace(tzinfo=_dt.timezone.utc)
        if len(parts) == 3:
            second = _dt.datetime.strptime("-".join(parts[:2]), "%Y%m%d-%H%M%S").replace(tzinfo=_dt.timezone.utc)
            return second + _dt.timedelta(seconds=1)
    except ValueError:
        pass
    return None


def new_version_name(now: Optional[_dt.datetime] = None, after: Optional[str] = None) -> str:
    """``v-YYYYmmdd-HHMMSS-ffffff-<4 hex>``: sorts by time to the microsecond, so two versions made in
    one second keep their order (pruning keeps the newest); a name is always newer than ``after``
    (the newest existing version), even when the clock stepped back."""
    now = now or _dt.datetime.now(_dt.timezone.utc)
    newest = _version_time(after) if after else None
    if newest is not None and now <= newest:
        now = newest + _dt.timedelta(microseconds=1)
    return f"{VERSION_PREFIX}{now.strftime('%Y%m%d-%H%M%S-%f')}-{secrets.token_hex(2)}"


def list_versions(root: str) -> list[str]:
    """Names of version folders under root (finished or not), oldest first."""
    if not exists(root):
        return []
    names = {files.basename(path) for path in files.list_folder(root)}
    return sorted(n for n in names if n.startswith(VERSION_PREFIX))


def version_problem(root: str, name: str) -> Optional[str]:
    """What keeps ``root/name`` from being a finished version a reader can open, or None.

    The one completeness check: the pointer is moved, followed and old versions are pruned by it.
    """
    version = join(root, name)
    marker = join(version, COMPLETE_MARKER)
    if not exists(marker):
        return f"{marker} is missing"
    manifest_path = join(version, SHARDS_DIR, "manifest.json")
    if not exists(manifest_path):
        return f"{manifest_path} is missing"
    try:
        manifest = json.loads(read_text(manifest_path))
        report = json.loads(read_text(marker))
    except (OSError, ValueError) as error:
        return f"{version}: unreadable manifest or report ({error})"
    missing = [s for s in manifest.get("shards", []) if not exists(join(version, SHARDS_DIR, s))]
    if missing:
        return f"{version}: shards listed in the manifest are missing: {', '.join(missing[:5])}"
    searcher = report.get("searcher") or {}
    if searcher.get("action") in ("built", "reused") and not exists(join(version, SEARCHERS_DIR)):
        return f"{version}: the report says its searchers were {searcher['action']}, but {SEARCHERS_DIR}/ is missing"
    return None


def is_complete(root: str, name: str) -> bool:
    return version_problem(root, name) is None


def read_latest(root: str) -> Optional[str]:
    """The version name LATEST points to, or None on a fresh root. A dangling pointer is an error."""
    pointer = join(root, POINTER_NAME)
    if not exists(pointer):
        return None
    name = read_text(pointer).strip()
    problem = "not a version name" if not name.startswith(VERSION_PREFIX) or "/" in name else version_problem(root, name)
    if problem:
        raise BeamlensError(f"{pointer} points to {name!r}, which is not a finished version under {root} ({problem})")
    return name


def set_latest(root: str, name: str) -> None:
    """Move the pointer: refuses a version without its completion marker (the crash-safety rule)."""
    problem = version_problem(root, name)
    if problem:
        raise BeamlensError(f"refusing to point LATEST at {name}: {problem}")
    write_text_atomic(join(root, POINTER_NAME), name + "\n")


def clean_partial_versions(root: str, keep: tuple[str, ...] = ()) -> list[str]:
    """Delete version folders that never finished; returns their names.

    Only safe while holding the root's lock (no live run can own such a folder then); ``keep``
    names the caller's own folder. The version LATEST names is never deleted, even if it fails
    today's check (a reader may hold it open; the error is raised where it is read)."""
    pointer = join(root, POINTER_NAME)
    latest = read_text(pointer).strip() if exists(pointer) else None
    keep = (*keep, latest) if latest else keep
    removed = []
    for name in list_versions(root):
        if name not in keep and not is_complete(root, name):
            files.remove_tree(join(root, name))
            removed.append(name)
    return removed


def prune_old_versions(root: str, keep_last: int) -> list[str]:
    """Keep the newest ``keep_last`` finished versions (LATEST always among them); delete older ones."""
    if keep_last < 1:
        return []
    latest = read_latest(root)
    finished = [n for n in list_versions(root) if is_complete(root, n)]
    doomed = [n for n in finished[:-keep_last] if n != latest]
    for name in doomed:
        files.remove_tree(join(root, name))
    return doomed


@dataclass(frozen=True)
class Resolved:
    """Where a previous output lives: its version folder (or a bare embed output) and its shards."""

    version_dir: Optional[str]
    shards_dir: str
    searchers_dir: Optional[str]


def resolve_previous(path: str) -> Optional[Resolved]:
    """Accept ROOT (follow LATEST), ROOT/LATEST, a version folder, or a plain ``beamlens embed`` output.

    Returns None for a root that has no LATEST yet (the first run: everything is new).
    """
    path = path.rstrip("/") or path
    if path.rsplit("/", 1)[-1] == POINTER_NAME or os.path.basename(path) == POINTER_NAME:
        root = path[: -len(POINTER_NAME)].rstrip("/") or "."
        if not exists(path):
            raise BeamlensError(f"{path} does not exist")
        path = join(root, read_latest(root) or "")
    elif exists(join(path, POINTER_NAME)):
        path = join(path, read_latest(path) or "")
    elif exists(join(path, "manifest.json")):
        return Resolved(None, path, None)  # a bare `beamlens embed` output
    elif not exists(join(path, SHARDS_DIR)):
        return None  # a fresh root (or one whose only runs crashed): everything is new
    if not exists(join(path, SHARDS_DIR, "manifest.json")):
        raise BeamlensError(f"{path} has no finished shards ({join(SHARDS_DIR, 'manifest.json')} missing)")
    searchers = join(path, SEARCHERS_DIR)
    return Resolved(path, join(path, SHARDS_DIR), searchers if exists(searchers) else None)


@dataclass
class PreviousVersion:
    """What a re-index builds on: the previous output (if any), its manifest and report, and the
    shard paths to join (none when the encoder changed: nothing can be carried across spaces)."""

    resolved: Optional[Resolved]
    manifest: Optional[Any]  # models.shards.records.Manifest
    report: dict
    model_changed: bool
    shards: list[str]

    def describe(self) -> str:
        if self.resolved is None:
            return "none"
        return f"{self.resolved.version_dir or self.resolved.shards_dir} ({len(self.shards)} shards)"

    @property
    def count(self) -> int:
        return int(self.manifest.count) if self.manifest is not None else 0


def load_previous(path: str, fingerprint: str) -> PreviousVersion:
    """The previous output at ``path`` (a root, ROOT/LATEST, a version or an embed folder)."""
    from beamlens.models.shards.records import MANIFEST_NAME, Manifest  # noqa: PLC0415

    previous = resolve_previous(path)
    if previous is None:
        return PreviousVersion(None, None, {}, False, [])
    manifest_path = join(previous.shards_dir, MANIFEST_NAME)
    try:
        manifest = Manifest.from_json(read_text(manifest_path))
    except (OSError, ValueError, TypeError) as error:
        raise BeamlensError(f"{manifest_path}: not a readable manifest ({error})") from None
    report: dict = {}
    if previous.version_dir and exists(join(previous.version_dir, COMPLETE_MARKER)):
        report = json.loads(read_text(join(previous.version_dir, COMPLETE_MARKER)))
    model_changed = manifest.model_fingerprint != fingerprint
    shards = [] if model_changed else [join(previous.shards_dir, s) for s in manifest.shards]
    return PreviousVersion(previous, manifest, report, model_changed, shards)
