"""Bias triplets: cd(A, B, C) = |error(A, C) - error(B, C)|, positive A, negative B, anchor C."""

import streamlit as st

from diagnostics.confusion import rank_biased_triplets
from diagnostics.figures_confusion import triplet_errors_figure
from pages import ui
from pages.widgets import confusion as w
from workspace.targets import Target

ws = ui.workspace()
st.title("Bias triplets")
error_name = "type2conf" if ws.multi_label else "type1conf"
st.caption(f"For every anchor class C and pair A, B: cd = |error(A, C) − error(B, C)| with error = {error_name}; "
           "A (positive) is the class more confused with C, B (negative) the less confused one. "
           "Triplets with equal cd are listed in class order.")

c1, c2, c3 = st.columns(3)
with c1:
    version = w.pick_version(ws, "tri_version")
with c2:
    split = st.selectbox("Split", w.SPLITS, key="tri_split")
with c3:
    anchor = st.selectbox("Anchor class", ["(any)", *ws.class_names], key="tri_anchor")
if ws.num_classes < 3:
    st.info("Bias triplets need at least 3 classes.")
    st.stop()
out = ui.outputs(ws, split, version)
t = w.tables(ws, out)
top_k = int(st.number_input("Show the top", 1, 200, 10, key="tri_top"))
if anchor == "(any)":
    top = t["triplets"].head(top_k).reset_index(drop=True)
else:
    top = rank_biased_triplets(t["errors"], out.class_names, top=top_k, anchors=[out.class_names.index(anchor)])
if top.empty:
    st.info("No triplets for this anchor.")
    st.stop()

best = top.iloc[0]
m1, m2 = st.columns(2)
m1.metric("Most biased triplet", f"{best.positive} / {best.negative} | {best.anchor}")
m2.metric("Its cd", f"{best.cd:.3f}")
st.dataframe(top[["positive", "negative", "anchor", "error_pos", "error_neg", "cd"]].rename(
    columns={"error_pos": "error(A, C)", "error_neg": "error(B, C)"}), key="tri_table")
st.plotly_chart(triplet_errors_figure(top), key="tri_chart")

labels = [f"{r.positive} / {r.negative} | {r.anchor} (cd {r.cd:.3f})" for r in top.itertuples()]
pick = st.selectbox("Triplet", range(len(top)), format_func=lambda i: labels[i], key="tri_pick")
row = top.iloc[pick]
st.markdown(f"The model confuses **{row.positive}** with **{row.anchor}** at {row.error_pos:.3f}, "
            f"but **{row.negative}** with **{row.anchor}** only at {row.error_neg:.3f}.")
w.use_as_target(ws, Target(((int(row.positive_id), int(row.negative_id), int(row.anchor_id)),), out.class_names),
                key="tri_use_target", source="bias triplets page")
