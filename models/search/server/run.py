"""Running the app: open the searcher files and serve them with uvicorn (``beamlens serve``)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Callable

from beamlens.models.io import files
from beamlens.models.errors import BeamlensError
from beamlens.models.search.runtime import IMAGE, TEXT, check_k
from beamlens.models.search.server.app import create_app
from beamlens.models.search.server.catalog import ImageCatalog
from beamlens.models.search.server.limits import DEFAULT_HOST, DEFAULT_PORT, ServerLimits
from beamlens.models.search.server.pool import SearcherPool, open_pool


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
