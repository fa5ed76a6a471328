"""Shared page plumbing: session-state keys, the current workspace, cached outputs, galleries.

Pages import from here; nothing here does maths. Models and workspaces are cached with
``st.cache_resource`` (shared, never mutated); inference outputs come from the on-disk
cache, and a missing entry is built once with a progress bar.
"""

from __future__ import annotations

import sys

import numpy as np
import streamlit as st

from workspace.core import ORIG, Workspace, open_workspace, remember_workspace
from workspace.errors import WorkspaceError

# ---- session-state keys (the only place they are spelled out) ------------------------
WORKSPACE = "workspace_spec"
VERSION = "model_version"
TARGETS = "repair_targets"          # {"kind": "confusion"|"bias", "targets": [[a, b], ...] | [[p, n, c]]}
TARGETS_SOURCE = "repair_targets_source"
WOS_RHO = "wos_rho"


def default_workspace() -> str:
    """``--workspace`` after ``--`` on the streamlit command line, else the demo."""
    args = sys.argv[1:]
    if "--workspace" in args and args.index("--workspace") + 1 < len(args):
        return args[args.index("--workspace") + 1]
    return "demo"


@st.cache_resource(show_spinner=False, max_entries=4)
def _load_workspace(spec: str, generation: int) -> Workspace:
    return open_workspace(spec)


def _generation() -> int:
    return st.session_state.get("_ws_generation", 0)


def reload_workspace() -> None:
    """Forget the cached workspace so the next access reads the file again."""
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
    # app.py calls st.navigation before anything else, which clears this flag
    if getattr(PagesManager, "uses_pages_directory", False):
        PagesManager.uses_pages_directory = False
        st.rerun()


def workspace() -> Workspace:
    """The open workspace; on bad input shows the reason and stops the page."""
    _leave_legacy_multipage_mode()
    spec = current_spec()
    try:
        with st.spinner(f"Opening {spec} (the first time builds the demo data)…"):
            ws = _load_workspace(spec, _generation())
    except WorkspaceError as exc:
        st.error(f"Cannot open workspace **{spec}**: {exc}")
        st.stop()
    remember_workspace(spec)
    return ws


def current_version(ws: Workspace) -> str:
    """The model version picked in the sidebar ("orig" if none or unknown)."""
    version = st.session_state.get(VERSION, ORIG)
    return version if version in {v["id"] for v in ws.versions()} else ORIG


@st.cache_resource(show_spinner=False, max_entries=16)
def _outputs_memo(spec: str, generation: int, split: str, version: str, key: str):
    return {}  # a per-key box filled by outputs(); cache_resource keeps it across reruns


def outputs(ws: Workspace, split: str = "eval", version: str | None = None):
    """Cached inference outputs; builds them with a progress bar when missing."""
    version = version or current_version(ws)
    try:
        key = ws.outputs_key(split, version)
        box = _outputs_memo(ws.spec, _generation(), split, version, key)
        if "outputs" not in box:
            found = ws.cached_outputs(split, version)
            if found is None:
                bar = st.progress(0.0, text=f"Running model {version} on the {split} split…")

                def progress(done: int, total: int) -> None:
                    bar.progress(done / max(total, 1), text=f"Running model {version} on {split}: {done}/{total} images")

                found = ws.outputs(split, version, progress=progress)
                bar.empty()
            box["outputs"] = found
        out = box["outputs"]
    except WorkspaceError as exc:
        st.error(f"Cannot compute outputs of {version} on {split}: {exc}")
        st.stop()
    if out.skipped:
        st.warning(f"{len(out.skipped)} {split} images could not be loaded and are left out "
                   f"(first: {out.skipped[0]['id']}: {out.skipped[0]['error']}).")
    return out


def thumbnails(ws: Workspace, split: str, indices, captions=None, *, columns: int = 8, width: int = 96):
    """A grid of images from a split with optional captions."""
    indices = list(indices)
    if not indices:
        st.caption("No images.")
        return
    data = ws.split(split)
    cols = st.columns(columns)
    for j, index in enumerate(indices):
        with cols[j % columns]:
            try:
                img = data.load(int(index))
            except Exception as exc:  # noqa: BLE001 - show the broken image, do not die
                st.caption(f"#{index}: cannot load ({type(exc).__name__})")
                continue
            st.image(np.asarray(img), width=width, caption=None if captions is None else captions[j])


def not_implemented(what: str, issue: str) -> None:
    """Say plainly that a page is not built yet."""
    st.info(f"**Not implemented yet:** {what} ({issue}). Nothing on this page is computed.")
