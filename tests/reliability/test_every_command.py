"""Every command line on bad input: exit 2, one ``error:`` line naming the problem, nothing stored changed.

Covers ``python -m workspace info|cache|worker``, ``python -m diagnostics <every registered verb>``
and ``python -m repair run|list|cancel|methods`` (issue 17). One small workspace is built once per
module and made warm (its inference outputs on both splits are cached, one repaired version and
one failed run are stored); each case works on its own copy of the workspace file and the state
folder (the images and weights are shared and read only), breaks one thing, runs the command and
checks:

* exit status 2, nothing on stdout, exactly one ``error:`` line on stderr holding the expected
  words, no ``Traceback`` and no crash log (exit 1 is a bug report, not an answer to bad input);
* nothing changed: the workspace folder byte for byte and time for time (:func:`tree_digest`), the
  state folder and everything beside it byte for byte (:func:`content_digest`: SQLite moves the
  folder's times), and the shared data. So a refused ``gradients --lam nan`` wrote no CSV, a
  refused run left no job row, and a damaged or newer store was not "repaired".

The cases run through :mod:`tests.reliability.driver`: one process imports the command lines once
and forks a child per case (the same ``run_cli(main)`` as ``python -m``; a few cases ``exec`` the
real ``python -m ...`` to prove the entry points themselves), two at a time.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest
import torch

from tests.conftest import REPO, TINY_FACTORY, write_imagefolder
from tests.reliability.conftest import changed, content_digest, make_read_only, tree_digest

CUDA = torch.cuda.is_available()
VERSION = "v1-orig-ft"  # a stored repaired version (its weights are the loaded model's)
FAILURE = "CUDA out of memory.\nTried to allocate 2.00 GiB\n  (GPU 0; 7.79 GiB total capacity)"

WORKSPACE = textwrap.dedent("""\
    name = "every-command"
    task = "single_label"
    state_dir = "../state"
    allow_outside = true
    [model]
    factory = "tinynet:build"
    weights = "{shared}/weights.pth"
    [data]
    format = "imagefolder"
    train = "{shared}/data/train"
    eval = "{shared}/data/test"
    [transform]
    resize = 12
    mean = [0.5, 0.5, 0.5]
    std = [0.25, 0.25, 0.25]
""")


# ---- ways to break a case's copy (each gets the case folder: ws/, state/, and room for outputs) ----
def _set_weights(case: Path, name: str) -> None:
    toml = case / "ws" / "workspace.toml"
    text = toml.read_text()
    start = text.index('weights = "')
    end = text.index('"', start + len('weights = "'))
    toml.write_text(text[:start] + f'weights = "{name}"' + text[end + 1:])


def weights_folder(case: Path) -> None:
    (case / "ws" / "ckpt").mkdir()
    (case / "ws" / "ckpt" / "model.pth").write_bytes(b"x")
    _set_weights(case, "ckpt")


def weights_text(case: Path) -> None:
    (case / "ws" / "weights.txt").write_text("accuracy 0.93 after 90 epochs\n")
    _set_weights(case, "weights.txt")


def weights_truncated(shared: Path) -> Callable[[Path], None]:
    def prepare(case: Path) -> None:
        data = (shared / "weights.pth").read_bytes()
        (case / "ws" / "cut.pth").write_bytes(data[: len(data) // 2])
        _set_weights(case, "cut.pth")
    return prepare


def version_truncated(case: Path) -> None:
    path = case / "state" / "models" / f"{VERSION}.pt"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])


def store_garbage(case: Path) -> None:
    (case / "state" / "store.sqlite").write_bytes(os.urandom(4096))


def store_truncated(case: Path) -> None:
    path = case / "state" / "store.sqlite"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def store_newer(case: Path) -> None:
    with sqlite3.connect(case / "state" / "store.sqlite") as db:
        db.execute("UPDATE meta SET value='99' WHERE key='schema_version'")
    db.close()


def existing(name: str) -> Callable[[Path], None]:
    def prepare(case: Path) -> None:
        (case / name).write_text("keep me\n")
    return prepare


def read_only_state(case: Path) -> Callable[[], None]:
    return make_read_only(case / "state")


@dataclass
class Case:
    """One command on one broken input.

    ``argv`` may name ``{ws}`` (the case's workspace file) and ``{case}`` (its folder, for outputs);
    ``error`` is a fragment the ``error:`` line must hold; ``prepare(case)`` breaks the copy (it may
    return an undo, run after the command: a read-only mount).
    """

    id: str
    cli: str
    argv: tuple[str, ...]
    error: str
    prepare: Callable[[Path], Callable[[], None] | None] | None = None
    exec: bool = False
    needs_no_cuda: bool = False
    check: Callable[[str], None] | None = None  # a case that must work: checks its stdout
    creates: tuple[str, ...] = ()  # files such a case writes (beside the state folder)
    known: str | None = None  # a problem in a package this battery does not own: the proposed fix (xfail)


def D(id, verb, *args, error, **kw):  # noqa: N802 - a diagnostics case
    return Case(id, "diagnostics", (verb, "-w", "{ws}", *args), error, **kw)


def R(id, verb, *args, error, **kw):  # noqa: N802 - a repair case
    return Case(id, "repair", (verb, "-w", "{ws}", *args), error, **kw)


def W(id, verb, *args, error, **kw):  # noqa: N802 - a workspace case
    return Case(id, "workspace", (verb, "-w", "{ws}", *args), error, **kw)


def RUN(id, *args, error, method="w-aug", **kw):  # noqa: N802 - a repair run case
    return R(id, "run", "--method", method, "--targets", "cat,dog", *args, error=error, **kw)


NOT_FINITE = "is not a finite number"


def cases(shared: Path) -> list[Case]:
    return [
        # ---- python -m workspace -------------------------------------------------------------------
        W("info_unknown_version", "info", "--version", "v9", error="unknown model version 'v9'; valid: orig, v1-orig-ft"),
        W("cache_unknown_version", "cache", "--version", "v9", error="unknown model version 'v9'"),
        W("cache_device_tpu", "cache", "--device", "tpu", error="unknown device 'tpu'; use auto, cpu, cuda", exec=True),
        W("cache_device_tpu_rebuild", "cache", "--device", "tpu", "--rebuild", error="unknown device 'tpu'"),
        W("cache_device_cuda", "cache", "--device", "cuda", error="CUDA is not available", needs_no_cuda=True),
        W("cache_device_cuda_rebuild", "cache", "--device", "cuda", "--rebuild", error="CUDA is not available",
          needs_no_cuda=True),
        W("cache_device_cuda_7", "cache", "--device", "cuda:x", error="unknown device 'cuda:x'"),
        W("cache_split", "cache", "--split", "test", error="argument --split: invalid choice: 'test'"),
        W("weights_is_a_folder", "info", error="is a folder, not a file; name the checkpoint file inside it "
          "(it holds model.pth)", prepare=weights_folder),
        W("weights_is_text", "info", error="weights.txt is a text file, not a checkpoint", prepare=weights_text),
        W("weights_truncated", "info", error="cut.pth is truncated or corrupt", prepare=weights_truncated(shared)),
        W("store_garbage", "info", error="is damaged or not a Groupfix store (file is not a database); it was left "
          "as it is", prepare=store_garbage),
        W("store_newer", "cache", error="was written by a newer Groupfix (store schema 99, this one reads up to 2)",
          prepare=store_newer),
        W("state_read_only_cache_rebuild", "cache", "--rebuild", error="is read-only: cannot store the train/eval "
          "inference cache", prepare=read_only_state),
        Case("worker_unknown_job", "workspace", ("worker", "-w", "{ws}", "--job-id", "999"), "no job 999"),
        Case("workspace_missing", "workspace", ("info", "-w", "{case}/nowhere.toml"), "workspace file not found"),
        # ---- python -m diagnostics: every verb -------------------------------------------------------
        D("confusion_top_negative", "confusion", "--top", "-1", error="--top must be at least 1, got -1"),
        D("confusion_unknown_version", "confusion", "--version", "v9", error="unknown model version 'v9'"),
        D("confusion_store_truncated", "confusion", error="is damaged or not a Groupfix store",
          prepare=store_truncated),
        D("confusion_version_truncated", "confusion", "--version", VERSION, error=f"{VERSION}.pt is truncated or "
          "corrupt", prepare=version_truncated),
        D("triplets_top_zero", "triplets", "--top", "0", error="--top must be at least 1, got 0"),
        D("triplets_unknown_anchor", "triplets", "--anchor", "cow", error="--anchor: unknown class 'cow'; valid: "
          "cat, dog, fox"),
        D("wos_rho_2", "wos", "--targets", "cat,dog", "--rho", "2", error="--rho must be in [0, 1], got 2.0"),
        D("wos_rho_nan", "wos", "--targets", "cat,dog", "--rho", "nan", error=f"argument --rho: 'nan' {NOT_FINITE}"),
        D("wos_rho_inf", "wos", "--targets", "cat,dog", "--rho", "inf", error=f"argument --rho: 'inf' {NOT_FINITE}"),
        D("wos_unknown_class", "wos", "--targets", "cat,cow", "--rho", "0.5", error="unknown class 'cow'; valid "
          "classes: cat, dog, fox"),
        D("wos_lambda1_negative", "wos", "--targets", "cat,dog", "--rho", "0.5", "--lambda1", "-0.5",
          error="--lambda1 must be in [0, 1]"),
        D("wos_unknown_version", "wos", "--targets", "cat,dog", "--rho", "0.5", "--version", "v9",
          error="unknown model version 'v9'"),
        D("gate_bound_out_of_range", "gate", "--max-pair-conf", "1.5", error="--max-pair-conf must be in [0, 1], "
          "got 1.5"),
        D("gate_min_accuracy_nan", "gate", "--min-accuracy", "nan", error=f"argument --min-accuracy: 'nan' "
          f"{NOT_FINITE}"),
        D("gce_epochs_zero", "gce", "--epochs", "0", error="GCE epochs and batch size must be >= 1"),
        D("gce_lr_nan", "gce", "--lr", "nan", error=f"argument --lr: 'nan' {NOT_FINITE}"),
        D("gce_q_2", "gce", "--q", "2", error="GCE q must be in (0, 1], got 2.0"),
        D("gce_batch_size_zero", "gce", "--batch-size", "0", error="GCE epochs and batch size must be >= 1"),
        D("gce_lr_overflows_float32", "gce", "--lr", "1e300", "--epochs", "1", error="lr must be"),
        RUN("run_nproc_zero", "--nproc", "0", error="--nproc must be >= 1"),
        RUN("run_device_tpu", "--device", "tpu", error="unknown device 'tpu'"),
        RUN("run_device_cuda", "--device", "cuda", error="CUDA is not available", needs_no_cuda=True),
        RUN("run_unknown_parent", "--parent", "v9", error="unknown model version 'v9'"),
        RUN("run_parent_truncated", "--parent", VERSION, error=f"{VERSION}.pt is truncated or corrupt",
            prepare=version_truncated),
        RUN("run_read_only", "--device", "cpu", error="is read-only: cannot save a job", prepare=read_only_state),
        R("run_unknown_class", "run", "--method", "w-aug", "--targets", "cat,cow", error="unknown class 'cow'"),
        R("run_one_class", "run", "--method", "w-aug", "--targets", "cat", error="'cat' must name 2 (pair) or 3 "
          "(triplet) different classes"),
        R("run_unknown_method", "run", "--method", "magic", "--targets", "cat,dog", error="unknown repair method "
          "'magic'; valid: "),
        R("list_store_garbage", "list", "--json", error="is damaged or not a Groupfix store", prepare=store_garbage),
        R("list_store_newer", "list", error="written by a newer Groupfix", prepare=store_newer),
        R("cancel_unknown_run", "cancel", "--run-id", "999", error="no job 999"),
        R("cancel_read_only", "cancel", "--run-id", "2", error="is read-only: cannot save", prepare=read_only_state),
        R("methods_unknown_scope", "methods", "--scope", "neck", error="argument --scope: invalid choice: 'neck'"),
        R("methods_weights_text", "methods", error="weights.txt is a text file", prepare=weights_text),
    ]


def _failed_run_error_is_one_line(stdout: str) -> None:
    runs = json.loads(stdout)
    assert [r["status"] for r in runs] == ["failed", "queued"], runs
    assert runs[0]["error"] == "RuntimeError: CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 7.79 GiB total "\
        "capacity)", runs[0]["error"]


def _accuracy_line(stdout: str) -> None:
    assert stdout.startswith("every-command (single_label): 3 classes, train 12, eval 9, model orig"), stdout


def _json_with(*keys: str) -> Callable[[str], None]:
    def check(stdout: str) -> None:
        found = json.loads(stdout)
        assert all(k in found for k in keys), sorted(found)
    return check


#: commands that must work: viewing a read-only state folder computes what it lacks without storing it
WORKING = [
    W("ok_read_only_info", "info", error="", prepare=read_only_state, check=_accuracy_line),
    D("ok_read_only_confusion", "confusion", "--json", error="", prepare=read_only_state,
      check=_json_with("accuracy", "pairs")),
    D("ok_read_only_sample", "sample", "--index", "0", "--neighbours", "3", "--json", error="",
      prepare=read_only_state, check=_json_with("neighbours")),
    D("ok_read_only_gradients", "gradients", "--out", "{case}/scores.csv", "--json", error="",
      prepare=read_only_state, check=_json_with("rows", "delta"), creates=("scores.csv",)),
    R("ok_list_failed_run_error_is_one_line", "list", "--json", error="", check=_failed_run_error_is_one_line),
    R("ok_read_only_list", "list", "--json", error="", prepare=read_only_state, check=_failed_run_error_is_one_line),
]


# ---- the module's workspace and the one driver run ---------------------------------------------------
def build_base(root: Path) -> tuple[Path, Path]:
    """``root/shared`` (images, weights) and ``root/base`` (ws/ + a warm state/). Returns both."""
    import repair.runs
    from workspace import jobs
    from workspace.core import open_workspace
    from workspace.targets import Target

    shared = root / "shared"
    write_imagefolder(shared / "data" / "train")
    write_imagefolder(shared / "data" / "test", per_class=3, seed=1)
    namespace: dict = {}
    exec(TINY_FACTORY, namespace)
    torch.manual_seed(0)
    torch.save(namespace["build"](3).state_dict(), shared / "weights.pth")
    past = time.time() - 600  # older than the listing cache's 2 s racy window: every case reuses the listing
    for path in [shared, *shared.rglob("*")]:
        os.utime(path, (past, past))
    base = root / "base"
    (base / "ws").mkdir(parents=True)
    (base / "ws" / "tinynet.py").write_text(TINY_FACTORY)
    (base / "ws" / "workspace.toml").write_text(WORKSPACE.format(shared=shared))
    ws = open_workspace(base / "ws" / "workspace.toml")
    for split in ("eval", "train"):
        ws.outputs(split, device="cpu")
    assert ws.save_version(ws.load_model(), method="orig-ft")["id"] == VERSION
    # run 1 failed with a three-line error (as CUDA's out-of-memory errors are); run 2 is queued
    # (post-hoc, so it holds no device queue back: the cases that start a run do not wait for it)
    config = repair.runs.TrainConfig(epochs=1, device="cpu", scope="head")
    target = Target.parse("cat,dog", ws.class_names)
    failed = repair.runs.create_run(ws, "w-aug", target, 0.5, config)

    def out_of_memory(*args, **kwargs):
        raise RuntimeError(FAILURE)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(type(repair.runs.get_method("w-aug")), "train", out_of_memory)
        assert jobs.run_job(ws, failed)["status"] == "failed"
    assert repair.runs.create_run(ws, "w-os", target, 0.5, config) == failed + 1
    assert not list(base.rglob("__pycache__")), "importing the factory wrote into the user's folder"
    return shared, base


@pytest.fixture(scope="module")
def battery(tmp_path_factory):
    """Run every case once: ``{id: (case, result, problems)}`` (``problems``: what changed)."""
    root = tmp_path_factory.mktemp("every-command")
    shared, base = build_base(root)
    home = root / "home"
    home.mkdir()
    shared_before = tree_digest(shared)
    todo, undo, before = [], {}, {}
    all_cases = [c for c in cases(shared) + WORKING if not (c.needs_no_cuda and CUDA)]
    for case in all_cases:
        folder = root / "cases" / case.id
        shutil.copytree(base, folder, symlinks=True)
        if case.prepare is not None:
            undo[case.id] = case.prepare(folder)
        before[case.id] = (tree_digest(folder / "ws"), content_digest(folder))
        argv = [a.replace("{ws}", str(folder / "ws" / "workspace.toml")).replace("{case}", str(folder))
                for a in case.argv]
        todo.append({"id": case.id, "cli": case.cli, "argv": argv, "cwd": str(folder), "exec": case.exec,
                     "timeout": 120, "env": {"GROUPFIX_HOME": str(home), "PYTHONDONTWRITEBYTECODE": "",
                                             "PYTHONPATH": str(REPO)}})
    (root / "cases.json").write_text(json.dumps(todo))
    try:
        subprocess.run([sys.executable, "-m", "tests.reliability.driver", str(root / "cases.json"),
                        str(root / "results.json"), "--jobs", "2"], cwd=REPO, check=True, timeout=900,
                       env={**os.environ, "GROUPFIX_HOME": str(home)})
    finally:
        for fn in undo.values():
            if fn is not None:
                fn()
    results = json.loads((root / "results.json").read_text())
    out = {}
    for case in all_cases:
        folder = root / "cases" / case.id
        ws_before, all_before = before[case.id]
        problems = []
        if tree_digest(folder / "ws") != ws_before:
            problems.append("the workspace folder changed")
        after = content_digest(folder)
        problems += [p for p in changed(all_before, after) if p not in case.creates]
        problems += [f"{p} was not written" for p in case.creates if p not in after]
        out[case.id] = (case, results[case.id], problems, folder)
    assert tree_digest(shared) == shared_before, "the shared images or weights changed"
    crashes = list((home / "logs").glob("*.log")) if (home / "logs").is_dir() else []
    out["_crashes"] = [p.read_text()[-2000:] for p in crashes]
    return out


ALL = cases(Path("/shared"))
assert len({c.id for c in ALL}) == len(ALL)


@pytest.mark.slow
@pytest.mark.parametrize("case_id", [c.id if c.known is None else pytest.param(
    c.id, marks=pytest.mark.xfail(strict=True, reason=c.known)) for c in ALL])
def test_bad_input_is_one_error_line_exit_2_and_nothing_stored_changes(battery, case_id):
    case = next(c for c in ALL if c.id == case_id)
    if case.needs_no_cuda and CUDA:
        pytest.skip("this machine has CUDA")
    _, result, problems, folder = battery[case_id]
    err = result["stderr"]
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert result["code"] == 2, f"exit {result['code']}: {err[-1500:]}"
    assert len(lines) == 1, err[-1500:]
    assert case.error.replace("{case}", str(folder)) in lines[0], lines[0]
    assert "Traceback" not in err and result["stdout"] == "", (err[-1500:], result["stdout"][-500:])
    assert not problems, f"stored state changed: {problems}"


@pytest.mark.slow
@pytest.mark.parametrize("case_id", [c.id for c in WORKING])
def test_viewing_works_and_stores_nothing(battery, case_id):
    """A read-only state folder can be viewed: the command works and nothing under it changes."""
    case, result, problems, _ = battery[case_id]
    assert result["code"] == 0, result["stderr"][-1500:]
    assert "error:" not in result["stderr"] and "Traceback" not in result["stderr"]
    case.check(result["stdout"])
    assert not problems, f"stored state changed: {problems}"


def test_no_case_crashed(battery):
    """No case reached the bug boundary (which writes a crash log)."""
    assert battery["_crashes"] == []


def test_battery_counts_at_least_40_cases():
    assert len([c for c in ALL if c.known is None]) >= 40
