"""A live search page and JSON API over opened TFLite searchers (``beamlens serve``).

Before a searcher ships in an app its owner wants to *look*: type queries, drop in a photo, see
the pictures and the latency. This module is that small web app. :func:`create_app` takes
searchers that are already open (no global state: two apps in one process do not share
anything) and returns an ASGI app; :func:`serve` opens the files and runs it with uvicorn.

Routes
    ``/`` (``?q=…&k=…`` or ``?like=<image id>&k=…``: a search is a link to share), ``POST
    /search-image`` (the page's upload form), ``/api/search?q=…&k=…`` and ``POST
    /api/search-image`` (multipart field ``image``, or the raw image as the body) return exactly
    what ``beamlens search --json`` prints, ``/images/{image_id}`` and ``/healthz``.
    The page is plain HTML forms: no JavaScript, no framework, nothing fetched from outside.

Why Starlette + uvicorn
    Both are maintained by the Encode team, are what FastAPI itself is built on, and are small
    (Starlette has one dependency, anyio). The app needs a handful of routes, a multipart parser
    and a test client (httpx), not validation models or OpenAPI, so FastAPI would add weight
    without use; Flask would add a WSGI server of its own choosing (Werkzeug's is for
    development only). Sync handlers run in Starlette's thread pool, which is where the
    blocking Task Library calls belong.

Images only for indexed items
    At start-up every item's metadata is read from the searcher files with the project's own
    pure-Python reader (``models.searcher.reader``, as ``beamlens inspect`` does) and only
    ``image id -> uri`` is kept. ``/images/{id}`` is a dictionary look-up of that id: a user
    string is never joined onto a path, so ``../``, absolute paths and ids that are not in the
    index are all the same 404. The bytes served must start like a JPEG/PNG/GIF/BMP/WebP file.
    Local uris (plain paths, ``file://``) are read with ``open``. Other schemes (``gs://``,
    ``s3://``, ...) are read with Beam's ``FileSystems``: importing Beam into the Task Library
    process was checked to leave TensorFlow out (``sys.modules['tensorflow']`` stays the
    ``None`` block that ``models.compat.prepare_tflite_process`` puts there) and the Task Library
    kept working; the import costs ~12 s, so it is done only when the index holds remote uris
    (at start-up, by :func:`serve`). An unreadable image is a 404 naming the item, never a crash.

Concurrency (measured on this machine, 2 cores, tflite-support 0.4.4, one Task Library thread)
    A Task Library searcher is a TFLite interpreter: not safe to call from two threads at once.
    Each searcher file is therefore opened ``searchers_per_file`` times and a request borrows one
    from a queue (a queue of one is a lock). Direct calls, 8 client threads:

    ======================================  ===========  ===========  ===========
    searcher                                1 + lock     pool of 2    pool of 4
    ======================================  ===========  ===========  ===========
    regex text searcher (tiny encoder)      5,038 q/s    3,368 q/s    4,493 q/s
    MobileNetV3 image searcher (224 px)     140 q/s      212 q/s      --
    ======================================  ===========  ===========  ===========

    The image encoder releases the GIL while it runs, so a pool of 2 is 1.5x faster; a tiny text
    encoder is GIL-bound either way (and far faster than HTTP). Hence the default pool of
    ``min(2, cores)``; each copy holds its own index in memory, so ``--searchers-per-file 1`` is
    the choice for a large index on a small machine. Through HTTP (``benchmarks/serve_load.py``:
    2,000 requests, 8 keep-alive clients on the same 2 cores, a 7:2:1 mix of text searches, image
    fetches and uploads on the small test searchers, 3 runs each while other jobs shared the
    machine) 1 copy gave 432-512 requests/s (p50 15-17 ms, p99 36-59 ms) and 2 copies 313-568
    requests/s (p50 14-19 ms, p99 26-238 ms): no difference beyond the noise, because with models
    this small one Python process's HTTP handling is the bottleneck, not the searchers. Where TensorFlow is loaded in the process (tests, notebooks) the Task
    Library runs in the shared child process of ``models.compat`` and calls are serialised there.

Limits (4xx with a JSON body ``{"error": ..., "status": ...}``; an HTML page for the page routes)
    query length (400), k outside 1..max_k (400), upload larger than ``max_upload_bytes`` (413),
    not an image type (415), a corrupt image (400), more pixels than the budget (413), an unknown
    ``like`` id or an image searcher that is missing (404).
"""

from __future__ import annotations

import html
import os
import queue
import time
import urllib.parse
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Mapping, Sequence

from models.io import files
from models.errors import BeamlensError
from models.search.html import _page as html_page  # the shared page shell and style of the HTML reports
from models.encoders.preprocessing import DEFAULT_MAX_IMAGE_PIXELS, ImageDecodeError, load_image
from models.search.runtime import IMAGE, TEXT, Searcher, check_k
from models.search.results import SearchHit, SearchResults, parse_item_metadata

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


class SearcherPool:
    """Open copies of one searcher file; a request borrows one (see "Concurrency" above)."""

    def __init__(self, searchers: Sequence[Searcher]) -> None:
        if not searchers:
            raise BeamlensError("a searcher pool needs at least one open searcher")
        paths = {s.path for s in searchers}
        modalities = {s.modality for s in searchers}
        if len(paths) != 1 or len(modalities) != 1:
            raise BeamlensError(f"a pool holds copies of one searcher file, got {sorted(paths)} ({sorted(modalities)})")
        self.path = searchers[0].path
        self.modality = searchers[0].modality
        self.max_results = min(s.max_results for s in searchers)
        self._searchers = list(searchers)
        self._free: queue.Queue[Searcher] = queue.Queue()
        for searcher in searchers:
            self._free.put(searcher)

    @property
    def size(self) -> int:
        return len(self._searchers)

    @contextmanager
    def borrow(self) -> Iterator[Searcher]:
        searcher = self._free.get()
        try:
            yield searcher
        finally:
            self._free.put(searcher)

    def search(self, query: Any, k: int) -> SearchResults:
        """One query on a free copy. ``k`` must not exceed ``max_results``: a larger k would make
        the Searcher re-create its Task Library object, which must not happen under other threads."""
        if k > self.max_results:
            raise HttpError(400, f"k must be at most {self.max_results} for {os.path.basename(self.path)}")
        with self.borrow() as searcher:
            return searcher.search(query, k=k)

    def close(self) -> None:
        for searcher in self._searchers:
            searcher.close()

    def __enter__(self) -> "SearcherPool":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_pool(path: str, modality: str, copies: int, max_results: int, max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
              num_threads: int = 1) -> SearcherPool:
    """Open ``copies`` Task Library searchers of one file (closing those opened if one fails)."""
    if not isinstance(copies, int) or copies < 1:
        raise BeamlensError(f"searchers per file must be a positive number, got {copies!r}")
    opened: list[Searcher] = []
    try:
        for _ in range(copies):
            opened.append(Searcher(path, modality=modality, max_results=max_results, num_threads=num_threads,
                                   max_image_pixels=max_image_pixels))
    except BaseException:
        for searcher in opened:
            searcher.close()
        raise
    return SearcherPool(opened)


# ---------------------------------------------------------------------------------------------
# The indexed items: image id -> uri, read once from the searcher files
# ---------------------------------------------------------------------------------------------
def is_local_uri(uri: str) -> bool:
    return not files.is_remote(uri)


def read_uri(uri: str) -> bytes:
    """The bytes at an item's uri, local or any Beam filesystem (models/io/files.py).

    Only uris from the index reach this function (see the module doc), never a request's string."""
    return files.read_bytes(uri)


@dataclass(frozen=True)
class ImageCatalog:
    """Which images may be served: the uri of every indexed item that has one, by image id."""

    uris: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_searchers(cls, paths: Sequence[str]) -> "ImageCatalog":
        """Read every item's metadata from the searcher files (pure Python, no Task Library).

        Items of several searchers are merged (a text and an image searcher built from the same
        shards hold the same items); the first uri seen for an id wins. Items without a uri
        (Model Maker searchers store plain text) have no image to serve."""
        from models.searcher.reader import item_metadata, read_searcher  # noqa: PLC0415

        uris: dict[str, str] = {}
        for path in paths:
            count = read_searcher(path, first_items=0).num_items
            for raw in item_metadata(path, list(range(count))):
                item = parse_item_metadata(raw)
                if item.uri:
                    uris.setdefault(item.image_id, item.uri)
        return cls(uris)

    def uri(self, image_id: str) -> str | None:
        return self.uris.get(image_id)

    @property
    def has_remote_uris(self) -> bool:
        return any(not is_local_uri(uri) for uri in self.uris.values())


def image_url(image_id: str) -> str:
    return "/images/" + urllib.parse.quote(image_id, safe="")


# ---------------------------------------------------------------------------------------------
# The page (server-rendered HTML forms: no JavaScript, nothing from outside)
# ---------------------------------------------------------------------------------------------
_PAGE_STYLE = """<style>
form.search { display: flex; flex-wrap: wrap; gap: .6em; align-items: center; margin: .4em 0; }
form.search input[type=search] { font-size: 1.1em; padding: .35em .5em; width: min(36em, 90vw); }
form.search input[type=number] { width: 4.5em; font-size: 1.1em; padding: .3em; }
.error { color: #a4161a; background: #fde8e8; padding: .5em .8em; border-radius: 6px; }
.hit a.like { font-size: .95em; }
</style>"""


@dataclass(frozen=True)
class PageView:
    """What one rendering of the page shows."""

    query: str = ""
    k: int = DEFAULT_K
    like: str = ""
    upload_name: str = ""
    results: SearchResults | None = None
    searcher_path: str = ""
    server_ms: float | None = None
    error: str | None = None


def _forms(view: PageView, limits: ServerLimits, text: bool, image: bool) -> str:
    esc = html.escape
    parts = []
    if text:
        parts.append(
            f'<form class="search" method="get" action="/" role="search">'
            f'<input type="search" name="q" id="q" value="{esc(view.query)}" maxlength="{limits.max_query_chars}" '
            f'placeholder="describe a picture" autofocus>'
            f'<label>k <input type="number" name="k" id="k" min="1" max="{limits.max_k}" value="{view.k}"></label>'
            f'<button type="submit" id="search-text">Search</button></form>'
        )
    if image:
        accept = ",".join(sorted(ACCEPTED_TYPES))
        parts.append(
            f'<form class="search" method="post" action="/search-image" enctype="multipart/form-data">'
            f'<input type="file" name="{UPLOAD_FIELD}" id="image" accept="{accept}" required>'
            f'<label>k <input type="number" name="k" min="1" max="{limits.max_k}" value="{view.k}"></label>'
            f'<button type="submit" id="search-image">Search by image</button>'
            f'<span class="note">at most {limits.max_upload_bytes / 2**20:.3g} MiB</span></form>'
        )
    return "\n".join(parts)


def hit_tile(hit: SearchHit, catalog: ImageCatalog, k: int, more_like_this: bool) -> str:
    """One result, its picture served by this app (only items of the index have one)."""
    esc = html.escape
    if catalog.uri(hit.image_id):
        picture = f'<a href="{image_url(hit.image_id)}"><img src="{image_url(hit.image_id)}" alt="{esc(hit.image_id)}" loading="lazy"></a>'
    else:
        picture = '<div class="missing">no image URI</div>'
    caption = f"<br><i>{esc(hit.captions[0])}</i>" if hit.captions else ""
    like = ""
    if more_like_this and catalog.uri(hit.image_id):
        like = f'<br><a class="like" href="/?like={urllib.parse.quote(hit.image_id, safe="")}&amp;k={k}">more like this</a>'
    return (
        f'<div class="hit" data-image-id="{esc(hit.image_id)}" data-rank="{hit.rank}">{picture}'
        f'<b>#{hit.rank}</b> <span class="distance">{hit.distance:.4f}</span><br>id {esc(hit.image_id)}{caption}{like}</div>'
    )


def render_page(view: PageView, limits: ServerLimits, catalog: ImageCatalog, text: bool, image: bool) -> str:
    """The whole page: the forms, then an error, or the results as a grid with their latency."""
    esc = html.escape
    parts = [_PAGE_STYLE, "<h1>beamlens search</h1>", _forms(view, limits, text, image)]
    if view.error:
        parts.append(f'<p class="error" id="error">{esc(view.error)}</p>')
    results = view.results
    if results is not None:
        if view.like:
            asked = f"images like <b>{esc(view.like)}</b>"
        elif view.upload_name:
            asked = f"images like the upload <b>{esc(view.upload_name)}</b>"
        else:
            asked = f"<b>{esc(results.query)}</b>"
        server = f", server {view.server_ms:.1f} ms" if view.server_ms is not None else ""
        parts.append(
            f'<p class="note" id="summary">{len(results.hits)} results of k={results.requested_k} for {asked} from '
            f'{esc(os.path.basename(view.searcher_path))} ({results.modality} searcher): Task Library search '
            f'<span id="latency">{results.latency_ms:.2f}</span> ms{server}. Distance: smaller is closer.</p>'
        )
        if results.note:
            parts.append(f'<p class="note">{esc(results.note)}</p>')
        tiles = "\n".join(hit_tile(hit, catalog, results.requested_k, image) for hit in results.hits)
        parts.append(f'<div class="grid" id="results">\n{tiles or "<p class=note>no results</p>"}\n</div>')
    title = f"beamlens search: {view.query or view.like or view.upload_name}" if results is not None else "beamlens search"
    return html_page(title, "\n".join(parts))


# ---------------------------------------------------------------------------------------------
# The app
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Answer:
    """A search done for a request: the results, the searcher file, and the server-side time."""

    results: SearchResults
    searcher_path: str
    server_ms: float

    def to_dict(self) -> dict[str, Any]:
        """Exactly the shape of ``beamlens search --json`` (the server time goes in a header)."""
        return {"searcher": self.searcher_path, **self.results.to_dict()}


@dataclass(frozen=True)
class SearchService:
    """Everything a request needs; one per app (the app factory's closure holds it)."""

    text: SearcherPool | None
    image: SearcherPool | None
    catalog: ImageCatalog
    limits: ServerLimits
    read_bytes: Callable[[str], bytes] = read_uri

    def _run(self, pool: SearcherPool | None, query: Any, k: int, what: str) -> Answer:
        if pool is None:
            raise HttpError(404, f"this server has no {what} searcher (start it with --{'image-' if what == IMAGE else ''}searcher)")
        started = time.perf_counter()
        try:
            results = pool.search(query, k)
        except HttpError:
            raise
        except BeamlensError as error:  # what our checks let through and the Task Library refused
            raise HttpError(400 if what == IMAGE else 500, str(error)) from None
        return Answer(results, pool.path, (time.perf_counter() - started) * 1e3)

    def search_text(self, query: str | None, k: int) -> Answer:
        return self._run(self.text, self.limits.check_query(query), k, TEXT)

    def search_upload(self, data: bytes, declared_type: str | None, k: int) -> Answer:
        return self._run(self.image, self.limits.check_upload(data, declared_type), k, IMAGE)

    def search_like(self, image_id: str, k: int) -> Answer:
        """Image -> image from an indexed item ("more like this"): its own picture is the query."""
        if self.image is None:
            raise HttpError(404, "this server has no image searcher (start it with --image-searcher)")
        return self._run(self.image, self.item_image(image_id)[0], k, IMAGE)

    def item_image(self, image_id: str) -> tuple[bytes, str]:
        """(bytes, MIME type) of an indexed item's picture; 404 for anything else."""
        uri = self.catalog.uri(image_id)
        if uri is None:
            raise HttpError(404, f"no indexed item has the image id {image_id[:200]!r}")
        try:
            data = self.read_bytes(uri)
        except (OSError, ValueError) as error:  # Beam raises IOError/BeamIOError (OSError) or ValueError
            raise HttpError(404, f"the image of item {image_id!r} is not readable at {uri}: {error}") from None
        mime = sniff_image_type(data)
        if mime is None:
            raise HttpError(404, f"the file of item {image_id!r} at {uri} is not a JPEG, PNG, GIF, BMP or WebP image")
        return data, mime

    def health(self) -> dict[str, Any]:
        pools = {"text": self.text, "image": self.image}
        return {
            "status": "ok",
            "searchers": {name: {"path": p.path, "copies": p.size, "max_k": p.max_results}
                          for name, p in pools.items() if p is not None},
            "items_with_images": len(self.catalog.uris),
        }

    def close(self) -> None:
        for pool in (self.text, self.image):
            if pool is not None:
                pool.close()


async def read_body(request: Any, limit: int) -> bytes:
    """The request body, refusing (413) as soon as it is larger than ``limit``: never buffered whole."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise HttpError(413, f"the request is {int(declared):,} bytes; the upload limit is {limit - MULTIPART_OVERHEAD_BYTES:,}")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise HttpError(413, f"the request is over {limit - MULTIPART_OVERHEAD_BYTES:,} bytes, the upload limit")
        chunks.append(chunk)
    return b"".join(chunks)


async def read_upload(request: Any, limits: ServerLimits) -> tuple[bytes, str | None, str, str | None]:
    """(image bytes, declared type, file name, k field) from a multipart form or a raw image body."""
    from starlette.requests import Request  # noqa: PLC0415

    body = await read_body(request, limits.max_upload_bytes + MULTIPART_OVERHEAD_BYTES)
    content_type = request.headers.get("content-type", "")
    if not content_type.startswith("multipart/form-data"):
        return body, content_type or None, "request body", None

    async def replay() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    try:
        form = await Request(request.scope, replay).form(max_files=1, max_fields=8)
    except Exception as error:  # noqa: BLE001 (Starlette's MultiPartException and parser errors alike)
        raise HttpError(400, f"the upload form cannot be read: {error}") from None
    upload = form.get(UPLOAD_FIELD)
    if upload is None or isinstance(upload, str):
        raise HttpError(400, f"the form has no file field {UPLOAD_FIELD!r}")
    data = await upload.read()
    k_field = form.get("k")
    return data, upload.content_type, upload.filename or "upload", k_field if isinstance(k_field, str) else None


# Nothing is fetched from outside the app, and the page runs no script at all.
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; img-src 'self'; style-src 'unsafe-inline'; form-action 'self'",
    "X-Content-Type-Options": "nosniff",
}


def _pool(searchers: SearcherPool | Searcher | Sequence[Searcher] | None, modality: str) -> SearcherPool | None:
    if searchers is None or isinstance(searchers, SearcherPool):
        pool = searchers
    elif isinstance(searchers, Searcher):
        pool = SearcherPool([searchers])
    else:
        pool = SearcherPool(list(searchers))
    if pool is not None and pool.modality != modality:
        raise BeamlensError(f"{pool.path} is opened as {pool.modality} searcher, but is given as the {modality} searcher")
    return pool


def create_app(
    text: SearcherPool | Searcher | Sequence[Searcher] | None,
    image: SearcherPool | Searcher | Sequence[Searcher] | None = None,
    catalog: ImageCatalog | None = None,
    limits: ServerLimits | None = None,
    read_bytes: Callable[[str], bytes] = read_uri,
) -> Any:
    """The ASGI app over searchers that are already open (the caller closes them, or ``app.state.service``).

    ``catalog`` defaults to the items of both searcher files. ``max_k`` is capped by the
    searchers' ``max_results``: a larger k would re-create a Task Library object under load."""
    from starlette.applications import Starlette  # noqa: PLC0415 (the web stack only where it serves)
    from starlette.routing import Route  # noqa: PLC0415

    text_pool, image_pool = _pool(text, TEXT), _pool(image, IMAGE)
    if text_pool is None and image_pool is None:
        raise BeamlensError("give at least one searcher (a text searcher, an image searcher or both)")
    pools = [p for p in (text_pool, image_pool) if p is not None]
    limits = limits or ServerLimits()
    cap = min(p.max_results for p in pools)
    if limits.max_k > cap:
        limits = ServerLimits(limits.max_query_chars, cap, limits.max_upload_bytes, limits.max_image_pixels)
    if catalog is None:
        catalog = ImageCatalog.from_searchers([p.path for p in pools])
    service = SearchService(text_pool, image_pool, catalog, limits, read_bytes)
    handlers = _Handlers(service)
    routes = [
        Route("/", handlers.page, methods=["GET"]),
        Route("/search-image", handlers.page_upload, methods=["POST"]),
        Route("/api/search", handlers.api_search, methods=["GET"]),
        Route("/api/search-image", handlers.api_search_image, methods=["POST"]),
        Route("/images/{image_id:path}", handlers.image, methods=["GET"]),
        Route("/healthz", handlers.healthz, methods=["GET"]),
    ]
    app = Starlette(routes=routes)
    app.state.service = service
    return app


class _Handlers:
    """The route handlers of one app: every refusal is an HttpError turned into a 4xx answer."""

    def __init__(self, service: SearchService) -> None:
        self.service = service
        self.limits = service.limits

    # -- responses ----------------------------------------------------------------------------
    @staticmethod
    def _json_error(error: HttpError) -> Any:
        from starlette.responses import JSONResponse  # noqa: PLC0415

        return JSONResponse({"error": error.message, "status": error.status}, status_code=error.status)

    @staticmethod
    def _json_answer(answer: Answer) -> Any:
        from starlette.responses import JSONResponse  # noqa: PLC0415

        return JSONResponse(answer.to_dict(), headers={"Server-Timing": f"search;dur={answer.server_ms:.2f}"})

    def _html(self, view: PageView, status: int = 200) -> Any:
        from starlette.responses import HTMLResponse  # noqa: PLC0415

        service = self.service
        page = render_page(view, self.limits, service.catalog, service.text is not None, service.image is not None)
        return HTMLResponse(page, status_code=status, headers=PAGE_HEADERS)

    @staticmethod
    def _view(answer: Answer, **fields: Any) -> PageView:
        return PageView(results=answer.results, searcher_path=answer.searcher_path, server_ms=answer.server_ms, **fields)

    # -- the page -----------------------------------------------------------------------------
    async def page(self, request: Any) -> Any:
        from starlette.concurrency import run_in_threadpool  # noqa: PLC0415

        params = request.query_params
        query, like = params.get("q", ""), params.get("like", "")
        view = PageView(query=query[: self.limits.max_query_chars], like=like[:200])
        try:
            k = self.limits.parse_k(params.get("k"))
            view = PageView(query=view.query, like=view.like, k=k)
            if like:
                answer = await run_in_threadpool(self.service.search_like, like, k)
                return self._html(self._view(answer, like=like, k=k))
            if "q" in params:
                answer = await run_in_threadpool(self.service.search_text, query, k)
                return self._html(self._view(answer, query=query, k=k))
        except HttpError as error:
            return self._html(PageView(query=view.query, like=view.like, k=view.k, error=error.message), error.status)
        return self._html(view)

    async def page_upload(self, request: Any) -> Any:
        from starlette.concurrency import run_in_threadpool  # noqa: PLC0415

        try:
            data, declared, name, k_field = await read_upload(request, self.limits)
            k = self.limits.parse_k(k_field)
            answer = await run_in_threadpool(self.service.search_upload, data, declared, k)
        except HttpError as error:
            return self._html(PageView(error=error.message), error.status)
        return self._html(self._view(answer, upload_name=name, k=k))

    # -- the JSON API -------------------------------------------------------------------------
    async def api_search(self, request: Any) -> Any:
        from starlette.concurrency import run_in_threadpool  # noqa: PLC0415

        try:
            k = self.limits.parse_k(request.query_params.get("k"))
            answer = await run_in_threadpool(self.service.search_text, request.query_params.get("q"), k)
        except HttpError as error:
            return self._json_error(error)
        return self._json_answer(answer)

    async def api_search_image(self, request: Any) -> Any:
        from starlette.concurrency import run_in_threadpool  # noqa: PLC0415

        try:
            data, declared, _, k_field = await read_upload(request, self.limits)
            k = self.limits.parse_k(request.query_params.get("k") or k_field)
            answer = await run_in_threadpool(self.service.search_upload, data, declared, k)
        except HttpError as error:
            return self._json_error(error)
        return self._json_answer(answer)

    async def image(self, request: Any) -> Any:
        from starlette.concurrency import run_in_threadpool  # noqa: PLC0415
        from starlette.responses import Response  # noqa: PLC0415

        try:
            data, mime = await run_in_threadpool(self.service.item_image, request.path_params["image_id"])
        except HttpError as error:
            return self._json_error(error)
        return Response(data, media_type=mime, headers={"Cache-Control": "public, max-age=3600",
                                                        "X-Content-Type-Options": "nosniff"})

    async def healthz(self, request: Any) -> Any:
        from starlette.responses import JSONResponse  # noqa: PLC0415

        return JSONResponse(self.service.health())


# ---------------------------------------------------------------------------------------------
# Running it
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ServeOptions:
    """What ``beamlens serve`` was asked for (validated by :func:`serve`, via ServerLimits/open_pool)."""

    text_searcher: str | None
    image_searcher: str | None = None
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    searchers_per_file: int = max(1, min(2, os.cpu_count() or 1))
    limits: ServerLimits = field(default_factory=ServerLimits)
    num_threads: int = 1
    access_log: bool = False


def open_service_pools(options: ServeOptions) -> tuple[SearcherPool | None, SearcherPool | None]:
    """Open the searchers once, each ``searchers_per_file`` times (closing everything if one fails)."""
    if not options.text_searcher and not options.image_searcher:
        raise BeamlensError("give --searcher (text -> image), --image-searcher (image -> image) or both")
    text_pool = image_pool = None
    try:
        if options.text_searcher:
            text_pool = open_pool(options.text_searcher, TEXT, options.searchers_per_file, options.limits.max_k,
                                  options.limits.max_image_pixels, options.num_threads)
        if options.image_searcher:
            image_pool = open_pool(options.image_searcher, IMAGE, options.searchers_per_file, options.limits.max_k,
                                   options.limits.max_image_pixels, options.num_threads)
    except BaseException:
        if text_pool is not None:
            text_pool.close()
        raise
    return text_pool, image_pool


def serve(options: ServeOptions, announce: Callable[[str], None] = print) -> None:
    """Open the searchers, read the items, run the app with uvicorn until Ctrl-C, close everything."""
    import uvicorn  # noqa: PLC0415

    if not 0 <= options.port <= 65535:
        raise BeamlensError(f"--port must be between 0 and 65535, got {options.port}")
    check_k(options.limits.max_k)
    text_pool, image_pool = open_service_pools(options)
    try:
        catalog = ImageCatalog.from_searchers([p.path for p in (text_pool, image_pool) if p is not None])
        if catalog.has_remote_uris:
            announce("the index holds remote image uris: loading Beam's filesystems (once, ~10 s)")
            read_uri_warm_up()
        app = create_app(text_pool, image_pool, catalog, options.limits)
        for pool in (text_pool, image_pool):
            if pool is not None:
                announce(f"{pool.modality} searcher {pool.path} ({pool.size} open)")
        announce(f"{len(catalog.uris):,} indexed items with an image; open http://{_url_host(options.host)}:{options.port}/")
        uvicorn.run(app, host=options.host, port=options.port, access_log=options.access_log, log_level="info")
    finally:
        for pool in (text_pool, image_pool):
            if pool is not None:
                pool.close()


def read_uri_warm_up() -> None:
    """Import Beam's filesystems now, so that the first remote image does not wait for it."""
    files.warm_up()


def _url_host(host: str) -> str:
    if host in ("0.0.0.0", "::", ""):
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host
