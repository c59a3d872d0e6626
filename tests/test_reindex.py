"""``beamlens reindex`` end to end: incremental behaviour checked image by image.

One small COCO-layout corpus evolves through the module (runs build on each other, like the days
of a scheduled job): full build -> unchanged -> new/changed/deleted/re-captioned -> crash before
publishing -> recovery -> changed encoder -> a run on the DaskRunner (2-worker LocalCluster).
Carried-over vectors must be bit-identical to the previous version's; embedded ones must equal
a fresh ``model.predict`` on the shared preprocessing.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from beamlens.models.shards import versions as vo
from tests import embed_helpers as h
from tests.conftest import PROJECT_ROOT, TFLITE_SUPPORT_DATA

h.install_coco_shim()

from beamlens.pipelines import reindex  # noqa: E402

DIM = 16  # the regex text embedder's output size, so a real text searcher can be built
TEXT_EMBEDDER = TFLITE_SUPPORT_DATA / "regex_one_embedding_with_metadata.tflite"
DASK_RUNNER = "apache_beam.runners.dask.dask_runner.DaskRunner"


class Corpus:
    """A COCO layout whose images and captions the tests change between runs."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.captions_file, self.images_dir, _ = h.write_coco_corpus(root, h.coco_mini_photos(8))
        self.spare = h.coco_mini_photos(14)[8:]  # photos not in the corpus yet

    def doc(self) -> dict:
        return json.loads(self.captions_file.read_text())

    def save(self, doc: dict) -> None:
        self.captions_file.write_text(json.dumps(doc))

    def path(self, image_id: str) -> Path:
        entry = next(i for i in self.doc()["images"] if str(i["id"]) == image_id)
        return self.images_dir / entry["file_name"]

    def add(self, image_id: int, photo: Path) -> None:
        doc = self.doc()
        name = f"{image_id:012d}{photo.suffix}"
        shutil.copy(photo, self.images_dir / name)
        doc["images"].append({"id": image_id, "file_name": name, "width": 1, "height": 1})
        doc["annotations"].append({"id": 10_000 + image_id, "image_id": image_id, "caption": f"new photo {image_id}"})
        self.save(doc)

    def delete(self, image_id: int) -> None:
        doc = self.doc()
        doc["images"] = [i for i in doc["images"] if i["id"] != image_id]
        doc["annotations"] = [a for a in doc["annotations"] if a["image_id"] != image_id]
        self.save(doc)

    def recaption(self, image_id: int, text: str) -> None:
        doc = self.doc()
        for a in doc["annotations"]:
            if a["image_id"] == image_id:
                a["caption"] = text
        self.save(doc)

    def ids(self) -> list[str]:
        return sorted(str(i["id"]) for i in self.doc()["images"])


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("reindex")
    corpus = Corpus(root / "corpus")
    encoder = h.build_tiny_encoder(root / "encoder.keras", dim=DIM, seed=0)
    other_encoder = h.build_tiny_encoder(root / "encoder_v2.keras", dim=DIM, seed=1)
    return {"root": root, "corpus": corpus, "encoder": encoder, "other_encoder": other_encoder, "out": root / "index"}


def _args(world, encoder: Path | None = None, runner: list[str] | None = None) -> list[str]:
    """The module's runs delete 1 of 8 images (12.5%), above the default shrink guard (10%)."""
    corpus: Corpus = world["corpus"]
    return ["--max-deleted-fraction", "0.2",
        "--output-root", str(world["out"]), "--captions", str(corpus.captions_file), "--images", str(corpus.images_dir),
        "--model", str(encoder or world["encoder"]), "--text-embedder", str(TEXT_EMBEDDER),
        "--num-shards", "2", "--max-batch-size", "3", *(runner or ["--runner", "FnApiRunner"]),
    ]


def _latest(world) -> Path:
    name = vo.read_latest(str(world["out"]))
    assert name is not None
    return world["out"] / name


def _records(version: Path) -> dict:
    return h.read_shards(version / "shards")


def _serialized(version: Path) -> dict[str, bytes]:
    """Each record's stored bytes by image id, read with tf.data (independent of our reader)."""
    import tensorflow as tf  # noqa: PLC0415

    from beamlens.models.shards.records import decode_record  # noqa: PLC0415

    found = {}
    for shard in sorted((version / "shards").glob("embeddings-*-of-*.tfrecord")):
        for serialized in tf.data.TFRecordDataset(str(shard)):
            found[decode_record(serialized.numpy()).image_id] = serialized.numpy()
    return found


def _fresh(world, ids: list[str], encoder: Path | None = None) -> dict[str, np.ndarray]:
    corpus: Corpus = world["corpus"]
    paths = [corpus.path(i) for i in ids]
    vectors = h.predict_reference(encoder or world["encoder"], paths, h.TINY_SIZE)
    return dict(zip(ids, vectors))


def _assert_embedded_fresh(world, records: dict, ids: list[str], encoder: Path | None = None) -> None:
    expected = _fresh(world, ids, encoder)
    for image_id in ids:
        np.testing.assert_allclose(records[image_id].embedding, expected[image_id], atol=1e-5, rtol=0)


def _text_search_ids(searcher: Path, count: int) -> set[str]:
    from beamlens.models.compat import call_tflite  # noqa: PLC0415
    from tests.tflite_helpers import text_search  # noqa: PLC0415

    found = call_tflite(text_search, str(searcher), "photo", count)
    return {json.loads(meta)["id"] for meta, _ in found["neighbours"]}


def test_1_first_run_is_a_full_build(world):
    report = reindex.run(_args(world), save_main_session=False)
    corpus: Corpus = world["corpus"]
    version = _latest(world)
    assert version.name == report["version"] and (world["out"] / "LATEST").read_text().strip() == version.name
    assert report["full_rebuild_reason"] == "no previous output"
    assert report["plan"]["counts"]["new"] == 8 and report["plan"]["embedded"] == 8
    records = _records(version)
    assert sorted(records) == corpus.ids()
    _assert_embedded_fresh(world, records, corpus.ids())
    assert report["searcher"]["action"] == "built"
    assert _text_search_ids(version / "searchers" / "text_searcher.tflite", 20) == set(corpus.ids())
    world["v1"] = version


def test_2_unchanged_corpus_embeds_nothing_and_reuses_the_searcher(world):
    report = reindex.run(_args(world), save_main_session=False)
    version = _latest(world)
    assert version != world["v1"]
    assert report["plan"]["counts"] == {"carry": 8, "new": 0, "changed": 0, "model_changed": 0, "deleted": 0}
    assert report["plan"]["embedded"] == 0
    assert report["plan"]["hashed"] == 0  # every file kept its size and mtime: none was read
    assert report["searcher"]["action"] == "reused"
    old, new = _records(world["v1"]), _records(version)
    for image_id, record in old.items():
        assert new[image_id].embedding.tobytes() == record.embedding.tobytes()
        assert new[image_id].content_hash == record.content_hash
    assert _serialized(version) == _serialized(world["v1"])  # carried records are written byte for byte
    a = (world["v1"] / "searchers" / "text_searcher.tflite").read_bytes()
    assert (version / "searchers" / "text_searcher.tflite").read_bytes() == a
    world["v2"] = version


def test_3_new_changed_deleted_and_recaptioned_images(world):
    corpus: Corpus = world["corpus"]
    corpus.add(101, corpus.spare[0])
    corpus.add(102, corpus.spare[1])
    shutil.copy(corpus.spare[2], corpus.path("3"))  # same id and file name, new bytes
    corpus.delete(5)
    corpus.recaption(2, "a brand new caption")
    before = _records(world["v2"])
    before_bytes = _serialized(world["v2"])

    report = reindex.run(_args(world), save_main_session=False)
    version = _latest(world)
    counts = report["plan"]["counts"]
    assert counts == {"carry": 6, "new": 2, "changed": 1, "model_changed": 0, "deleted": 1}
    assert report["plan"]["metadata_updated"] == 1
    assert report["plan"]["hashed"] == 1  # only image 3's stamp moved; the re-captioned 2 was not read
    assert report["plan"]["sample_ids"] == {"changed": ["3"], "deleted": ["5"], "new": ["101", "102"]}
    records = _records(version)
    assert sorted(records) == corpus.ids() and "5" not in records
    for image_id in ("1", "2", "4", "6", "7", "8"):  # carried: the exact previous bytes
        assert records[image_id].embedding.tobytes() == before[image_id].embedding.tobytes()
    stored = _serialized(version)
    assert all(stored[i] == before_bytes[i] for i in ("1", "4", "6", "7", "8"))  # untouched records: same bytes
    assert stored["2"] != before_bytes["2"]  # re-captioned: re-encoded around the same vector
    assert records["2"].captions == ("a brand new caption",)
    _assert_embedded_fresh(world, records, ["101", "102", "3"])
    assert not np.allclose(records["3"].embedding, before["3"].embedding)
    assert records["3"].content_hash != before["3"].content_hash
    assert report["searcher"]["action"] == "built"
    assert _text_search_ids(version / "searchers" / "text_searcher.tflite", 20) == set(corpus.ids())
    world["v3"] = version


def test_4_a_run_killed_before_publishing_leaves_latest_alone(world):
    """(Every stage boundary is killed in tests/test_fault_injection.py; here the killed run's
    remains are followed through a failing run and the recovery.)"""
    from beamlens.models import faults  # noqa: PLC0415

    corpus: Corpus = world["corpus"]
    corpus.add(103, corpus.spare[3])
    env = {**__import__("os").environ, faults.KILL_ENV: "searcher", "TF_CPP_MIN_LOG_LEVEL": "2"}
    code = (
        "import sys; from tests import embed_helpers as h; h.install_coco_shim(); "
        "from beamlens.pipelines import reindex; reindex.run(sys.argv[1:], save_main_session=False)"
    )
    done = subprocess.run([sys.executable, "-c", code, *_args(world)], cwd=PROJECT_ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == -9, done.stderr[-2000:]
    assert _latest(world) == world["v3"]  # the pointer did not move
    partial = [n for n in vo.list_versions(str(world["out"])) if not vo.is_complete(str(world["out"]), n)]
    assert len(partial) == 1 and (world["out"] / partial[0] / "shards" / "manifest.json").exists()

    def boom(version_dir: str) -> None:
        raise RuntimeError("simulated crash between embedding and publishing")

    with pytest.raises(RuntimeError, match="simulated crash"):  # this run first cleans up the killed one
        reindex.run(_args(world), save_main_session=False, before_publish=boom)
    assert _latest(world) == world["v3"]
    partial_now = [n for n in vo.list_versions(str(world["out"])) if not vo.is_complete(str(world["out"]), n)]
    assert len(partial_now) == 1 and partial_now != partial

    report = reindex.run(_args(world), save_main_session=False)  # the next run recovers
    assert report["removed_partial_versions"] == partial_now
    assert all(vo.is_complete(str(world["out"]), n) for n in vo.list_versions(str(world["out"])))
    assert report["plan"]["counts"]["new"] == 1 and report["plan"]["counts"]["carry"] == 9
    records = _records(_latest(world))
    _assert_embedded_fresh(world, records, ["103"])
    before = _records(world["v3"])
    assert all(records[i].embedding.tobytes() == before[i].embedding.tobytes() for i in before)
    # --keep-versions 3 (default): the oldest finished versions were pruned, LATEST kept
    assert len(vo.list_versions(str(world["out"]))) == 3 and _latest(world).exists()


def test_5_changed_encoder_re_embeds_everything(world):
    corpus: Corpus = world["corpus"]
    report = reindex.run(_args(world, encoder=world["other_encoder"]), save_main_session=False)
    assert report["model_changed"] is True and report["full_rebuild_reason"] == "model changed"
    assert report["plan"]["counts"]["model_changed"] == 0  # nothing read from the old space...
    assert report["plan"]["counts"]["new"] == len(corpus.ids())  # ...so every image is embedded anew
    records = _records(_latest(world))
    _assert_embedded_fresh(world, records, corpus.ids(), encoder=world["other_encoder"])
    assert report["searcher"]["action"] == "built"


def test_6_incremental_run_on_dask_two_worker_local_cluster(world, tmp_path):
    """Glob input (ids are paths): a full build on FnApiRunner, then the re-index on Dask."""
    distributed = pytest.importorskip("distributed")  # a declared dev dependency
    folder = tmp_path / "photos"
    folder.mkdir()
    photos = h.coco_mini_photos(14)
    for n, photo in enumerate(photos[:7]):
        shutil.copy(photo, folder / f"p{n:02d}.jpg")
    out = tmp_path / "index"

    def args(runner: list[str]) -> list[str]:
        return ["--output-root", str(out), "--input-glob", str(folder / "*.jpg"), "--model", str(world["encoder"]),
                "--text-embedder", str(TEXT_EMBEDDER), "--num-shards", "2", "--max-batch-size", "2",
                "--allow-shrink", *runner]  # 1 of 7 deleted: above the default shrink guard

    reindex.run(args(["--runner", "FnApiRunner"]), save_main_session=False)
    before = _records(out / vo.read_latest(str(out)))
    shutil.copy(photos[10], folder / "p90.jpg")  # new
    shutil.copy(photos[11], folder / "p01.jpg")  # changed bytes
    (folder / "p02.jpg").unlink()  # deleted
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        report = reindex.run(args(["--runner", DASK_RUNNER, "--dask_client_address", cluster.scheduler_address]),
                             save_main_session=False)
    assert report["runner"] == DASK_RUNNER
    assert report["plan"]["counts"] == {"carry": 5, "new": 1, "changed": 1, "model_changed": 0, "deleted": 1}
    records = _records(out / vo.read_latest(str(out)))
    ids = sorted(str(p) for p in folder.glob("*.jpg"))
    assert sorted(records) == ids
    fresh = [str(folder / "p90.jpg"), str(folder / "p01.jpg")]
    expected = h.predict_reference(world["encoder"], [Path(p) for p in fresh], h.TINY_SIZE)
    for image_id, vector in zip(fresh, expected):
        np.testing.assert_allclose(records[image_id].embedding, vector, atol=1e-5, rtol=0)
    for image_id in set(ids) - set(fresh):
        assert records[image_id].embedding.tobytes() == before[image_id].embedding.tobytes()
    assert report["searcher"]["action"] == "built"


def test_7_file_stamps_decide_which_files_are_read(world, tmp_path):
    """Size + mtime unchanged: carried unread. Touched: hashed once, then its new stamp is kept.
    A rewrite that keeps size and mtime is only caught by --rehash (the documented trade-off)."""
    import os

    folder = tmp_path / "photos"
    folder.mkdir()
    for n, photo in enumerate(h.coco_mini_photos(4)):
        (folder / f"p{n}.jpg").write_bytes(photo.read_bytes() + b"beamlens-A")
    out = tmp_path / "index"
    args = ["--output-root", str(out), "--input-glob", str(folder / "*.jpg"), "--model", str(world["encoder"]),
            "--no-searcher", "--num-shards", "2", "--max-batch-size", "2", "--runner", "FnApiRunner"]
    reindex.run(args, save_main_session=False)
    first = _records(out / vo.read_latest(str(out)))
    p0, p1 = str(folder / "p0.jpg"), str(folder / "p1.jpg")
    assert first[p0].file_size == os.stat(p0).st_size and first[p0].file_mtime_us == os.stat(p0).st_mtime_ns // 1000

    later = os.stat(p0).st_mtime_ns + 5_000_000_000
    os.utime(p0, ns=(later, later))  # touched, same bytes
    report = reindex.run(args, save_main_session=False)
    assert report["plan"]["counts"]["carry"] == 4 and report["plan"]["hashed"] == 1
    touched = _records(out / vo.read_latest(str(out)))[p0]
    assert touched.file_mtime_us == later // 1000 and touched.embedding.tobytes() == first[p0].embedding.tobytes()
    assert reindex.run(args, save_main_session=False)["plan"]["hashed"] == 0  # the new stamp was stored

    stamp = os.stat(p1)
    (folder / "p1.jpg").write_bytes((folder / "p1.jpg").read_bytes()[:-1] + b"B")  # same size, new bytes
    os.utime(p1, ns=(stamp.st_atime_ns, stamp.st_mtime_ns))  # ...and the old mtime
    missed = reindex.run(args, save_main_session=False)
    assert missed["plan"]["counts"]["changed"] == 0 and missed["plan"]["hashed"] == 0
    caught = reindex.run([*args, "--rehash"], save_main_session=False)
    assert caught["plan"]["counts"]["changed"] == 1 and caught["plan"]["hashed"] == 4
    assert caught["plan"]["sample_ids"]["changed"] == [p1]


def test_8_shrink_guard_and_a_shell_expanded_glob_publish_nothing(world, tmp_path, capsys):
    """The issue's case: 20 photos, the glob left unquoted. The shell's expansion is refused before
    anything runs (exit 2); a glob that now matches 1 of 20 runs but refuses to publish."""
    from beamlens.pipelines import cli  # noqa: PLC0415

    folder = tmp_path / "photos"
    folder.mkdir()
    photos = h.coco_mini_photos(14)
    for n in range(20):
        shutil.copy(photos[n % len(photos)], folder / f"p{n:02d}.jpg")
    (folder / "p13.jpg").write_bytes((folder / "p13.jpg").read_bytes() + b"unique")  # 20 distinct files
    out = tmp_path / "index"
    base = ["--output-root", str(out), "--model", str(world["encoder"]), "--no-searcher", "--num-shards", "2",
            "--runner", "FnApiRunner"]
    assert cli.main(["reindex", "--input-glob", str(folder / "*.jpg"), *base]) == 0
    first = vo.read_latest(str(out))
    assert len(_records(out / first)) == 20

    expanded = sorted(str(p) for p in folder.glob("*.jpg"))  # what `--input-glob dir/*.jpg` becomes
    capsys.readouterr()
    assert cli.main(["reindex", "--input-glob", *expanded, *base]) == 2
    err = capsys.readouterr().err
    assert "beamlens reindex: error: --input-glob takes one value but 19 more path(s) followed" in err
    assert "quote it" in err and vo.list_versions(str(out)) == [first]  # refused before any version folder

    narrow = str(folder / "p00.jpg")  # a glob that matches 1 of the 20
    assert cli.main(["reindex", "--input-glob", narrow, *base]) == 2
    err = capsys.readouterr().err
    assert "shrink check: 19 of the previous 20 items would be dropped (95.0%; limit 10%)" in err
    assert ("refusing to publish: this re-index would drop 19 of the previous version's 20 items (95.0%), "
            "more than --max-deleted-fraction 0.1") in err
    assert vo.read_latest(str(out)) == first  # nothing published

    assert cli.main(["reindex", "--input-glob", narrow, *base, "--max-deleted-fraction", "0.96"]) == 0
    shrunk = vo.read_latest(str(out))
    assert shrunk != first and sorted(_records(out / shrunk)) == [narrow]
    report = json.loads((out / shrunk / "reindex_report.json").read_text())
    assert report["removed_from_previous"] == 19 and report["plan"]["counts"]["deleted"] == 19
    assert cli.main(["reindex", "--input-glob", str(folder / "*.jpg"), *base]) == 0  # growing back: no guard
    assert len(_records(out / vo.read_latest(str(out)))) == 20


def test_9_keep_versions_and_previous(world, tmp_path):
    """--keep-versions 1 keeps only LATEST, 0 keeps all; --previous carries from another output (a
    plain `beamlens embed` folder here), so nothing is embedded twice."""
    from beamlens.pipelines import cli, embed_images  # noqa: PLC0415

    folder = tmp_path / "photos"
    folder.mkdir()
    for n, photo in enumerate(h.coco_mini_photos(4)):
        shutil.copy(photo, folder / f"p{n}.jpg")
    corpus = ["--input-glob", str(folder / "*.jpg"), "--model", str(world["encoder"]), "--num-shards", "2",
              "--runner", "FnApiRunner"]
    out = tmp_path / "index"
    for _ in range(3):
        assert cli.main(["reindex", "--output-root", str(out), "--no-searcher", "--keep-versions", "1", *corpus]) == 0
    assert vo.list_versions(str(out)) == [vo.read_latest(str(out))]
    for _ in range(2):
        assert cli.main(["reindex", "--output-root", str(out), "--no-searcher", "--keep-versions", "0", *corpus]) == 0
    assert len(vo.list_versions(str(out))) == 3 and vo.list_versions(str(out))[-1] == vo.read_latest(str(out))

    embedded = tmp_path / "embedded"
    embed_images.run([*corpus, "--output", str(embedded)], save_main_session=False)
    other = tmp_path / "other-root"
    report = reindex.run(["--output-root", str(other), "--previous", str(embedded), "--no-searcher", *corpus],
                         save_main_session=False)
    assert report["previous"] == str(embedded)
    assert report["plan"]["counts"]["carry"] == 4 and report["plan"]["embedded"] == 0
    carried = _records(other / vo.read_latest(str(other)))
    source = h.read_shards(embedded)
    assert {i: r.embedding.tobytes() for i, r in carried.items()} == {i: r.embedding.tobytes() for i, r in source.items()}
