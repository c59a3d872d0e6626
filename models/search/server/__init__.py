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
    Uris are read through the filesystem facade (models/io/files.py): local ones (plain paths, ``file://``) with ``open``, other schemes (``gs://``,
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

from beamlens.models.search.server.app import *  # noqa: F401,F403 (the package's face: one namespace)
from beamlens.models.search.server.catalog import *  # noqa: F401,F403
from beamlens.models.search.server.limits import *  # noqa: F401,F403
from beamlens.models.search.server.page import *  # noqa: F401,F403
from beamlens.models.search.server.pool import *  # noqa: F401,F403
from beamlens.models.search.server.run import *  # noqa: F401,F403
