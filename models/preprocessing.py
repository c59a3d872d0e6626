"""Image decoding and resizing: the one preprocessing that training and serving share.

Training (tf.data), the Beam pipeline and the benchmarks all call :func:`preprocess_image_bytes`,
so an image is turned into pixels the same way everywhere (no train/serve skew). Pixels stay in
0..255 as float32; each encoder normalizes inside the model, so exported models (``.keras`` and
``.tflite``) take the same raw pixels.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, UnidentifiedImageError

from models.errors import BeamlensError

DEFAULT_IMAGE_SIZE = 64
RESAMPLE = Image.Resampling.BILINEAR


class ImageDecodeError(BeamlensError):
    """The bytes are not a readable image; ``reason`` is short enough for an error record."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def decode_image(data: bytes) -> Image.Image:
    """Decode fully (so truncation is caught here, not later) and convert to RGB."""
    if not data:
        raise ImageDecodeError("empty file (0 bytes)")
    try:
        image = Image.open(io.BytesIO(data))
        image.load()
    except UnidentifiedImageError:
        raise ImageDecodeError("not an image (unrecognised format)") from None
    except (OSError, SyntaxError, ValueError) as error:
        raise ImageDecodeError(f"corrupt or truncated image: {error}") from None
    if image.width < 1 or image.height < 1:
        raise ImageDecodeError(f"image has no pixels ({image.width}x{image.height})")
    return image.convert("RGB")


def resize_pixels(image: Image.Image, image_size: int) -> np.ndarray:
    """Square resize without cropping: float32 [image_size, image_size, 3] in 0..255."""
    resized = image.resize((image_size, image_size), RESAMPLE)
    return np.asarray(resized, dtype=np.float32)


def preprocess_image_bytes(data: bytes, image_size: int = DEFAULT_IMAGE_SIZE) -> np.ndarray:
    """Bytes of any PIL-readable image -> float32 [image_size, image_size, 3] pixels in 0..255."""
    return resize_pixels(decode_image(data), image_size)
