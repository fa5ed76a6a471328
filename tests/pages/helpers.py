"""Reading and seeding the per-workspace page state in AppTests."""

from pages import ui


def ws_state(at, spec: str | None = None) -> dict:
    """The per-workspace state of ``spec`` (or of the only workspace seen so far)."""
    store = at.session_state[ui.PER_WORKSPACE]
    if spec is None:
        assert len(store) == 1, list(store)
        return next(iter(store.values()))
    return store[spec]


def seeded(spec: str, *, target: dict | None = None, source: str | None = None, rho: float | None = None) -> dict:
    """Session state that gives workspace ``spec`` a repair target (and/or a what-if rho)."""
    state = {}
    if target is not None:
        state[ui.TARGET] = target
        state[ui.TARGET_SOURCE] = source
    if rho is not None:
        state[ui.WOS_RHO] = rho
    return {ui.PER_WORKSPACE: {spec: state}}


def _cell_caption(cell: str) -> str:
    """One gallery cell's caption in markdown (``[split:index](url)  \\ntext``), read back from
    its HTML: the link, then its lines (``<b>`` as ``**``)."""
    import html
    import re

    caption = re.search(r"<figcaption[^>]*>(.*)</figcaption>", cell, re.S).group(1)
    link = re.match(r'<a href="([^"]*)" target="_blank">([^<]*)</a>', caption)
    if link:
        head, rest = f"[{link.group(2)}]({html.unescape(link.group(1))})", caption[link.end():]
    else:
        head, _, rest = caption.partition("<br>")
    rest = re.sub(r"</?b>", "**", rest.removeprefix("<br>")).replace("<br>", "  \n")
    return head + (f"  \n{html.unescape(rest)}" if rest else "")


def galleries(at) -> list[list[str]]:
    """Each gallery element's captions (:func:`pages.widgets.controls.image_grid` draws a gallery
    as one HTML element; other images are ``st.image`` elements)."""
    found = []
    for el in at.get("html"):
        if 'class="gf-gallery"' in el.value:
            found.append([_cell_caption(c) for c in el.value.split("<figure")[1:]])
    return found + [list(img.captions) for img in at.get("image")]


def thumbnails(at) -> list[str]:
    """The caption of every image the page shows (a gallery may be one element of many images)."""
    return [c for gallery in galleries(at) for c in gallery]


def image_count(at) -> int:
    html_cells = sum(el.value.count("<figure") for el in at.get("html") if 'class="gf-gallery"' in el.value)
    return html_cells + sum(len(img.value) for img in at.get("image"))


def caption_ref(caption: str) -> str:
    """``split:index`` of a gallery caption (it starts with that reference, linked to the sample view)."""
    return caption.split("]")[0].lstrip("[")


def caption_text(caption: str) -> str:
    """A gallery caption without its leading reference line."""
    return caption.split("  \n", 1)[1] if "  \n" in caption else ""


def caption_links(at) -> list[dict]:
    """The sample-view link of every gallery caption, as its query parameters."""
    from urllib.parse import parse_qs

    found = []
    for caption in thumbnails(at):
        if "](sample?" in caption:
            query = caption.split("](sample?", 1)[1].split(")", 1)[0]
            found.append({k: v[0] for k, v in parse_qs(query).items()})
    return found
