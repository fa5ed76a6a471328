"""AppTest tests of the Confusion, Bias triplets and What-if (w-os) pages."""

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from diagnostics.confusion import confusion_counts, rank_confused_pairs, type1conf_matrix
from pages import ui
from tests.pages.helpers import caption_ref, caption_text, image_count, seeded, thumbnails, ws_state
from diagnostics.wos import WosWhatIf, suggest_rho
from tests.conftest import REPO

TIMEOUT = 180


def page(name: str, **state) -> AppTest:
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=TIMEOUT)
    for key, value in state.items():
        at.session_state[key] = value
    at.run()
    at.switch_page(f"pages/{name}.py").run()
    assert not at.exception, at.exception
    return at


def metrics(at) -> dict:
    return {m.label: m.value for m in at.metric}


def _demo_pairs(demo_eval):
    errors = type1conf_matrix(demo_eval.labels, demo_eval.preds, demo_eval.num_classes)
    counts = confusion_counts(demo_eval.labels, demo_eval.preds, demo_eval.num_classes)
    return rank_confused_pairs(errors, demo_eval.class_names), counts


def test_confusion_page_pairs_gallery_and_target(demo_ws, demo_eval):
    pairs, counts = _demo_pairs(demo_eval)
    disk, oval = demo_eval.class_names.index("disk"), demo_eval.class_names.index("oval")
    at = page("confusion")
    assert metrics(at)["Most confused pair"] == "disk / oval"
    assert [m.delta for m in at.metric if m.label == "Most confused pair"] == [f"type1conf {pairs.conf[0]:.3f}"]
    assert metrics(at)["Accuracy"] == f"{demo_eval.accuracy:.2%}"
    texts = [m.value for m in at.markdown]
    assert any(t.startswith(f"**disk → oval**: {counts[disk, oval]} mistakes") for t in texts), texts
    assert any(t.startswith(f"**oval → disk**: {counts[oval, disk]} mistakes") for t in texts)
    assert any("Only one model version" in c.value for c in at.caption)
    assert image_count(at) == 2 * 16          # 16 thumbnails per direction by default
    at.slider(key="conf_gallery_n").set_value(4).run()
    assert image_count(at) == 2 * 4
    # "[eval:12](sample?...)  \n0.91 / 0.05": the image linked to the sample view, p(oval) / p(disk)
    first = thumbnails(at)[0]
    assert first.startswith("[eval:") and "](sample?" in first and "split=eval" in first
    index = int(caption_ref(first).split(":")[1])
    row = int(np.flatnonzero(demo_eval.indices == index)[0])
    assert caption_text(first) == f"{demo_eval.probs[row, oval]:.2f} / {demo_eval.probs[row, disk]:.2f}"
    assert "Under each image: p(oval) / p(disk), most confident first." in [c.value for c in at.caption]
    at.button(key="conf_use_target").click().run()
    assert ws_state(at)[ui.TARGET] == {"kind": "confusion", "targets": [["disk", "oval"]]}
    assert ws_state(at)[ui.TARGET_SOURCE] == "confusion page"
    at.selectbox(key="conf_pair").set_value((int(pairs.a_id[1]), int(pairs.b_id[1]))).run()
    at.radio(key="conf_show").set_value("counts").run()
    assert not at.exception
    second = f"**{pairs.a[1]} → {pairs.b[1]}**"
    assert any(t.startswith(second) for t in [m.value for m in at.markdown])


def test_confusion_gallery_pages_and_search(demo_eval):
    from diagnostics.confusion import pair_mistakes

    names = list(demo_eval.class_names)
    disk, oval = names.index("disk"), names.index("oval")
    at = page("confusion")
    at.slider(key="conf_gallery_n").set_value(8).run()
    n = len(pair_mistakes(demo_eval.labels, demo_eval.preds, oval, disk))
    pages = -(-n // 8)
    assert f"Images 1–8 of {n:,} (page 1 of {pages})" in [c.value for c in at.caption]
    at.button(key=f"conf_gallery_{oval}_{disk}_next").click().run()
    assert f"Images 9–16 of {n:,} (page 2 of {pages})" in [c.value for c in at.caption]
    assert image_count(at) == 16   # one page per direction, never all mistakes
    # the gallery search keeps the mistakes that match: oval -> disk predicted as disk, labelled oval only
    at.multiselect(key="conf_search_labels").set_value(["oval"]).run()
    texts = [m.value for m in at.markdown]
    assert any(t.startswith("**disk → oval**") and t.endswith("; 0 match the search") for t in texts), texts
    assert any(t.startswith("**oval → disk**") and t.endswith(f"; {n:,} match the search") for t in texts), texts
    shown = [int(caption_ref(c).split(":")[1]) for c in thumbnails(at)]
    rows = [int(np.flatnonzero(demo_eval.indices == i)[0]) for i in shown]
    assert len(shown) == 8 and all(demo_eval.labels[r] == oval and demo_eval.preds[r] == disk for r in rows)


def test_two_versions_side_by_side_with_accuracy_and_target_error(tiny_workspace):
    import torch

    from diagnostics.compare import compare_outputs
    from workspace.core import open_workspace

    ws = open_workspace(str(tiny_workspace))
    model = ws.load_model()
    with torch.no_grad():
        model.head.bias[0] += 5.0   # the copy predicts "cat" far more often
    row = ws.save_version(model, method="copy", parent="orig")
    at = page("confusion", **{ui.WORKSPACE: str(tiny_workspace)},
              **seeded(str(tiny_workspace.resolve()), target={"kind": "confusion", "targets": [["cat", "dog"]]},
                       source="test"))
    assert at.selectbox(key="conf_compare").value == row["id"]
    before, after = ws.outputs("eval"), ws.outputs("eval", row["id"])
    cmp = compare_outputs(before, after, [(0, 1)])
    assert cmp.accuracy[0] != cmp.accuracy[1] or cmp.target_error[0] != cmp.target_error[1]
    got = metrics(at)
    assert got["Accuracy of orig"] == f"{cmp.accuracy[0]:.2%}"
    assert got[f"Accuracy of {row['id']}"] == f"{cmp.accuracy[1]:.2%}"
    errors = [m for m in at.metric if m.label == "Target error (cat / dog)"]
    assert [m.value for m in errors] == [f"{cmp.target_error[0]:.4f}", f"{cmp.target_error[1]:.4f}"]
    assert errors[1].delta == f"{cmp.target_error[1] - cmp.target_error[0]:+.4f}"
    assert got["Fixed (wrong → right)"] == f"{len(cmp.fixed):,}" and got["Broken (right → wrong)"] == f"{len(cmp.broken):,}"
    specs = [c.proto.spec for c in at.get("plotly_chart")]
    assert sum('"text":"orig"' in t for t in specs) == 1 and sum(f'"text":"{row["id"]}"' in t for t in specs) == 1


def test_triplets_page_groups_the_planted_pair_and_targets_it(demo_ws, demo_eval):
    pairs, _ = _demo_pairs(demo_eval)
    at = page("triplets")
    planted = list(demo_ws.planted["biased_triplet"])
    table = at.dataframe[0].value
    # the planted triplet (oval, ring, disk) is one of the disk / oval confusion's triplets: one group
    assert table["group"].iloc[0] == "disk / oval" and table["kind"].iloc[0] == "pair"
    assert float(table["cd"].iloc[0]) == pytest.approx(pairs.conf[0], abs=0.01)
    assert table["in ranking"].iloc[0] > 2 and (table["group"] == "disk / oval").sum() == 1
    options = at.selectbox(key="tri_pick").options
    assert f"{planted[0]} / {planted[1]} | {planted[2]}" in [o.split(" (cd")[0] for o in options]
    # side by side: the positive's and the negative's mistakes with the anchor
    texts = [m.value for m in at.markdown]
    assert any(t.startswith("**oval → disk**") for t in texts) and any(" → disk**" in t for t in texts[2:]), texts
    at.button(key="tri_use_pair").click().run()
    assert ws_state(at)[ui.TARGET] == {"kind": "confusion", "targets": [["disk", "oval"]]}
    # the target's pair is now left out: disk / oval no longer heads the table
    assert at.checkbox(key="tri_skip_target").value
    table = at.dataframe[0].value
    assert "disk / oval" not in set(table["group"])
    assert not any({"disk", "oval"} == set(g.split(" / ")[:2]) for g in table["group"] if "|" not in g)
    at.checkbox(key="tri_skip_target").uncheck().run()
    assert at.dataframe[0].value["group"].iloc[0] == "disk / oval"


def test_triplets_page_shows_only_the_biases_no_pair_explains(demo_eval):
    at = page("triplets")
    share = at.slider(key="tri_share").value
    at.radio(key="tri_kinds").set_value("triplet").run()
    table = at.dataframe[0].value
    assert len(table) > 0 and (table["kind"] == "triplet").all()
    # B is confused with C at more than (1 - share) of A's error, and the rows are ranked by cd
    assert (table["error(B, C)"] > (1 - share) * table["error(A, C)"]).all()
    assert table["cd"].is_monotonic_decreasing
    at.slider(key="tri_share").set_value(0.2).run()   # nearly everything is one pair's now
    assert not at.exception
    if at.dataframe:
        left = at.dataframe[0].value
        assert (left["error(B, C)"] > 0.8 * left["error(A, C)"]).all()
    else:
        assert "all kinds shows some" in at.info[0].value


def test_triplets_page_ungrouped_anchor_filter_and_bias_target(demo_ws, demo_eval):
    at = page("triplets")
    planted = list(demo_ws.planted["biased_triplet"])
    at.toggle(key="tri_group").set_value(False).run()
    table = at.dataframe[0].value
    assert (table["kind"] == "triplet").all()
    top3 = [g.replace(" | ", " / ").split(" / ") for g in table["group"].head(3)]
    assert planted in top3
    at.selectbox(key="tri_pick_group").set_value(table["group"].iloc[top3.index(planted)]).run()
    at.button(key="tri_use_target").click().run()
    assert ws_state(at)[ui.TARGET] == {"kind": "bias", "targets": [planted]}
    at.selectbox(key="tri_anchor").set_value("ring").run()
    assert not at.exception
    assert all(g.endswith("| ring") for g in at.dataframe[0].value["group"])


def test_wos_slider_changes_the_numbers(demo_eval):
    at = page("wos", **seeded("demo", target={"kind": "confusion", "targets": [["disk", "oval"]]},
                              source="confusion page"))
    assert at.text_input(key="wos_targets").value == "disk,oval"
    disk, oval = demo_eval.class_names.index("disk"), demo_eval.class_names.index("oval")
    whatif = WosWhatIf(demo_eval.probs, demo_eval.labels, [(disk, oval)])
    before, expected = whatif.evaluate(1.0), whatif.evaluate(0.1)
    first = metrics(at)
    assert first["Accuracy"] == f"{before.accuracy:.2%}"
    assert first["Target error (type1conf)"] == f"{before.target_error:.4f}"
    no_change = lambda: [i.value for i in at.info if "changes no prediction" in i.value]
    assert no_change() == ["rho = 1 changes no prediction: lower rho to see what w-os moves."]  # not an empty map
    at.select_slider(key="wos_rho_slider").set_value(0.1).run()
    assert not at.exception and not no_change()
    assert ws_state(at)[ui.WOS_RHO] == 0.1
    after = metrics(at)
    assert expected.target_error < before.target_error and len(expected.changed) > 0
    assert after["Accuracy"] == f"{expected.accuracy:.2%}"
    assert after["Target error (type1conf)"] == f"{expected.target_error:.4f}"
    assert after["Changed predictions"] == f"{len(expected.changed):,}"
    suggestion = suggest_rho(whatif.curve())
    if suggestion["meets"]:
        assert any(f"Suggested rho = {suggestion['rho']:.4g}" in m.value for m in at.success)
    else:
        assert any("No rho from 1 to 1e-4 repairs" in w.value for w in at.warning)
    assert len(at.dataframe[0].value) > 0
    at.switch_page("pages/triplets.py").run()       # the rho and the targets survive a page change
    at.switch_page("pages/wos.py").run()
    assert at.select_slider(key="wos_rho_slider").value == 0.1
    assert at.text_input(key="wos_targets").value == "disk,oval"


def test_wos_rho_from_elsewhere_snaps_to_the_grid():
    at = page("wos", **seeded("demo", rho=0.0095))
    assert at.select_slider(key="wos_rho_slider").value == 0.01


def test_wos_suggestion_button_and_bad_targets():
    at = page("wos", **seeded("demo", target={"kind": "confusion", "targets": [["disk", "oval"]]}, source="test"))
    at.number_input(key="wos_lambda2").set_value(10.0).run()
    assert any("Suggested rho" in s.value for s in at.success)
    at.button(key="wos_use_suggested").click().run()
    rho = at.select_slider(key="wos_rho_slider").value
    assert rho < 1.0 and f"Suggested rho = {rho:.4g}" in at.success[0].value
    assert at.success[0].value.count(f"{rho:.4g}") == 1  # the rho is named once, not twice
    at.text_input(key="wos_targets").set_value("oval,ring,disk").run()
    assert not at.exception
    assert ws_state(at)[ui.TARGET] == {"kind": "bias", "targets": [["oval", "ring", "disk"]]}
    assert ws_state(at)[ui.TARGET_SOURCE] == "typed on the What-if page"
    assert "Target error (mean cd)" in metrics(at)
    at.text_input(key="wos_targets").set_value("disk,cow").run()
    assert any("unknown class 'cow'" in e.value for e in at.error)


def test_heatmap_classes_limits_large_k():
    import pandas as pd

    from pages.widgets.confusion import heatmap_classes

    assert heatmap_classes(pd.DataFrame({"a_id": [0], "b_id": [1]}), 5) == [0, 1, 2, 3, 4]
    pairs = pd.DataFrame({"a_id": [7, 3, 7, 9], "b_id": [50, 7, 9, 60]})
    assert heatmap_classes(pairs, 100, limit=4) == [3, 7, 9, 50]


def test_pages_on_a_multi_label_workspace(multi_label_workspace):
    state = {ui.WORKSPACE: str(multi_label_workspace)}
    at = page("confusion", **state)
    assert "Exact-match accuracy" in metrics(at)
    assert [m.delta for m in at.metric if m.label == "Most confused pair"][0].startswith("type2conf")
    at = page("triplets", **state)
    # the untrained model predicts every label everywhere: every pair error is 1, so no triplet is biased
    assert [i.value for i in at.info] == ["No biased triplet: every triplet has cd 0 (A and B are equally "
                                          "confused with C)."]
    at = page("wos", **state)
    assert "mAP" in metrics(at) and "Target error (type2conf)" in metrics(at)
    at.select_slider(key="wos_rho_slider").set_value(1e-4).run()
    assert not at.exception, at.exception


def test_changed_classes_limits_large_k():
    import numpy as np

    from pages.widgets.confusion import changed_classes
    from diagnostics.wos import WosResult

    r = WosResult(rho=0.1, accuracy=0.0, target_error=0.0, errors=None, counts=None,
                  preds=np.array([5, 9, 9, 7]), changed=np.array([1, 2, 3]), fixed=0, broken=0)
    assert changed_classes([(0, 1)], r, 4) == [0, 1, 2, 3]
    assert changed_classes([(0, 1)], r, 100, limit=3) == [0, 1, 9]
    assert changed_classes([(0, 1)], r, 100) == [0, 1, 7, 9]


def test_an_identical_version_says_so_instead_of_an_empty_difference_map(tiny_workspace):
    from workspace.core import open_workspace

    ws = open_workspace(str(tiny_workspace))
    row = ws.save_version(ws.load_model(), method="copy", parent="orig")  # the same weights
    at = page("confusion", **{ui.WORKSPACE: str(tiny_workspace)})
    assert at.selectbox(key="conf_compare").value == row["id"]
    assert any(f"{row['id']} makes the same predictions as orig" in i.value for i in at.info)
    specs = [c.proto.spec for c in at.get("plotly_chart")]
    assert specs and not any("rates; green = better" in t for t in specs)  # no all-grey difference map
