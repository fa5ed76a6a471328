"""On the demo, Grad-CAM finds the planted spurious association; the gradcam CLI."""

import json

from diagnostics.__main__ import main
from diagnostics.associations import aggregate_associations
from diagnostics.run_gradcam import workspace_gradcam, workspace_shares
from diagnostics.mask_sources import load_masks
from workspace.cli import run_cli


def test_planted_spurious_object_is_the_top_association(demo_ws, demo_eval):
    planted = demo_ws.planted["spurious"]  # grass -> triangle
    result = workspace_gradcam(demo_ws, "eval", outputs=demo_eval)
    shares = workspace_shares(demo_ws, result, load_masks(demo_ws, "eval"))
    df = aggregate_associations(shares.shares, result.classes, result.correct, class_names=demo_ws.class_names,
                                object_names=shares.object_names, threshold=0.3)
    mine = df[df["class"] == planted["class"]].sort_values("rate", ascending=False)
    top, runner_up = mine.iloc[0], mine.iloc[1]
    assert top["object"] == planted["object"]
    assert top["rate"] > 0.1 and top["rate"] >= 3 * runner_up["rate"], mine.head()
    assert top["count_wrong"] > top["count_correct"]  # grass pulls non-triangles into triangle
    cloud = mine.set_index("object").loc["cloud"]
    assert cloud["rate"] < 0.05
    # the shapes themselves drive their own classes for most other classes
    own = df[df["class"] == df["object"]].set_index("class")["rate"]
    assert (own > 0.5).sum() >= 4


def test_cli_json(demo_eval, capsys):
    assert run_cli(main, ["gradcam", "--workspace", "demo", "--json", "--top", "60"]) == 0
    rows = json.loads(capsys.readouterr().out)["associations"]
    assert set(rows[0]) == {"class", "object", "count", "rate", "share_mean", "count_correct", "count_wrong"}
    rates = [r["rate"] for r in rows]
    assert rates == sorted(rates, reverse=True)
    tri = [r for r in rows if r["class"] == "triangle"]
    assert tri[0]["object"] == "grass"
    assert all(r["count"] == r["count_correct"] + r["count_wrong"] for r in rows)


def test_cli_errors(tiny_workspace, capsys):
    assert run_cli(main, ["gradcam", "--workspace", "demo", "--threshold", "1.5"]) == 2
    assert "error: --threshold" in capsys.readouterr().err
    assert run_cli(main, ["gradcam", "--workspace", str(tiny_workspace)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: this workspace has no object masks") and "masks =" in err
