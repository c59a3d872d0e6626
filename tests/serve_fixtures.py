"""Two small real searchers over real photos, for ``beamlens serve`` tests and its load benchmark.

* text -> image: the Task Library test text embedder (RegexTokenizer) with a float index over
  the L2-normalised embeddings of one caption per photo, so a caption as the query finds its
  own photo first (cosine 1 with itself);
* image -> image: the shared MobileNetV3 image embedder with a float index over the photos'
  embeddings, so uploading a photo finds that photo first.

Items carry the JSON metadata ``beamlens build-searcher`` writes (id, uri, captions), and the
uris are the real photo files under ../shared/testdata: the server reads and serves them.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from tests.conftest import PROJECT_ROOT, TESTDATA, TFLITE_SUPPORT_DATA

REGEX_EMBEDDER = str(TFLITE_SUPPORT_DATA / "regex_one_embedding_with_metadata.tflite")
IMAGE_EMBEDDER = str(TESTDATA / "models" / "mobilenet_v3_small_075_224_embedder.tflite")

# photo -> caption; every word is in the regex tokenizer's vocabulary (no <UNKNOWN>).
CAPTIONS: dict[str, str] = {
    "tflite-support/burger.jpg": "food on a table",
    "tflite-support/cats_and_dogs.jpg": "cats and dogs together",
    "tflite-support/sparrow.png": "a small bird",
    "tflite-support/multi_objects.jpg": "many objects",
    "skimage/rocket.jpg": "a rocket going to the moon",
    "skimage/coffee.png": "a cup of coffee",
    "skimage/horse.png": "a horse",
    "skimage/astronaut.png": "an astronaut",
    "skimage/motorcycle_left.png": "a red motorcycle",
    "skimage/chelsea.png": "a cat",
}


@dataclass(frozen=True)
class ServeSearchers:
    text_searcher: str
    image_searcher: str
    photos: dict[str, Path]  # image id -> photo file
    captions: dict[str, str]  # image id -> caption


def image_id(relative: str) -> str:
    return Path(relative).stem


def build_serve_searchers(folder: Path) -> ServeSearchers:
    """Write ``text_searcher.tflite`` and ``image_searcher.tflite`` into ``folder`` (a few seconds)."""
    from beamlens.models import compat
    from beamlens.models.search.runtime import embed_text
    from tests import search_fixtures

    photos = {image_id(rel): TESTDATA / rel for rel in CAPTIONS}
    captions = {image_id(rel): text for rel, text in CAPTIONS.items()}
    ids = list(photos)
    metadata = [json.dumps({"id": i, "uri": str(photos[i]), "captions": [captions[i]]}) for i in ids]
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / "text_vectors.npy", embed_text(REGEX_EMBEDDER, [captions[i] for i in ids], l2_normalize=True))
    text_path = search_fixtures.build_float_searcher(
        REGEX_EMBEDDER, str(folder / "text_vectors.npy"), metadata, str(folder / "text_searcher.tflite"))
    vectors = compat.call_tflite(search_fixtures.embed_images, IMAGE_EMBEDDER, [str(photos[i]) for i in ids])
    np.save(folder / "image_vectors.npy", vectors)
    image_path = search_fixtures.build_float_searcher(
        IMAGE_EMBEDDER, str(folder / "image_vectors.npy"), metadata, str(folder / "image_searcher.tflite"))
    return ServeSearchers(text_path, image_path, photos, captions)


def free_port() -> int:
    """A port free on 127.0.0.1 right now (the server binds it a moment later)."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextlib.contextmanager
def running_server(text_searcher: str | None, image_searcher: str | None = None, extra_args: Sequence[str] = (),
                   ready_seconds: float = 120.0) -> Iterator[str]:
    """Run ``beamlens serve`` as a user does (its own TF-free process) on a free loopback port;
    yields its base URL once /healthz answers, and stops it (SIGINT, as Ctrl-C) afterwards."""
    import urllib.request

    port = free_port()
    args = [sys.executable, "-m", "beamlens.pipelines.cli", "serve", "--host", "127.0.0.1", "--port", str(port), *extra_args]
    if text_searcher:
        args += ["--searcher", text_searcher]
    if image_searcher:
        args += ["--image-searcher", image_searcher]
    env = dict(os.environ, PYTHONPATH=str(PROJECT_ROOT), TF_CPP_MIN_LOG_LEVEL="2")
    log = tempfile.TemporaryFile()
    process = subprocess.Popen(args, cwd=PROJECT_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + ready_seconds
        while True:
            if process.poll() is not None:
                log.seek(0)
                raise RuntimeError(f"beamlens serve exited with {process.returncode}:\n{log.read().decode(errors='replace')}")
            try:
                with urllib.request.urlopen(url + "/healthz", timeout=2) as reply:
                    if reply.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"beamlens serve did not answer /healthz within {ready_seconds:.0f} s")
            time.sleep(0.2)
        yield url
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        log.close()
