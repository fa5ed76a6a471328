"""Shared page plumbing: the current workspace, per-workspace state, the URL, progress bars, galleries.

Pages import from here; nothing here does maths. Workspaces are cached with
``st.cache_resource`` (shared, never mutated); inference outputs come from the workspace's
artifact store, and a missing entry is built once with a progress bar that shows an ETA.

State that belongs to a workspace (its repair target, the rho picked on What-if) is kept per
workspace (:func:`ws_state`), so opening another workspace never carries a target over. The
workspace, the model version and the target are mirrored in the URL (``?workspace=...&version=
...&target=...``), so a reload or a shared link opens the same view. The sample view adds the
sample (``&split=eval&index=123``); every gallery links its images there (:func:`thumbnails`).
"""

from __future__ import annotations

import sys
import time

import numpy as np
import streamlit as st

from workspace.core import ORIG, Workspace, open_workspace, remember_workspace
from workspace.errors import Cancelled, WorkspaceError
from workspace.jobs import EtaClock, format_seconds
from workspace.targets import Target

# ---- session-state keys (the only place they are spelled out) ------------------------
WORKSPACE = "workspace_spec"
VERSION = "model_version"
PER_WORKSPACE = "_per_workspace"     # {spec: {"target": {...}, "target_source": str, "wos_rho": float}}
TARGET, TARGET_SOURCE, WOS_RHO = "target", "target_source", "wos_rho"   # keys inside ws_state()
PENDING_TARGET = "_pending_target"   # a target waiting for "replace?" confirmation

# ---- URL query parameters --------------------------------------------------------------
SAMPLE_PAGE = "pages/sample.py"
SPLIT_PARAM, INDEX_PARAM = "split", "index"   # the sample view's sample: ?split=eval&index=123


_FROZEN = False


def freeze_startup_objects() -> None:
    """Once per server process, after its first run: move every object then alive (the imported
    libraries and the opened workspace, ~440,000 of them) out of the garbage collector's reach.

    Streamlit collects all generations after every rerun (``runner.postScriptGC``, kept on: each
    rerun leaves ~1,000 objects in reference cycles, plotly figures among them). Traversing the
    startup objects made that collection 0.19-0.24 s of every interaction on the demo, the
    ResNet-56 and a 1,000-class workspace (py-spy on the server); frozen, it takes ~1 ms and still
    frees each rerun's cycles. The cost: cycles among the frozen objects are never collected.
    """
    global _FROZEN
    if not _FROZEN:
        import gc

        gc.collect()
        gc.freeze()
        _FROZEN = True


def default_workspace() -> str:
    """``--workspace`` after ``--`` on the streamlit command line, else the demo."""
    args = sys.argv[1:]
    if "--workspace" in args and args.index("--workspace") + 1 < len(args):
        return args[args.index("--workspace") + 1]
    return "demo"


@st.cache_resource(show_spinner=False, max_entries=4)
def _load_workspace(spec: str, generation: int) -> Workspace:
    # "Reload workspace" bumps the generation: list every data folder again (no listing cache)
    return open_workspace(spec, recheck=generation > 0)


def _generation() -> int:
    return st.session_state.get("_ws_generation", 0)


def reload_workspace() -> None:
    """Forget the cached workspace so the next access reads the file and data again."""
    st.session_state["_ws_generation"] = _generation() + 1


def current_spec() -> str:
    if WORKSPACE not in st.session_state:
        st.session_state[WORKSPACE] = st.query_params.get("workspace", default_workspace())
    return st.session_state[WORKSPACE]


def _leave_legacy_multipage_mode() -> None:
    """Route a page URL opened directly through app.py.

    Streamlit treats a ``pages/`` folder next to the entry point as a legacy multipage app
    until the first ``st.navigation`` call in the process: a fresh server whose first
    request is ``/weakspots`` would run that file without app.py (no sidebar, no picker).
    Switch the process to ``st.navigation`` mode and rerun, which goes through app.py.
    """
    try:
        from streamlit.runtime import Runtime
        from streamlit.runtime.pages_manager import PagesManager
    except ImportError:  # a Streamlit without these internals: nothing to fix
        return
    if not Runtime.exists() or type(Runtime.instance()) is not Runtime:
        return  # AppTest (a mock runtime) runs switched-to pages directly by design
    if getattr(PagesManager, "uses_pages_directory", False):
        PagesManager.uses_pages_directory = False
        st.rerun()


def workspace_error(spec: str, exc: Exception) -> None:
    """The main-area message for a workspace that does not open, with what to do."""
    st.error(f"**Cannot open workspace `{spec}`**\n\n{exc}")
    st.info("What to do: fix the workspace file or the files it names (the message says which), then press "
            "**Reload workspace** in the sidebar, or pick the built-in demo there. The command "
            f"`python -m workspace info --workspace {spec}` prints the same check.")


def workspace() -> Workspace:
    """The open workspace; on bad input shows the reason in the main area and stops the page."""
    _leave_legacy_multipage_mode()
    spec = current_spec()
    try:
        with st.spinner(f"Opening {spec} (the first time builds the demo data)…"):
            ws = _load_workspace(spec, _generation())
    except WorkspaceError as exc:
        workspace_error(spec, exc)
        if st.sidebar.button("Reload workspace", key="ws_reload_failed", help="Read the workspace file again"):
            reload_workspace()
            st.rerun()
        st.stop()
    remember_workspace(spec)
    _sync_url(ws)
    return ws


def url_params(ws: Workspace) -> dict[str, str]:
    """The URL parameters that reopen this view: workspace, model version and, if set, the target."""
    params = {"workspace": ws.spec if ws.spec in ("demo",) or ws.spec.startswith("demo-digits") else current_spec(),
              "version": current_version(ws)}
    target = get_target(ws)
    if target is not None:
        params["target"] = target.text
    return params


def _sync_url(ws: Workspace) -> None:
    params = url_params(ws)
    for key, value in params.items():
        if st.query_params.get(key) != value:
            st.query_params[key] = value
    if "target" not in params and "target" in st.query_params:
        del st.query_params["target"]


def current_version(ws: Workspace) -> str:
    """The model version picked in the sidebar (or in the URL); "orig" if none or unknown."""
    version = st.session_state.get(VERSION) or st.query_params.get("version", ORIG)
    return version if version in {v["id"] for v in ws.versions()} else ORIG


# ---- per-workspace state and the repair target -------------------------------------------------
def ws_state(ws: Workspace) -> dict:
    """The session's state for this workspace (created on first use; the URL's target seeds it)."""
    store = st.session_state.setdefault(PER_WORKSPACE, {})
    if ws.spec not in store:
        store[ws.spec] = {}
        text = st.query_params.get("target")
        if text:
            try:
                store[ws.spec][TARGET] = Target.parse(text, ws.class_names).to_dict()
                store[ws.spec][TARGET_SOURCE] = "link"
            except ValueError:
                pass  # a link for another workspace: ignore its target
    return store[ws.spec]


def get_target(ws: Workspace) -> Target | None:
    return Target.from_dict(ws_state(ws).get(TARGET), ws.class_names)


def target_source(ws: Workspace) -> str | None:
    return ws_state(ws).get(TARGET_SOURCE)


def set_target(ws: Workspace, target: Target, source: str) -> None:
    state = ws_state(ws)
    state[TARGET], state[TARGET_SOURCE] = target.to_dict(), source
    st.session_state.pop(PENDING_TARGET, None)
    st.query_params["target"] = target.text


def offer_target(ws: Workspace, target: Target, *, key: str, source: str, label: str | None = None) -> None:
    """A "use as repair target" button; replacing a different current target asks first."""
    current = get_target(ws)
    text = label or f"Use {target.label} as repair target"
    if current is not None and current.groups == target.groups:
        st.caption(f"✓ {target.label} is the current repair target.")
    elif st.button(text, key=key, type="primary"):
        if current is None:
            set_target(ws, target, source)
            st.rerun()
        else:
            st.session_state[PENDING_TARGET] = {"key": key, "target": target.to_dict(), "source": source}
    pending = st.session_state.get(PENDING_TARGET)
    if pending and pending["key"] == key and current is not None:
        st.warning(f"Replace the current target **{current.label}** (from the {target_source(ws) or '?'}) "
                   f"with **{target.label}**?")
        c1, c2 = st.columns(2)
        if c1.button("Replace", key=f"{key}_confirm", type="primary"):
            set_target(ws, Target.from_dict(pending["target"], ws.class_names), pending["source"])
            st.rerun()
        if c2.button("Keep the current target", key=f"{key}_keep"):
            st.session_state.pop(PENDING_TARGET, None)
            st.rerun()


def target_links(ws: Workspace) -> None:
    """Where the current target can be used next."""
    target = get_target(ws)
    if target is None:
        return
    st.caption(f"Current repair target ({target.kind}): **{target.label}** — from the "
               f"{target_source(ws) or '?'}. Try it post hoc on What-if, or fine-tune on Repair.")
    c1, c2 = st.columns(2)
    c1.page_link("pages/wos.py", label="What-if (w-os) with this target", icon=":material/tune:")
    c2.page_link("pages/repair.py", label="Repair with this target", icon=":material/build:")


# ---- progress with an ETA ---------------------------------------------------------------------
class ProgressBar:
    """``st.progress`` driven by ``progress(done, total)`` callbacks, with elapsed time and an ETA.

    Use as a context manager; the bar disappears when the block ends. ``cancel_key`` adds a
    Cancel button (checked between updates, it raises :class:`Cancelled`).
    """

    def __init__(self, text: str):
        self.text = text
        self.bar = st.progress(0.0, text=f"{text}…")
        self.clock = EtaClock()
        self.last = 0.0

    def __call__(self, done: int, total: int) -> None:
        eta = self.clock.update(done, total)
        now = time.monotonic()
        if now - self.last < 0.25 and done < total:
            return
        self.last = now
        self.bar.progress(min(done / max(total, 1), 1.0),
                          text=f"{self.text}: {done:,}/{total:,} · elapsed {format_seconds(self.clock.elapsed)}"
                               f" · ETA {format_seconds(eta)}")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.bar.empty()
        return False


@st.cache_resource(show_spinner=False, max_entries=16)
def _outputs_memo(spec: str, generation: int, split: str, version: str, key: str):
    return {}  # a per-key box filled by outputs(); cache_resource keeps it across reruns


def outputs(ws: Workspace, split: str = "eval", version: str | None = None):
    """Cached inference outputs; builds them with a progress bar (and ETA) when missing."""
    version = version or current_version(ws)
    try:
        key = ws.outputs_key(split, version)
        box = _outputs_memo(ws.spec, _generation(), split, version, key)
        if "outputs" not in box:
            found = ws.cached_outputs(split, version)
            if found is None:
                with ProgressBar(f"Running model {version} on the {split} split") as bar:
                    found = ws.outputs(split, version, progress=bar)
            box["outputs"] = found
        out = box["outputs"]
    except (WorkspaceError, Cancelled) as exc:
        st.error(f"Cannot compute outputs of {version} on {split}: {exc}")
        st.stop()
    if out.skipped:
        st.warning(f"{len(out.skipped)} {split} images could not be loaded and are left out "
                   f"(first: {out.skipped[0]['id']}: {out.skipped[0]['error']}).")
    return out


def empty_chart(message: str) -> None:
    """What a chart without data shows instead of empty axes."""
    st.info(message)


# ---- samples and galleries -------------------------------------------------------------------
def sample_params(ws: Workspace, split: str, index: int) -> dict[str, str]:
    """The URL parameters of the sample view for one image (with the workspace, version, target)."""
    return {**url_params(ws), SPLIT_PARAM: split, INDEX_PARAM: str(int(index))}


def current_sample(ws: Workspace) -> tuple[str, int]:
    """The sample of the sample view, from the URL (``?split=...&index=...``); eval:0 when none is given.

    A bad reference (unknown split, an index outside the split) is reported and replaced by eval:0.
    """
    from diagnostics.samples import parse_sample

    sizes = {s: len(ws.split(s)) for s in ("eval", "train")}
    given = st.query_params.get(INDEX_PARAM)
    try:
        split, index = parse_sample(st.query_params.get(SPLIT_PARAM), 0 if given is None else given, sizes)
    except ValueError as exc:
        st.error(f"Cannot show that sample: {exc}. Showing eval:0 instead.")
        split, index = "eval", 0
    st.query_params[SPLIT_PARAM], st.query_params[INDEX_PARAM] = split, str(index)
    return split, index


def sample_link(ws: Workspace, split: str, index: int, *, label: str | None = None, help: str | None = None) -> None:
    """A link to the sample view of one image (keeps the workspace, version and target)."""
    st.page_link(SAMPLE_PAGE, label=label or f"open {split}:{int(index)}", icon=":material/open_in_new:",
                 query_params=sample_params(ws, split, index), help=help or "Open this image in the sample view")


def sample_grid(ws: Workspace, items, *, columns: int = 8, width: int = 96, link: bool = True) -> None:
    """A grid of images from any splits: ``items`` = ``(split, index, caption or None)`` triples,
    each image with a link to the sample view (unless ``link`` is False)."""
    items = list(items)
    if not items:
        st.caption("No images.")
        return
    cols = st.columns(columns)
    for j, (split, index, caption) in enumerate(items):
        with cols[j % columns]:
            try:
                img = ws.split(split).load(int(index))
            except Exception as exc:  # noqa: BLE001 - show the broken image, do not die
                st.caption(f"{split}:{index}: cannot load ({type(exc).__name__})")
                continue
            st.image(np.asarray(img), width=width, caption=caption)
            if link:
                sample_link(ws, split, int(index), label=f"#{int(index)}")


def thumbnails(ws: Workspace, split: str, indices, captions=None, *, columns: int = 8, width: int = 96,
               link: bool = True):
    """A grid of images from a split with optional captions, each linked to the sample view."""
    indices = list(indices)
    sample_grid(ws, [(split, int(i), None if captions is None else captions[j]) for j, i in enumerate(indices)],
                columns=columns, width=width, link=link)
