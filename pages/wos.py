"""The w-os what-if slider: post-hoc repair of the chosen targets (WR paper 3.4), instantly."""

import dataclasses

import numpy as np
import streamlit as st

from diagnostics.compare import compare_outputs
from diagnostics.figures_confusion import (
    BETTER_WORSE, comparison_heatmap, confusion_heatmap, matrix_overview, wos_curve_figure,
)
from diagnostics.wos import suggest_rho
from pages import ui
from pages.widgets import confusion as w
from pages.widgets.controls import change
from workspace.targets import Target

ws = ui.workspace()
st.title("What-if: w-os post-hoc repair")
st.caption("w-os multiplies the probabilities of the target classes by rho for samples predicted as a target "
           "class (multi-label: predicted both A and B; bias: A and C or B and C), then decides again. "
           "No training: it only needs the cached outputs.")

c1, c2 = st.columns(2)
with c1:
    version = w.pick_version(ws, "wos_version")
with c2:
    split = st.selectbox("Split", w.SPLITS, key="wos_split")
out = ui.outputs(ws, split, version)
if out.n == 0:
    st.error(f"No usable images in the {split} split.")
    st.stop()
t = w.tables(ws, out)
default = Target(((int(t["pairs"].iloc[0].a_id), int(t["pairs"].iloc[0].b_id)),), out.class_names) \
    if len(t["pairs"]) else None
target = w.targets_editor(ws, default, key="wos_targets", source="What-if page")
if target is None:
    st.stop()
targets, kind = target.groups, target.kind
source = ui.target_source(ws)
st.caption(f"{kind.capitalize()} target: {target.label}" + (f" (from the {source})" if source else ""))

what_if, curve = w.what_if(ws, out, target)
metric = "map" if out.multi_label else "accuracy"
metric_name = "mAP" if out.multi_label else "Accuracy"
error_name = ("mean cd" if kind == "bias" else ("type2conf" if out.multi_label else "type1conf"))

l1, l2 = st.columns(2)
lambda1 = l1.number_input("λ1: least drop of the target error (%)", 0.0, 100.0, 25.0, step=1.0,
                          key="wos_lambda1") / 100
lambda2 = l2.number_input(f"λ2: largest drop of {'accuracy' if metric == 'accuracy' else 'mAP'} (%)", 0.0, 100.0,
                          1.0, step=0.5, key="wos_lambda2") / 100
suggestion = suggest_rho(curve, lambda1, lambda2)

grid = [float(r) for r in curve["rho"]]
rho = w.rho_slider(ws, grid)
result = what_if.evaluate(rho)
base = what_if.base
acc, acc0 = (result.map, base.map) if out.multi_label else (result.accuracy, base.accuracy)

m1, m2, m3 = st.columns(3)
m1.metric(metric_name, f"{acc:.2%}", **change(acc - acc0, "+.2%"))
m2.metric(f"Target error ({error_name})", f"{result.target_error:.4f}",
          **change(result.target_error - base.target_error, "+.4f", lower_is_better=True))
m3.metric("Changed predictions", f"{len(result.changed):,}")
m3.markdown(f":green[{result.fixed:,} fixed] · :red[{result.broken:,} broken]")

if suggestion["meets"]:
    reason = suggestion["reason"].removeprefix(f"rho = {suggestion['rho']:.4g} ")  # said once, in front
    st.success(f"Suggested rho = {suggestion['rho']:.4g}: it {reason}.")
    st.button("Move the slider to the suggested rho", key="wos_use_suggested", on_click=w.set_rho,
              args=(suggestion["rho"],))
else:
    st.warning(f"No rho from 1 to 1e-4 repairs this target: {suggestion['reason']}. "
               "Raise λ2 or lower λ1 to accept a rho.")

st.subheader("Trade-off over rho")
st.plotly_chart(wos_curve_figure(curve, current_rho=rho, suggestion=suggestion, metric=metric), key="wos_curve")

st.subheader("After w-os")
names = list(out.class_names)
shown = w.changed_classes(targets, result, len(names))
sub = np.ix_(shown, shown)
shown_names = [names[i] for i in shown]
if len(shown) < len(names):
    st.caption(f"{len(names)} classes: the matrices show the target classes and the classes predictions moved to.")
tab_after, tab_diff, tab_changes = st.tabs(["Confusion matrix after", "Change vs. rho = 1", "What changed"])
with tab_after:
    if result.counts is not None:
        st.plotly_chart(confusion_heatmap(result.rates[sub], shown_names, counts=result.counts[sub],
                                          title=f"rho = {rho:.4g}"), key="wos_after_heatmap")
    else:
        st.plotly_chart(confusion_heatmap(result.errors[sub], shown_names, title=f"type2conf after, rho = {rho:.4g}"),
                        key="wos_after_heatmap")
with tab_diff:
    cmp = compare_outputs(out, dataclasses.replace(out, preds=result.preds))
    if cmp.identical:
        st.info(f"rho = {rho:.4g} changes no prediction: lower rho to see what w-os moves.")
    else:
        st.plotly_chart(comparison_heatmap(cmp, names, rows=shown, title="after − before (rates; green = better)"),
                        key="wos_diff_heatmap")
        if len(names) > w.HEATMAP_LIMIT and st.toggle(f"All {len(names):,} classes (overview)", key="wos_overview"):
            overview = matrix_overview(cmp.improvement, names, diverging=True, colorscale=BETTER_WORSE,
                                       value_name="better ↑<br>worse ↓", title="after − before (green = better)")
            st.plotly_chart(overview, key="wos_overview_chart")
with tab_changes:
    st.dataframe(what_if.changes(result, names), key="wos_changes", hide_index=True)
