"""Channel equalization: the int8 export keeps per-channel accuracy with per-tensor weight scales."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from beamlens.models.export.quantization import equalize_channels


def _skewed_dense_model():
    """Dense layers whose output columns differ in scale by 1000x: per-tensor int8 rounds the small ones away."""
    import keras

    rng = np.random.default_rng(0)
    x = inputs = keras.Input((16, 64), dtype="float32", name="x")
    for i in range(2):
        dense = keras.layers.Dense(64, name=f"dense_{i}")
        x = dense(x)
        kernel = rng.normal(size=(64, 64)).astype(np.float32) * np.logspace(-3, 0, 64, dtype=np.float32)
        dense.set_weights([kernel, rng.normal(size=64).astype(np.float32) * 0.01])
    return keras.Model(inputs, x), rng.normal(size=(1, 16, 64)).astype(np.float32)


def _run(path: str, x: np.ndarray) -> np.ndarray:
    interpreter = tf.lite.Interpreter(model_path=path)
    interpreter.resize_tensor_input(interpreter.get_input_details()[0]["index"], x.shape)
    interpreter.allocate_tensors()
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], x)
    interpreter.invoke()
    return interpreter.get_tensor(interpreter.get_output_details()[0]["index"])


def _relative_error(got: np.ndarray, want: np.ndarray) -> float:
    # per output column, so that the small columns count as much as the large ones
    return float(np.mean(np.abs(got - want) / (np.abs(want).mean(axis=(0, 1)) + 1e-12)))


def test_equalized_graph_computes_the_same_function():
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    from beamlens.models.export.quantization import equalized_function

    model, x = _skewed_dense_model()
    frozen = convert_variables_to_constants_v2(
        tf.function(lambda t: model(t, training=False)).get_concrete_function(tf.TensorSpec([1, 16, 64], tf.float32, name="x")))
    graph_def = frozen.graph.as_graph_def()
    assert equalize_channels(graph_def) == 2
    assert sum(n.op == "Mul" and n.name.endswith("/scaled") for n in graph_def.node) == 2
    out = equalized_function(frozen)(tf.constant(x))
    out = out[0] if isinstance(out, (list, tuple)) else out
    np.testing.assert_allclose(out.numpy(), np.asarray(model(x)), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("length", [16, None], ids=["fixed", "dynamic"])
def test_int8_export_is_as_accurate_as_per_channel(tmp_path, length):
    from beamlens.models.export.encoders import to_tflite
    from beamlens.models.export.quantization import configure_int8

    model, x = _skewed_dense_model()
    want = np.asarray(model(x))
    to_tflite(model, tf.TensorSpec([1, length, 64], tf.float32, name="x"), str(tmp_path / "ours.tflite"), quantize="int8")
    ours = _relative_error(_run(str(tmp_path / "ours.tflite"), x), want)
    spec = tf.TensorSpec([1, 16, 64], tf.float32, name="x")

    def plain(per_tensor: bool) -> float:
        converter = tf.lite.TFLiteConverter.from_concrete_functions(
            [tf.function(lambda t: model(t, training=False)).get_concrete_function(spec)])
        if per_tensor:
            configure_int8(converter)
        else:
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
        path = tmp_path / f"plain_{per_tensor}.tflite"
        path.write_bytes(converter.convert())
        return _relative_error(_run(str(path), x), want)

    per_tensor, per_channel = plain(True), plain(False)
    print(f"relative error: equalized {ours:.4f}, per-tensor {per_tensor:.4f}, per-channel {per_channel:.4f}")
    assert ours < per_tensor / 5
    assert ours < 2 * per_channel
