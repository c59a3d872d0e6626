"""Hostile images are data, not crashes: decompression bombs, corrupt and fuzzed files, short result lists.

Every decoder failure must become an ``ImageDecodeError`` (a dead letter in ``beamlens embed``,
a one-line error with exit 2 in ``beamlens search``), and our pixel budget, not Pillow's global
bomb guard, decides which images are too large. The fuzz tests are derandomized (the same examples
on every run) and bounded: small seeds cut from the shared photos, and a small pixel budget so that
mutated headers that claim huge sizes are refused at once instead of allocating gigabytes.
"""

from __future__ import annotations

import io
import json
import random
import struct
import threading
import warnings
import zlib
from functools import cache
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, ImageFile

from beamlens.models.errors import BeamlensError
from beamlens.models.encoders.preprocessing import (
    DEFAULT_MAX_IMAGE_PIXELS,
    ImageDecodeError,
    decode_guard,
    decode_image,
    preprocess_image_bytes,
)
from beamlens.models.search.runtime import Searcher
from beamlens.models.search.results import IndexLayout, short_result_note
from beamlens.models.encoders.tflite_image_embedder import preprocess_image_bytes_like_task_library
from tests.conftest import TESTDATA, TFLITE_SUPPORT_DATA
from tests.test_search_cli import IMAGE_EMBEDDER, IMAGE_INDEX, REGEX_EMBEDDER, run_search
from beamlens.transforms.decode import DecodeBatch, ImageBatch
from beamlens.transforms.read_images import ImageError, ImageRef

PREPROCESSORS = [preprocess_image_bytes, preprocess_image_bytes_like_task_library]
BOMB_REFUSED = "image too large: 20000x10000 = 200,000,000 pixels > budget 100,000,000 (--max-image-pixels)"


def png_bytes(image: Image.Image, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", **options)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def bomb() -> bytes:
    """The issue's file: a 1-bit PNG that claims 20000x10000 pixels (~1 GB as RGB) in ~24 KB."""
    data = png_bytes(Image.new("1", (20000, 10000)))
    assert len(data) < 30_000
    return data


def test_png_bomb_is_refused_from_its_header_by_our_budget(bomb: bytes, monkeypatch) -> None:
    def no_decoding(self) -> None:
        raise AssertionError("the budget must refuse the bomb before any pixel is decoded")

    with monkeypatch.context() as patch:
        patch.setattr(ImageFile.ImageFile, "load", no_decoding)
        for preprocess in PREPROCESSORS:
            with pytest.raises(ImageDecodeError) as refused:
                preprocess(bomb, 16, max_pixels=100_000_000)
            assert refused.value.reason == BOMB_REFUSED
        with pytest.raises(ImageDecodeError, match=r"^image too large: .* > budget 199,999,999 "):
            decode_image(bomb, max_pixels=199_999_999)


def test_a_higher_budget_decodes_the_bomb_though_pillows_own_guard_would_refuse_it(bomb: bytes) -> None:
    assert Image.MAX_IMAGE_PIXELS is not None and 200_000_000 > 2 * Image.MAX_IMAGE_PIXELS
    pixels = preprocess_image_bytes(bomb, 8, max_pixels=200_000_000)  # ~1 GB for a moment
    assert pixels.shape == (8, 8, 3) and pixels.dtype == np.float32 and not pixels.any()  # all black


def test_pillows_guard_is_untouched_outside_our_decoder_and_silent_inside(monkeypatch) -> None:
    """Pillow's limit, made tiny here, still protects other code (and other threads), not ours."""
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1_000)
    over_error, over_warning = png_bytes(Image.new("RGB", (100, 100))), png_bytes(Image.new("RGB", (50, 30)))
    assert getattr(Image._decompression_bomb_check, "beamlens_budget_hook", False)  # noqa: SLF001
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        assert preprocess_image_bytes(over_error, 4).shape == (4, 4, 3)  # neither error ...
        assert preprocess_image_bytes(over_warning, 4).shape == (4, 4, 3)  # ... nor warning decides
        with pytest.raises(Image.DecompressionBombWarning):
            Image.open(io.BytesIO(over_warning))
    outcome: list[str] = []

    def other_code() -> None:
        try:
            Image.open(io.BytesIO(over_error))
        except Image.DecompressionBombError:
            outcome.append("refused by Pillow")

    with decode_guard(DEFAULT_MAX_IMAGE_PIXELS):  # our budget is active in this thread only
        thread = threading.Thread(target=other_code)
        thread.start()
        thread.join()
    assert outcome == ["refused by Pillow"] and Image.MAX_IMAGE_PIXELS == 1_000


@pytest.mark.parametrize("error, reason", [
    (MemoryError(), "out of memory while decoding the image (MemoryError)"),
    (struct.error("unpack requires 4 bytes"), "corrupt image (struct.error: unpack requires 4 bytes)"),
    (EOFError("no more data"), "corrupt image (EOFError: no more data)"),
    (IndexError("list index out of range"), "corrupt image (IndexError: list index out of range)"),
    (ValueError("bad row"), "corrupt or truncated image: bad row"),
    (ZeroDivisionError("division by zero"), "corrupt image (ZeroDivisionError: division by zero)"),
    (Image.DecompressionBombError("Image size exceeds limit"), "image too large: Image size exceeds limit"),
    (RuntimeError("x" * 500), ("corrupt image (RuntimeError: " + "x" * 500)[:197] + "..."),
])
def test_every_decoder_failure_becomes_an_image_decode_error(monkeypatch, error: Exception, reason: str) -> None:
    def failing_load(self) -> None:
        raise error

    monkeypatch.setattr(ImageFile.ImageFile, "load", failing_load)
    data = (TFLITE_SUPPORT_DATA / "burger.jpg").read_bytes()
    for preprocess in PREPROCESSORS:
        with pytest.raises(ImageDecodeError) as caught:
            preprocess(data, 8)
        assert caught.value.reason == reason and len(caught.value.reason) <= 200


def test_a_keyboard_interrupt_is_not_swallowed(monkeypatch) -> None:
    def interrupted(self) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(ImageFile.ImageFile, "load", interrupted)
    with pytest.raises(KeyboardInterrupt):
        preprocess_image_bytes((TFLITE_SUPPORT_DATA / "burger.jpg").read_bytes(), 8)


# ---------------------------------------------------------------------------------------------
# DecodeBatch: a hostile batch is one good image and dead letters, never a failed bundle
# ---------------------------------------------------------------------------------------------
def hostile_refs(folder: Path, bomb: bytes) -> list[ImageRef]:
    photo = (TFLITE_SUPPORT_DATA / "burger.jpg").read_bytes()
    files = {"good": photo, "bomb": bomb, "cut": photo[: len(photo) // 3], "empty": b"",
             "noise": np.random.default_rng(7).bytes(4096)}
    refs = []
    for name, data in files.items():
        (folder / name).write_bytes(data)
        refs.append(ImageRef(name, str(folder / name), (f"{name} caption",)))
    return refs


@pytest.mark.parametrize("preprocess", PREPROCESSORS, ids=["training", "task_library"])
def test_decode_batch_keeps_the_good_image_and_dead_letters_the_rest(tmp_path: Path, bomb: bytes, preprocess) -> None:
    outcomes = list(DecodeBatch(16, preprocess, max_pixels=100_000_000).process(hostile_refs(tmp_path, bomb)))
    batches = [o for o in outcomes if isinstance(o, ImageBatch)]
    errors = {o.image_id: o for o in outcomes if isinstance(o, ImageError)}
    assert len(batches) == 1 and len(outcomes) == 5
    [(meta, pixels)] = batches[0].items
    assert meta.image_id == "good" and meta.captions == ("good caption",)
    np.testing.assert_array_equal(pixels, preprocess((TFLITE_SUPPORT_DATA / "burger.jpg").read_bytes(), 16))
    assert {e.stage for e in errors.values()} == {"decode"}
    assert errors["bomb"].reason == BOMB_REFUSED
    assert errors["cut"].reason.startswith("corrupt or truncated image: image file is truncated")
    assert errors["empty"].reason == "empty file (0 bytes)"
    assert errors["noise"].reason == "not an image (unrecognised format)"


def test_an_exception_escaping_preprocess_is_a_dead_letter_and_the_batch_goes_on(tmp_path: Path) -> None:
    budgets: list[int] = []

    def buggy(data: bytes, size: int, max_pixels: int) -> np.ndarray:
        budgets.append(max_pixels)
        if data.startswith(b"bug"):
            raise RuntimeError("a decoder bug")
        return preprocess_image_bytes(data, size, max_pixels)

    (tmp_path / "bug").write_bytes(b"bug")
    refs = [ImageRef("bug", str(tmp_path / "bug")), ImageRef("good", str(TFLITE_SUPPORT_DATA / "burger.jpg"))]
    outcomes = list(DecodeBatch(8, buggy, max_pixels=654_321).process(refs))
    reason = "preprocessing failed (RuntimeError: a decoder bug)"
    assert outcomes[0] == ImageError("bug", str(tmp_path / "bug"), reason, "decode")
    assert isinstance(outcomes[1], ImageBatch) and outcomes[1].items[0][0].image_id == "good"
    assert budgets == [654_321, 654_321]
    with pytest.raises(BeamlensError, match="--max-image-pixels must be a positive number of pixels, got 0"):
        DecodeBatch(8, max_pixels=0)


# ---------------------------------------------------------------------------------------------
# Fuzzing: mutated real JPEG and PNG files; only ImageDecodeError may escape
# ---------------------------------------------------------------------------------------------
FUZZ_SIZE = 8
FUZZ_BUDGET = 1_000_000  # huge claimed sizes are refused at once, and a mutated header costs <= 16 MB
SOF_MARKERS = {0xC0, 0xC1, 0xC2, 0xC3, 0xC9, 0xCA, 0xCB}


def _thumbnail(path: Path, size: int = 40) -> Image.Image:
    image = Image.open(path)
    image.thumbnail((size, size))
    return image


@cache
def fuzz_seeds(kind: str) -> tuple[bytes, ...]:
    """Small real photos (thumbnails of the shared test photos), in the modes decoders branch on."""
    burger = _thumbnail(TFLITE_SUPPORT_DATA / "burger.jpg").convert("RGB")
    camera = _thumbnail(TESTDATA / "skimage" / "camera.png").convert("L")
    if kind == "jpeg":
        out = []
        for image, options in [(burger, {}), (burger, {"progressive": True}), (camera, {}),
                               (burger.convert("CMYK"), {}), (burger, {"subsampling": 0, "quality": 95})]:
            buffer = io.BytesIO()
            image.save(buffer, format="JPEG", **options)
            out.append(buffer.getvalue())
        return tuple(out)
    sparrow = _thumbnail(TFLITE_SUPPORT_DATA / "sparrow.png")
    coffee = _thumbnail(TESTDATA / "skimage" / "coffee.png").convert("RGB")
    return (png_bytes(sparrow.convert("RGBA")), png_bytes(coffee), png_bytes(camera), png_bytes(camera.convert("1")),
            png_bytes(coffee.quantize(16)), png_bytes(camera.convert("I;16")))


def _sof_offset(data: bytes) -> int | None:
    """Offset of the JPEG frame header (SOFn marker), walking the marker segments from SOI."""
    i = 2
    while i + 4 <= len(data) and data[i] == 0xFF:
        marker = data[i + 1]
        if marker in SOF_MARKERS:
            return i
        i += 2 + int.from_bytes(data[i + 2:i + 4], "big")
    return None


def _overwrite(data: bytes, offset: int, field: bytes) -> bytes:
    return data[:offset] + field + data[offset + len(field):] if offset + len(field) <= len(data) else data


def _header_field(data: bytes, kind: str, field: int, value: int, fix_crc: bool) -> bytes:
    """Overwrite a header field: PNG IHDR width, height, depth/colour type; JPEG SOF height, width, components."""
    if kind == "png":
        offset, width = [(16, 4), (20, 4), (24, 1), (25, 1)][field % 4]
        data = _overwrite(data, offset, (value % 256 ** width).to_bytes(width, "big"))
        return _overwrite(data, 29, struct.pack(">I", zlib.crc32(data[12:29]))) if fix_crc else data
    sof = _sof_offset(data)
    if sof is None:
        return data
    offset, width = [(sof + 5, 2), (sof + 7, 2), (sof + 9, 1), (sof + 11, 1)][field % 4]
    return _overwrite(data, offset, (value % 256 ** width).to_bytes(width, "big"))


def _fix_png_crcs(data: bytes) -> bytes:
    """Recompute every chunk's CRC, so mutated chunk data gets past Pillow's CRC check into zlib and unfiltering."""
    out, i = bytearray(data), 8
    while i + 12 <= len(out):
        length = int.from_bytes(out[i:i + 4], "big")
        if i + 12 + length > len(out):
            break
        out[i + 8 + length:i + 12 + length] = struct.pack(">I", zlib.crc32(out[i + 4:i + 8 + length]))
        i += 12 + length
    return bytes(out)


HUGE_OR_ODD = st.sampled_from([0, 1, 2, 255, 4096, 20000, 65535, 2**31 - 1, 2**32 - 1]) | st.integers(0, 2**32 - 1)


def _position(rng: random.Random, size: int, kind: str) -> int:
    """Where to mutate: uniform over the file, sparing the signature 19 times in 20.

    Uniform, from a Hypothesis-seeded ``random.Random`` (reproducible): Hypothesis favours small
    integers, so ``integers(0, size - 1)`` mostly breaks the first header bytes, and the decoders
    (where the bugs hide) would see little but "not an image"."""
    spared = (8 if kind == "png" else 2) if rng.randrange(20) else 0
    return spared + rng.randrange(size - spared) if size > spared else max(size - 1, 0)


@st.composite
def mutated(draw: Callable, kind: str) -> bytes:
    """A real seed file with 1-4 mutations: bit flips, truncation, insertion, deletion, header overwrites
    (then, for half the PNGs, valid chunk CRCs again)."""
    seeds = fuzz_seeds(kind)
    data = bytearray(seeds[draw(st.integers(0, len(seeds) - 1))])
    rng = draw(st.randoms(use_true_random=True))  # seeded by Hypothesis: uniform, reproducible
    for _ in range(draw(st.integers(1, 4))):
        operation = draw(st.sampled_from(["flip", "truncate", "insert", "delete", "header", "header"]))
        at = _position(rng, len(data), kind)
        if operation == "flip" and data:
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif operation == "truncate":
            del data[at:]
        elif operation == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=16))
        elif operation == "delete":
            del data[at:at + draw(st.integers(1, 64))]
        elif operation == "header":
            field, value, fix_crc = draw(st.integers(0, 3)), draw(HUGE_OR_ODD), draw(st.booleans())
            data = bytearray(_header_field(bytes(data), kind, field, value, fix_crc))
    return _fix_png_crcs(bytes(data)) if kind == "png" and draw(st.booleans()) else bytes(data)


def check_only_decode_errors_escape(data: bytes) -> None:
    for preprocess in PREPROCESSORS:
        try:
            pixels = preprocess(data, FUZZ_SIZE, max_pixels=FUZZ_BUDGET)
        except ImageDecodeError as error:
            assert error.reason and len(error.reason) <= 200 and "\n" not in error.reason
            continue
        assert pixels.shape == (FUZZ_SIZE, FUZZ_SIZE, 3) and pixels.dtype == np.float32
        assert np.isfinite(pixels).all()


FUZZ = settings(max_examples=3000, deadline=None, derandomize=True, database=None, print_blob=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def test_the_fuzz_seeds_are_real_decodable_images() -> None:
    for kind in ("jpeg", "png"):
        for data in fuzz_seeds(kind):
            assert preprocess_image_bytes(data, FUZZ_SIZE).shape == (FUZZ_SIZE, FUZZ_SIZE, 3)


@pytest.mark.filterwarnings("ignore::UserWarning")  # Pillow warns on some corrupt EXIF/ICC data: not failures
@FUZZ
@given(mutated("jpeg"))
def test_fuzzed_jpegs_raise_only_image_decode_errors(data: bytes) -> None:
    check_only_decode_errors_escape(data)


@pytest.mark.filterwarnings("ignore::UserWarning")
@FUZZ
@given(mutated("png"))
def test_fuzzed_pngs_raise_only_image_decode_errors(data: bytes) -> None:
    check_only_decode_errors_escape(data)


# ---------------------------------------------------------------------------------------------
# beamlens search: a hostile query image is a one-line error, exit 2
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name, budget, message", [
    ("bomb.png", ["--max-image-pixels", "100000000"], BOMB_REFUSED),
    ("big_bomb.png", [], "image too large: 20000x20000 = 400,000,000 pixels > budget 150,000,000 (--max-image-pixels)"),
    ("cut.jpg", [], "corrupt or truncated image: image file is truncated"),
    ("notes.jpg", [], "not an image (unrecognised format)"),
])
def test_search_refuses_a_hostile_query_image_with_exit_2(tmp_path: Path, bomb: bytes, name: str, budget: list[str],
                                                         message: str) -> None:
    photo = (TFLITE_SUPPORT_DATA / "burger.jpg").read_bytes()
    contents = {"bomb.png": lambda: bomb, "big_bomb.png": lambda: png_bytes(Image.new("1", (20000, 20000))),
                "cut.jpg": lambda: photo[:3000], "notes.jpg": lambda: b"just some notes\n"}
    query = tmp_path / name
    query.write_bytes(contents[name]())
    done = run_search(IMAGE_EMBEDDER, "--image", str(query), "--index-file", IMAGE_INDEX, *budget)
    assert done.returncode == 2, (done.stdout, done.stderr)
    errors = [line for line in done.stderr.splitlines() if line.startswith("beamlens search: error: ")]
    assert len(errors) == 1 and errors[0].startswith(f"beamlens search: error: {query}: {message}"), done.stderr
    assert "Traceback" not in done.stderr and done.stdout == ""


def test_search_refuses_a_budget_that_is_not_positive() -> None:
    done = run_search(IMAGE_EMBEDDER, "--image", str(TFLITE_SUPPORT_DATA / "burger.jpg"), "--index-file", IMAGE_INDEX,
                      "--max-image-pixels", "0")
    assert done.returncode == 2
    assert "beamlens search: error: --max-image-pixels must be a positive number of pixels, got 0" in done.stderr


# ---------------------------------------------------------------------------------------------
# Fewer than k results: the searcher says why
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def partitioned_searcher(tmp_path_factory) -> str:
    """2,000 random items in 20 partitions, 2 of them searched per query (regex text embedder)."""
    from tests import search_fixtures

    folder = tmp_path_factory.mktemp("partitioned")
    vectors = np.random.default_rng(3).normal(size=(2000, 16)).astype(np.float32)
    np.save(folder / "vectors.npy", vectors / np.linalg.norm(vectors, axis=1, keepdims=True))
    metadata = [search_fixtures.item_metadata(f"v{i}") for i in range(2000)]
    return search_fixtures.build_float_searcher(REGEX_EMBEDDER, str(folder / "vectors.npy"), metadata,
                                                str(folder / "partitioned.tflite"), num_leaves=20, leaves_to_search=2)


def test_a_short_result_list_says_why(partitioned_searcher: str, tmp_path: Path) -> None:
    from beamlens.models.searcher import read_searcher, rewrite_leaves_to_search

    info = read_searcher(partitioned_searcher)
    assert (info.num_items, info.num_leaves, info.num_leaves_to_search) == (2000, 20, 2)
    done = run_search(partitioned_searcher, "the movie was good", "-k", "100000", "--json")
    assert done.returncode == 0, done.stderr
    payload = json.loads(done.stdout)
    returned = len(payload["hits"])
    sizes = info.partition_sizes
    assert returned in {a + b for i, a in enumerate(sizes) for b in sizes[i + 1:]}  # exactly two partitions
    assert 0 < returned < 2000
    assert payload["note"] == (
        f"returned {returned:,} of k=100000: the index holds 2,000 items and a query scores only the items in the "
        "2 of 20 partitions it searches (leaves_to_search); rebuild with --num-leaves 20 --leaves-to-search 20 "
        "to reach them all"
    )
    assert f"note: {payload['note']}" in done.stderr.splitlines()
    every_leaf = rewrite_leaves_to_search(partitioned_searcher, str(tmp_path / "all_leaves.tflite"), 20)
    with Searcher(every_leaf, max_results=10) as searcher:
        assert searcher.search("the movie was good").note is None  # k reached: nothing to explain
        everything = searcher.search("the movie was good", k=100000)
    assert len(everything.hits) == 2000
    assert everything.note == "returned 2,000 of k=100000: the index holds only 2,000 items"
    assert everything.to_dict()["note"] == everything.note


def test_short_result_note_without_partitions_or_without_a_readable_index() -> None:
    assert short_result_note(5, 5, IndexLayout(5, 0, 1)) is None
    assert short_result_note(1, 10, IndexLayout(1, 0, 1)) == "returned 1 of k=10: the index holds only 1 item"
    assert (short_result_note(3, 10, None, "BeamlensError: no INDEX_CONFIG")
            == "returned 3 of k=10; the index layout is unknown: BeamlensError: no INDEX_CONFIG")
