"""``beamlens serve``'s app through Starlette's test client, on real searchers over real photos.

Checks what a user of the page and of the API relies on: the known answers (a caption finds
its photo, an uploaded photo finds itself), the JSON shape of ``beamlens search --json``, images
served only for indexed items, and every limit as a clear 4xx with a JSON (or HTML) error.
"""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import PROJECT_ROOT, TFLITE_SUPPORT_DATA

pytest.importorskip("starlette", reason="the serve extra is not installed (make install)")
pytest.importorskip("multipart", reason="python-multipart is not installed (make install)")

from starlette.testclient import TestClient  # noqa: E402

from beamlens.models.search import server as ss  # noqa: E402
from tests.serve_fixtures import ServeSearchers, build_serve_searchers  # noqa: E402

SEARCH_JSON_KEYS = {"searcher", "query", "modality", "requested_k", "latency_ms", "hits", "note"}
HIT_KEYS = {"rank", "distance", "image_id", "uri", "captions", "metadata_raw"}
ROCKET_QUERY = "a rocket going to the moon"


@pytest.fixture(scope="module")
def searchers(tmp_path_factory) -> ServeSearchers:
    return build_serve_searchers(tmp_path_factory.mktemp("serve"))


@pytest.fixture(scope="module")
def pools(searchers: ServeSearchers):
    text = ss.open_pool(searchers.text_searcher, "text", 2, ss.DEFAULT_MAX_K)
    image = ss.open_pool(searchers.image_searcher, "image", 1, ss.DEFAULT_MAX_K)
    yield text, image
    text.close()
    image.close()


@pytest.fixture(scope="module")
def client(pools) -> TestClient:
    return TestClient(ss.create_app(*pools, limits=ss.ServerLimits(max_upload_bytes=400_000)))


def _upload(client: TestClient, path: Path, mime: str = "image/jpeg", url: str = "/api/search-image", **data):
    with open(path, "rb") as stream:
        return client.post(url, files={"image": (path.name, stream, mime)}, data=data)


def _png(width: int, height: int) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (200, 30, 30)).save(buffer, format="PNG")
    return buffer.getvalue()


# ---------------------------------------------------------------------------------------------
# Known answers and the JSON shape
# ---------------------------------------------------------------------------------------------
def test_text_api_finds_the_captioned_photo_in_the_search_json_shape(client: TestClient, searchers) -> None:
    reply = client.get("/api/search", params={"q": ROCKET_QUERY, "k": 4})
    assert reply.status_code == 200, reply.text
    payload = reply.json()
    assert set(payload) == SEARCH_JSON_KEYS
    assert payload["searcher"] == searchers.text_searcher and payload["requested_k"] == 4
    assert all(set(hit) == HIT_KEYS for hit in payload["hits"]) and len(payload["hits"]) == 4
    assert payload["hits"][0]["image_id"] == "rocket"
    assert payload["hits"][0]["uri"] == str(searchers.photos["rocket"])
    assert re.fullmatch(r"search;dur=\d+\.\d\d", reply.headers["server-timing"])


def test_every_caption_finds_its_own_photo_first(client: TestClient, searchers) -> None:
    for image_id, caption in searchers.captions.items():
        hits = client.get("/api/search", params={"q": caption, "k": 1}).json()["hits"]
        assert hits[0]["image_id"] == image_id, caption


def test_uploaded_photo_finds_itself_first_multipart_and_raw_body(client: TestClient, searchers) -> None:
    reply = _upload(client, TFLITE_SUPPORT_DATA / "burger.jpg", k="3")
    assert reply.status_code == 200, reply.text
    payload = reply.json()
    assert set(payload) == SEARCH_JSON_KEYS and payload["modality"] == "image" and payload["requested_k"] == 3
    assert payload["hits"][0]["image_id"] == "burger"
    raw = client.post("/api/search-image?k=2", content=(TFLITE_SUPPORT_DATA / "burger.jpg").read_bytes(),
                      headers={"content-type": "image/jpeg"})
    assert raw.status_code == 200 and [h["image_id"] for h in raw.json()["hits"]][:1] == ["burger"]
    # A grayscale-or-RGBA PNG of the corpus (sparrow.png) works too, as with `beamlens search --image`.
    sparrow = _upload(client, TFLITE_SUPPORT_DATA / "sparrow.png", "image/png")
    assert sparrow.status_code == 200 and sparrow.json()["hits"][0]["image_id"] == "sparrow"


def test_healthz_names_the_searchers_and_the_items(client: TestClient, searchers) -> None:
    health = client.get("/healthz").json()
    assert health["status"] == "ok" and health["items_with_images"] == len(searchers.photos)
    assert health["searchers"]["text"] == {"path": searchers.text_searcher, "copies": 2, "max_k": ss.DEFAULT_MAX_K}
    assert health["searchers"]["image"]["copies"] == 1


# ---------------------------------------------------------------------------------------------
# The page
# ---------------------------------------------------------------------------------------------
def _grid_ids(page: str) -> list[str]:
    return re.findall(r'<div class="hit" data-image-id="([^"]+)"', page)


def test_page_is_a_shareable_link_with_a_grid_of_served_images(client: TestClient) -> None:
    empty = client.get("/")
    assert empty.status_code == 200 and 'name="q"' in empty.text and 'id="results"' not in empty.text
    page = client.get("/", params={"q": ROCKET_QUERY, "k": "3"})
    assert page.status_code == 200
    ids = _grid_ids(page.text)
    assert len(ids) == 3 and ids[0] == "rocket"
    assert f'value="{ROCKET_QUERY}"' in page.text and 'id="latency"' in page.text
    assert '<img src="/images/rocket"' in page.text and 'href="/?like=rocket&amp;k=3"' in page.text
    # nothing from outside: no script, no absolute URL in the page, and the CSP says so
    assert "<script" not in page.text and not re.search(r'(src|href)="(https?:)?//', page.text)
    assert "default-src 'none'" in page.headers["content-security-policy"]


def test_more_like_this_and_page_upload_search_by_image(client: TestClient) -> None:
    like = client.get("/", params={"like": "burger", "k": "3"})
    assert like.status_code == 200 and _grid_ids(like.text)[0] == "burger"
    upload = _upload(client, TFLITE_SUPPORT_DATA / "burger.jpg", url="/search-image", k="5")
    assert upload.status_code == 200 and "text/html" in upload.headers["content-type"]
    ids = _grid_ids(upload.text)
    assert len(ids) == 5 and ids[0] == "burger" and "burger.jpg" in upload.text


def test_page_errors_are_4xx_pages_with_the_reason(client: TestClient) -> None:
    bad_k = client.get("/", params={"q": "a cat", "k": "0"})
    assert bad_k.status_code == 400 and "k must be between 1 and 100, got 0" in bad_k.text
    unknown = client.get("/", params={"like": "no-such-item"})
    assert unknown.status_code == 404 and "no indexed item has the image id" in unknown.text
    corrupt = client.post("/search-image", files={"image": ("x.jpg", b"\xff\xd8\xff not really", "image/jpeg")})
    assert corrupt.status_code == 400 and 'class="error"' in corrupt.text


# ---------------------------------------------------------------------------------------------
# Images only for indexed items
# ---------------------------------------------------------------------------------------------
def test_images_are_served_for_indexed_items_only(client: TestClient, searchers) -> None:
    reply = client.get("/images/burger")
    assert reply.status_code == 200 and reply.headers["content-type"] == "image/jpeg"
    assert reply.content == searchers.photos["burger"].read_bytes()
    assert client.get("/images/sparrow").headers["content-type"] == "image/png"
    for path in ("/images/..%2F..%2F..%2Fetc%2Fpasswd", "/images/%2Fetc%2Fpasswd", "/images//etc/passwd",
                 "/images/" + str(searchers.photos["burger"]), "/images/burger.jpg", "/images/nope", "/images/"):
        refused = client.get(path)
        assert refused.status_code == 404, path
        if path != "/images/":
            assert refused.json()["status"] == 404, path


def test_unreadable_or_non_image_item_files_are_404(pools, tmp_path: Path) -> None:
    text_file = tmp_path / "notes.txt"
    text_file.write_text("not an image")
    catalog = ss.ImageCatalog({"gone": str(tmp_path / "missing.jpg"), "text": str(text_file), "remote": "gs://b/x.jpg"})

    def read_bytes(uri: str) -> bytes:
        if uri.startswith("gs://"):
            raise OSError("no credentials for gs://b")
        return ss.read_uri(uri)

    client = TestClient(ss.create_app(*pools, catalog=catalog, read_bytes=read_bytes))
    for image_id, message in (("gone", "not readable"), ("text", "is not a JPEG"), ("remote", "no credentials")):
        reply = client.get(f"/images/{image_id}")
        assert reply.status_code == 404 and message in reply.json()["error"], image_id


# ---------------------------------------------------------------------------------------------
# Limits
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("params", "message"), [
    ({"q": "x" * 501}, "the query is 501 characters long; the limit is 500"),
    ({"q": "   "}, "the query is empty"),
    ({}, "the query is empty"),
    ({"q": "a cat", "k": "0"}, "k must be between 1 and 100, got 0"),
    ({"q": "a cat", "k": "101"}, "k must be between 1 and 100, got 101"),
    ({"q": "a cat", "k": "ten"}, "k must be a whole number, got 'ten'"),
])
def test_text_api_limits_are_400_with_a_json_reason(client: TestClient, params: dict, message: str) -> None:
    reply = client.get("/api/search", params=params)
    assert reply.status_code == 400
    assert message in reply.json()["error"] and reply.json()["status"] == 400


def test_upload_limits_size_type_corruption_and_pixels(client: TestClient, pools) -> None:
    big = client.post("/api/search-image", files={"image": ("big.png", b"\x89PNG\r\n\x1a\n" + b"0" * 500_000, "image/png")})
    assert big.status_code == 413 and "limit" in big.json()["error"]
    raw_big = client.post("/api/search-image", content=b"\xff\xd8\xff" + b"0" * 500_000, headers={"content-type": "image/jpeg"})
    assert raw_big.status_code == 413
    text = client.post("/api/search-image", files={"image": ("a.txt", b"hello there", "text/plain")})
    assert text.status_code == 415 and "unsupported upload (text/plain)" in text.json()["error"]
    truncated = (TFLITE_SUPPORT_DATA / "burger.jpg").read_bytes()[:4000]
    corrupt = client.post("/api/search-image", files={"image": ("cut.jpg", truncated, "image/jpeg")})
    assert corrupt.status_code == 400 and "corrupt or truncated image" in corrupt.json()["error"]
    empty = client.post("/api/search-image", files={"image": ("e.jpg", b"", "image/jpeg")})
    assert empty.status_code == 400 and "empty" in empty.json()["error"]
    no_field = client.post("/api/search-image", files={"photo": ("b.png", _png(8, 8), "image/png")})
    assert no_field.status_code == 400 and "no file field 'image'" in no_field.json()["error"]
    small_budget = TestClient(ss.create_app(*pools, limits=ss.ServerLimits(max_image_pixels=10_000)))
    bomb = small_budget.post("/api/search-image", files={"image": ("p.png", _png(200, 100), "image/png")})
    assert bomb.status_code == 413 and "image too large: 200x100 = 20,000 pixels > budget 10,000" in bomb.json()["error"]


def test_a_server_without_an_image_searcher_says_so(pools) -> None:
    client = TestClient(ss.create_app(pools[0], None))
    reply = client.post("/api/search-image", files={"image": ("b.png", _png(8, 8), "image/png")})
    assert reply.status_code == 404 and "no image searcher" in reply.json()["error"]
    page = client.get("/", params={"q": "a cat"}).text
    assert 'action="/search-image"' not in page and "more like this" not in page


def test_max_k_is_capped_by_the_searchers_max_results(searchers) -> None:
    with ss.open_pool(searchers.text_searcher, "text", 1, 20) as pool:
        client = TestClient(ss.create_app(pool, None, limits=ss.ServerLimits(max_k=100)))
        assert client.get("/api/search", params={"q": "a cat", "k": 21}).status_code == 400
        assert client.get("/api/search", params={"q": "a cat", "k": 20}).status_code == 200


# ---------------------------------------------------------------------------------------------
# The command
# ---------------------------------------------------------------------------------------------
def _beamlens(*args: str, timeout: int = 120) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(PROJECT_ROOT), TF_CPP_MIN_LOG_LEVEL="2")
    return subprocess.run([sys.executable, "-m", "beamlens.pipelines.cli", *args], capture_output=True, text=True,
                          env=env, timeout=timeout, cwd=PROJECT_ROOT)


@pytest.mark.parametrize(("args", "message"), [
    ([], "give --searcher (text -> image), --image-searcher (image -> image) or both"),
    (["--searcher", "/nonexistent/text_searcher.tflite"], "searcher file not found: /nonexistent/text_searcher.tflite"),
    (["--searcher", "{text}", "--port", "70000"], "--port must be between 0 and 65535, got 70000"),
    (["--searcher", "{text}", "--max-k", "0"], "max_k must be a positive whole number, got 0"),
    (["--searcher", "{text}", "--max-upload-mb", "0"], "--max-upload-mb must be positive, got 0.0"),
    (["--searcher", "{image}"], "cannot be opened as a text searcher"),
])
def test_serve_refuses_bad_arguments_with_one_line(searchers, args: list[str], message: str) -> None:
    args = [a.format(text=searchers.text_searcher, image=searchers.image_searcher) for a in args]
    done = _beamlens("serve", *args)
    assert done.returncode == 2, (done.stdout, done.stderr)
    errors = [line for line in done.stderr.splitlines() if line.startswith("beamlens serve: error: ")]
    assert len(errors) == 1 and message in errors[0], done.stderr
    assert "Traceback" not in done.stderr


def test_the_serve_process_answers_without_loading_tensorflow(searchers) -> None:
    """What `beamlens serve` does before uvicorn, then requests through the app: TensorFlow stays out."""
    script = (
        "import sys, json\nfrom beamlens.models import compat\ncompat.prepare_tflite_process()\n"
        "from beamlens.models.search import server as ss\nfrom starlette.testclient import TestClient\n"
        f"options = ss.ServeOptions({searchers.text_searcher!r}, {searchers.image_searcher!r})\n"
        "text, image = ss.open_service_pools(options)\nclient = TestClient(ss.create_app(text, image))\n"
        f"hits = client.get('/api/search', params={{'q': {ROCKET_QUERY!r}}}).json()['hits']\n"
        f"up = client.post('/api/search-image', content=open({str(TFLITE_SUPPORT_DATA / 'burger.jpg')!r}, 'rb').read(),"
        " headers={'content-type': 'image/jpeg'}).json()['hits']\n"
        "print(json.dumps([hits[0]['image_id'], up[0]['image_id'], repr(sys.modules.get('tensorflow', 'absent'))]))\n"
    )
    env = dict(os.environ, PYTHONPATH=str(PROJECT_ROOT), TF_CPP_MIN_LOG_LEVEL="2")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) == ["rocket", "burger", "None"]
