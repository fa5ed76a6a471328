"""Streamlit entry point: ``streamlit run app.py [-- --workspace W]``.

Owns the sidebar (workspace picker, model version) and routes to the pages.
"""

from __future__ import annotations

import traceback
from pathlib import Path

import streamlit as st

from pages import ui
from workspace.cli import crash_log
from workspace.core import recent_workspaces
from workspace.errors import WorkspaceError

st.set_page_config(page_title="Groupfix: group-level errors of image classifiers", layout="wide")

PAGES = [
    st.Page("pages/overview.py", title="Overview", icon=":material/dashboard:", default=True),
    st.Page("pages/confusion.py", title="Confusion", icon=":material/grid_on:"),
    st.Page("pages/triplets.py", title="Bias triplets", icon=":material/balance:"),
    st.Page("pages/wos.py", title="What-if (w-os)", icon=":material/tune:"),
    st.Page("pages/gradcam.py", title="Grad-CAM", icon=":material/visibility:"),
    st.Page("pages/gradients.py", title="Gradient scores", icon=":material/insights:"),
    st.Page("pages/weakspots.py", title="Weakspots", icon=":material/scatter_plot:"),
    st.Page("pages/neurons.py", title="Neurons", icon=":material/hub:"),
    st.Page("pages/bir.py", title="BIR", icon=":material/cleaning_services:"),
    st.Page("pages/repair.py", title="Repair", icon=":material/build:"),
    st.Page("pages/sweep.py", title="Sweep", icon=":material/science:"),
    st.Page("pages/sample.py", title="Sample", icon=":material/image_search:"),
]
BUILTIN = ["demo", "demo-digits"]
OTHER = "Open a workspace file…"


def sidebar() -> None:
    spec = ui.current_spec()
    with st.sidebar:
        st.subheader("Workspace")
        choices = list(dict.fromkeys([spec, *BUILTIN, *recent_workspaces()])) + [OTHER]
        picked = st.selectbox("Open", choices, index=0, key="ws_picker",
                              help="The built-in demos, recent workspaces, or a workspace.toml path")
        if picked == OTHER:
            path = st.text_input("Path to workspace.toml (or its folder)", key="ws_path")
            if st.button("Open", key="ws_open", disabled=not path):
                if Path(path).expanduser().exists():
                    st.session_state[ui.WORKSPACE] = path
                    st.session_state.pop(ui.VERSION, None)
                    st.query_params.clear()
                    st.query_params["workspace"] = path
                    st.rerun()
                else:
                    st.error(f"Not found: {path}")
        elif picked != spec:
            st.session_state[ui.WORKSPACE] = picked
            st.session_state.pop(ui.VERSION, None)
            for key in ("version", "target"):  # the URL's version and target belonged to the old workspace
                if key in st.query_params:
                    del st.query_params[key]
            st.query_params["workspace"] = picked
            st.rerun()
    ws = ui.workspace()  # on failure: the reason in the main area, and the page stops here
    with st.sidebar:
        versions = [v["id"] for v in ws.versions()]
        if st.session_state.get(ui.VERSION) not in versions:
            st.session_state[ui.VERSION] = ui.current_version(ws)
        st.selectbox("Model version", versions, key=ui.VERSION,
                     help="Every repaired model is a new version; the loaded file is never modified")
        if st.button("Reload workspace", key="ws_reload",
                     help="Read the workspace file again and list every data folder again"):
            ui.reload_workspace()
            st.rerun()


def run_page(page) -> None:
    """The page's error boundary: a bad input is one clear message in the main area, and an
    unexpected failure is reported as a bug with the log file that holds its traceback."""
    try:
        page.run()
    except WorkspaceError as exc:
        st.error(f"**{exc}**")
        st.info("Fix the input the message names, then rerun the page (or press Reload workspace).")
    except Exception as exc:  # noqa: BLE001 - never a bare traceback in the page
        path = crash_log(traceback.format_exc())
        st.error(f"Unexpected failure (a bug in Groupfix): {type(exc).__name__}: {' '.join(str(exc).split())[:300]}")
        st.caption(f"The traceback is in `{path}`." if path else "The traceback could not be written.")


page = st.navigation(PAGES)  # first: it also takes Streamlit out of its legacy pages/ mode
sidebar()
try:
    run_page(page)
finally:  # also when the page stops early (st.stop)
    ui.freeze_startup_objects()  # once per process: the collection after every rerun then skips them
