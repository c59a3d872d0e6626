"""Query a TFLite searcher from Python: open once, search many times, get plain dataclasses.

The searching itself is the real Task Library (``TextSearcher`` / ``ImageSearcher`` /
``TextEmbedder`` from tflite-support), so results are what a phone would return, not a
re-implementation. tflite-support 0.4.4 cannot share a process with TensorFlow, so this module
never imports TensorFlow and every Task Library call goes through :func:`models.compat.call_tflite`:
in a process prepared for tflite (the ``search`` CLI) the calls are direct; in a TensorFlow
process (a notebook, ``beamlens evaluate``) they run in a shared child process, where the open
searchers live in ``_OPEN`` keyed by a handle until :meth:`Searcher.close` frees them.

Example::

    with Searcher("text_searcher.tflite") as searcher:
        for hit in searcher.search("a red circle next to a blue square", k=5).hits:
            print(hit.rank, hit.distance, hit.image_id, hit.uri)
"""

from __future__ import annotations

import itertools
import os
import time
from dataclasses import dataclass
from typing import Any, Sequence, Union

import numpy as np

from beamlens.models import compat
from beamlens.models.errors import BeamlensError
from beamlens.models.encoders.preprocessing import (
    DEFAULT_MAX_IMAGE_PIXELS,
    ImageDecodeError,
    check_max_image_pixels,
    decode_guard,
    load_image,
)
from beamlens.models.encoders.tflite_text_embedder import (  # noqa: F401 (re-exported)
    check_text_query,
    embed_text,
    explain_run_error,
    time_text_embedder,
)
from beamlens.models.io.files import check_readable_file
from beamlens.models.search.results import IndexLayout, SearchHit, SearchResults, short_result_note

TEXT = "text"
IMAGE = "image"
MODALITIES = (TEXT, IMAGE)
DEFAULT_K = 10

ImageQuery = Union[str, os.PathLike, bytes, np.ndarray]


# ---------------------------------------------------------------------------------------------
# Caller side (any process)
# ---------------------------------------------------------------------------------------------
def check_k(k: int) -> int:
    if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or k < 1:
        raise BeamlensError(f"k must be a positive number of results, got {k!r}")
    return int(k)


def _describe_image_query(image: ImageQuery) -> str:
    if isinstance(image, (str, os.PathLike)):
        return os.fspath(image)
    if isinstance(image, bytes):
        return f"<{len(image)} bytes of image data>"
    return f"<pixel array {tuple(np.shape(image))}>"


def _image_payload(image: ImageQuery) -> tuple[str, Any]:
    """Turn an image query into something that pickles cheaply: a path stays a path."""
    if isinstance(image, (str, os.PathLike)):
        return ("path", check_readable_file(image, "query image"))
    if isinstance(image, (bytes, bytearray)):
        if not image:
            raise BeamlensError("the query image is empty (0 bytes)")
        return ("bytes", bytes(image))
    array = np.asarray(image)
    if array.ndim == 2:
        array = np.stack([array] * 3, axis=-1)
    if array.ndim != 3 or array.shape[-1] not in (3, 4) or array.shape[0] < 1 or array.shape[1] < 1:
        raise BeamlensError(f"a query image array must be HxWx3 (RGB), got shape {array.shape}")
    if array.dtype != np.uint8:
        if np.issubdtype(array.dtype, np.floating) and array.size and float(np.nanmax(array)) <= 1.0:
            array = array * 255.0
        array = np.clip(array, 0, 255).astype(np.uint8)
    return ("array", np.ascontiguousarray(array[..., :3]))


_ABANDONED: list[int] = []  # handles of searchers garbage-collected without close()


def _call(function: Any, *args: Any) -> Any:
    """compat.call_tflite, first freeing searchers that were dropped without close()."""
    if _ABANDONED:
        handles = [_ABANDONED.pop() for _ in range(len(_ABANDONED))]
        compat.call_tflite(_close_searchers, handles)
    return compat.call_tflite(function, *args)


class Searcher:
    """An open TFLite searcher (Task Library); a context manager.

    ``modality`` is ``"text"`` for a text-to-image searcher (``TextSearcher``) or ``"image"`` for
    an image-to-image searcher (``ImageSearcher``). ``max_results`` is what the Task Library is
    asked for; asking :meth:`search` for more re-opens it with the larger value. ``num_threads``
    defaults to 1, as on a phone's background thread, which keeps latencies comparable.
    ``index_file`` searches a standalone ``.ldb`` index instead of the one inside the model.
    ``max_image_pixels`` is the pixel budget of an image query (models.encoders.preprocessing): a query
    image is decoded and checked by our decoder before the Task Library sees it.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        modality: str = TEXT,
        max_results: int = DEFAULT_K,
        num_threads: int = 1,
        index_file: str | os.PathLike | None = None,
        max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
    ) -> None:
        if modality not in MODALITIES:
            raise BeamlensError(f"modality must be one of {MODALITIES}, got {modality!r}")
        self._handle: int | None = None
        self._layout: tuple[IndexLayout | None, str] | None = None  # read on the first short result list
        self.path = check_readable_file(path, "searcher file")
        self.modality = modality
        self.max_results = check_k(max_results)
        self.max_image_pixels = check_max_image_pixels(max_image_pixels)
        if num_threads == 0 or num_threads < -1:
            raise BeamlensError(f"num_threads must be positive (or -1 for the Task Library's choice), got {num_threads}")
        self.index_file = check_readable_file(index_file, "index file") if index_file else None
        opened = _call(
            _open_searcher, self.path, modality, self.max_results, int(num_threads), self.index_file
        )
        self._handle = opened["handle"]
        self.user_info: str = opened["user_info"]

    # -- queries ------------------------------------------------------------------------------
    def search(self, query: str | ImageQuery, k: int | None = None) -> SearchResults:
        """Search one query: text for a text searcher, an image (path, bytes, HxWx3 array) else."""
        return self.search_many([query], k)[0]

    def search_many(self, queries: Sequence[str | ImageQuery], k: int | None = None) -> list[SearchResults]:
        """Search several queries in one round trip (what evaluations use)."""
        k = self.max_results if k is None else check_k(k)
        if self.modality == TEXT:
            payloads = [("text", check_text_query(q)) for q in queries]  # type: ignore[arg-type]
            labels = [str(q) for q in queries]
        else:
            payloads = [_image_payload(q) for q in queries]  # type: ignore[arg-type]
            labels = [_describe_image_query(q) for q in queries]  # type: ignore[arg-type]
        raw = _call(_search, self._require_handle(), payloads, k, self.max_image_pixels)
        results = []
        for label, (neighbours, seconds) in zip(labels, raw):
            hits = tuple(
                SearchHit.from_neighbor(rank, metadata, distance)
                for rank, (metadata, distance) in enumerate(neighbours, start=1)
            )
            note = short_result_note(len(hits), k, *self.index_layout()) if len(hits) < k else None
            results.append(
                SearchResults(query=label, modality=self.modality, requested_k=k, latency_ms=seconds * 1e3, hits=hits,
                              note=note)
            )
        return results

    def index_layout(self) -> tuple[IndexLayout | None, str]:
        """(item count and partitioning of the index searched, "") or (None, why it is unknown).

        Read with beamlens' own pure-Python reader (as ``beamlens inspect`` does), once, and only
        when a result list comes back short: a normal query costs nothing extra."""
        if self._layout is None:
            from beamlens.models.searcher.reader import read_searcher  # noqa: PLC0415 (pure Python; only when needed)

            try:
                info = read_searcher(self.index_file or self.path, first_items=0)
                self._layout = (IndexLayout(info.num_items, info.num_leaves, info.num_leaves_to_search), "")
            except Exception as error:  # noqa: BLE001 (the note explains; it must never fail a search)
                self._layout = (None, f"{type(error).__name__}: {error}")
        return self._layout

    # -- lifetime -----------------------------------------------------------------------------
    def _require_handle(self) -> int:
        if self._handle is None:
            raise BeamlensError(f"the searcher {self.path} is closed")
        return self._handle

    def close(self) -> None:
        """Free the Task Library searcher (in whichever process holds it)."""
        handle, self._handle = self._handle, None
        if handle is not None:
            try:
                _call(_close_searchers, [handle])
            except compat.IsolatedWorkerDied:
                pass  # the worker is gone, and the searcher with it

    def __del__(self) -> None:
        # A forgotten close() must not leave the searcher (and its index) in the worker forever.
        # No call to the worker from here: the garbage collector may run this while the same
        # thread holds the worker's lock. The handle is freed with the next call instead.
        handle, self._handle = getattr(self, "_handle", None), None
        if handle is not None:
            _ABANDONED.append(handle)

    def __enter__(self) -> "Searcher":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._handle is None else f"handle {self._handle}"
        return f"Searcher({self.path!r}, modality={self.modality!r}, {state})"


# ---------------------------------------------------------------------------------------------
# Task Library side (runs in a process prepared for tflite-support)
# ---------------------------------------------------------------------------------------------
@dataclass
class _OpenSearcher:
    path: str
    modality: str
    num_threads: int
    index_file: str | None
    max_results: int
    task: Any


_OPEN: dict[int, _OpenSearcher] = {}
_HANDLES = itertools.count(1)


def _article(word: str) -> str:
    return "an" if word[:1] in "aeiou" else "a"


def _explain_open_error(path: str, modality: str, error: Exception) -> BeamlensError:
    message = str(error)
    if "not a valid Flatbuffer" in message:
        return BeamlensError(f"{path} is not a TFLite searcher: it is not a TFLite model at all ({message})")
    if "Unable to find index file" in message:
        return BeamlensError(
            f"{path} is a TFLite model without a ScaNN index, not a searcher; build one with "
            f"`beamlens build-searcher` (Task Library: {message})"
        )
    if "Unable to open file" in message:
        return BeamlensError(f"cannot open {path}: {message}")
    other = IMAGE if modality == TEXT else TEXT
    return BeamlensError(
        f"{path} cannot be opened as {_article(modality)} {modality} searcher (is it {_article(other)} {other} "
        f"searcher?); "
        f"Task Library: {message}"
    )


def _create_task(entry: _OpenSearcher) -> Any:
    from tflite_support.task import core, processor, text, vision  # noqa: PLC0415 (tflite process only)

    base = core.BaseOptions(file_name=entry.path, num_threads=entry.num_threads)
    search = processor.SearchOptions(index_file_name=entry.index_file, max_results=entry.max_results)
    try:
        if entry.modality == TEXT:
            options = text.TextSearcherOptions(base_options=base, search_options=search)
            return text.TextSearcher.create_from_options(options)
        options = vision.ImageSearcherOptions(base_options=base, search_options=search)
        return vision.ImageSearcher.create_from_options(options)
    except (ValueError, RuntimeError, TypeError) as error:
        raise _explain_open_error(entry.path, entry.modality, error) from None


def _open_searcher(path: str, modality: str, max_results: int, num_threads: int, index_file: str | None) -> dict:
    entry = _OpenSearcher(path, modality, num_threads, index_file, max_results, None)
    entry.task = _create_task(entry)
    try:
        user_info = entry.task.get_user_info()
    except (ValueError, RuntimeError, UnicodeDecodeError):
        user_info = ""
    if isinstance(user_info, (bytes, bytearray)):
        user_info = bytes(user_info).decode("utf-8", errors="replace")
    handle = next(_HANDLES)
    _OPEN[handle] = entry
    return {"handle": handle, "user_info": user_info}


def _close_searchers(handles: list[int]) -> None:
    for handle in handles:
        _OPEN.pop(handle, None)


def _open_handles() -> list[int]:
    return sorted(_OPEN)


def _read_query_file(path: str) -> bytes:
    try:
        with open(path, "rb") as stream:
            return stream.read()
    except OSError as error:
        raise BeamlensError(f"{path}: cannot read the query image: {error.strerror or error}") from None


def _validated_query(data: bytes, where: str, max_pixels: int) -> np.ndarray | None:
    """Check a query image with our decoder and pixel budget; its RGB pixels unless it is RGB already.

    The Task Library decodes with stb_image, which has no pixel budget (a 24 KB PNG bomb becomes
    600 MB) and reports a bad file as a bare RuntimeError; so the bytes it will see are decoded by
    ``models.encoders.preprocessing`` first, and a hostile file becomes "<where>: <reason>". RGB files then
    go to the Task Library as bytes (its own decoder, as on a phone); other modes go as our RGB
    pixels, because the ImageSearcher refuses grayscale input ("Grayscale format does not convert
    to other formats") while corpora (COCO among them) hold grayscale photos.
    """
    try:
        image = load_image(data, max_pixels)
        if image.mode == "RGB":
            return None
        with decode_guard(max_pixels):
            return np.asarray(image.convert("RGB"))
    except ImageDecodeError as error:
        raise BeamlensError(f"{where}: {error.reason}") from None


def _tensor_image(payload: tuple[str, Any], max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> Any:
    from tflite_support.task import vision  # noqa: PLC0415

    kind, value = payload
    if kind == "array":
        return compat.tensor_image_from_array(value)
    where = value if kind == "path" else "the query image data"
    data = _read_query_file(value) if kind == "path" else value  # read once: what we check is what it decodes
    rgb = _validated_query(data, where, max_pixels)
    try:
        if rgb is not None:
            return compat.tensor_image_from_array(rgb)
        return vision.TensorImage.create_from_buffer(data)
    except (RuntimeError, ValueError) as error:
        raise BeamlensError(f"{where}: the Task Library cannot decode it: {error}") from None


def _search(
    handle: int, payloads: list[tuple[str, Any]], k: int, max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS
) -> list[tuple[list[tuple[bytes, float]], float]]:
    entry = _OPEN.get(handle)
    if entry is None:
        raise BeamlensError(f"searcher handle {handle} is not open (closed, or its worker restarted)")
    if k > entry.max_results:
        entry.max_results = k
        entry.task = _create_task(entry)
    replies = []
    for kind, value in payloads:
        query = value if kind == "text" else _tensor_image((kind, value), max_pixels)
        started = time.perf_counter()
        try:
            result = entry.task.search(query)
        except (ValueError, RuntimeError) as error:
            raise BeamlensError(f"search failed in {entry.path}: {explain_run_error(error)}") from None
        seconds = time.perf_counter() - started
        neighbours = [(bytes(n.metadata), float(n.distance)) for n in result.nearest_neighbors[:k]]
        replies.append((neighbours, seconds))
    return replies


