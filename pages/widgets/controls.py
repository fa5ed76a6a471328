"""Small controls the pages share: a pager, a select whose labels carry counts, a light image grid.

(They would sit in ``pages/ui.py``; they live here because that file belongs to the page plumbing.)

* :func:`pager` cuts a long list into pages with previous / next buttons, so a page never draws
  thousands of thumbnails (a 1,000-class workspace has that many in one gallery).
* :func:`counted_select` is ``st.selectbox`` over stable ids whose labels may change between
  runs (``"cat ↔ dog (45 weakspots)"`` after a slider move): the browser keeps the label of the
  selected option as it was when the user picked it, so a changed label is sent again.
* :func:`change` gives ``st.metric`` a delta coloured by better (green) / worse (red), and grey
  without an arrow when the change shown is zero (Streamlit paints "+0.00%" green).
* :func:`image_grid` draws a whole gallery as ONE ``st.html`` element (thumbnails inlined) whose
  captions link each image to the sample view (in a new tab): the browser's cost of a page grows
  with its number of elements, and :func:`pages.ui.thumbnails` spends a column, an image and a
  page link on every thumbnail (measured at 1,000 classes: a 64-thumbnail page went from ~3,300
  DOM nodes to ~1,300). ``thumbnails`` (a page link per image, opening in the same tab, where
  Streamlit's own navigation keeps the session) still draws the Sample page's neighbours, its
  search results, and the short galleries of the BIR, Neurons and Repair pages.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence
from urllib.parse import urlencode

import numpy as np
import streamlit as st

from pages import ui


def _step(key: str, delta: int, pages: int) -> None:
    st.session_state[key] = int(min(max(st.session_state.get(key, 1) + delta, 1), pages))


def pager(n: int, *, key: str, page_size: int, noun: str = "images", reset_on: object = None,
          container=None) -> slice:
    """Previous / next buttons and a page number over ``n`` items; returns the shown slice.

    Args:
        n: how many items there are.
        key: widget-key prefix (unique per page and gallery).
        page_size: items per page.
        noun: what the items are, for the caption.
        reset_on: any value; when it changes (another pair, other filters) the pager goes back
            to page 1.
        container: where to draw (default: the main area).

    Returns:
        ``slice(start, stop)`` of the items on the current page.
    """
    where = container or st
    page_size = max(int(page_size), 1)
    pages = max(1, math.ceil(n / page_size))
    page_key, seen_key = f"{key}_page", f"_{key}_reset_on"
    marker = repr(reset_on)
    if st.session_state.get(seen_key) != marker:
        st.session_state[seen_key] = marker
        st.session_state[page_key] = 1
    current = int(min(max(st.session_state.get(page_key, 1), 1), pages))
    st.session_state[page_key] = current
    if pages > 1:
        # icon buttons stay whole in a half-width column (a gallery beside another)
        c1, c2, c3, c4 = where.columns([1, 1, 2, 4], vertical_alignment="center")
        c1.button("◀", key=f"{key}_prev", help="Previous page", disabled=current <= 1, on_click=_step,
                  args=(page_key, -1, pages), width="stretch")
        c2.button("▶", key=f"{key}_next", help="Next page", disabled=current >= pages, on_click=_step,
                  args=(page_key, 1, pages), width="stretch")
        c3.number_input("Page", 1, pages, key=page_key, label_visibility="collapsed")
        start = (current - 1) * page_size
        c4.caption(f"{noun.capitalize()} {start + 1:,}–{min(start + page_size, n):,} of {n:,} "
                   f"(page {current:,} of {pages:,})")
    current = int(st.session_state[page_key])
    start = (current - 1) * page_size
    return slice(start, min(start + page_size, n))


def counted_select(container, label: str, ids: Sequence, format_func: Callable[[object], str], *, key: str,
                   help: str | None = None):
    """A selectbox over stable ``ids`` whose shown label follows ``format_func`` on every run.

    Streamlit keeps a selected option by identity (the id) but the browser shows the label it
    was given when the user chose it; when that label changes (a count that follows a slider),
    the selection is sent again so the browser shows the new label. An id that disappeared
    falls back to the first.

    Returns:
        The selected id, or None when ``ids`` is empty.
    """
    ids = list(ids)
    if not ids:
        return None
    shown_key = f"_{key}_label"
    current = st.session_state.get(key)
    if current not in ids:
        current = ids[0]
        st.session_state[key] = current
    elif st.session_state.get(shown_key) not in (None, format_func(current)):
        st.session_state[key] = current  # a value set from the script is sent to the browser with its new label
    value = container.selectbox(label, ids, format_func=format_func, key=key, help=help)
    st.session_state[shown_key] = format_func(value)
    return value


def sample_url(ws, split: str, index: int) -> str:
    """The sample view's address for one image, relative to the app's pages (keeps workspace,
    version and target)."""
    return "sample?" + urlencode(ui.sample_params(ws, split, int(index)))


def _load(ws, split: str, index: int) -> np.ndarray | None:
    try:
        return np.asarray(ws.split(split).load(int(index)).convert("RGB"))
    except Exception:  # noqa: BLE001 - a broken image is shown as such, the gallery goes on
        return None


#: a gallery cell: the thumbnail, then its linked reference and caption lines (the look of
#: ``st.image`` captions)
_CELL = ('<figure style="display:inline-block;vertical-align:top;width:{width}px;margin:0 0.5rem 0.75rem 0">'
         '<img src="{src}" alt="{ref}" style="width:{width}px;height:auto;display:block">'
         '<figcaption style="font-size:0.875rem;line-height:1.35;color:rgba(49,51,63,0.6);'
         'overflow-wrap:anywhere;margin-top:0.25rem">{caption}</figcaption></figure>')


def thumbnail_uri(image: np.ndarray, width: int) -> str:
    """(H, W, 3) uint8 -> a ``data:`` URI of the image at most ``width`` wide (as ``st.image``
    resizes): PNG for small images (a 32 x 32 CIFAR image stays exact, ~2 KB), JPEG (quality 90)
    for photos larger than 128 x 128 (a PNG thumbnail of a photo is ~4x the bytes, and a gallery's
    thumbnails travel with every rerun of it)."""
    import base64
    import io

    from PIL import Image

    img = Image.fromarray(np.asarray(image, dtype=np.uint8))
    photo = img.width * img.height > 128 * 128
    if img.width > width:
        img = img.resize((width, max(1, round(img.height * width / img.width))), Image.BILINEAR)
    buf = io.BytesIO()
    img.save(buf, format="JPEG" if photo else "PNG", **({"quality": 90} if photo else {}))
    return f"data:image/{'jpeg' if photo else 'png'};base64,{base64.b64encode(buf.getvalue()).decode()}"


def caption_html(text: str) -> str:
    """A gallery caption's markdown subset as HTML: escaped, ``**bold**`` and ``"  \\n"`` line breaks."""
    import html
    import re

    out = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", html.escape(text, quote=False))
    return out.replace("  \n", "<br>").replace("\n", "<br>")


def image_grid(ws, items, *, width: int = 96, link: bool = True) -> None:
    """A gallery in one element: ``items`` = ``(split, index, caption or None)``; each caption
    starts with ``split:index``, linked to the sample view (opens in a new tab).

    One ``st.html`` element with the thumbnails inlined as ``data:`` URIs: as one ``st.image``
    element of many images, the browser then fetched every thumbnail from the server one request
    after another once the page had arrived (28 of them added ~0.3 s to the Weakspots page at
    1,000 classes, measured with the browser's resource timings).
    """
    import html

    items = list(items)
    if not items:
        st.caption("No images.")
        return
    cells = []
    for split, index, caption in items:
        img = _load(ws, split, index)
        ref = f"{split}:{int(index)}"
        head = (f'<a href="{html.escape(sample_url(ws, split, index))}" target="_blank">{ref}</a>' if link
                else ref)
        if img is None:
            img = np.full((8, 8, 3), 200, dtype=np.uint8)
            caption = "cannot load"
        cells.append(_CELL.format(width=int(width), src=thumbnail_uri(img, int(width)), ref=ref,
                                  caption=head + (f"<br>{caption_html(caption)}" if caption else "")))
    st.html(f'<div class="gf-gallery">{"".join(cells)}</div>')


def change(delta: float, fmt: str, *, lower_is_better: bool = False) -> dict:
    """``st.metric`` keyword arguments for a change: green when better, red when worse, grey and
    without an arrow when it rounds to zero at ``fmt`` (e.g. ``"+.2%"``, ``"+.4f"``)."""
    text = format(float(delta), fmt)
    if float(text.rstrip("%")) == 0.0:
        return {"delta": text, "delta_color": "off", "delta_arrow": "off"}
    return {"delta": text, "delta_color": "inverse" if lower_is_better else "normal"}
