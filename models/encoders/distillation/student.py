"""The static student: what a phone runs instead of MiniLM's six transformer layers.

Why this shape. A text query is a few words; MiniLM spends ~0.5 GFLOP on one. The student looks
each WordPiece id up in a table (Model2Vec's idea: start from MiniLM's own vector of the lone
token, reduced by PCA), lets neighbouring tokens interact once through a residual convolution
(word order inside "hot dog", "fire hydrant"), pools with a learned per-token weight (so "a", "of"
count for little) and maps the pooled vector into MiniLM's 384-d sentence space, L2-normalised. It
is fitted to answer like MiniLM (recipe.py), so any head trained on MiniLM features works on it.

Contract: the inputs are MiniLM's ``ids`` / ``mask`` / ``segment_ids`` (the Task Library's
BertTokenizer metadata feeds them; the same vocab.txt in training and on the device), built-in
Keras layers and ``keras.ops`` only (the TFLite graph is GATHER, CONV_2D, FULLY_CONNECTED and
elementwise ops, no custom ops), and it works at any sequence length (no position table).
"""

from __future__ import annotations

import keras
import numpy as np

BERT_INPUT_NAMES = ("ids", "mask", "segment_ids")
WEIGHTED_LAYERS = ("token_vectors", "segment_vectors", "token_weights", "context_conv", "context_out",
                   "to_teacher")


def build_student(vocab_size: int, max_tokens: int, width: int = 256, teacher_width: int = 384,
                  name: str = "minilm_static") -> keras.Model:
    """The architecture with zero weights; :func:`initial_weights` or a fitted file fills it."""
    ids, mask, segment_ids = (keras.Input((max_tokens,), dtype="int32", name=n) for n in BERT_INPUT_NAMES)
    real = keras.ops.expand_dims(keras.ops.cast(keras.ops.not_equal(mask, 0), "float32"), -1)  # [B, L, 1]
    tokens = keras.layers.Embedding(vocab_size, width, name="token_vectors")(ids)
    # segment_ids stays a graph input (the Task Library feeds all three); queries are one segment
    tokens = tokens + keras.layers.Embedding(2, width, embeddings_initializer="zeros", name="segment_vectors")(segment_ids)
    context = keras.layers.Conv1D(width, 3, padding="same", activation="gelu", name="context_conv")(tokens * real)
    tokens = tokens + keras.layers.Dense(width, kernel_initializer="zeros", name="context_out")(context)
    weight = keras.ops.exp(keras.layers.Embedding(vocab_size, 1, embeddings_initializer="zeros",
                                                  name="token_weights")(ids)) * real
    pooled = keras.ops.sum(tokens * weight, axis=1) / (keras.ops.sum(weight, axis=1) + 1e-6)
    sentence = keras.layers.Dense(teacher_width, name="to_teacher")(pooled)
    sentence = keras.layers.UnitNormalization(name="l2_normalize")(sentence)
    model = keras.Model(dict(zip(BERT_INPUT_NAMES, (ids, mask, segment_ids))), sentence, name=name)
    model.tokenizer = "bert"
    return model


def initial_weights(token_sentence_vectors: np.ndarray, width: int) -> dict[str, np.ndarray]:
    """Model2Vec start: the teacher's vector of each lone token, centred, on its top ``width``
    principal directions; ``to_teacher`` maps them back (basis and mean), so before any fitting
    a one-token query already lands where MiniLM puts it."""
    vectors = np.asarray(token_sentence_vectors, np.float64)
    mean = vectors.mean(axis=0)
    _, _, right = np.linalg.svd(vectors - mean, full_matrices=False)
    basis = right[:width]  # [width, teacher_width]
    return {"token_vectors": ((vectors - mean) @ basis.T).astype(np.float32),
            "to_teacher/kernel": basis.astype(np.float32), "to_teacher/bias": mean.astype(np.float32)}


def layer_weights(model: keras.Model) -> dict[str, np.ndarray]:
    """Every weight by ``layer/variable`` name (``token_vectors`` for a one-variable layer)."""
    found = {}
    for layer_name in WEIGHTED_LAYERS:
        layer = model.get_layer(layer_name)
        for variable in layer.weights:
            key = layer_name if len(layer.weights) == 1 else f"{layer_name}/{variable.name}"
            found[key] = np.asarray(variable.numpy())
    return found


def set_layer_weights(model: keras.Model, weights: dict[str, np.ndarray]) -> None:
    """Load what :func:`layer_weights` returned (a subset is fine: the rest keeps its value)."""
    for layer_name in WEIGHTED_LAYERS:
        layer = model.get_layer(layer_name)
        for variable in layer.weights:
            key = layer_name if len(layer.weights) == 1 else f"{layer_name}/{variable.name}"
            if key in weights:
                variable.assign(weights[key])
