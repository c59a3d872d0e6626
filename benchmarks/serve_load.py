"""Loopback load test of ``beamlens serve`` (hand-run benchmark; a test runs it bounded).

    .venv/bin/python benchmarks/serve_load.py                       # builds the small test searchers
    .venv/bin/python benchmarks/serve_load.py --searcher build/demo/searchers/text_searcher.tflite \\
        --image-searcher build/demo/searchers/image_searcher.tflite --searchers-per-file 1
    .venv/bin/python benchmarks/serve_load.py --url http://127.0.0.1:8080 --requests 500

Starts ``beamlens serve`` in its own process on 127.0.0.1 (unless ``--url`` names a running one),
then ``--clients`` threads (default 8), each with one keep-alive HTTP connection, send
``--requests`` requests in all (default 2,000): text searches (``/api/search``, the corpus'
captions, k=10), image fetches (``/images/{id}``) and, with an image searcher, photo uploads
(``POST /api/search-image``), in a fixed 7:2:1 mix. Bounded: every request has a timeout and the
run stops issuing at ``--max-seconds``; what was not sent then counts as errors. Prints p50/p99
per kind and overall, requests per second and errors; ``--json`` adds one JSON line at the end.
A benchmark, not an assertion: times depend on the machine and on what else runs on it.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import sys
import tempfile
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run by path too, not only with -m

from tests.conftest import TFLITE_SUPPORT_DATA  # noqa: E402
from tests.serve_fixtures import build_serve_searchers, running_server  # noqa: E402

KINDS = ("text", "image-get", "upload")


@dataclass
class Workload:
    """The requests to cycle through: (kind, method, path, body, content type)."""

    requests: list[tuple[str, str, str, bytes | None, str | None]]

    @classmethod
    def from_server(cls, url: str, upload_photo: Path | None) -> "Workload":
        """Queries and image ids from the server's own items (its first text search), in a 7:2:1 mix."""
        health = _get_json(url, "/healthz")
        has_text, has_image = "text" in health["searchers"], "image" in health["searchers"]
        max_k = health["searchers"]["text"]["max_k"] if has_text else 0
        probe = _get_json(url, f"/api/search?q=a&k={max_k}")["hits"] if has_text else []
        captions = [hit["captions"][0] for hit in probe if hit["captions"]] or ["a photo"]
        ids = [hit["image_id"] for hit in probe if hit["uri"]]
        body = upload_photo.read_bytes() if upload_photo and has_image else None
        mix: list[tuple[str, str, str, bytes | None, str | None]] = []
        for i in range(10):
            if i < 7 and has_text:
                query = urllib.parse.urlencode({"q": captions[i % len(captions)], "k": 10})
                mix.append(("text", "GET", f"/api/search?{query}", None, None))
            elif i < 9 and ids:
                mix.append(("image-get", "GET", "/images/" + urllib.parse.quote(ids[i % len(ids)], safe=""), None, None))
            elif body is not None:
                mix.append(("upload", "POST", "/api/search-image?k=10", body, "image/jpeg"))
        if not mix:
            raise SystemExit("the server has nothing to load: no text searcher and no image searcher")
        return cls(mix)


def _get_json(url: str, path: str) -> dict:
    parts = urllib.parse.urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    try:
        connection.request("GET", path)
        reply = connection.getresponse()
        data = reply.read()
        if reply.status != 200:
            raise SystemExit(f"{url}{path}: HTTP {reply.status} {data[:200]!r}")
        return json.loads(data)
    finally:
        connection.close()


@dataclass
class LoadResult:
    """What the run measured: per-kind latencies (ms) and every failure, named."""

    latencies: dict[str, list[float]] = field(default_factory=lambda: {k: [] for k in KINDS})
    errors: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def completed(self) -> int:
        return sum(len(v) for v in self.latencies.values())

    def summary(self, requests: int, clients: int) -> dict:
        every = [ms for values in self.latencies.values() for ms in values]
        kinds = {kind: _percentiles(values) for kind, values in self.latencies.items() if values}
        return {"requests": requests, "completed": self.completed, "errors": len(self.errors), "clients": clients,
                "seconds": round(self.seconds, 3), "requests_per_second": round(self.completed / max(self.seconds, 1e-9), 1),
                "all": _percentiles(every), "by_kind": kinds, "first_errors": self.errors[:5]}


def _percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {"count": 0}
    array = np.asarray(values)
    return {"count": len(values), "p50_ms": round(float(np.percentile(array, 50)), 3),
            "p99_ms": round(float(np.percentile(array, 99)), 3), "max_ms": round(float(array.max()), 3)}


def run_load(url: str, workload: Workload, requests: int, clients: int, max_seconds: float,
             timeout: float = 30.0) -> LoadResult:
    """Send ``requests`` requests from ``clients`` threads; stops by itself at ``max_seconds``."""
    result = LoadResult()
    lock = threading.Lock()
    counter = iter(range(requests))
    parts = urllib.parse.urlsplit(url)
    deadline = time.monotonic() + max_seconds

    def client() -> None:
        connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
        try:
            while time.monotonic() < deadline:
                with lock:
                    index = next(counter, None)
                if index is None:
                    return
                kind, method, path, body, mime = workload.requests[index % len(workload.requests)]
                headers = {"Content-Type": mime} if mime else {}
                started = time.perf_counter()
                try:
                    connection.request(method, path, body=body, headers=headers)
                    reply = connection.getresponse()
                    data = reply.read()
                    status = reply.status
                except (OSError, http.client.HTTPException) as error:
                    connection.close()
                    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
                    status, data = 0, f"{type(error).__name__}: {error}".encode()
                elapsed = (time.perf_counter() - started) * 1e3
                with lock:
                    if status == 200:
                        result.latencies[kind].append(elapsed)
                    else:
                        result.errors.append(f"{method} {path[:80]} -> {status} {data[:120]!r}")
        finally:
            connection.close()

    threads = [threading.Thread(target=client, name=f"load-client-{i}", daemon=True) for i in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()) + timeout + 5)
    result.seconds = time.perf_counter() - started
    missing = requests - result.completed - len(result.errors)
    if missing > 0:
        result.errors.append(f"{missing} requests not sent or not answered within --max-seconds {max_seconds:g}")
    return result


def print_report(summary: dict, label: str) -> None:
    print(f"serve load ({label}): {summary['completed']:,} of {summary['requests']:,} requests answered 200, "
          f"{summary['clients']} concurrent clients, {summary['errors']} errors, "
          f"{summary['requests_per_second']:,.0f} requests/s over {summary['seconds']:.1f} s")
    rows = [("all", summary["all"])] + list(summary["by_kind"].items())
    for name, row in rows:
        if row.get("count"):
            print(f"  {name:<10} n={row['count']:>5}  p50 {row['p50_ms']:8.2f} ms  p99 {row['p99_ms']:8.2f} ms  "
                  f"max {row['max_ms']:8.2f} ms")
    for error in summary["first_errors"]:
        print(f"  error: {error}")


@contextlib.contextmanager
def _server(args: argparse.Namespace) -> Iterator[tuple[str, str]]:
    """(base URL, label): the one given, or a `beamlens serve` started here (and stopped after)."""
    if args.url:
        yield args.url.rstrip("/"), args.url
        return
    with tempfile.TemporaryDirectory(prefix="beamlens-serve-load-") as folder:
        text, image = args.searcher, args.image_searcher
        if not text and not image:
            built = build_serve_searchers(Path(folder))
            text, image = built.text_searcher, built.image_searcher
        extra = ["--searchers-per-file", str(args.searchers_per_file)]
        with running_server(text, image, extra) as url:
            yield url, f"beamlens serve, {args.searchers_per_file} searcher(s) per file"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", help="load a running server instead of starting one")
    parser.add_argument("--searcher", help="text searcher to serve (default: the small test searchers)")
    parser.add_argument("--image-searcher", help="image searcher to serve")
    parser.add_argument("--searchers-per-file", type=int, default=2)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--max-seconds", type=float, default=600.0, help="stop issuing requests after this long")
    parser.add_argument("--upload", type=Path, default=TFLITE_SUPPORT_DATA / "burger.jpg",
                        help="photo for the upload requests")
    parser.add_argument("--json", action="store_true", help="end with one JSON line of the figures")
    args = parser.parse_args(argv)
    if args.requests < 1 or args.clients < 1:
        parser.error("--requests and --clients must be positive")
    with _server(args) as (url, label):
        workload = Workload.from_server(url, args.upload if args.upload.is_file() else None)
        run_load(url, workload, min(50, args.requests), args.clients, args.max_seconds)  # warm-up, not counted
        result = run_load(url, workload, args.requests, args.clients, args.max_seconds)
    summary = result.summary(args.requests, args.clients)
    print_report(summary, label)
    if args.json:
        print(json.dumps(summary))
    return 0 if not result.errors else 1


if __name__ == "__main__":
    sys.exit(main())
