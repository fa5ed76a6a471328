"""Bias triplets: cd(A, B, C) = |error(A, C) - error(B, C)|, positive A, negative B, anchor C, grouped by the
confused pair that explains them."""

import streamlit as st

from diagnostics.figures_confusion import triplet_errors_figure
from diagnostics.triplet_groups import PAIR, SHARE, TRIPLET
from pages import ui
from pages.widgets import confusion as w
from pages.widgets.controls import counted_select

KINDS = {"all": "all", PAIR: "pair groups", TRIPLET: "triplets beyond one pair"}

ws = ui.workspace()
st.title("Bias triplets")
error_name = "type2conf" if ws.multi_label else "type1conf"
st.caption(f"For every anchor class C and pair A, B: cd = |error(A, C) − error(B, C)| with error = {error_name}; "
           "A (positive) is the class more confused with C, B (negative) the less confused one.")

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
names = list(out.class_names)

g1, g2, g3, g4 = st.columns([2, 3, 3, 2])
grouping = g1.toggle("Group by pair", value=True, key="tri_group",
                     help="A triplet (A, X, C) whose cd is explained by the confusion of A and C alone is shown "
                          "in one group with every other such X")
share = g2.slider("Explained when cd keeps at least", 0.2, 1.0, SHARE, 0.05, key="tri_share", disabled=not grouping,
                  format="%.2f", help="…this share of error(A, C), i.e. error(X, C) ≤ (1 − share) · error(A, C): "
                                      "X is confused with C much less than A is")
kinds = g3.radio("Show", list(KINDS), horizontal=True, key="tri_kinds", disabled=not grouping,
                 format_func=KINDS.__getitem__, help="Triplets no single pair explains: A and B are both confused "
                                                     "with C, unequally (the paper's man / woman / skis)")
top_k = int(g4.number_input("Show the top", 1, 200, 10, key="tri_top"))
skip = w.excluded_pairs(ws, t["pairs"], names, key="tri")
anchors = None if anchor == "(any)" else [names.index(anchor)]
with st.spinner("Ranking triplets…"):
    grouped, ranked = w.triplet_groups(ws, out, groups=top_k, share=share if grouping else None, exclude=skip,
                                       anchors=anchors, kinds=kinds if grouping else "all")
if grouped.empty:
    st.info("No triplets left: another anchor, fewer pairs left out, or all kinds shows some."
            if skip or anchors or (grouping and kinds != "all") else
            "No biased triplet: every triplet has cd 0 (A and B are equally confused with C).")
    st.stop()

best = grouped.iloc[0]
m1, m2, m3 = st.columns(3)
m1.metric("Most biased " + ("group" if grouping else "triplet"), best.group)
m2.metric("Its cd", f"{best.cd:.3f}")
m3.metric("Pairs left out", f"{len(skip)}")
if grouping:
    pair_groups = int((grouped.kind == "pair").sum())
    st.caption(f"{pair_groups} of these {len(grouped)} groups are one confused pair each (kind “pair”): their "
               "triplets pair it with classes it is not confused with. Kind “triplet” is a bias of its own: both "
               "A and B are confused with C, unequally. “explained” counts every triplet the pair explains.")
table = grouped.rename(columns={"error_pos": "error(A, C)", "error_neg": "error(B, C)", "ranked": "in ranking",
                                "negatives": "explained", "pair_error": "pair error"})
st.dataframe(table[["group", "kind", "cd", "error(A, C)", "error(B, C)", "pair error", "in ranking", "explained",
                    "anchors"]], key="tri_table", hide_index=True,
             column_config={c: st.column_config.NumberColumn(format="%.3f")
                            for c in ("cd", "error(A, C)", "error(B, C)", "pair error")})
st.plotly_chart(triplet_errors_figure(ranked.iloc[[int(r[0]) for r in grouped.rows]]), key="tri_chart")

st.subheader("One group")
labels = dict(zip(grouped.group, (f"{g} ({k}, cd {cd:.3f})" for g, k, cd in zip(grouped.group, grouped.kind,
                                                                               grouped.cd))))
pick = counted_select(st, "Group", list(labels), labels.__getitem__, key="tri_pick_group")
w.triplet_detail(ws, out, grouped.set_index("group").loc[pick], ranked, share=share, key="tri")
