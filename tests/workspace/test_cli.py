import json
import subprocess
import sys

import pytest
import torch

from tests.conftest import REPO
from workspace.__main__ import main


def run(argv, capsys):
    from workspace.cli import run_cli

    code = run_cli(main, argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_info_json_on_user_workspace(tiny_workspace, capsys):
    code, out, err = run(["info", "--workspace", str(tiny_workspace), "--json"], capsys)
    assert code == 0, err
    info = json.loads(out)
    assert info["name"] == "tiny" and info["classes"] == ["cat", "dog", "fox"]
    assert info["splits"] == {"train": 12, "eval": 9}
    assert info["model"]["version"] == "orig" and info["model"]["path"].endswith("weights.pth")
    assert 0.0 <= info["accuracy"] <= 1.0 and info["planted"] is None


def test_cache_reports_build_then_reuse(tiny_workspace, capsys):
    code, out, _ = run(["cache", "--workspace", str(tiny_workspace), "--json"], capsys)
    first = json.loads(out)["splits"]
    code, out, _ = run(["cache", "--workspace", str(tiny_workspace), "--json"], capsys)
    second = json.loads(out)["splits"]
    assert code == 0
    assert not first["train"]["reused"] and not first["eval"]["reused"]
    assert second["train"]["reused"] and second["eval"]["reused"]


@pytest.mark.parametrize("case", ["missing", "unsafe", "size", "corrupt_only"])
def test_bad_input_is_one_line_and_nonzero(tiny_workspace, capsys, case):
    root = tiny_workspace.parent
    target = str(tiny_workspace)
    if case == "missing":
        target = str(root / "nope.toml")
    elif case == "unsafe":
        import argparse  # any class outside torch's safe list needs full unpickling

        torch.save({"state_dict": torch.load(root / "weights.pth"), "args": argparse.Namespace(lr=1)},
                   root / "weights.pth")
    elif case == "size":
        state = torch.load(root / "weights.pth")
        state["head.weight"] = torch.zeros(5, 4)
        state["head.bias"] = torch.zeros(5)
        torch.save(state, root / "weights.pth")
    elif case == "corrupt_only":
        for png in (root / "data" / "test").rglob("*.png"):
            png.write_bytes(b"garbage")
    code, out, err = run(["info", "--workspace", target, "--json"], capsys)
    assert code == 2 and out == ""
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1
    expected = {"missing": "workspace file not found", "unsafe": "unsafe unpickling",
                "size": "do not fit the model", "corrupt_only": "none of the 9 images could be loaded"}[case]
    assert expected in lines[0]


def test_module_entry_point_runs_as_a_process(tiny_workspace):
    proc = subprocess.run([sys.executable, "-m", "workspace", "info", "--workspace", str(tiny_workspace.parent / "x.toml")],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stderr.strip().startswith("error: workspace file not found")
