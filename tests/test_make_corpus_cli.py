"""``beamlens make-corpus`` through the real CLI entry point."""

from __future__ import annotations

import json

from beamlens.models.corpora.coco import load_coco_captions
from beamlens.pipelines import cli


def test_make_corpus_prints_what_it_made_and_is_idempotent(tmp_path, capsys):
    out = tmp_path / "corpus"
    argv = ["make-corpus", "--out", str(out), "--num-images", "20", "--image-size", "48", "--val-fraction", "0.25",
            "--seed", "5"]
    assert cli.main(argv) == 0
    printed = capsys.readouterr().out
    assert "20/20 images (" in printed
    assert "made 20 images (15 train, 5 val) and 60 captions in " in printed
    assert f"train: 15 images in {out / 'train'}, captions {out / 'annotations' / 'captions_train.json'}" in printed
    assert f"manifest: {out / 'corpus.json'}" in printed
    first = load_coco_captions(str(out / "annotations" / "captions_train.json"), check_files=True)[0]
    assert f"first image {out / 'train' / '000000000001.jpg'}:" in printed
    for caption in first.captions:
        assert f"  - {caption}\n" in printed
    assert json.loads((out / "corpus.json").read_text())["options"]["seed"] == 5

    assert cli.main(argv) == 0
    again = capsys.readouterr().out
    assert "nothing to do" in again and "made " not in again


def test_make_corpus_errors_exit_2_with_the_message(tmp_path, capsys):
    out = tmp_path / "corpus"
    assert cli.main(["make-corpus", "--out", str(out), "--num-images", "1"]) == 2
    assert capsys.readouterr().err == (
        "beamlens make-corpus: error: num_images must be at least 2 (one train and one val image), got 1\n"
    )
    assert not out.exists()
    assert cli.main(["make-corpus", "--out", str(out), "--num-images", "10", "--image-size", "32"]) == 0
    capsys.readouterr()
    assert cli.main(["make-corpus", "--out", str(out), "--num-images", "10", "--image-size", "40"]) == 2
    assert "other options (image_size 32 there, 40 asked)" in capsys.readouterr().err
    assert cli.main(["make-corpus", "--out", str(out), "--num-images", "10", "--image-size", "40", "--force"]) == 0
    assert "made 10 images (9 train, 1 val)" in capsys.readouterr().out
