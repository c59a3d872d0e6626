"""End-to-end tests of ``beamlens embed`` on the in-memory FnApiRunner: values, errors, manifest."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from beamlens.models.errors import BeamlensError
from beamlens.models.io.fingerprint import model_fingerprint
from beamlens.models.shards.records import Manifest
from beamlens.models.encoders.inputs import model_image_size
from beamlens.pipelines import embed_images
from tests import embed_helpers as h

IN_MEMORY = ["--runner", "FnApiRunner"]



@pytest.fixture(scope="module")
def encoder(tmp_path_factory) -> Path:
    return h.build_tiny_encoder(tmp_path_factory.mktemp("model") / "encoder.keras")


def _embed(args: list[str]) -> None:
    embed_images.run(IN_MEMORY + args, save_main_session=False)


def test_real_photos_match_model_predict_and_manifest(tmp_path, encoder):
    photos = h.real_photos()
    captions, images, _ = h.write_coco_corpus(tmp_path / "corpus", photos)
    out = tmp_path / "out"
    _embed(["--captions", str(captions), "--images", str(images), "--model", str(encoder), "--output", str(out),
            "--num-shards", "3", "--max-batch-size", "2"])

    records = h.read_shards(out)
    assert sorted(records) == [str(i) for i in range(1, len(photos) + 1)]
    expected = h.predict_reference(encoder, [images / f"{i:012d}{p.suffix}" for i, p in enumerate(photos, 1)], h.TINY_SIZE)
    got = np.stack([records[str(i)].embedding for i in range(1, len(photos) + 1)])
    assert got.shape == (len(photos), h.TINY_DIM)
    assert np.max(np.abs(got - expected)) <= 1e-5
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)

    first = records["1"]
    assert first.uri == str(images / "000000000001.jpg")
    assert first.captions == (f"photo number 1 ({photos[0].stem})",)
    assert first.model_fingerprint == model_fingerprint(str(encoder))
    import hashlib
    assert first.content_hash == hashlib.sha256(photos[0].read_bytes()).hexdigest()

    manifest = Manifest.from_json((out / "manifest.json").read_text())
    assert manifest.count == len(photos) and manifest.errors == 0
    assert manifest.dimension == h.TINY_DIM
    assert manifest.model_fingerprint == first.model_fingerprint
    assert manifest.shards == [f"embeddings-0000{i}-of-00003.tfrecord" for i in range(3)]
    assert manifest.error_files == [f"errors-0000{i}-of-00003.jsonl" for i in range(3)]
    assert manifest.extra["read"] == len(photos)
    assert manifest.extra["counters"] == {"read": len(photos), "decoded": len(photos), "embedded": len(photos)}
    assert manifest.extra["inference_model"] == "encoder.keras"  # a bare .keras, no model folder: Keras runs it
    assert manifest.options["num_shards"] == 3 and manifest.options["model"] == str(encoder)
    assert all((out / name).exists() for name in manifest.shards + manifest.error_files)
    assert not list(out.glob("beam-temp-*")) and not list(out.glob(".tmp-*"))


def test_bad_files_are_reported_and_good_ones_embedded(tmp_path, encoder):
    photos = h.coco_mini_photos(5)
    captions, images, expected_errors = h.write_coco_corpus(tmp_path / "corpus", photos, bad=True)
    out = tmp_path / "out"
    _embed(["--captions", str(captions), "--images", str(images), "--model", str(encoder), "--output", str(out),
            "--num-shards", "2", "--max-batch-size", "3"])

    records = h.read_shards(out)
    assert sorted(records, key=int) == [str(i) for i in range(1, 6)]
    expected = h.predict_reference(encoder, [images / f"{i:012d}.jpg" for i in range(1, 6)], h.TINY_SIZE)
    got = np.stack([records[str(i)].embedding for i in range(1, 6)])
    assert np.max(np.abs(got - expected)) <= 1e-5

    errors = h.read_errors(out)
    assert sorted(errors) == sorted(expected_errors)
    for image_id, reason in expected_errors.items():
        assert reason in errors[image_id]["reason"], errors[image_id]
        assert errors[image_id]["uri"].endswith((images / "x").parent.name + "/" + Path(errors[image_id]["uri"]).name)
    assert errors[max(expected_errors)]["stage"] == "read"  # the missing file
    manifest = Manifest.from_json((out / "manifest.json").read_text())
    assert (manifest.count, manifest.errors) == (5, 4)
    assert manifest.extra["errors_by_stage"] == {"decode": 3, "read": 1}
    assert manifest.extra["counters"] == {"read": 9, "decoded": 5, "failed": 4, "embedded": 5}


def test_glob_input_uses_paths_as_ids(tmp_path, encoder):
    folder = tmp_path / "photos"
    folder.mkdir()
    photos = h.real_photos()
    for p in photos:
        (folder / p.name).write_bytes(p.read_bytes())
    (folder / "notes.txt").write_text("not matched by the glob")
    out = tmp_path / "out"
    _embed(["--input-glob", str(folder / "*.*g"), "--model", str(encoder), "--output", str(out), "--num-shards", "1"])
    records = h.read_shards(out)
    assert sorted(records) == sorted(str(folder / p.name) for p in photos)
    assert all(r.captions == () and r.uri == r.image_id for r in records.values())
    paths = sorted(folder / p.name for p in photos)
    expected = h.predict_reference(encoder, paths, h.TINY_SIZE)
    got = np.stack([records[str(p)].embedding for p in paths])
    assert np.max(np.abs(got - expected)) <= 1e-5


def test_rerun_replaces_previous_output(tmp_path, encoder):
    folder = tmp_path / "photos"
    folder.mkdir()
    for p in h.real_photos()[:2]:
        (folder / p.name).write_bytes(p.read_bytes())
    out = tmp_path / "out"
    _embed(["--input-glob", str(folder / "*"), "--model", str(encoder), "--output", str(out), "--num-shards", "3"])
    _embed(["--input-glob", str(folder / "*"), "--model", str(encoder), "--output", str(out), "--num-shards", "2"])
    assert sorted(p.name for p in out.glob("embeddings-*")) == ["embeddings-00000-of-00002.tfrecord", "embeddings-00001-of-00002.tfrecord"]
    assert json.loads((out / "manifest.json").read_text())["count"] == 2


@pytest.mark.parametrize(
    "args, message",
    [
        (["--output", "OUT"], "--model is required"),
        (["--model", "MODEL", "--output", "OUT"], "give either --captions"),
        (["--model", "MODEL", "--output", "OUT", "--input-glob", "@NOWHERE@/*.jpg"], "no images found"),
        (["--model", "MODEL", "--output", "OUT", "--captions", "@NOWHERE@.json"], "nowhere.json: file not found"),
        (["--model", "MODEL", "--output", "OUT", "--input-glob", "x", "--num-shards", "0"], "--num-shards must be at least 1"),
        (["--model", "missing.keras", "--output", "OUT", "--input-glob", "x"], "missing.keras: file not found"),
    ],
)
def test_user_errors(tmp_path, encoder, args, message):
    args = [a.replace("MODEL", str(encoder)).replace("OUT", str(tmp_path / "out")).replace("@NOWHERE@", str(tmp_path / "nowhere")) for a in args]
    with pytest.raises(BeamlensError, match=message):
        _embed(args)


def test_model_image_size_is_read_from_the_keras_file(tmp_path, encoder):
    assert model_image_size(str(encoder)) == h.TINY_SIZE
    not_keras = tmp_path / "x.keras"
    not_keras.write_bytes(b"nope")
    with pytest.raises(BeamlensError, match="not a Keras 3 .keras file"):
        model_image_size(str(not_keras))


def test_cli_help_lists_the_options(capsys):
    assert embed_images.main(["--help"]) == 0
    text = capsys.readouterr().out
    for option in ("--captions", "--input-glob", "--num-shards", "--image-size", "--max-batch-size", "--runner"):
        assert option in text


def test_default_corpus_matches_model_predict(tmp_path, encoder):
    from beamlens.models.corpora.synthetic import CorpusOptions, corpus_paths, write_corpus

    write_corpus(tmp_path / "corpus", CorpusOptions(num_images=24, image_size=64, val_fraction=0.25))
    paths = corpus_paths(tmp_path / "corpus")
    captions_file = paths["captions"]["val"]
    out = tmp_path / "out"
    _embed(["--captions", str(captions_file), "--model", str(encoder), "--output", str(out), "--num-shards", "2"])

    coco = json.loads(captions_file.read_text())
    files = {str(image["id"]): paths["images"]["val"] / image["file_name"] for image in coco["images"]}
    records = h.read_shards(out)
    assert sorted(records) == sorted(files) and len(files) == 6
    ids = sorted(files)
    expected = h.predict_reference(encoder, [files[i] for i in ids], h.TINY_SIZE)
    got = np.stack([records[i].embedding for i in ids])
    assert np.max(np.abs(got - expected)) <= 1e-5
    captions_of = {}
    for a in coco["annotations"]:
        captions_of.setdefault(str(a["image_id"]), []).append(a["caption"])
    assert all(sorted(records[i].captions) == sorted(captions_of[i]) for i in ids)


def test_a_decompression_bomb_is_a_dead_letter_and_the_job_finishes(tmp_path, encoder):
    """The issue's crafted PNG: 20000x10000 1-bit, ~24 KB. Before: DecompressionBombError, traceback,
    no manifest. Now: one decode dead letter naming the budget, the other photos embedded."""
    from PIL import Image  # noqa: PLC0415

    folder = tmp_path / "photos"
    folder.mkdir()
    photos = h.coco_mini_photos(3)
    for n, photo in enumerate(photos):
        (folder / f"p{n}.jpg").write_bytes(photo.read_bytes())
    Image.new("1", (20000, 10000)).save(folder / "bomb.png")
    assert (folder / "bomb.png").stat().st_size < 100_000
    out = tmp_path / "out"
    _embed(["--input-glob", str(folder / "*"), "--model", str(encoder), "--output", str(out), "--num-shards", "2"])
    manifest = Manifest.from_json((out / "manifest.json").read_text())
    assert manifest.count == 3 and manifest.errors == 1 and manifest.extra["read"] == 4
    errors = h.read_errors(out)
    bomb = errors[str(folder / "bomb.png")]
    assert bomb["stage"] == "decode"
    assert bomb["reason"] == ("image too large: 20000x10000 = 200,000,000 pixels > budget 150,000,000 "
                              "(--max-image-pixels)")
    assert sorted(h.read_shards(out)) == sorted(str(folder / f"p{n}.jpg") for n in range(3))
    # a bigger budget is the user's explicit choice (here: refuse even the photos, proving it is used)
    _embed(["--input-glob", str(folder / "*"), "--model", str(encoder), "--output", str(out), "--num-shards", "2",
            "--max-image-pixels", "1000"])
    assert Manifest.from_json((out / "manifest.json").read_text()).count == 0
    assert {e["stage"] for e in h.read_errors(out).values()} == {"decode"}
