"""``beamlens build-searcher`` holds a folder's shards and its manifest.json to each other, both ways.

Every listed shard exists and holds the records the manifest counts (in total and, where
recorded, per shard), and no shard file in the folder is missing from the manifest; otherwise the
CLI exits 2 naming the folder and what disagrees.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from beamlens.models.shards import records as sf
from beamlens.pipelines import cli
from tests import searcher_tasklib_helpers as h
from tests.test_build_searcher import _unit

RECORDS = 26
SHARDS = ["embeddings-00000-of-00002.tfrecord", "embeddings-00001-of-00002.tfrecord"]


@pytest.fixture()
def shards(tmp_path) -> Path:
    """26 records in 2 shards (13 each) with the manifest the shard writer of the other tests writes."""
    folder = tmp_path / "shards"
    assert h.write_shards(folder, h.records_for(_unit(RECORDS)), num_shards=2) == SHARDS
    return folder


def _edit_manifest(folder: Path, **changes) -> None:
    path = folder / sf.MANIFEST_NAME
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))


def _build(folder: Path, out: Path) -> int:
    return cli.main(["build-searcher", "--shards", str(folder), "--out", str(out), "--format", "scann_index_file"])


def _refused(folder: Path, out: Path, capsys) -> str:
    """The CLI's error line of a refused build, which must exit 2 and leave nothing behind."""
    capsys.readouterr()
    assert _build(folder, out) == 2
    leftovers = os.listdir(out) if out.is_dir() else []
    assert leftovers == [], f"a refused build left {leftovers}"
    return capsys.readouterr().err


def test_untampered_shards_build(shards, tmp_path):
    assert _build(shards, tmp_path / "out") == 0
    report = json.loads((tmp_path / "out" / "searcher_report.json").read_text())
    assert report["records_read"] == RECORDS and report["build"]["num_items"] == RECORDS


@pytest.mark.parametrize("claimed", [40, 20, 0])
def test_a_manifest_count_the_shards_do_not_hold_is_refused(shards, tmp_path, capsys, claimed):
    _edit_manifest(shards, count=claimed)
    err = _refused(shards, tmp_path / "out", capsys)
    assert f"error: {shards}: manifest.json says {claimed} records, the shards hold {RECORDS}" in err


def test_a_missing_shard_is_refused(shards, tmp_path, capsys):
    (shards / SHARDS[1]).unlink()
    err = _refused(shards, tmp_path / "out", capsys)
    assert f"{shards}: manifest.json and the shard files disagree" in err
    assert f"lists 1 shard file(s) that are missing: {SHARDS[1]}" in err


def test_a_stray_shard_from_another_run_is_refused(shards, tmp_path, capsys):
    shutil.copy(shards / SHARDS[0], shards / "embeddings-00000-of-00003.tfrecord")
    err = _refused(shards, tmp_path / "out", capsys)
    assert f"{shards}: manifest.json and the shard files disagree" in err
    assert "does not list 1 shard file(s) in the folder: embeddings-00000-of-00003.tfrecord" in err


def test_recorded_per_shard_counts_are_checked(shards, tmp_path, capsys):
    _edit_manifest(shards, shard_records={SHARDS[0]: 13, SHARDS[1]: 13})
    assert _build(shards, tmp_path / "ok") == 0
    _edit_manifest(shards, shard_records={SHARDS[0]: 14, SHARDS[1]: 12})
    err = _refused(shards, tmp_path / "out", capsys)
    assert f"{shards}: the records per shard disagree with manifest.json" in err
    assert f"{SHARDS[0]}: manifest.json says 14, the shard holds 13; {SHARDS[1]}: manifest.json says 12" in err


def test_counts_of_distinct_ids_and_runs_sharing_an_image_agree(tmp_path):
    # `beamlens embed` counts distinct ids: identical copies a runner wrote twice are not records it claims.
    records = h.records_for(_unit(30, seed=1))
    h.write_shards(tmp_path / "dup", records + records[:4], num_shards=2)
    _edit_manifest(tmp_path / "dup", count=30)
    assert _build(tmp_path / "dup", tmp_path / "o1") == 0
    # Two runs (train, val) that both hold image 0: each run's manifest counts it.
    vectors = _unit(20, seed=2)
    h.write_shards(tmp_path / "train", h.records_for(vectors[:12]), num_shards=1)
    val_ids = [f"img{i:06d}" for i in (0, *range(12, 20))]
    h.write_shards(tmp_path / "val", h.records_for(vectors[[0, *range(12, 20)]], ids=val_ids), num_shards=1)
    code = cli.main(["build-searcher", "--shards", str(tmp_path / "train"), "--shards", str(tmp_path / "val"),
                     "--out", str(tmp_path / "o2"), "--format", "scann_index_file"])
    assert code == 0
    report = json.loads((tmp_path / "o2" / "searcher_report.json").read_text())
    assert (report["records_read"], report["duplicates_dropped"], report["build"]["num_items"]) == (21, 1, 20)


def test_manifest_without_shard_records_reads_as_not_recorded():
    old = sf.Manifest.from_json(json.dumps({"count": 1, "dimension": 2, "model_fingerprint": "f", "shards": ["s"]}))
    assert old.shard_records == {}
    assert "shard_records" not in json.loads(old.to_json())  # unrecorded: the file is as before the field
    recorded = sf.Manifest(count=1, dimension=2, model_fingerprint="f", shards=["s"], shard_records={"s": 1})
    assert sf.Manifest.from_json(recorded.to_json()) == recorded
