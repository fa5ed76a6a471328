"""The grid, the selection rule and the result table (WR paper 4.3, 4.4, Appendix A, Table 2)."""

import io
import json
import math

import numpy as np
import pandas as pd
import pytest

from repair.selection import (
    DETERMINISTIC_NOTE, JSON_KEYS, TABLE_COLUMNS, build_table, format_setting, next_wos_rho, plan_grid,
    select_rhos, table_to_csv, table_to_json_rows, table_to_latex, table_to_markdown,
)
from workspace.errors import WorkspaceError


def grid_frame(orig, orig_ft, methods):
    """Long frame from the paper's appendix layout: {method: {rho: (accuracy, confusion)}}."""
    rows = [{"method": "orig", "rho": None, "accuracy": orig[0], "target_error": orig[1]},
            {"method": "orig-ft", "rho": None, "accuracy": orig_ft[0], "target_error": orig_ft[1]}]
    rows += [{"method": m, "rho": r, "accuracy": a, "target_error": e}
             for m, by_rho in methods.items() for r, (a, e) in by_rho.items()]
    return pd.DataFrame(rows)


# WR paper Appendix A, Table 5 (CIFAR-10, ResNet-18), "confusion" columns (acc, conf)
TABLE_5 = grid_frame((0.8747, 0.096), (0.8775, 0.0978), {
    "w-aug": {0.1: (0.8456, 0.096), 0.3: (0.8731, 0.0985), 0.5: (0.8757, 0.093), 0.7: (0.8777, 0.095),
              0.9: (0.877, 0.0975)},
    "w-bn": {0.1: (0.7361, 0.041), 0.3: (0.7916, 0.1035), 0.5: (0.8099, 0.097), 0.7: (0.8485, 0.068),
             0.9: (0.8761, 0.083)},
    "w-loss": {0.1: (0.4078, 0.3325), 0.3: (0.6848, 0.2165), 0.5: (0.7921, 0.158), 0.7: (0.8663, 0.1035),
               0.9: (0.8767, 0.1005)},
    "w-os": {0.001: (0.8056, 0.0195), 0.01: (0.839, 0.043), 0.1: (0.8654, 0.071), 0.3: (0.873, 0.083),
             0.5: (0.8741, 0.088), 0.7: (0.8745, 0.093), 0.9: (0.8745, 0.093)},
    "w-dbr": {0.1: (0.7036, 0.12), 0.3: (0.8238, 0.0915), 0.5: (0.8588, 0.084), 0.7: (0.8696, 0.0935),
              0.9: (0.8781, 0.089)},
})

# Table 6 (CIFAR-10, VGG-11 with BN), confusion. Left out: w-loss(0.1), whose row is garbled
# in the text of the paper (accuracy 0.1, far below the others: it cannot be chosen).
TABLE_6 = grid_frame((0.9197, 0.081), (0.9204, 0.076), {
    "w-aug": {0.1: (0.9129, 0.063), 0.3: (0.9161, 0.071), 0.5: (0.9165, 0.0735), 0.7: (0.9162, 0.077),
              0.9: (0.9193, 0.0725)},
    "w-bn": {0.1: (0.8168, 0.0015), 0.3: (0.8554, 0.0125), 0.5: (0.8868, 0.0305), 0.7: (0.9068, 0.0575),
             0.9: (0.9157, 0.072)},
    "w-loss": {0.3: (0.1903, 0.4835), 0.5: (0.5521, 0.36), 0.7: (0.836, 0.2455), 0.9: (0.9153, 0.088)},
    "w-os": {0.001: (0.9059, 0.0525), 0.01: (0.9148, 0.071), 0.1: (0.9179, 0.0765), 0.3: (0.919, 0.0795),
             0.5: (0.9193, 0.08), 0.7: (0.9196, 0.0805), 0.9: (0.9197, 0.0805)},
    "w-dbr": {0.1: (0.7035, 0.0585), 0.3: (0.8954, 0.0865), 0.5: (0.9109, 0.075), 0.7: (0.9147, 0.0745),
              0.9: (0.9159, 0.081)},
})

# Table 7 (CIFAR-10, MobileNetV2), confusion. Left out (garbled in the text): w-aug(0.9) and
# w-dbr(0.1); neither can change the choice (w-aug(0.5) and w-dbr(0.9) are more accurate).
TABLE_7 = grid_frame((0.942, 0.0565), (0.9398, 0.057), {
    "w-aug": {0.1: (0.9302, 0.057), 0.3: (0.9366, 0.055), 0.5: (0.9384, 0.0545), 0.7: (0.9397, 0.0595)},
    "w-bn": {0.1: (0.7825, 0.001), 0.3: (0.8319, 0.0065), 0.5: (0.8804, 0.0175), 0.7: (0.9139, 0.039),
             0.9: (0.939, 0.053)},
    "w-loss": {0.1: (0.1764, 0.433), 0.3: (0.6606, 0.2835), 0.5: (0.8411, 0.196), 0.7: (0.8899, 0.132),
               0.9: (0.932, 0.0755)},
    "w-os": {0.0001: (0.9073, 0.027), 0.001: (0.9226, 0.036), 0.01: (0.9339, 0.0435), 0.1: (0.9412, 0.052),
             0.3: (0.942, 0.053), 0.5: (0.9416, 0.0545), 0.7: (0.9421, 0.056), 0.9: (0.9421, 0.0565)},
    "w-dbr": {0.3: (0.9003, 0.0665), 0.5: (0.9248, 0.0625), 0.7: (0.9335, 0.0615), 0.9: (0.9422, 0.0535)},
})


def chosen(selection):
    return [(m, r, rule) for m, r, rule in zip(selection["method"], selection["rho"], selection["rule"])]


def test_table_5_gives_the_rows_of_table_2_cifar10_resnet18():
    # orig confusion 0.096 -> cut-off 0.072:
    # w-aug: none <= 0.072; 0.1, 0.5, 0.7 <= 0.096 -> highest accuracy 0.8777 (0.7), beats orig
    # w-bn: 0.1 (0.041), 0.7 (0.068) <= 0.072 -> 0.7 (0.8485); it loses accuracy, 0.9 beats
    #       orig on both (0.8761 >= 0.8747, 0.083 < 0.096) -> kept by (d)
    # w-loss: every confusion > 0.096 -> highest accuracy 0.9 (0.8767)
    # w-os: 0.001, 0.01, 0.1 <= 0.072 -> 0.1 (0.8654); no rho reaches orig's accuracy
    # w-dbr: none <= 0.072; 0.3, 0.5, 0.7, 0.9 <= 0.096 -> 0.9 (0.8781, 0.089), beats orig
    sel = select_rhos(TABLE_5)
    assert chosen(sel) == [("w-aug", 0.7, "b"), ("w-bn", 0.7, "a"), ("w-bn", 0.9, "d"),
                           ("w-loss", 0.9, "c"), ("w-os", 0.1, "a"), ("w-dbr", 0.9, "b")]
    assert sel.loc[sel["rho"].eq(0.7) & sel["method"].eq("w-bn"), "accuracy"].item() == 0.8485
    assert all(isinstance(r, str) and r for r in sel["reason"])


def test_table_6_gives_the_rows_of_table_2_cifar10_vgg11():
    # cut-off 0.75 * 0.081 = 0.06075. w-os(0.9) ties orig's accuracy (0.9197) with lower
    # confusion (0.0805 < 0.081): "beat" on accuracy means >=, so it is kept by (d)
    sel = select_rhos(TABLE_6)
    assert chosen(sel) == [("w-aug", 0.9, "b"), ("w-bn", 0.7, "a"), ("w-loss", 0.9, "c"),
                           ("w-os", 0.001, "a"), ("w-os", 0.9, "d"), ("w-dbr", 0.1, "a")]


def test_table_7_gives_the_rows_of_table_2_cifar10_mobilenetv2():
    # w-os: 1e-4 (0.027) and 0.001 (0.036) <= 0.042375 -> 0.001 (0.9226). Both 0.3
    # (0.942, 0.053) and 0.7 (0.9421, 0.056) beat orig (0.942, 0.0565); the paper keeps 0.3,
    # the one with the lower confusion
    sel = select_rhos(TABLE_7)
    assert chosen(sel) == [("w-aug", 0.5, "b"), ("w-bn", 0.7, "a"), ("w-loss", 0.9, "c"),
                           ("w-os", 0.001, "a"), ("w-os", 0.3, "d"), ("w-dbr", 0.9, "b")]


def test_lambda1_is_settable():
    # cut-off 0.5 * 0.096 = 0.048: w-bn only 0.1 (0.041); w-os 0.001 (0.0195), 0.01 (0.043) -> 0.01
    sel = select_rhos(TABLE_5, lambda1=0.5)
    assert ("w-bn", 0.1, "a") in chosen(sel) and ("w-bn", 0.9, "d") in chosen(sel)
    assert ("w-os", 0.01, "a") in chosen(sel)


def test_seeds_are_averaged_and_accuracy_ties_go_to_lower_error():
    grid = pd.DataFrame([
        {"method": "orig", "rho": None, "seed": 0, "accuracy": 0.80, "target_error": 0.20},
        {"method": "m", "rho": 0.1, "seed": 0, "accuracy": 0.70, "target_error": 0.10},
        {"method": "m", "rho": 0.1, "seed": 1, "accuracy": 0.80, "target_error": 0.12},   # mean 0.75, 0.11
        {"method": "m", "rho": 0.3, "seed": 0, "accuracy": 0.75, "target_error": 0.14},
    ])
    sel = select_rhos(grid)
    assert chosen(sel) == [("m", 0.1, "a")]
    assert sel["accuracy"].item() == pytest.approx(0.75) and sel["target_error"].item() == pytest.approx(0.11)


def test_selection_refuses_bad_input():
    with pytest.raises(WorkspaceError, match="original model 'orig'"):
        select_rhos(TABLE_5[TABLE_5["method"] != "orig"])
    with pytest.raises(WorkspaceError, match="target_error"):
        select_rhos(TABLE_5.drop(columns="target_error"))
    with pytest.raises(WorkspaceError, match="lambda1"):
        select_rhos(TABLE_5, lambda1=1.5)


def test_plan_grid():
    assert plan_grid(["w-bn", "w-os"], rhos=(0.5, 0.9)) == [("w-bn", 0.5), ("w-bn", 0.9), ("w-os", 0.5),
                                                           ("w-os", 0.9)]
    assert [r for _, r in plan_grid(["w-bn"])] == [0.1, 0.3, 0.5, 0.7, 0.9]
    with pytest.raises(WorkspaceError, match="rho"):
        plan_grid(["w-bn"], rhos=(0.0,))


def test_next_wos_rho_follows_the_papers_vgg11_search():
    # Table 6: orig-ft confusion 0.076 -> w-os must reach 0.057
    assert next_wos_rho({}, 0.076) == 0.1
    assert next_wos_rho({0.1: 0.0765}, 0.076) == 0.01
    assert next_wos_rho({0.1: 0.0765, 0.01: 0.071}, 0.076) == 0.001
    assert next_wos_rho({0.1: 0.0765, 0.01: 0.071, 0.001: 0.0525}, 0.076) is None


def test_next_wos_rho_stops_at_once_or_after_four():
    # Table 5: orig-ft 0.0978 -> 0.07335; w-os(0.1) has 0.071
    assert next_wos_rho({0.1: 0.071}, 0.0978) is None
    # a grid rho that already reaches the bound also ends it
    assert next_wos_rho({0.3: 0.05, 0.5: 0.09}, 0.0978) is None
    # Table 7 bias: orig-ft 0.0395 -> 0.029625; only 1e-4 (0.024) gets there
    tried = {0.1: 0.039, 0.01: 0.034, 0.001: 0.033}
    assert next_wos_rho(tried, 0.0395) == 1e-4
    assert next_wos_rho({**tried, 10 ** -4: 0.031}, 0.0395) is None   # all four tried
    # lambda1 settable: 10 % of 0.0395 -> 0.03555; 0.01 (0.034) is enough
    assert next_wos_rho({0.1: 0.039, 0.01: 0.034}, 0.0395, lambda1=0.1) is None


def test_next_wos_rho_takes_a_frame_of_runs():
    runs = pd.DataFrame({"rho": [0.1, 0.1, 0.01], "target_error": [0.08, 0.07, 0.071]})   # 0.1 -> 0.075
    assert next_wos_rho(runs, 0.076) == 0.001
    with pytest.raises(WorkspaceError, match="target_error"):
        next_wos_rho(runs.rename(columns={"target_error": "err"}), 0.076)


# --------------------------------------------------------------------------------- table

def runs_frame():
    """Hand-made sweep: orig (1 run), orig-ft and 3 trained settings (5 seeds), 1 post-hoc.

    orig-ft: accuracy 0.81..0.85 (mean 0.83), target error 0.20..0.24 (mean 0.22).
    w-dbr(0.9): target error all below orig-ft's (R1 = 15 -> p = 0.009, A12 = 0), mean 0.1972
      (-10 %); accuracy ranks 1, 3, 5.5, 7, 9 in the pool (R1 = 25.5 -> z = -2/4.787,
      p = 0.676, A12 = (51 - 30)/50 = 0.42), mean 0.826.
    w-os(0.5): post-hoc, one run: 0.795, 0.15 (-25 % vs orig exactly, accuracy -0.625 %).
    w-c(0.3): target error above orig-ft's.
    w-d(0.7): target error 0.19, 0.21, ..., 0.24: R1 = 1 + 3.5 + 5.5 + 7.5 + 9.5 = 27
      -> p = 0.917, A12 = 0.48 (negligible): accuracy not tested.
    """
    rows = []

    def add(method, rho, accuracy, target_error):
        rows.extend({"method": method, "rho": rho, "seed": s, "accuracy": a, "target_error": e}
                    for s, (a, e) in enumerate(zip(accuracy, target_error)))

    add("orig", None, [0.80], [0.20])
    add("orig-ft", None, [0.81, 0.82, 0.83, 0.84, 0.85], [0.20, 0.21, 0.22, 0.23, 0.24])
    add("w-dbr", 0.9, [0.805, 0.815, 0.83, 0.835, 0.845], [0.194, 0.196, 0.198, 0.199, 0.199])
    add("w-os", 0.5, [0.795], [0.15])
    add("w-c", 0.3, [0.84] * 5, [0.25, 0.26, 0.27, 0.28, 0.29])
    add("w-d", 0.7, [0.82] * 5, [0.19, 0.21, 0.22, 0.23, 0.24])
    return pd.DataFrame(rows)


@pytest.fixture()
def table():
    return build_table(runs_frame(), deterministic={"w-os"})


def row(table, method):
    return table[table["method"] == method].iloc[0]


def test_table_columns_rows_and_summaries(table):
    assert list(table.columns) == TABLE_COLUMNS
    assert list(table["method"]) == ["orig", "orig-ft", "w-dbr", "w-os", "w-c", "w-d"]
    ft = row(table, "orig-ft")
    assert ft["accuracy_mean"] == pytest.approx(0.83) and ft["target_error_mean"] == pytest.approx(0.22)
    # sample std (ddof = 1) of 0.20..0.24: sqrt(0.001 / 4)
    assert ft["target_error_std"] == pytest.approx(math.sqrt(0.001 / 4))
    assert math.isnan(row(table, "orig")["accuracy_std"]) and math.isnan(row(table, "orig")["rho"])
    assert row(table, "w-dbr")["runs"][2] == {"seed": 2, "accuracy": 0.83, "target_error": 0.198}


def test_table_ranks_rank_sums_and_top2(table):
    # accuracy 0.80, 0.83, 0.826, 0.795, 0.84, 0.82 -> 5, 2, 3, 6, 1, 4
    # target error 0.20, 0.22, 0.1972, 0.15, 0.27, 0.218 -> 3, 5, 2, 1, 6, 4
    assert table["accuracy_rank"].tolist() == [5, 2, 3, 6, 1, 4]
    assert table["target_error_rank"].tolist() == [3, 5, 2, 1, 6, 4]
    assert table["rank_sum"].tolist() == [8, 7, 5, 7, 7, 8]
    # 5 first, three rows tie at 7 for second
    assert table["top2"].tolist() == [False, True, True, True, True, False]


def test_table_tests_against_the_baseline(table):
    dbr = row(table, "w-dbr")
    assert round(dbr["p_target_error"], 3) == 0.009 and dbr["a12_target_error"] == 0.0
    assert dbr["p_accuracy"] == pytest.approx(math.erfc(2 / math.sqrt(275 / 12) / math.sqrt(2)))
    assert dbr["a12_accuracy"] == pytest.approx(0.42)
    d = row(table, "w-d")
    assert d["p_target_error"] == pytest.approx(0.917, abs=1e-3) and d["a12_target_error"] == pytest.approx(0.48)
    assert math.isnan(d["p_accuracy"]) and math.isnan(d["a12_accuracy"])   # not lower at 0.10
    for method in ("orig", "orig-ft", "w-os", "w-c"):
        assert table.loc[table["method"] == method, ["p_target_error", "p_accuracy"]].isna().all(axis=None)


def test_verdict_wording(table):
    assert row(table, "w-dbr")["verdict"].startswith(
        "w-dbr(0.9): target error -10 % vs orig-ft, p = 0.009, large; accuracy unchanged, p = 0.68; not repaired")
    assert DETERMINISTIC_NOTE in row(table, "w-os")["verdict"]
    assert "not lower: not tested" in row(table, "w-c")["verdict"]
    d = row(table, "w-d")["verdict"]
    assert "p = 0.92, negligible, not significant" in d and "accuracy not tested" in d
    assert row(table, "orig")["verdict"] == "orig: original model"


def test_verdict_when_accuracy_changes_significantly():
    runs = runs_frame()
    lower = runs["method"].eq("w-dbr")
    runs.loc[lower, "accuracy"] = [0.70, 0.71, 0.72, 0.73, 0.74]   # all below orig-ft's: p = 0.009
    v = row(build_table(runs, deterministic={"w-os"}), "w-dbr")["verdict"]
    # mean 0.72 vs 0.83: -13 %
    assert "; accuracy -13 % vs orig-ft, p = 0.009, large;" in v


def test_repaired_criterion(table):
    # w-os: target error 0.15 = 0.75 * 0.20 (on the bound), accuracy 0.795 >= 0.99 * 0.80
    assert row(table, "w-os")["repaired"] and "repaired (target error -25 %" in row(table, "w-os")["verdict"]
    assert table["repaired"].tolist() == [False, False, False, True, False, False]
    # lambda2 = 0.5 %: 0.795 < 0.995 * 0.80 = 0.796 -> no longer repaired, and the verdict says why
    strict = build_table(runs_frame(), deterministic={"w-os"}, lambda2=0.005)
    assert not row(strict, "w-os")["repaired"] and "accuracy >= -0.50 %" in row(strict, "w-os")["verdict"]


def test_alpha_is_settable():
    # w-dbr's accuracy p = 0.676: significant at alpha 0.7, so the change is reported
    v = row(build_table(runs_frame(), deterministic={"w-os"}, alpha=0.7), "w-dbr")["verdict"]
    assert "accuracy -0.48 % vs orig-ft, p = 0.68, small" in v


def test_deterministic_is_what_the_caller_says():
    # the same post-hoc method, not declared deterministic: one run is too few to test
    runs = runs_frame()
    v = row(build_table(runs), "w-os")["verdict"]
    assert DETERMINISTIC_NOTE not in v and "not tested (fewer than 2 runs per group (1 vs 5))" in v


def test_selected_settings_filter_the_rows():
    runs = runs_frame()
    t = build_table(runs, deterministic={"w-os"}, selected=[("w-dbr", 0.9), ("w-d", 0.7)])
    assert list(t["method"]) == ["orig", "orig-ft", "w-dbr", "w-d"]
    sel = pd.DataFrame({"method": ["w-c"], "rho": [0.3]})
    assert list(build_table(runs, selected=sel)["method"]) == ["orig", "orig-ft", "w-c"]
    with pytest.raises(WorkspaceError, match=r"w-bn\(0.7\)"):
        build_table(runs, selected=[("w-bn", 0.7)])


def test_rows_are_ordered_original_baseline_then_methods_with_rhos_ascending():
    runs = runs_frame()
    extra = pd.DataFrame([{"method": "w-dbr", "rho": 0.1, "seed": 0, "accuracy": 0.8, "target_error": 0.2},
                          {"method": "w-dbr", "rho": 0.1, "seed": 1, "accuracy": 0.8, "target_error": 0.2}])
    t = build_table(pd.concat([runs.iloc[::-1], extra], ignore_index=True), deterministic={"w-os"})
    labels = [format_setting(m, r) for m, r in zip(t["method"], t["rho"])]
    assert labels == ["orig", "orig-ft", "w-d(0.7)", "w-c(0.3)", "w-os(0.5)", "w-dbr(0.1)", "w-dbr(0.9)"]


def test_table_refuses_bad_input():
    runs = runs_frame()
    with pytest.raises(WorkspaceError, match="seed"):
        build_table(runs.drop(columns="seed"))
    with pytest.raises(WorkspaceError, match="baseline 'orig-ft'"):
        build_table(runs[runs["method"] != "orig-ft"])
    with pytest.raises(WorkspaceError, match="baseline 'ft'"):
        build_table(runs, baseline="ft")
    bad = runs.copy()
    bad.loc[3, "accuracy"] = np.nan
    with pytest.raises(WorkspaceError, match="finite"):
        build_table(bad)
    with pytest.raises(WorkspaceError, match="alpha"):
        build_table(runs, alpha=0)


def test_json_rows_follow_the_contract_without_nan(table):
    rows = table_to_json_rows(table)
    text = json.dumps(rows, allow_nan=False)   # raises on NaN
    assert "NaN" not in text
    assert [list(r) for r in rows] == [JSON_KEYS] * len(table)
    orig, dbr, wos = rows[0], rows[2], rows[3]
    assert orig["rho"] is None and orig["accuracy_std"] is None and orig["p_target_error"] is None
    assert wos["p_target_error"] is None and wos["a12_accuracy"] is None and wos["rho"] == 0.5
    assert isinstance(dbr["rank_sum"], int) and dbr["rank_sum"] == 5
    assert dbr["runs"][0] == {"seed": 0, "accuracy": 0.805, "target_error": 0.194}
    assert dbr["a12_target_error"] == 0.0 and round(dbr["p_target_error"], 3) == 0.009


def test_csv_round_trips(table):
    back = pd.read_csv(io.StringIO(table_to_csv(table)))
    assert list(back.columns) == TABLE_COLUMNS and len(back) == len(table)
    assert back["rank_sum"].tolist() == table["rank_sum"].tolist()
    assert json.loads(back.loc[2, "runs"])[0] == {"seed": 0, "accuracy": 0.805, "target_error": 0.194}
    assert math.isnan(back.loc[0, "p_target_error"])


def test_markdown_export(table):
    md = table_to_markdown(table, error_name="Confusion")
    lines = md.splitlines()
    assert lines[0].startswith("| Method | Accuracy | Confusion | Acc rank | Confusion rank | Rank sum |")
    dbr = next(line for line in lines if "w-dbr(0.9)" in line)
    assert dbr.startswith("| **w-dbr(0.9)** | 0.8260 ± 0.0160 | 0.1972 ± 0.0022 | 3 | 2 | **5** | 0.676 | 0.42(s) "
                          "| 0.009 | 0.00(l) | no |")
    assert next(line for line in lines if line.startswith("| orig |")).startswith("| orig | 0.8000 | 0.2000 |")
    assert "| w-d(0.7) |" in md   # not top-2: not bold


def test_latex_export(table):
    tex = table_to_latex(table, caption="CIFAR-10 & ResNet-18", label="tab:sweep")
    assert r"\caption{CIFAR-10 \& ResNet-18}" in tex and r"\label{tab:sweep}" in tex
    dbr = next(line for line in tex.splitlines() if "w-dbr(0.9)" in line)
    assert dbr.startswith(r"\textbf{w-dbr(0.9)} & \textbf{0.8260 $\pm$ 0.0160}")
    # p-value, then A12 with its letter, as in the paper's W / VD columns
    assert r"\textbf{0.009} & \textbf{0.00(l)} \\" in dbr
    d = next(line for line in tex.splitlines() if "w-d(0.7)" in line)
    assert "textbf" not in d and d.endswith(r"0.917 & 0.48(n) \\")
    wos = next(line for line in tex.splitlines() if "w-os(0.5)" in line)
    assert r"\textbf{0.7950} &" in wos and "pm" not in wos   # one run: no std
    assert tex.count(r"\begin{tabular}") == tex.count(r"\end{tabular}") == 1


def test_a_target_error_exactly_on_the_bound_counts_despite_rounding():
    # 0.75 * 0.3 is 0.22499999999999998 in floating point; 0.225 is meant to be on the bound
    grid = pd.DataFrame([
        {"method": "orig", "rho": None, "seed": 0, "accuracy": 0.80, "target_error": 0.3},
        {"method": "orig-ft", "rho": None, "seed": 0, "accuracy": 0.80, "target_error": 0.3},
        {"method": "m", "rho": 0.5, "seed": 0, "accuracy": 0.80, "target_error": 0.225},
        {"method": "m", "rho": 0.9, "seed": 0, "accuracy": 0.81, "target_error": 0.25},
    ])
    assert chosen(select_rhos(grid)) == [("m", 0.5, "a")]
    assert next_wos_rho({0.1: 0.225}, 0.3) is None
    assert row(build_table(grid, deterministic={"m"}), "m")["repaired"]


def test_setting_labels_keep_four_significant_digits():
    assert format_setting("bir", math.log(1.05)) == "bir(0.04879)"
    assert format_setting("w-os", 10 ** -4) == "w-os(0.0001)"
    assert format_setting("w-bn", 0.9995) == "w-bn(0.9995)"  # not rounded up to 1
    assert format_setting("orig", None) == format_setting("orig", float("nan")) == "orig"
