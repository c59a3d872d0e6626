"""The page: server-rendered HTML forms, no JavaScript, nothing fetched from outside."""

from __future__ import annotations

import html
import os
import urllib.parse
from dataclasses import dataclass

from beamlens.models.search.html import _page as html_page  # the shared page shell and style of the HTML reports
from beamlens.models.search.results import SearchHit, SearchResults
from beamlens.models.search.server.catalog import ImageCatalog, image_url
from beamlens.models.search.server.limits import ACCEPTED_TYPES, DEFAULT_K, ServerLimits, UPLOAD_FIELD


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
