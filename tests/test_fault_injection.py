"""Fault injection: ``kill -9`` at every stage boundary of ``embed`` and ``reindex``, and two
``reindex`` runs on one root at once. Rerun it any time: ``pytest tests/test_fault_injection.py``.

Each killed run is a real ``beamlens`` process that SIGKILLs itself at a named boundary
(models/faults.py: listing, decode, write, rename, manifest, searcher, report, latest). After
every fault the published state is checked the way a reader sees it: ``LATEST`` names a finished
version, the real Task Library ``TextSearcher`` answers from its searcher with every item of the
input that version was built from, and its shards hold exactly that input. No record may be lost.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from beamlens.models import faults
from beamlens.models.shards import versions as vo
from beamlens.models.shards.records import MANIFEST_NAME, Manifest
from tests import embed_helpers as h
from tests.conftest import PROJECT_ROOT, TFLITE_SUPPORT_DATA

DIM = 16  # the regex text embedder's output size
TEXT_EMBEDDER = TFLITE_SUPPORT_DATA / "regex_one_embedding_with_metadata.tflite"
EMBED_STAGES = ("listing", "decode", "write", "rename", "manifest")
REINDEX_STAGES = faults.STAGES
RUN_TIMEOUT = 300


def _beamlens(args: list[str], env_extra: dict[str, str] | None = None, wait: bool = True):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **(env_extra or {})}
    command = [sys.executable, "-m", "beamlens.pipelines.cli", *args]
    if not wait:
        return subprocess.Popen(command, cwd=PROJECT_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return subprocess.run(command, cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=RUN_TIMEOUT)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("faults")
    photos = h.coco_mini_photos(12)
    captions, images, _ = h.write_coco_corpus(root / "corpus", photos[:9])
    encoder = h.build_tiny_encoder(root / "encoder.keras", dim=DIM, seed=0)
    return {"root": root, "captions": captions, "images": images, "encoder": encoder, "spare": photos[9:]}


def _ids(captions: Path) -> list[str]:
    return sorted(str(image["id"]) for image in json.loads(captions.read_text())["images"])


def _add_image(world, image_id: int, photo: Path) -> None:
    doc = json.loads(world["captions"].read_text())
    name = f"{image_id:012d}{photo.suffix}"
    (world["images"] / name).write_bytes(photo.read_bytes())
    doc["images"].append({"id": image_id, "file_name": name, "width": 1, "height": 1})
    doc["annotations"].append({"id": 50_000 + image_id, "image_id": image_id, "caption": f"added photo {image_id}"})
    world["captions"].write_text(json.dumps(doc))


def _shard_ids(shards: Path) -> list[str]:
    return sorted(h.read_shards(shards))


def _searcher_ids(searcher: Path) -> list[str]:
    from beamlens.models.compat import call_tflite  # noqa: PLC0415
    from tests.tflite_helpers import text_search  # noqa: PLC0415

    found = call_tflite(text_search, str(searcher), "photo", 100)
    return sorted(json.loads(meta)["id"] for meta, _ in found["neighbours"])


def _assert_published(root: Path, expected_ids: list[str]) -> str:
    """LATEST names a finished version whose shards and searcher hold exactly ``expected_ids``."""
    name = vo.read_latest(str(root))  # raises unless the version passes the reader's check
    assert name is not None
    version = root / name
    manifest = Manifest.from_json((version / "shards" / MANIFEST_NAME).read_text())
    assert manifest.count == len(expected_ids)
    assert _shard_ids(version / "shards") == expected_ids
    assert _searcher_ids(version / "searchers" / "text_searcher.tflite") == expected_ids
    return name


# --------------------------------------------------------------------------------------------
# embed: the output reads as finished (manifest.json) only when it is complete
# --------------------------------------------------------------------------------------------
def _embed_args(world, out: Path) -> list[str]:
    return ["embed", "--captions", str(world["captions"]), "--images", str(world["images"]), "--model",
            str(world["encoder"]), "--output", str(out), "--num-shards", "2", "--max-batch-size", "4",
            "--runner", "FnApiRunner"]


def test_embed_killed_at_every_stage_loses_nothing(world):
    out = world["root"] / "embedded"
    expected = _ids(world["captions"])
    outcomes = {}
    for stage in EMBED_STAGES:
        done = _beamlens(_embed_args(world, out), {faults.KILL_ENV: stage})
        assert done.returncode == -signal.SIGKILL, (stage, done.stderr[-1500:])
        manifest = out / MANIFEST_NAME
        if stage == "manifest":  # killed just after the manifest: the output is whole
            assert Manifest.from_json(manifest.read_text()).count == len(expected)
            assert _shard_ids(out) == expected
        else:  # killed before it: no manifest, so nothing reads the output as finished
            assert not manifest.exists(), stage
        outcomes[stage] = "manifest" if manifest.exists() else "no manifest"
        recovered = _beamlens(_embed_args(world, out))
        assert recovered.returncode == 0, (stage, recovered.stderr[-1500:])
        assert Manifest.from_json(manifest.read_text()).count == len(expected)
        assert _shard_ids(out) == expected
        assert not list(out.glob("*.tmp-*")), stage  # the rerun swept the killed run's temp files
    assert outcomes == {"listing": "no manifest", "decode": "no manifest", "write": "no manifest",
                        "rename": "no manifest", "manifest": "manifest"}


# --------------------------------------------------------------------------------------------
# reindex: LATEST always names a version search answers from, with its input's every record
# --------------------------------------------------------------------------------------------
def _reindex_args(world, root: Path) -> list[str]:
    return ["reindex", "--output-root", str(root), "--captions", str(world["captions"]), "--images",
            str(world["images"]), "--model", str(world["encoder"]), "--text-embedder", str(TEXT_EMBEDDER),
            "--num-shards", "2", "--max-batch-size", "4", "--runner", "FnApiRunner"]


def test_reindex_killed_at_every_stage_keeps_latest_whole(world):
    root = world["root"] / "index"
    first = _beamlens(_reindex_args(world, root))
    assert first.returncode == 0, first.stderr[-2000:]
    published_ids = _ids(world["captions"])
    published = _assert_published(root, published_ids)

    _add_image(world, 901, world["spare"][0])  # every killed run has one image to embed
    current_ids = _ids(world["captions"])
    for stage in REINDEX_STAGES:
        done = _beamlens(_reindex_args(world, root), {faults.KILL_ENV: stage})
        assert done.returncode == -signal.SIGKILL, (stage, done.stderr[-2000:])
        if stage == "latest":  # killed after moving the pointer: the new version is the published one
            published, published_ids = _assert_published(root, current_ids), current_ids
            assert published != vo.list_versions(str(root))[0]
        else:
            assert _assert_published(root, published_ids) == published, stage

    final = _beamlens(_reindex_args(world, root))
    assert final.returncode == 0, final.stderr[-2000:]
    assert "took over the lock of a dead run" in final.stderr  # the last killed run left its lock behind
    _assert_published(root, current_ids)
    versions = vo.list_versions(str(root))
    assert all(vo.is_complete(str(root), name) for name in versions)  # dead runs' folders are gone
    assert len(versions) <= 3  # --keep-versions 3


def test_two_concurrent_reindex_runs_on_one_root(world, tmp_path):
    """Run A holds the root (paused inside its lock); B starts, is refused naming A, exits 2."""
    root = world["root"] / "index"
    if vo.read_latest(str(root)) is None:  # run on its own (-k): publish a first version here
        assert _beamlens(_reindex_args(world, root)).returncode == 0
    before = _assert_published(root, _ids(world["captions"]))
    _add_image(world, 902, world["spare"][1])
    resume = tmp_path / "resume"
    first = _beamlens(_reindex_args(world, root), {faults.PAUSE_ENV: "listing", faults.RESUME_FILE_ENV: str(resume)},
                      wait=False)
    try:
        deadline = time.monotonic() + RUN_TIMEOUT
        while not (root / "_LOCK").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        holder = json.loads((root / "_LOCK").read_text())
        second = _beamlens(_reindex_args(world, root))
    finally:
        resume.write_text("go")
        out, err = first.communicate(timeout=RUN_TIMEOUT)
    assert second.returncode == 2, second.stderr[-2000:]
    assert f"beamlens reindex: error: {root} is locked by run {holder['owner']}" in second.stderr
    assert f"pid {first.pid}" in second.stderr
    assert first.returncode == 0, err[-2000:]
    after = _assert_published(root, _ids(world["captions"]))
    assert after == holder["owner"] and after != before
    third = _beamlens(_reindex_args(world, root))  # and the root keeps working afterwards
    assert third.returncode == 0, third.stderr[-2000:]
    _assert_published(root, _ids(world["captions"]))
