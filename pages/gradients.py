"""Per-sample gradient scores (PGD paper section 4) and the likely-mislabelled flag (section 5, calibrated)."""

import streamlit as st

from diagnostics.figures_gradients import COLOR_BY, SCORES, has_histogram_data, score_histogram
from pages import ui
from pages.widgets import gradients as W

ws = ui.workspace()
version = ui.current_version(ws)
st.title("Per-sample gradient scores and likely mislabelled samples")
st.caption(
    "For every training sample, the gradient of its loss w.r.t. the classifier (or all parameters) of a *biased* "
    "model, scored per class: bias-conflicting **minority** samples get a high sampling probability p_s (PGD paper, "
    "section 4). Separately, samples whose given label the model contradicts are flagged **likely mislabelled**."
)
st.caption("  \n".join(f"**{name}**: {meaning}" for name, meaning in W.GLOSSARY.items()))
if ws.multi_label:
    st.info("Gradient scores and the noise split are defined for single-label workspaces only.")
    st.stop()

opts = W.resolve_source(ws, W.options(ws))
frame = W.compute(ws, version, opts)
if frame is None:
    st.stop()

planted = ws.planted
share = frame.attrs.get("effective_share", 1.0)
cols = st.columns(4)
cols[0].metric("Train samples scored", f"{len(frame):,}")
cols[1].metric("Effective sample share of p_s", f"{share:.1%}",
               help="(sum p_s)^2 / (N sum p_s^2): 100 % = uniform weights, 1/N = one sample takes all the mass")
if "minority_auc" in frame.attrs:
    cols[2].metric("Minority ROC AUC of p_s", f"{frame.attrs['minority_auc']:.3f}",
                   help="demo ground truth: how well ranking by p_s separates the planted minority samples")
st.caption(f"Gradients of the {'GCE biased model' if opts.biased_model == 'gce' else f'model version {version}'}, "
           f"{opts.params} {'layer' if opts.params == 'last' else 'parameters'}, lambda {opts.lam:g}.")
if share < 0.01 and opts.lam > 0:
    st.warning(f"With lambda = {opts.lam:g}, p_s is concentrated on very few samples (effective sample share "
               f"{share:.2%}): the vMF direction score is extremely peaked in {opts.params}-layer gradient space. "
               "Rankings (AUC, galleries) stay valid; for a usable sampler set lambda to 0 (magnitude only), "
               "which is what the pgd repair uses.")
elif share < 0.01:
    st.warning(f"p_s is concentrated on very few samples (effective sample share {share:.2%}): the gradient norms "
               "of this split span orders of magnitude, so p_s = ‖g‖ / max ‖g‖ of its class is close to 0 for all "
               "but the samples with the largest gradients. Rankings (AUC, galleries) stay valid.")

# ---- the likely-mislabelled flag ---------------------------------------------------------
st.subheader("Likely mislabelled")
frame = W.noise_flag(frame)
W.planted_recovery(frame, planted)

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
                                               "flipped / clean label (demo truth)", "noisy": "mislabelled flag"}[c])
view = frame if picked == "all classes" else frame[frame["label"] == class_names.index(picked) - 1]
if view.empty:
    st.info(f"No training samples are labelled {picked}.")
    st.stop()
# one histogram at a time: each carries every sample's value (six were 1.7 MB at 20,000 samples)
score = st.segmented_control("Score", list(SCORES), default=next(iter(SCORES)), required=True, key="grad_score")
if has_histogram_data(view, score):
    st.plotly_chart(score_histogram(view, score, color_by=color_by, planted=planted, delta=frame.attrs["delta"]),
                    key=f"grad_hist_{score}")
else:
    ui.empty_chart(f"No finite {score} value to draw for {picked}.")
st.caption("An axis is log10 when the values span three or more orders of magnitude (M and D are normalised over "
           "thousands of samples; the entropy of a confident prediction is close to 0).")

# ---- galleries -----------------------------------------------------------------------
st.subheader("Samples")
W.galleries(ws, view, version)
reviews = ws.store.list_reviews("mislabel", model_version=version)
if reviews:
    confirmed = sum(r["verdict"] == "mislabelled" for r in reviews)
    st.caption(f"{len(reviews)} mislabel reviews stored for {version}: {confirmed} confirmed mislabelled.")

# ---- the table and the exports -------------------------------------------------------
st.subheader("Score table")
# a long table is drawn when opened: its first 1,000 rows alone were 170 KB of the page's first render
table = st.expander(f"{len(view):,} rows ({picked})", expanded=len(view) <= W.LAZY_ROWS, key="grad_table_open",
                    on_change="rerun")
if table.open:
    with table:
        st.caption("Sort by any column. `noisy` is the flag at the count chosen above, `noisy_paper` the paper's "
                   "rule, `noise_rank` the order of suspicion among the paper's flags (0: none).")
        W.score_table(view, ws.class_names)
st.subheader("Export")
st.caption("Scores: every scored train sample (all classes) with the columns of the table above. Sampling weights: "
           "what the pgd repair's rejection sampler uses, p_s for every train position (1 for images that failed to "
           "load) from the same biased model, last layer, lambda 0 (magnitude only).")
W.exports(ws, version, frame, opts)
