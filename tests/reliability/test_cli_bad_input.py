"""``python -m workspace info`` on a broken workspace: exit 2, one ``error:`` line, no traceback.

Each case runs the real command on its own workspace with a working factory model (so a data
error is reached, not a model error), its state folder outside the workspace folder, and checks
that the workspace folder is byte-for-byte unchanged. The cases run together through
:mod:`tests.reliability.driver` (one process imports the command line once and forks a child per
case); the first one ``exec``s the real ``python -m workspace``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from tests.conftest import REPO, TINY_FACTORY
from tests.reliability.conftest import make_bad_ws, tree_digest, write_png

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


def make_cli_ws(folder):
    """The ``bad_ws`` workspace under ``folder`` with a TinyNet factory model and a third class."""
    root = make_bad_ws(folder)
    namespace: dict = {}
    exec(TINY_FACTORY, namespace)
    torch.manual_seed(0)
    torch.save(namespace["build"](3).state_dict(), root / "weights.pth")
    (root / "tinynet.py").write_text(TINY_FACTORY)
    write_png(root / "train" / "fox" / "0.png", 90)
    (root / "train.csv").write_text(CSV)
    (root / "workspace.toml").write_text(WORKSPACE)
    return root


@pytest.fixture
def cli_ws(tmp_path):
    return make_cli_ws(tmp_path)


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


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    """Every case run once: ``{id: (result, workspace digest before, after)}``."""
    root = tmp_path_factory.mktemp("cli-bad")
    todo, folders, before = [], {}, {}
    for i, (case_id, toml, csv_bytes, _) in enumerate(CASES):
        ws = folders[case_id] = make_cli_ws(root / case_id)
        if toml is not None:
            (ws / "workspace.toml").write_text(toml(ws))
        if csv_bytes is not None:
            (ws / "train.csv").write_bytes(csv_bytes)
        before[case_id] = tree_digest(ws)
        todo.append({"id": case_id, "cli": "workspace", "argv": ["info", "--workspace", str(ws / "workspace.toml")],
                     "cwd": str(REPO), "exec": i == 0, "timeout": 180,
                     "env": {"GROUPFIX_HOME": str(root / "home"), "PYTHONPATH": str(REPO)}})
    (root / "cases.json").write_text(json.dumps(todo))
    subprocess.run([sys.executable, "-m", "tests.reliability.driver", str(root / "cases.json"),
                    str(root / "results.json"), "--jobs", "2"], cwd=REPO, check=True, timeout=600,
                   env={**os.environ, "GROUPFIX_HOME": str(root / "home")})
    found = json.loads((root / "results.json").read_text())
    return {case_id: (found[case_id], before[case_id], tree_digest(folders[case_id])) for case_id, *_ in CASES}


@pytest.mark.slow
@pytest.mark.parametrize("case_id, toml, csv_bytes, fragment", CASES, ids=[c[0] for c in CASES])
def test_cli_bad_input_is_one_error_line_and_exit_2(results, case_id, toml, csv_bytes, fragment):
    proc, before, after = results[case_id]
    assert proc["code"] == 2, proc["stderr"]
    assert "Traceback" not in proc["stderr"] and proc["stdout"] == ""
    errors = [line for line in proc["stderr"].splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and fragment in errors[0], proc["stderr"]
    assert after == before  # nothing written into the workspace folder, not even __pycache__


def test_cli_workspace_opens_when_valid(cli_ws):
    """The fixture itself is valid: the same command succeeds on it (the cases break one thing)."""
    from workspace.core import open_workspace

    ws = open_workspace(cli_ws / "workspace.toml")
    assert ws.class_names == ("cat", "dog", "fox") and len(ws.split("train")) == 4
