"""One writer per output root: a lock object with an owner, a heartbeat and an expiry.

Why: two ``beamlens reindex`` runs on one root (a cron job that overran its interval) used to
delete each other's live version folders and publish a version without shards. A run now holds
``ROOT/_LOCK`` for as long as it writes under the root:

* **Taking it** is a create-only-if-absent of one small JSON object: ``O_CREAT | O_EXCL`` on a
  local disk, a write with ``if_generation_match=0`` on Google Cloud Storage. Exactly one of two
  racing runs succeeds; the other gets :class:`LockHeldError` (``beamlens``: exit 2) naming the
  holder, its host and process, and when the lock expires.
* **Keeping it**: a daemon thread rewrites the heartbeat every ``ttl / 4`` seconds, each time
  only if the object is still the one this run wrote (a generation check), so a run that lost its
  lock notices and :meth:`OutputLock.ensure_held` refuses to publish.
* **A stale lock** (the holder was killed: ``kill -9``, a lost VM) is taken over only when its
  heartbeat is older than its ttl, or at once when the holder ran on this host and its process is
  gone (that is proof, not a guess). The take-over is itself conditional on the stale object's
  generation, so two runs cannot both take it over; it is announced with the old holder's name.

Object stores other than local disks and ``gs://`` have no create-only-if-absent primitive that
Beam's ``FileSystems`` exposes; a root there is refused with a clear error instead of running
unlocked.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import socket
import threading
import time
from typing import Callable, Iterator, Optional, Protocol

from beamlens.models.io import files
from beamlens.models.errors import BeamlensError

LOCK_NAME = "_LOCK"
DEFAULT_TTL_SECONDS = 600.0


class LockHeldError(BeamlensError):
    """Another live run holds the root."""


class LockLostError(BeamlensError):
    """This run's lock was taken over or removed while it ran: it must not publish."""


@dataclasses.dataclass(frozen=True)
class LockInfo:
    """What the lock object holds: who, where, since when, and until when it counts as alive."""

    owner: str  # the run's id (its version name)
    host: str
    pid: int
    command: str
    acquired_at: float
    heartbeat_at: float
    ttl_seconds: float

    @property
    def expires_at(self) -> float:
        return self.heartbeat_at + self.ttl_seconds

    def to_bytes(self) -> bytes:
        return json.dumps(dataclasses.asdict(self), sort_keys=True).encode("utf-8")

    @classmethod
    def from_bytes(cls, data: bytes) -> "LockInfo":
        try:
            return cls(**json.loads(data.decode("utf-8")))
        except (ValueError, TypeError, UnicodeDecodeError) as error:
            # An unreadable lock (a crash mid-write) is treated as long expired, never as free.
            return cls("unreadable lock object", "?", -1, f"({error})", 0.0, 0.0, 0.0)

    def describe(self, now: float) -> str:
        age = max(0.0, now - self.heartbeat_at)
        left = self.expires_at - now
        expiry = f"expires in {left:.0f} s" if left > 0 else f"expired {-left:.0f} s ago"
        return (f"run {self.owner} ({self.command}, pid {self.pid} on {self.host}), "
                f"last heartbeat {age:.0f} s ago, {expiry}")


class LockStore(Protocol):
    """Conditional operations on one small object; ``generation`` identifies a written version."""

    def create(self, data: bytes) -> Optional[str]:
        """Write only if absent; the new generation, or None if the object exists."""

    def read(self) -> Optional[tuple[bytes, str]]:
        """(data, generation), or None when absent."""

    def replace(self, data: bytes, generation: str) -> Optional[str]:
        """Overwrite only if the object is still at ``generation``; the new generation or None."""

    def delete(self, generation: str) -> bool:
        """Delete only if still at ``generation``."""


class LocalLockStore:
    """A file on a local (POSIX) disk. Create is ``O_EXCL``; the compare-and-swap operations are
    serialised by ``flock`` on a sidecar file, which every run on this disk honours."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._mutex_path = path + ".mutex"

    @contextlib.contextmanager
    def _mutex(self) -> Iterator[None]:
        import fcntl  # noqa: PLC0415 (POSIX only; imported where it is used)

        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        with open(self._mutex_path, "a+") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _generation(self) -> Optional[str]:
        try:
            info = os.stat(self.path)
        except FileNotFoundError:
            return None
        return f"{info.st_ino}-{info.st_mtime_ns}-{info.st_size}"

    def _write_new(self, data: bytes) -> None:
        handle = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        try:
            os.write(handle, data)
            os.fsync(handle)
        finally:
            os.close(handle)

    def create(self, data: bytes) -> Optional[str]:
        with self._mutex():
            try:
                self._write_new(data)
            except FileExistsError:
                return None
            return self._generation()

    def read(self) -> Optional[tuple[bytes, str]]:
        with self._mutex():
            generation = self._generation()
            if generation is None:
                return None
            with open(self.path, "rb") as stream:
                return stream.read(), generation

    def replace(self, data: bytes, generation: str) -> Optional[str]:
        with self._mutex():
            if self._generation() != generation:
                return None
            files.write_atomic(self.path, data)  # the one atomic writer, under the mutex
            return self._generation()

    def delete(self, generation: str) -> bool:
        with self._mutex():
            if self._generation() != generation:
                return False
            os.remove(self.path)
            return True


class GcsLockStore:
    """An object on Google Cloud Storage, with generation preconditions (the documented way to
    make create-if-absent and compare-and-swap on GCS). ``google-cloud-storage`` comes with
    ``apache-beam[gcp]``."""

    def __init__(self, uri: str) -> None:
        from google.api_core import exceptions  # noqa: PLC0415
        from google.cloud import storage  # noqa: PLC0415

        bucket, _, name = uri[len("gs://"):].partition("/")
        self._blob = lambda: storage.Client().bucket(bucket).blob(name)
        self._failed = (exceptions.PreconditionFailed, exceptions.NotFound)

    def create(self, data: bytes) -> Optional[str]:
        blob = self._blob()
        try:
            blob.upload_from_string(data, if_generation_match=0)
        except self._failed:
            return None
        return str(blob.generation)

    def read(self) -> Optional[tuple[bytes, str]]:
        blob = self._blob()
        try:
            data = blob.download_as_bytes()
        except self._failed:
            return None
        return data, str(blob.generation)

    def replace(self, data: bytes, generation: str) -> Optional[str]:
        blob = self._blob()
        try:
            blob.upload_from_string(data, if_generation_match=int(generation))
        except self._failed:
            return None
        return str(blob.generation)

    def delete(self, generation: str) -> bool:
        try:
            self._blob().delete(if_generation_match=int(generation))
        except self._failed:
            return False
        return True


def store_for(root: str) -> LockStore:
    """The lock store for an output root: local disk or gs://; anything else is refused."""
    if not files.is_remote(root):
        return LocalLockStore(os.path.join(root, LOCK_NAME))
    if root.startswith("gs://"):
        return GcsLockStore(root.rstrip("/") + "/" + LOCK_NAME)
    scheme = root.split("://", 1)[0]
    raise BeamlensError(f"{root}: no lock for {scheme}:// roots (it needs an atomic create-if-absent, which beamlens "
                        "implements for local disks and gs://); use a local or gs:// --output-root")


def process_alive(pid: int) -> bool:
    """Whether a process of this host is still there (signal 0 checks without touching it)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def holder_is_dead(info: LockInfo, now: float) -> Optional[str]:
    """Why the holder can be taken as dead, or None while it may be alive."""
    if info.host == socket.gethostname() and not process_alive(info.pid):
        return f"its process {info.pid} on this host is gone"
    if now > info.expires_at:
        return f"its heartbeat stopped {now - info.heartbeat_at:.0f} s ago (ttl {info.ttl_seconds:.0f} s)"
    return None


class OutputLock:
    """Hold one root's lock for a run; use as a context manager around everything the run writes."""

    def __init__(self, root: str, owner: str, command: str, ttl_seconds: float = DEFAULT_TTL_SECONDS,
                 store: Optional[LockStore] = None, announce: Callable[[str], None] = lambda message: None,
                 clock: Callable[[], float] = time.time) -> None:
        if ttl_seconds <= 0:
            raise BeamlensError(f"--lock-ttl must be positive, got {ttl_seconds}")
        self.root, self.owner, self.command = root, owner, command
        self.ttl_seconds = float(ttl_seconds)
        self._store = store or store_for(root)
        self._announce, self._clock = announce, clock
        self._generation: Optional[str] = None
        self._lost: Optional[str] = None
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self.took_over: Optional[str] = None  # description of a dead holder this run replaced

    def _info(self, acquired_at: float) -> LockInfo:
        return LockInfo(self.owner, socket.gethostname(), os.getpid(), self.command, acquired_at, self._clock(),
                        self.ttl_seconds)

    def acquire(self) -> "OutputLock":
        """Take the lock (or a dead holder's); raise LockHeldError naming a live holder."""
        now = self._clock()
        data = self._info(now).to_bytes()
        self._generation = self._store.create(data)
        if self._generation is None:
            self._take_over_if_dead(data, now)
        self._acquired_at = now
        self._thread = threading.Thread(target=self._beat, name=f"beamlens-lock-{self.owner}", daemon=True)
        self._thread.start()
        return self

    def _take_over_if_dead(self, data: bytes, now: float) -> None:
        current = self._store.read()
        if current is None:  # released between our create and read: try once more
            self._generation = self._store.create(data)
            if self._generation is None:
                raise LockHeldError(f"{self.root} is locked by another run that started just now; try again later")
            return
        held, generation = current
        info = LockInfo.from_bytes(held)
        reason = holder_is_dead(info, now)
        if reason is None:
            raise LockHeldError(f"{self.root} is locked by {info.describe(now)}; one run per output root at a "
                                f"time (a stale lock is taken over once it expires)")
        self._generation = self._store.replace(data, generation)
        if self._generation is None:
            raise LockHeldError(f"{self.root}: another run took over the stale lock of {info.owner} first")
        self.took_over = f"{info.describe(now)}: {reason}"
        self._announce(f"took over the lock of a dead run: {self.took_over}")

    def _beat(self) -> None:
        interval = max(0.05, self.ttl_seconds / 4)
        while not self._stop.wait(interval):
            self.heartbeat()

    def heartbeat(self) -> None:
        """Renew the expiry, only if the lock is still ours; otherwise remember that it was lost."""
        if self._lost or self._generation is None:
            return
        renewed = self._store.replace(self._info(self._acquired_at).to_bytes(), self._generation)
        if renewed is None:
            self._lost = "the lock object was replaced or removed by someone else"
        else:
            self._generation = renewed

    def ensure_held(self) -> None:
        """Raise LockLostError if another run took the lock: the caller must not publish."""
        if self._lost:
            raise LockLostError(f"{self.root}: this run ({self.owner}) lost its lock ({self._lost}); not publishing")
        current = self._store.read()
        if current is None or current[1] != self._generation:
            self._lost = "the lock object is no longer the one this run wrote"
            raise LockLostError(f"{self.root}: this run ({self.owner}) lost its lock; not publishing")

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self._generation is not None and not self._lost:
            self._store.delete(self._generation)
        self._generation = None

    def __enter__(self) -> "OutputLock":
        return self.acquire()

    def __exit__(self, *exc_info) -> None:
        self.release()


def read_holder(root: str) -> Optional[LockInfo]:
    """Who holds a root's lock now (for messages and cleanup decisions), or None."""
    current = store_for(root).read()
    return LockInfo.from_bytes(current[0]) if current else None
