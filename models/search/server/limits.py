"""Limits of the web app (query length, k range, upload size and type) and its 4xx error type."""

from __future__ import annotations

from dataclasses import dataclass

from beamlens.models.errors import BeamlensError
from beamlens.models.encoders.preprocessing import DEFAULT_MAX_IMAGE_PIXELS, ImageDecodeError, load_image


DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8080
DEFAULT_K = 10
DEFAULT_MAX_K = 100
DEFAULT_MAX_QUERY_CHARS = 500
DEFAULT_MAX_UPLOAD_BYTES = 10 * 1024 * 1024
MULTIPART_OVERHEAD_BYTES = 64 * 1024  # boundaries and part headers around an upload
UPLOAD_FIELD = "image"

# Leading bytes of the image formats served and accepted (the Task Library decodes these).
_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
    (b"BM", "image/bmp"),
)
ACCEPTED_TYPES = frozenset({"image/jpeg", "image/png", "image/gif", "image/bmp", "image/webp"})


class HttpError(BeamlensError):
    """A request the server refuses: an HTTP status and a message for the user."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def sniff_image_type(data: bytes) -> str | None:
    """The MIME type the leading bytes announce, or None when they are not an accepted image."""
    for magic, mime in _MAGIC:
        if data.startswith(magic):
            return mime
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return None


@dataclass(frozen=True)
class ServerLimits:
    """What one request may ask for; each breach is a clear 4xx, not a slow or dead server."""

    max_query_chars: int = DEFAULT_MAX_QUERY_CHARS
    max_k: int = DEFAULT_MAX_K
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES
    max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS

    def __post_init__(self) -> None:
        for name in ("max_query_chars", "max_k", "max_upload_bytes", "max_image_pixels"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise BeamlensError(f"{name} must be a positive whole number, got {value!r}")

    def parse_k(self, raw: str | None) -> int:
        if raw is None or raw == "":
            return min(DEFAULT_K, self.max_k)
        try:
            k = int(raw)
        except ValueError:
            raise HttpError(400, f"k must be a whole number, got {raw[:40]!r}") from None
        if not 1 <= k <= self.max_k:
            raise HttpError(400, f"k must be between 1 and {self.max_k}, got {k}")
        return k

    def check_query(self, raw: str | None) -> str:
        if raw is None or not raw.strip():
            raise HttpError(400, "the query is empty: give some text to search for (q=...)")
        if len(raw) > self.max_query_chars:
            raise HttpError(400, f"the query is {len(raw):,} characters long; the limit is {self.max_query_chars:,}")
        return raw

    def check_upload(self, data: bytes, declared_type: str | None) -> bytes:
        """Size, type and a full guarded decode (models.encoders.preprocessing) of an uploaded query image."""
        if not data:
            raise HttpError(400, "the uploaded image is empty (0 bytes)")
        if len(data) > self.max_upload_bytes:
            raise HttpError(413, f"the upload is {len(data):,} bytes; the limit is {self.max_upload_bytes:,}")
        declared = (declared_type or "").split(";")[0].strip().lower()
        if sniff_image_type(data) is None and declared not in ACCEPTED_TYPES:
            shown = declared or "no type"
            raise HttpError(415, f"unsupported upload ({shown}): send a JPEG, PNG, GIF, BMP or WebP image")
        try:
            load_image(data, self.max_image_pixels)
        except ImageDecodeError as error:
            status = 413 if error.reason.startswith("image too large") else 400
            raise HttpError(status, f"the uploaded image cannot be used: {error.reason}") from None
        return data
