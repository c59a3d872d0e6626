"""``beamlens search`` as a user runs it: a separate process, the real Task Library, exit codes."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import PROJECT_ROOT, TESTDATA, TFLITE_SUPPORT_DATA

REGEX_SEARCHER = str(TFLITE_SUPPORT_DATA / "regex_searcher.tflite")
REGEX_EMBEDDER = str(TFLITE_SUPPORT_DATA / "regex_one_embedding_with_metadata.tflite")
IMAGE_EMBEDDER = str(TESTDATA / "models" / "mobilenet_v3_small_075_224_embedder.tflite")
IMAGE_INDEX = str(TFLITE_SUPPORT_DATA / "searcher_index.ldb")


def run_search(*args: str, timeout: int = 120) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(PROJECT_ROOT), TF_CPP_MIN_LOG_LEVEL="2")
    return subprocess.run(
        [sys.executable, "-m", "beamlens.pipelines.cli", "search", *args],
        capture_output=True, text=True, env=env, timeout=timeout, cwd=PROJECT_ROOT,
    )


def test_text_search_prints_rank_distance_id_and_uri() -> None:
    done = run_search(REGEX_SEARCHER, "The weather was excellent.", "-k", "3")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert lines[0].startswith("3 results for 'The weather was excellent.'")
    assert re.match(r"\s*rank\s+distance\s+image id\s+uri", lines[1])
    rows = lines[2:]
    assert len(rows) == 3
    assert re.match(r"\s*1\s+0\.889\d\s+The weather was excellent\.", rows[0])


def test_json_output_parses_and_matches_the_text_output() -> None:
    done = run_search(REGEX_SEARCHER, "It was a sunny day.", "-k", "4", "--json")
    assert done.returncode == 0, done.stderr
    payload = json.loads(done.stdout)
    assert payload["query"] == "It was a sunny day." and payload["requested_k"] == 4
    assert payload["searcher"] == REGEX_SEARCHER
    hits = payload["hits"]
    assert [h["rank"] for h in hits] == [1, 2, 3, 4]
    assert all(set(h) == {"rank", "distance", "image_id", "uri", "captions", "metadata_raw"} for h in hits)
    assert [h["distance"] for h in hits] == sorted(h["distance"] for h in hits)


def test_search_process_never_loads_tensorflow() -> None:
    script = (
        "import sys\nfrom beamlens.pipelines import cli\n"
        f"code = cli.main(['search', {REGEX_SEARCHER!r}, 'a sunny day', '-k', '1'])\n"
        "print('TF', sys.modules.get('tensorflow', 'absent'))\nsys.exit(code)\n"
    )
    env = dict(os.environ, PYTHONPATH=str(PROJECT_ROOT), TF_CPP_MIN_LOG_LEVEL="2")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    # prepare_tflite_process() blocks it: the entry is None, never a module.
    assert done.stdout.strip().splitlines()[-1] == "TF None"


def test_html_page_shows_query_and_result_grid(tmp_path: Path) -> None:
    page = tmp_path / "out" / "results.html"
    done = run_search(
        IMAGE_EMBEDDER, "--image", str(TFLITE_SUPPORT_DATA / "burger.jpg"), "--index-file", IMAGE_INDEX,
        "-k", "5", "--html", str(page),
    )
    assert done.returncode == 0, done.stderr
    text = page.read_text()
    assert "burger.jpg" in text.split('<div class="grid">')[0]  # the query on top
    ids = re.findall(r'data-image-id="([^"]+)"', text)
    assert sorted(ids) == ["bird", "burger", "car", "cat", "dog"]
    assert text.count('data:image/jpeg;base64,') == 1  # only the query image is readable locally
    assert "no image URI" in text


@pytest.mark.parametrize(
    "args, message",
    [
        (["{tmp}/missing.tflite", "a dog"], "searcher file not found: {tmp}/missing.tflite"),
        (["{tmp}/plain.txt", "a dog"], "{tmp}/plain.txt is not a TFLite searcher"),
        ([REGEX_EMBEDDER, "a dog"], "without a ScaNN index, not a searcher"),
        ([REGEX_SEARCHER, ""], "the query is empty"),
        ([REGEX_SEARCHER, "   "], "the query is empty"),
        ([REGEX_SEARCHER, "a dog", "-k", "0"], "k must be a positive number of results, got 0"),
        ([REGEX_SEARCHER], "the query is missing"),
        ([REGEX_SEARCHER, "a dog", "--image", "x.jpg"], "either a text query or --image"),
        ([REGEX_SEARCHER, "--image", "{tmp}/absent.jpg"], "cannot be opened as an image searcher"),
        ([IMAGE_EMBEDDER, "--image", "{tmp}/absent.jpg", "--index-file", IMAGE_INDEX], "query image not found"),
    ],
)
def test_bad_input_gets_a_clear_error_and_exit_2(tmp_path: Path, args: list[str], message: str) -> None:
    (tmp_path / "plain.txt").write_text("just text\n")
    done = run_search(*[a.format(tmp=tmp_path) for a in args])
    assert done.returncode == 2, (done.stdout, done.stderr)
    errors = [line for line in done.stderr.splitlines() if line.startswith("beamlens search: error: ")]
    assert len(errors) == 1, done.stderr
    assert message.format(tmp=tmp_path) in errors[0]
    assert "Traceback" not in done.stderr


# ---------------------------------------------------------------------------------------------
# An image-to-image searcher over the shared photos (MobileNetV3 embedder, exact float index)
# ---------------------------------------------------------------------------------------------
def shared_photos() -> list[Path]:
    photos = sorted(TFLITE_SUPPORT_DATA.glob("*.jpg")) + sorted(TFLITE_SUPPORT_DATA.glob("*.png"))
    photos += sorted((TESTDATA / "coco-mini-cc" / "val2017").glob("*.jpg"))
    return photos


@pytest.fixture(scope="module")
def photo_searcher(tmp_path_factory) -> tuple[str, list[Path], np.ndarray]:
    from beamlens.models import compat
    from tests import search_fixtures

    folder = tmp_path_factory.mktemp("photos")
    photos = shared_photos()
    vectors = compat.call_tflite(search_fixtures.embed_images, IMAGE_EMBEDDER, [str(p) for p in photos])
    np.save(folder / "vectors.npy", vectors)
    metadata = [search_fixtures.item_metadata(p.stem, str(p), [f"photo {p.name}"]) for p in photos]
    path = search_fixtures.build_float_searcher(
        IMAGE_EMBEDDER, str(folder / "vectors.npy"), metadata,
        str(folder / "image_searcher.tflite"),
    )
    return path, photos, vectors


def test_image_query_finds_itself_first_and_matches_brute_force(photo_searcher, tmp_path: Path) -> None:
    path, photos, vectors = photo_searcher
    page = tmp_path / "burger.html"
    done = run_search(path, "--image", str(TFLITE_SUPPORT_DATA / "burger.jpg"), "-k", "6", "--json", "--html", str(page))
    assert done.returncode == 0, done.stderr
    hits = json.loads(done.stdout)["hits"]
    query = vectors[[p.name for p in photos].index("burger.jpg")]
    distances = -(vectors @ query)
    expected = np.argsort(distances, kind="stable")[:6]
    assert [h["image_id"] for h in hits] == [photos[i].stem for i in expected]
    assert hits[0]["image_id"] == "burger" and hits[0]["uri"] == str(TFLITE_SUPPORT_DATA / "burger.jpg")
    # Its near-duplicates come next (cosine 0.92 and 0.73 with the burger).
    assert {h["image_id"] for h in hits[1:3]} == {"burger_crop", "burger_rotation180"}
    np.testing.assert_allclose([h["distance"] for h in hits], distances[expected], rtol=1e-4)
    text = page.read_text()
    assert re.findall(r'data-image-id="([^"]+)"', text) == [photos[i].stem for i in expected]
    # every result is a readable local file: 6 thumbnails plus the query image, none linked
    assert text.count("data:image/jpeg;base64,") == 7 and "not readable here" not in text


def test_html_links_images_that_are_not_readable_here(photo_searcher, tmp_path: Path) -> None:
    path, _, _ = photo_searcher
    page = tmp_path / "coco.html"
    done = run_search(path, "--image", str(TFLITE_SUPPORT_DATA / "sparrow.png"), "-k", "3", "--html", str(page))
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert re.match(r"\s*1\s+-\d+\.\d+\s+sparrow\s+/.*sparrow\.png$", lines[2])
    assert page.read_text().count("data:image/jpeg;base64,") == 4
