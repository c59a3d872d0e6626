"""The per-root lock (models/shards/lock.py) and the version checks it protects (versioned_output)."""

from __future__ import annotations

import json
import multiprocessing
import os
import socket
import subprocess
import sys

import pytest

from beamlens.models.shards import lock as ol
from beamlens.models.shards import versions as vo
from beamlens.models.errors import BeamlensError


class FakeClock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _plant_lock(root, *, host: str, pid: int, heartbeat_at: float, ttl: float = 60.0, owner: str = "v-old") -> None:
    info = ol.LockInfo(owner, host, pid, "beamlens reindex", heartbeat_at, heartbeat_at, ttl)
    (root / ol.LOCK_NAME).write_bytes(info.to_bytes())


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_second_holder_is_refused_with_the_holders_name(tmp_path):
    with ol.OutputLock(str(tmp_path), "v-first", "beamlens reindex", ttl_seconds=60):
        holder = ol.read_holder(str(tmp_path))
        assert holder.owner == "v-first" and holder.pid == os.getpid() and holder.host == socket.gethostname()
        with pytest.raises(ol.LockHeldError) as refused:
            ol.OutputLock(str(tmp_path), "v-second", "beamlens reindex", ttl_seconds=60).acquire()
        message = str(refused.value)
        assert "v-first" in message and f"pid {os.getpid()}" in message and "expires in" in message
    assert ol.read_holder(str(tmp_path)) is None  # released: the lock object is gone
    with ol.OutputLock(str(tmp_path), "v-third", "beamlens reindex"):  # and the root is free again
        assert ol.read_holder(str(tmp_path)).owner == "v-third"


def test_a_dead_process_on_this_host_is_taken_over_at_once(tmp_path):
    clock = FakeClock()
    _plant_lock(tmp_path, host=socket.gethostname(), pid=_dead_pid(), heartbeat_at=clock.now, ttl=3600)
    messages: list[str] = []
    lock = ol.OutputLock(str(tmp_path), "v-new", "beamlens reindex", ttl_seconds=60, announce=messages.append, clock=clock)
    with lock:
        assert ol.read_holder(str(tmp_path)).owner == "v-new"
    assert "v-old" in lock.took_over and "is gone" in lock.took_over
    assert messages and messages[0].startswith("took over the lock of a dead run")


def test_another_hosts_lock_is_taken_over_only_after_expiry(tmp_path):
    clock = FakeClock()
    _plant_lock(tmp_path, host="some-other-host", pid=1, heartbeat_at=clock.now, ttl=60)
    clock.now += 59
    with pytest.raises(ol.LockHeldError, match=r"some-other-host.*expires in 1 s"):
        ol.OutputLock(str(tmp_path), "v-new", "beamlens reindex", clock=clock).acquire()
    assert ol.read_holder(str(tmp_path)).owner == "v-old"  # untouched
    clock.now += 2
    lock = ol.OutputLock(str(tmp_path), "v-new", "beamlens reindex", clock=clock)
    with lock:
        assert "heartbeat stopped 61 s ago" in lock.took_over


def test_an_unreadable_lock_is_not_free_but_expired(tmp_path):
    (tmp_path / ol.LOCK_NAME).write_bytes(b"{half a js")
    with ol.OutputLock(str(tmp_path), "v-new", "beamlens reindex") as lock:
        assert "unreadable lock object" in lock.took_over


def test_heartbeat_renews_and_a_lost_lock_refuses_to_publish(tmp_path):
    clock = FakeClock()
    lock = ol.OutputLock(str(tmp_path), "v-mine", "beamlens reindex", ttl_seconds=3600, clock=clock).acquire()
    try:
        clock.now += 100
        lock.heartbeat()
        assert ol.read_holder(str(tmp_path)).heartbeat_at == clock.now
        lock.ensure_held()  # still ours
        _plant_lock(tmp_path, host="elsewhere", pid=7, heartbeat_at=clock.now, owner="v-thief")  # someone replaced it
        with pytest.raises(ol.LockLostError, match="v-mine.*lost its lock"):
            lock.ensure_held()
        lock.heartbeat()  # must not overwrite the new holder's lock
        assert ol.read_holder(str(tmp_path)).owner == "v-thief"
    finally:
        lock.release()
    assert ol.read_holder(str(tmp_path)).owner == "v-thief"  # release leaves another run's lock alone


def _race(root: str, owner: str, barrier, results) -> None:
    barrier.wait()
    try:
        lock = ol.OutputLock(root, owner, "race", ttl_seconds=60).acquire()
        results.put(("won", owner))
        barrier.wait()  # hold it until every contender has tried
        lock.release()
    except ol.LockHeldError as error:
        results.put(("refused", str(error)))
        barrier.wait()


def test_exactly_one_of_many_racing_processes_wins(tmp_path):
    contenders = 6
    context = multiprocessing.get_context("fork")
    barrier, results = context.Barrier(contenders), context.Queue()
    workers = [context.Process(target=_race, args=(str(tmp_path), f"v-{n}", barrier, results)) for n in range(contenders)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(30)
    outcomes = [results.get(timeout=5) for _ in range(contenders)]
    assert sum(1 for kind, _ in outcomes if kind == "won") == 1
    assert sum(1 for kind, _ in outcomes if kind == "refused") == contenders - 1


def test_roots_on_other_object_stores_are_refused_not_run_unlocked():
    with pytest.raises(BeamlensError, match="no lock for s3:// roots"):
        ol.store_for("s3://bucket/index")
    assert isinstance(ol.store_for("/tmp/x"), ol.LocalLockStore)


def _version(root, name: str, *, shards: tuple[str, ...] = ("embeddings-00000-of-00001.tfrecord",),
             present: tuple[str, ...] | None = None, searcher: str = "skipped", marker: bool = True) -> None:
    folder = root / name / vo.SHARDS_DIR
    folder.mkdir(parents=True)
    (folder / "manifest.json").write_text(json.dumps({"shards": list(shards)}))
    for shard in shards if present is None else present:
        (folder / shard).write_bytes(b"")
    if marker:
        (root / name / vo.COMPLETE_MARKER).write_text(json.dumps({"searcher": {"action": searcher}}))


def test_latest_only_moves_to_a_version_a_reader_can_open(tmp_path):
    _version(tmp_path, "v-1-good")
    _version(tmp_path, "v-2-shard-missing", present=())
    _version(tmp_path, "v-3-no-searchers", searcher="built")
    _version(tmp_path, "v-4-no-marker", marker=False)
    root = str(tmp_path)
    assert vo.version_problem(root, "v-1-good") is None
    with pytest.raises(BeamlensError, match="shards listed in the manifest are missing: embeddings-00000"):
        vo.set_latest(root, "v-2-shard-missing")
    with pytest.raises(BeamlensError, match="searchers were built, but searchers/ is missing"):
        vo.set_latest(root, "v-3-no-searchers")
    with pytest.raises(BeamlensError, match="reindex_report.json is missing"):
        vo.set_latest(root, "v-4-no-marker")
    vo.set_latest(root, "v-1-good")
    assert vo.read_latest(root) == "v-1-good"
    # cleanup removes every unfinished folder, never the one LATEST names, nor the caller's own
    (tmp_path / "v-5-mine").mkdir()
    assert vo.clean_partial_versions(root, keep=("v-5-mine",)) == ["v-2-shard-missing", "v-3-no-searchers", "v-4-no-marker"]
    assert vo.list_versions(root) == ["v-1-good", "v-5-mine"]


def test_version_names_made_in_one_second_keep_their_order():
    import datetime as dt

    moment = dt.datetime(2026, 12, 2, 13, 0, 0, 999_998, tzinfo=dt.timezone.utc)
    names = [vo.new_version_name(moment)]
    for _ in range(20):  # the same clock reading each time (a coarse clock): each is still newer
        names.append(vo.new_version_name(moment, after=names[-1]))
    assert names == sorted(names) and len(set(names)) == len(names)
    earlier = vo.new_version_name(moment - dt.timedelta(hours=1), after=names[-1])  # the clock stepped back
    assert earlier > names[-1]


def test_a_new_name_sorts_after_a_name_of_the_earlier_format():
    old = "v-20261202-130000-fedcba"  # v-YYYYmmdd-HHMMSS-<6 hex>, as earlier releases named versions
    import datetime as dt

    same_second = dt.datetime(2026, 12, 2, 13, 0, 0, 500_000, tzinfo=dt.timezone.utc)
    assert vo.new_version_name(same_second, after=old) > old
