"""``python -m workspace info`` on a broken workspace: exit 2, one ``error:`` line, no traceback.

Each case runs the real command in a subprocess on a workspace with a working factory
model (so a data error is reached, not a model error), its state folder outside the
workspace folder, and checks that the workspace folder is byte-for-byte unchanged.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from tests.conftest import REPO, TINY_FACTORY
from tests.reliability.conftest import tree_digest

WORKSPACE = """\
name = "cli-bad"
state_dir = "../state"
[model]
factory = "tinynet:build"
weights = "weights.pth"
[data]
format = "csv"
train = "train.csv"
eval = "train.csv"
[transform]
resize = 8
"""

CSV = "path,label\ntrain/cat/0.png,cat\ntrain/cat/1.png,cat\ntrain/dog/0.png,dog\ntrain/fox/0.png,fox\n"


@pytest.fixture
def cli_ws(bad_ws):
    namespace: dict = {}
    exec(TINY_FACTORY, namespace)
    torch.manual_seed(0)
    torch.save(namespace["build"](3).state_dict(), bad_ws / "weights.pth")
    (bad_ws / "tinynet.py").write_text(TINY_FACTORY)
    from tests.reliability.conftest import write_png

    write_png(bad_ws / "train" / "fox" / "0.png", 90)
    (bad_ws / "train.csv").write_text(CSV)
    (bad_ws / "workspace.toml").write_text(WORKSPACE)
    return bad_ws


CASES = [
    ("typo_key", lambda r: WORKSPACE.replace("weights =", "weigths ="), None,
     "workspace.toml:5: [model] unknown key 'weigths'; did you mean 'weights'?"),
    ("threshold_text", lambda r: 'threshold = "abc"\n' + WORKSPACE, None, "workspace.toml:1: threshold must be a number"),
    ("transform_number", lambda r: "transform = 5\n" + WORKSPACE.split("[transform]")[0], None,
     "workspace.toml:1: transform = 5 is not valid"),
    ("non_utf8_csv", None, CSV.replace("dog/0.png,dog", "dog/0.png,d\xf6g").encode("latin-1"),
     "train.csv:4: not UTF-8 text"),
    ("csv_escape", None, (CSV + "../../etc/passwd,cat\n").encode(),
     "train.csv:6: ../../etc/passwd resolves to"),
    ("conflicting_labels", None, (CSV + "train/cat/0.png,fox\n").encode(),
     "train/cat/0.png has two different labels: line 2 'cat' and line 6 'fox'"),
]


@pytest.mark.slow
@pytest.mark.parametrize("case_id, toml, csv_bytes, fragment", CASES, ids=[c[0] for c in CASES])
def test_cli_bad_input_is_one_error_line_and_exit_2(cli_ws, case_id, toml, csv_bytes, fragment):
    if toml is not None:
        (cli_ws / "workspace.toml").write_text(toml(cli_ws))
    if csv_bytes is not None:
        (cli_ws / "train.csv").write_bytes(csv_bytes)
    before = tree_digest(cli_ws)
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}  # no __pycache__ beside the user's model file
    proc = subprocess.run([sys.executable, "-m", "workspace", "info", "--workspace", str(cli_ws / "workspace.toml")],
                          cwd=REPO, capture_output=True, text=True, timeout=180, env=env)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == ""
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and fragment in errors[0], proc.stderr
    assert tree_digest(cli_ws) == before


def test_cli_workspace_opens_when_valid(cli_ws):
    """The fixture itself is valid: the same command succeeds on it (the cases break one thing)."""
    from workspace.core import open_workspace

    ws = open_workspace(cli_ws / "workspace.toml")
    assert ws.class_names == ("cat", "dog", "fox") and len(ws.split("train")) == 4
