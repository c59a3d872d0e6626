"""`beamlens demo`: the chain it plans, its reuse of finished steps, and its summary."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from beamlens.models.errors import BeamlensError
from beamlens.pipelines import demo


def test_plan_runs_every_subcommand_in_order(tmp_path: Path) -> None:
    steps = demo.plan_steps(tmp_path, num_images=100, epochs=2)
    commands = [step.argv[3] for step in steps]
    assert commands == ["make-corpus", "train", "embed", "embed", "build-searcher", "evaluate",
                        "search", "search", "search", "search"]
    build = steps[4].argv
    assert build.count("--shards") == 2  # train and val runs indexed together
    assert steps[1].argv[-2:] == ["--epochs", "2"]
    assert steps[1].marker == tmp_path / "model" / "encoder_config.json"


def test_finished_steps_are_reused_and_failures_are_named(tmp_path: Path, capsys) -> None:
    marker = tmp_path / "done.json"
    marker.write_text("{}")
    steps = [
        demo.Step("already done", [sys.executable, "-c", "raise SystemExit(3)"], marker),
        demo.Step("fails", [sys.executable, "-c", "raise SystemExit(4)"], None),
    ]
    with pytest.raises(BeamlensError, match=r"step 2 \(fails\) failed with exit code 4"):
        demo.run_steps(steps)
    assert "already done: done before, reusing" in capsys.readouterr().out


def test_summary_prints_searcher_and_exact_accuracy(capsys) -> None:
    demo.print_summary({
        "num_items": 200, "num_queries": 50,
        "top_k_accuracy": {"searcher": {"1": 0.5, "10": 0.9}, "exact": {"1": 0.52, "10": 0.92}},
        "ann_recall": {"10": 0.99}, "latency_ms_by_k": {"10": {"p50": 0.3, "p99": 0.9}},
        "size_bytes": {"searcher": 2_000_000},
    })
    printed = capsys.readouterr().out
    assert "chance@10 = 0.050" in printed
    assert "searcher @1: 0.500  @10: 0.900" in printed and "exact    @1: 0.520  @10: 0.920" in printed
    assert "ANN recall@10 vs exact: 0.990" in printed and "searcher file 2.00 MB" in printed
    assert "promised" not in printed  # no build report given


def test_summary_puts_the_builders_promise_beside_the_measured_recall(capsys) -> None:
    demo.print_summary({"num_items": 200, "num_queries": 50, "ann_recall": {"10": 0.955}},
                       {"estimated_recall_at_10": 0.9553, "recall_query_kind": "text"})
    printed = capsys.readouterr().out
    assert "recall@10 the builder promised: 0.955 (on text queries); measured here on the held-out captions:\n" \
           "  ANN recall@10 vs exact: 0.955;" in printed


def test_auto_backbones_are_the_pretrained_ones_when_their_wheels_are_installed(monkeypatch) -> None:
    from beamlens.models.encoders.backbones import wheels as pretrained_wheels

    assert demo.choose_backbones("auto") == demo.PRETRAINED  # `make install` installs both wheels
    assert demo.choose_backbones("scratch") == demo.SCRATCH
    minilm_wheel = pretrained_wheels.WHEEL_MODULES["minilm"]  # the student is distilled from it
    monkeypatch.setattr(pretrained_wheels, "installed", lambda name: pretrained_wheels.WHEEL_MODULES[name] != minilm_wheel)
    assert demo.choose_backbones("auto") == demo.SCRATCH
    with pytest.raises(BeamlensError, match="the weights of minilm_static are not installed"):
        demo.choose_backbones("pretrained")


def test_plan_trains_with_the_chosen_backbones(tmp_path: Path) -> None:
    train = demo.plan_steps(tmp_path, num_images=100, epochs=None, backbones=demo.PRETRAINED)[1].argv
    assert train[train.index("--image-backbone") + 1] == "efficientnet_lite0"
    assert train[train.index("--text-backbone") + 1] == "minilm_static"  # the phone-grade student by default


def test_the_text_backbone_can_be_the_teacher_and_follows_into_the_real_photo_model(tmp_path: Path) -> None:
    backbones = demo.choose_backbones("auto", "minilm")
    assert backbones == {"image": "efficientnet_lite0", "text": "minilm"}
    export = demo.plan_real_photo_steps(tmp_path, tmp_path / "photos", backbones)[0].argv
    assert export[export.index("--text-backbone") + 1] == "minilm"
    export = demo.plan_real_photo_steps(tmp_path, tmp_path / "photos", demo.SCRATCH)[0].argv
    assert export[export.index("--text-backbone") + 1] == "minilm"  # scratch demo: the caption-free default
    with pytest.raises(BeamlensError, match="--text-backbone minilm needs the pretrained pair"):
        demo.choose_backbones("scratch", "minilm")


def test_a_model_trained_with_other_backbones_is_redone_and_the_corpus_kept(tmp_path: Path, capsys) -> None:
    for name in ("corpus", "model", "shards", "searchers", "report"):
        (tmp_path / name).mkdir()
    (tmp_path / "model" / "encoder_config.json").write_text('{"image_backbone": "scratch_cnn", "text_backbone": "scratch_text"}')
    demo.forget_other_backbones(tmp_path, demo.SCRATCH)
    assert (tmp_path / "model").exists()  # same backbones: reused
    demo.forget_other_backbones(tmp_path, demo.PRETRAINED)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corpus"]
    assert "made with scratch_cnn + scratch_text: making it again with efficientnet_lite0 + minilm_static" in capsys.readouterr().out


def test_a_caption_free_model_with_another_text_tower_is_redone(tmp_path: Path, capsys) -> None:
    for name in ("corpus", "caption-free", "real-shards", "real-searchers"):
        (tmp_path / name).mkdir()
    (tmp_path / "caption-free" / "encoder_config.json").write_text(
        '{"image_backbone": "efficientnet_lite0", "text_backbone": "minilm"}')
    demo.forget_other_backbones(tmp_path, {"image": "efficientnet_lite0", "text": "minilm"})
    assert (tmp_path / "real-shards").exists()
    demo.forget_other_backbones(tmp_path, demo.PRETRAINED)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corpus"]
    assert "making it again with efficientnet_lite0 + minilm_static" in capsys.readouterr().out
