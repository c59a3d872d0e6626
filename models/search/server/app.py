"""The app: routes of the page and of the JSON API over a :class:`SearchService`."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from beamlens.models.errors import BeamlensError
from beamlens.models.search.runtime import IMAGE, TEXT, Searcher
from beamlens.models.search.results import SearchResults
from beamlens.models.search.server.catalog import ImageCatalog, read_uri
from beamlens.models.search.server.limits import HttpError, MULTIPART_OVERHEAD_BYTES, ServerLimits, UPLOAD_FIELD, sniff_image_type
from beamlens.models.search.server.page import PageView, render_page
from beamlens.models.search.server.pool import SearcherPool


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
