"""Image decoding and resizing: the one preprocessing that training and serving share.

Training (tf.data), the Beam pipeline and the benchmarks all call :func:`preprocess_image_bytes`,
so an image is turned into pixels the same way everywhere (no train/serve skew). Pixels stay in
0..255 as float32; each encoder normalizes inside the model, so exported models (``.keras`` and
``.tflite``) take the same raw pixels.

Hostile images are data, not crashes: whatever the bytes, decoding either returns pixels or
raises :class:`ImageDecodeError` with a short reason (the dead-letter record's text). Nothing
else escapes, because one bad file among millions must not end a job.

The pixel budget (``max_pixels``, ``--max-image-pixels``) is what stops a decompression bomb (a
24 KB 1-bit PNG that claims 20000x10000 pixels, ~1 GB once decoded to RGB). It is checked on the
size in the header, before any pixel is decoded (``Image.open`` is lazy). Pillow has its own guard
(``Image.MAX_IMAGE_PIXELS``: a warning above it, ``DecompressionBombError`` above twice it), a
process-wide setting that would otherwise decide before our budget does. We neither change that
global nor wrap decoding in ``warnings.catch_warnings()`` (both are process-wide, so not
thread-safe: a Beam worker decodes in several threads, and other code in the process relies on
Pillow's defaults). Instead Pillow's check function, which Pillow calls at every point that sizes
an image (open, GIF/TIFF frames, ICO/ICNS entries), is wrapped once: in a thread that is inside
:func:`decode_guard` it applies *our* budget; everywhere else it is Pillow's own check, unchanged.
If a future Pillow renames that function, the hook is simply not installed: our header check still
applies and Pillow's guard, where it fires first, is reported as "image too large" all the same.
"""

from __future__ import annotations

import contextlib
import io
import threading
from typing import Callable, Iterator

import numpy as np
from PIL import Image, UnidentifiedImageError

from beamlens.models.errors import BeamlensError

DEFAULT_IMAGE_SIZE = 64
DEFAULT_MAX_IMAGE_PIXELS = 150_000_000  # 150 MP: a 15000x10000 scan decodes (450 MB of RGB); the 200 MP 24 KB bomb does not
RESAMPLE = Image.Resampling.BILINEAR
_MAX_REASON_CHARS = 200  # Pillow's messages can quote whole chunks; an error record stays short


class ImageDecodeError(BeamlensError):
    """The bytes are not a readable image; ``reason`` is short enough for an error record."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def check_max_image_pixels(max_pixels: int) -> int:
    """Validate a pixel budget given by a user (``--max-image-pixels``); returns it as an int."""
    if not isinstance(max_pixels, (int, np.integer)) or isinstance(max_pixels, bool) or max_pixels < 1:
        raise BeamlensError(f"--max-image-pixels must be a positive number of pixels, got {max_pixels!r}")
    return int(max_pixels)


def _check_budget(size: tuple[int, int], max_pixels: int) -> None:
    width, height = size
    pixels = width * height
    if pixels > max_pixels:
        raise ImageDecodeError(
            f"image too large: {width}x{height} = {pixels:,} pixels > budget {max_pixels:,} (--max-image-pixels)"
        )


_BUDGET = threading.local()  # .max_pixels: the budget of the decode running in this thread, if any


def _install_budget_hook() -> None:
    """Route Pillow's bomb check to our budget in threads inside :func:`decode_guard` (see module doc)."""
    pillow_check: Callable[[tuple[int, int]], None] | None = getattr(Image, "_decompression_bomb_check", None)
    if pillow_check is None:
        return  # renamed in this Pillow: see the module docstring
    if getattr(pillow_check, "beamlens_budget_hook", False):  # this module was reloaded: re-wrap Pillow's own
        pillow_check = pillow_check.__wrapped__  # type: ignore[attr-defined]

    def budget_or_pillow_check(size: tuple[int, int]) -> None:
        max_pixels = getattr(_BUDGET, "max_pixels", None)
        if max_pixels is None:
            pillow_check(size)
        else:
            _check_budget(size, max_pixels)

    budget_or_pillow_check.beamlens_budget_hook = True  # type: ignore[attr-defined]
    budget_or_pillow_check.__wrapped__ = pillow_check  # type: ignore[attr-defined]
    Image._decompression_bomb_check = budget_or_pillow_check  # noqa: SLF001


_install_budget_hook()


def short_reason(reason: str) -> str:
    """One line of at most 200 characters: what an error record (or a CLI message) can carry."""
    reason = " ".join(reason.split())
    return reason if len(reason) <= _MAX_REASON_CHARS else reason[: _MAX_REASON_CHARS - 3] + "..."


def exception_name(error: BaseException) -> str:
    """``ValueError`` for builtins, ``struct.error`` otherwise: a reason must say which failure it was."""
    kind = type(error)
    return kind.__name__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__name__}"


@contextlib.contextmanager
def decode_guard(max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> Iterator[None]:
    """Run Pillow/numpy decoding work under our pixel budget; any failure becomes ImageDecodeError.

    Decoders fail in many ways on hostile bytes (OSError, SyntaxError, ValueError, struct.error,
    EOFError, IndexError, ZeroDivisionError, MemoryError, ...): all are the image's fault, so all
    become an ImageDecodeError with a short reason. Only non-Exceptions (KeyboardInterrupt, SystemExit) pass.
    The budget applies to this thread only and is restored on exit (nesting is fine)."""
    previous = getattr(_BUDGET, "max_pixels", None)
    _BUDGET.max_pixels = int(max_pixels)
    try:
        yield
    except ImageDecodeError:
        raise
    except UnidentifiedImageError:
        raise ImageDecodeError("not an image (unrecognised format)") from None
    except Image.DecompressionBombError as error:  # only where the budget hook is not installed
        raise ImageDecodeError(short_reason(f"image too large: {error}")) from None
    except MemoryError:
        raise ImageDecodeError("out of memory while decoding the image (MemoryError)") from None
    except (OSError, SyntaxError, ValueError) as error:
        raise ImageDecodeError(short_reason(f"corrupt or truncated image: {error}")) from None
    except Exception as error:  # noqa: BLE001 (hostile bytes reach odd corners of every decoder)
        raise ImageDecodeError(short_reason(f"corrupt image ({exception_name(error)}: {error})")) from None
    finally:
        _BUDGET.max_pixels = previous


def load_image(data: bytes, max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> Image.Image:
    """Decode fully, in the file's own mode: the size is checked from the header, then every pixel
    is decoded (so truncation is caught here, not later)."""
    if not data:
        raise ImageDecodeError("empty file (0 bytes)")
    with decode_guard(max_pixels):
        image = Image.open(io.BytesIO(data))
        if image.width < 1 or image.height < 1:
            raise ImageDecodeError(f"image has no pixels ({image.width}x{image.height})")
        _check_budget(image.size, max_pixels)  # header only: nothing decoded yet
        image.load()
        return image


def decode_image(data: bytes, max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> Image.Image:
    """Decode fully within the pixel budget and convert to RGB; raises only ImageDecodeError."""
    image = load_image(data, max_pixels)
    with decode_guard(max_pixels):
        return image.convert("RGB")


def resize_pixels(image: Image.Image, image_size: int) -> np.ndarray:
    """Square resize without cropping: float32 [image_size, image_size, 3] in 0..255."""
    resized = image.resize((image_size, image_size), RESAMPLE)
    return np.asarray(resized, dtype=np.float32)


def preprocess_image_bytes(
    data: bytes, image_size: int = DEFAULT_IMAGE_SIZE, max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS
) -> np.ndarray:
    """Bytes of any PIL-readable image -> float32 [image_size, image_size, 3] pixels in 0..255.

    Raises only ImageDecodeError (the resize is guarded too: it can run out of memory)."""
    image = decode_image(data, max_pixels)
    with decode_guard(max_pixels):
        return resize_pixels(image, image_size)
