"""Repair figures on hand-made inputs."""

from diagnostics.figures_runs import runs_frame, tradeoff_figure
from repair.figures import curves_figure


def test_runs_frame_and_tradeoff_region():
    runs = [
        {"id": 1, "method": "orig-ft", "rho": 1.0, "targets": {"kind": "confusion", "targets": [["a", "b"]]},
         "status": "done", "progress": 1.0, "baseline": {"accuracy": 0.8, "target_error": 0.2},
         "final": {"accuracy": 0.81, "target_error": 0.19}, "started_at": 0.0, "finished_at": 60.0},
        {"id": 2, "method": "w-bn", "rho": 0.5, "targets": {"kind": "confusion", "targets": [["a", "b"]]},
         "status": "running", "progress": 0.5, "baseline": None, "final": None},
    ]
    frame = runs_frame(runs)
    assert frame["id"].tolist() == [2, 1] and frame.loc[1, "minutes"] == 1.0 and frame.loc[0, "targets"] == "a,b"
    fig = tradeoff_figure(frame, baseline={"accuracy": 0.8, "target_error": 0.2}, lambda1=0.25, lambda2=0.01,
                          reference="orig-ft")
    rect = fig.layout.shapes[0]
    assert rect.x0 == 0 and abs(rect.x1 - 0.15) < 1e-12 and abs(rect.y0 - 0.792) < 1e-12
    assert [t.name for t in fig.data] == ["orig", "orig-ft"]   # the running run is not plotted
    assert fig.data[1].marker.symbol == "diamond"               # the reference method
    curves = curves_figure([{"epoch": 0, "accuracy": 0.8, "target_error": 0.2, "loss": None},
                            {"epoch": 0.5, "step": 1, "accuracy": None, "target_error": None, "loss": 0.7},
                            {"epoch": 1, "step": 2, "accuracy": None, "target_error": None, "loss": 0.5},
                            {"epoch": 1, "accuracy": 0.79, "target_error": 0.1, "loss": 0.6}])
    names = [t.name for t in curves.data]
    assert names == ["training loss", "accuracy", "target error"]
    assert list(curves.data[0].y) == [0.7, 0.5] and list(curves.data[2].y) == [0.2, 0.1]
    # a post-hoc run has no step losses: one panel, no empty loss axes
    post_hoc = curves_figure([{"epoch": 0, "accuracy": 0.8, "target_error": 0.2, "loss": None},
                              {"epoch": 1, "accuracy": 0.79, "target_error": 0.1, "loss": None}])
    assert [t.name for t in post_hoc.data] == ["accuracy", "target error"]
    assert "yaxis3" not in post_hoc.layout and post_hoc.layout.yaxis.title.text == "accuracy"
    assert post_hoc.layout.yaxis2.tickformat == ".3f"
    assert post_hoc.layout.yaxis.range is None   # moving curves keep plotly's own range


def test_curves_of_a_run_that_changed_nothing_keep_a_narrow_axis():
    # a run that kept its parent's weights: accuracy 0.823 twice must not span 0.323..1.323
    flat = curves_figure([{"epoch": 0, "accuracy": 0.823, "target_error": 0.25, "loss": None},
                          {"epoch": 2, "accuracy": 0.823, "target_error": 0.25, "loss": None}])
    assert tuple(flat.layout.yaxis.range) == (0.813, 0.833)
    assert tuple(round(v, 6) for v in flat.layout.yaxis2.range) == (0.24, 0.26)


def test_a_failed_runs_row_says_why_not_its_last_progress_line():
    base = {"method": "w-bn", "rho": 0.5, "targets": None, "baseline": None, "final": None}
    frame = runs_frame([
        {**base, "id": 1, "status": "failed", "message": "step 40/120, loss 0.51",
         "error": "CUDA out of memory\nTraceback ..."},
        {**base, "id": 2, "status": "running", "message": "step 3/120, loss 0.9", "error": None},
        {**base, "id": 3, "status": "failed", "message": "step 1/120", "error": None},
    ]).set_index("id")
    assert frame.loc[1, "message"] == "failed: CUDA out of memory" and frame.loc[1, "error"] == "CUDA out of memory"
    assert frame.loc[2, "message"] == "step 3/120, loss 0.9"
    assert frame.loc[3, "message"] == "step 1/120"  # no error recorded: keep what there is
