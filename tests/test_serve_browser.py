"""``beamlens serve`` in a real browser: headless Chromium (Debian's package) driven by Playwright.

Types a caption into the page of a running ``beamlens serve``, waits for the grid, checks that
the captioned photo is first and that its picture was actually loaded from ``/images/…``, uploads
a photo and checks it comes back first, follows "more like this", and saves screenshots under
build/. Playwright's own browser downloads are impossible here, so it drives the system
Chromium (``executable_path``) with the flags this closed network needs. ``make test`` installs
Debian's chromium when it is missing; where it still cannot be had, this test skips and says why.
"""

from __future__ import annotations

import os
import shutil

import pytest

from tests.conftest import PROJECT_ROOT, TFLITE_SUPPORT_DATA
from tests.serve_fixtures import ServeSearchers, build_serve_searchers, running_server

CHROMIUM = os.environ.get("BEAMLENS_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SCREENSHOTS = PROJECT_ROOT / "build"


def _chromium_or_skip() -> str:
    pytest.importorskip("playwright.sync_api", reason="Playwright for Python is not installed (make install)")
    pytest.importorskip("uvicorn", reason="the serve extra is not installed (make install)")
    path = CHROMIUM if os.path.isfile(CHROMIUM) else shutil.which("chromium")
    if not path:
        reason = f"no Chromium at {CHROMIUM} (Debian package chromium; make test installs it as root)"
        print(f"skipping the browser test: {reason}")
        pytest.skip(reason)
    return path


@pytest.fixture(scope="module")
def searchers(tmp_path_factory) -> ServeSearchers:
    return build_serve_searchers(tmp_path_factory.mktemp("serve-browser"))


FIRST_PICTURE_SETTLED = "() => { const img = document.querySelector('#results .hit img'); return img && img.complete; }"


def _first_hit(page) -> tuple[str, int]:
    """(image id, natural width of its picture) of the first tile: 0 when the image failed to load.

    Waits until the browser has finished with the first picture (loaded or failed): the grid is
    drawn before its pictures arrive, and the page's ``load`` event has long fired by then, so
    waiting for the load state alone raced the picture (a CI run read a width of 0).
    """
    page.wait_for_function(FIRST_PICTURE_SETTLED, timeout=15_000)
    tile = page.locator("#results .hit").first
    width = tile.locator("img").evaluate("img => img.naturalWidth")
    return tile.get_attribute("data-image-id"), int(width)


def test_search_upload_and_more_like_this_in_headless_chromium(searchers: ServeSearchers) -> None:
    chromium = _chromium_or_skip()
    from playwright.sync_api import sync_playwright

    SCREENSHOTS.mkdir(exist_ok=True)
    outside: list[str] = []
    with running_server(searchers.text_searcher, searchers.image_searcher) as url, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 760})
            page.on("request", lambda request: None if request.url.startswith(url) else outside.append(request.url))
            page.goto(url + "/")
            page.fill("#q", "a rocket going to the moon")
            page.fill("#k", "6")
            page.click("#search-text")
            page.wait_for_selector("#results .hit img")
            assert page.url.startswith(url + "/?q=a+rocket") and "k=6" in page.url  # a link to share
            assert page.locator("#results .hit").count() == 6
            image_id, width = _first_hit(page)
            assert image_id == "rocket" and width > 0
            assert "ms" in page.inner_text("#summary")
            page.screenshot(path=str(SCREENSHOTS / "serve_text_search.png"), full_page=True)

            page.set_input_files("#image", str(TFLITE_SUPPORT_DATA / "burger.jpg"))
            page.click("#search-image")
            page.wait_for_selector("#results .hit img")
            image_id, width = _first_hit(page)
            assert image_id == "burger" and width > 0
            assert "burger.jpg" in page.inner_text("#summary")
            page.screenshot(path=str(SCREENSHOTS / "serve_image_upload.png"), full_page=True)

            page.locator('#results .hit[data-image-id="cats_and_dogs"] a.like').click()
            page.wait_for_selector("#results .hit")
            assert _first_hit(page)[0] == "cats_and_dogs"
        finally:
            browser.close()
    assert outside == [], f"the page fetched from outside the app: {outside}"
    assert (SCREENSHOTS / "serve_text_search.png").stat().st_size > 0
