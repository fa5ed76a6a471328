"""Per-sample gradient scores (PGD paper section 4) and the noisy-label split (section 5)."""

import streamlit as st

from diagnostics.figures_gradients import COLOR_BY, SCORES, score_histogram
from pages import ui
from pages.widgets import gradients as W

ws = ui.workspace()
version = ui.current_version(ws)
st.title("Per-sample gradient scores and the noisy-label split")
st.caption(
    "For every training sample, the gradient of its loss w.r.t. the classifier (or all parameters) of a "
    "*biased* model. Per class: magnitude score M (small gradients = typical), direction score D (von "
    "Mises-Fisher likelihood of the gradient direction), aggregate S (weighted harmonic mean) and sampling "
    "probability p_s = min S / S: bias-conflicting **minority** samples get high p_s. Separately, the "
    "compensated loss CE/H ≥ delta flags likely **mislabelled** samples (PGD paper, eq. 2)."
)
if ws.multi_label:
    st.info("Gradient scores and the noise split are defined for single-label workspaces only.")
    st.stop()

opts = W.options()
if opts.biased_model == "gce" and not W.gce_ready(ws):
    st.stop()
frame = W.compute(ws, version, opts)
if frame is None:
    st.stop()

delta = frame.attrs["delta"]
planted = ws.planted
cols = st.columns(5)
cols[0].metric("Train samples scored", f"{len(frame):,}")
cols[1].metric("Flagged likely mislabelled", f"{int(frame['noisy'].sum()):,}",
               help="compensated loss CE/H >= delta = sum CE / sum H (noise split uses the selected model version)")
cols[2].metric("delta", f"{delta:.3f}")
if "minority_auc" in frame.attrs:
    cols[3].metric("Minority ROC AUC of p_s", f"{frame.attrs['minority_auc']:.3f}",
                   help="demo ground truth: how well ranking by p_s separates the planted minority samples")
if "flip_recall" in frame.attrs:
    cols[4].metric("Flipped labels flagged", f"{frame.attrs['flip_recall']:.1%}",
                   delta=f"clean flagged {frame.attrs['clean_flagged']:.1%}", delta_color="off")

share = frame.attrs.get("effective_share", 1.0)
if share < 0.01:
    st.warning(f"With lambda = {opts.lam:g}, p_s is concentrated on very few samples (effective sample share "
               f"{share:.2%}): the vMF direction score is extremely peaked in {opts.params}-layer gradient space. "
               "Rankings (AUC, galleries) stay valid; for the pgd sampler use lambda = 0 (magnitude only, the "
               "published PGD sampler), which is what the repair uses by default.")

# ---- histograms ----------------------------------------------------------------------
st.subheader("Score distributions")
available = [c for c in COLOR_BY if c not in ("minority", "flipped")
             or (planted and planted.get("minority" if c == "minority" else "flipped_labels"))]
c1, c2 = st.columns(2)
class_names = ["all classes", *ws.class_names]
picked = c1.selectbox("Class", class_names, key="grad_class")
color_by = c2.selectbox("Colour by", available, key="grad_color",
                        format_func=lambda c: {"correct": "correct / wrong prediction", "minority":
                                               "minority / majority (demo truth)", "flipped":
                                               "flipped / clean label (demo truth)", "noisy": "noise flag"}[c])
view = frame if picked == "all classes" else frame[frame["label"] == class_names.index(picked) - 1]
if view.empty:
    st.info(f"No training samples are labelled {picked}.")
    st.stop()
tabs = st.tabs(list(SCORES))
for tab, score in zip(tabs, SCORES):
    with tab:
        st.plotly_chart(score_histogram(view, score, color_by=color_by, planted=planted, delta=delta),
                        key=f"grad_hist_{score}")
st.caption("D, S and p_s span hundreds of orders of magnitude (the vMF concentration grows with the "
           "gradient dimension), so they are drawn as log10.")

# ---- galleries -----------------------------------------------------------------------
st.subheader("Samples")
n = int(st.slider("Images per gallery", 6, 36, 12, step=6, key="grad_n"))
by_p = view.sort_values("log_p_s", ascending=False)
g1, g2, g3 = st.tabs(["Highest p_s (likely minority)", "Lowest p_s (most typical)",
                      f"Flagged likely mislabelled ({int(view['noisy'].sum())})"])
with g1:
    W.review_gallery(ws, by_p.head(n), version, tag="hi")
with g2:
    W.review_gallery(ws, by_p.tail(n).iloc[::-1], version, tag="lo")
with g3:
    W.review_gallery(ws, view[view["noisy"]].sort_values("comp_loss", ascending=False).head(n), version, tag="noisy")
reviews = ws.store.list_reviews("mislabel", model_version=version)
if reviews:
    confirmed = sum(r["verdict"] == "mislabelled" for r in reviews)
    st.caption(f"{len(reviews)} mislabel reviews stored for {version}: {confirmed} confirmed mislabelled.")

# ---- exports -------------------------------------------------------------------------
st.subheader("Export")
st.caption("Scores: the table above, one row per scored train sample. Sampling weights: what the pgd repair's "
           "rejection sampler uses, p_s for every train position (1 for images that failed to load) from the "
           "same biased model, last layer, lambda 0 (magnitude only: the published PGD sampler).")
W.exports(ws, version, frame, opts)
