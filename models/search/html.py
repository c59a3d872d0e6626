"""Self-contained HTML pages: search results as an image grid, and the evaluation report.

A page is one file a user can open or mail: thumbnails are embedded as small base64 JPEGs when
the image is readable on this machine; otherwise the result links to its URI (a ``gs://`` or
``http`` image, or a file on another machine), so a page is still useful without the corpus.
No TensorFlow and no Task Library here: pages are built from plain result dataclasses.
"""

from __future__ import annotations

import base64
import html
import io
import os
from typing import Any, Iterable, Sequence


from beamlens.models.io import files
from beamlens.models.encoders.preprocessing import ImageDecodeError, decode_image
from beamlens.models.search.results import SearchHit, SearchResults

THUMBNAIL_SIZE = 160

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }
h1 { font-size: 1.4em; } h2 { font-size: 1.15em; margin-top: 1.6em; }
.query { font-size: 1.2em; padding: .6em .8em; background: #f1f4f8; border-radius: 6px; }
.grid { display: flex; flex-wrap: wrap; gap: 12px; margin: .8em 0; }
.hit { width: 170px; font-size: .8em; word-wrap: break-word; }
.hit img { width: 160px; height: 160px; object-fit: contain; background: #eee; display: block; }
.hit .missing { width: 160px; height: 160px; background: #eee; display: flex; align-items: center;
  justify-content: center; color: #777; text-align: center; }
.hit.expected { outline: 3px solid #2a9d4b; }
table { border-collapse: collapse; margin: .5em 0; } td, th { border: 1px solid #ccc; padding: 3px 8px; }
th { background: #f1f4f8; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
.note { color: #666; font-size: .9em; }
"""


def resolve_local_image(uri: str, image_dirs: Sequence[str] = ()) -> str | None:
    """Find a readable local file for an item's URI, trying the given image folders as well.

    Shards keep the URI the pipeline read (maybe a path on a Dataflow worker or a bucket); the
    user can point at a local copy of the images with ``--images``.
    """
    candidates: list[str] = []
    if uri:
        plain = uri[len("file://"):] if uri.startswith("file://") else uri
        if not files.is_remote(plain):
            candidates.append(plain)
        for folder in image_dirs:
            candidates.append(os.path.join(folder, plain.lstrip("/")))
            candidates.append(os.path.join(folder, os.path.basename(plain)))
    for candidate in candidates:
        if os.path.isfile(candidate) and os.access(candidate, os.R_OK):
            return candidate
    return None


def thumbnail_data_uri(path: str, size: int = THUMBNAIL_SIZE) -> str | None:
    """A small JPEG of the image as a data URI, or None when the file is not a readable image.

    Decoded by the pipeline's guarded decoder (pixel budget, every decoder error caught): a page
    about a hostile query image shows no thumbnail instead of failing."""
    try:
        with open(path, "rb") as stream:
            image = decode_image(stream.read())
    except (OSError, ImageDecodeError):
        return None
    image.thumbnail((size, size))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=80)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def png_data_uri(png_bytes: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png_bytes).decode("ascii")


def _image_tile(uri: str, image_dirs: Sequence[str], alt: str) -> str:
    local = resolve_local_image(uri, image_dirs)
    data_uri = thumbnail_data_uri(local) if local else None
    if data_uri:
        return f'<img src="{data_uri}" alt="{html.escape(alt)}">'
    if uri:
        href = uri if "://" in uri else "file://" + os.path.abspath(uri)  # a link, not a read: file:// stays
        return f'<a class="missing" href="{html.escape(href)}">not readable here<br>open {html.escape(os.path.basename(uri))}</a>'
    return '<div class="missing">no image URI</div>'


def hit_tile(hit: SearchHit, image_dirs: Sequence[str] = (), expected_id: str | None = None) -> str:
    """One result: image, rank, distance, id, URI and the first caption."""
    css = "hit expected" if expected_id is not None and hit.image_id == expected_id else "hit"
    caption = f"<br><i>{html.escape(hit.captions[0])}</i>" if hit.captions else ""
    uri = f"<br><span class=note>{html.escape(hit.uri)}</span>" if hit.uri else ""
    return (
        f'<div class="{css}" data-image-id="{html.escape(hit.image_id)}">'
        f"{_image_tile(hit.uri, image_dirs, hit.image_id)}"
        f"<b>#{hit.rank}</b> {hit.distance:.4f}<br>id {html.escape(hit.image_id)}{uri}{caption}</div>"
    )


def results_grid(results: SearchResults, image_dirs: Sequence[str] = (), expected_id: str | None = None) -> str:
    tiles = "\n".join(hit_tile(hit, image_dirs, expected_id) for hit in results.hits)
    if not tiles:
        tiles = '<p class="note">no results</p>'
    return f'<div class="grid">\n{tiles}\n</div>'


def _page(title: str, body: str) -> str:
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head>\n<body>\n{body}\n</body></html>\n"
    )


def render_search_page(
    results: SearchResults,
    searcher_path: str,
    image_dirs: Sequence[str] = (),
    query_image: str | None = None,
) -> str:
    """The ``beamlens search --html`` page: the query on top, the results as a grid."""
    if query_image:
        data_uri = thumbnail_data_uri(query_image)
        shown = f'<img src="{data_uri}" alt="query image"> ' if data_uri else ""
        query = f'<div class="query">{shown}{html.escape(query_image)}</div>'
    else:
        query = f'<div class="query">{html.escape(results.query)}</div>'
    body = (
        f"<h1>beamlens search</h1>\n{query}\n"
        f'<p class="note">{len(results.hits)} results of {results.requested_k} requested from '
        f"{html.escape(searcher_path)} ({results.modality} searcher, Task Library search "
        f"{results.latency_ms:.2f} ms). Distance: smaller is closer.</p>\n"
        f"{results_grid(results, image_dirs)}"
    )
    return _page(f"beamlens search: {results.query}", body)


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f'<td class="num">{value:.4f}</td>'
    if isinstance(value, int):
        return f'<td class="num">{value}</td>'
    return f"<td>{html.escape('' if value is None else str(value))}</td>"


def table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "\n".join("<tr>" + "".join(_cell(v) for v in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>\n{body}\n</table>"


def render_evaluation_report(
    report: dict[str, Any],
    plot_png: bytes | None,
    examples: Sequence[tuple[str, str, SearchResults]],
    image_dirs: Sequence[str] = (),
) -> str:
    """The ``beamlens evaluate`` report: numbers, the leaves sweep plot, example queries.

    ``examples`` are (caption, expected image id, results); the expected image is outlined.
    """
    ks = report["ks"]
    acc_ann = report["top_k_accuracy"]["searcher"]
    acc_exact = report["top_k_accuracy"]["exact"]
    recall = report["ann_recall"]
    short = report.get("short_result_lists", {})
    rows = [
        (
            f"k = {k}",
            acc_ann[str(k)],
            acc_exact[str(k)],
            acc_exact[str(k)] - acc_ann[str(k)],
            recall[str(k)],
            short.get(str(k), 0),
        )
        for k in ks
    ]
    lat = report["latency_ms"]
    size = report["size_bytes"]
    parts = [
        "<h1>beamlens searcher evaluation</h1>",
        f'<p>Searcher <code>{html.escape(report["searcher"])}</code>, {report["num_items"]} indexed items, '
        f'{report["num_queries"]} caption queries (of {report["num_captions"]} held-out captions), '
        f'distance {html.escape(report["distance"])}, {report.get("num_leaves", "?")} leaves, '
        f'{report.get("leaves_to_search", "?")} searched.</p>',
        "<h2>Top-k accuracy (a caption hits when its own image is in the top k)</h2>",
        table(
            ["k", "searcher (Task Library)", "exact (numpy)", "loss from ANN", "ANN recall@k vs exact", "queries with < k results"],
            rows,
        ),
        '<p class="note">The on-device index returns at most the points in the leaves it searches; a '
        "query with fewer than k results counts its missing ranks as misses.</p>",
        "<h2>Latency and size</h2>",
        table(
            ["TextSearcher.search, 1 thread", "p50 ms", "p95 ms", "p99 ms", "mean ms"],
            [
                (f"max_results = {k}", v["p50"], v["p95"], v["p99"], v["mean"])
                for k, v in sorted(report.get("latency_ms_by_k", {report["max_results"]: lat}).items(), key=lambda kv: int(kv[0]))
            ] + [("TextEmbedder alone (the encoder's share)", v["p50"], v["p95"], v["p99"], v["mean"])
                 for v in [report["text_embedder_latency_ms"]] if "text_embedder_latency_ms" in report],
        ),
        table(
            ["file", "bytes", "MB"],
            [(name, int(value), value / 1e6) for name, value in size.items() if value is not None],
        ),
    ]
    sweep = report.get("leaves_sweep") or []
    if sweep:
        parts.append("<h2>Leaves searched: recall versus latency</h2>")
        if plot_png:
            parts.append(f'<img src="{png_data_uri(plot_png)}" alt="recall versus latency" style="max-width:720px">')
        parts.append(
            table(
                ["leaves searched", "recall@10 vs exact", "top-10 accuracy", "p50 ms", "p95 ms"],
                [(s["leaves_to_search"], s["recall_at_10"], s["top_10_accuracy"], s["p50_ms"], s["p95_ms"]) for s in sweep],
            )
        )
    for note in report.get("notes", []):
        parts.append(f'<p class="note">{html.escape(note)}</p>')
    if examples:
        parts.append("<h2>Example queries</h2>")
        for caption, expected, results in examples:
            found = expected in results.image_ids
            verdict = f"own image found at rank {results.image_ids.index(expected) + 1}" if found else "own image not in the results"
            parts.append(
                f'<div class="query">{html.escape(caption)}</div>'
                f'<p class="note">expected image {html.escape(expected)}: {verdict}</p>'
            )
            parts.append(results_grid(results, image_dirs, expected_id=expected))
    return _page("beamlens searcher evaluation", "\n".join(parts))
