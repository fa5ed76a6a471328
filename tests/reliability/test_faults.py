"""Faults never leave anything half written: a full disk, SIGKILL mid-write, two writers at once.

* Disk full while the inference cache is built and while a model version is saved (a patched
  write raising ``ENOSPC``, and, where this process may mount one, a real full tmpfs): one clear
  ``error:`` line, the previous entry still reads back whole, no temporary file is ever read, and
  the next run works.
* SIGKILL while a big artifact is written, and while a store migration runs (killed at a point the
  test controls, through a hook installed in the child process only): the next open works and
  reads either the old value or the new one, never a part.
* Several processes writing reviews and runs to one store at once: no "database is locked", no
  lost row.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import REPO
from workspace.cli import run_cli
from workspace.errors import WorkspaceError


def error_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("error:")]


def temporaries(root: Path) -> list[Path]:
    return sorted(p for p in Path(root).rglob("*") if p.name.startswith(".tmp-"))


@pytest.fixture
def warm(tiny_workspace):
    """The tiny workspace opened once, with its eval and train outputs stored."""
    from workspace.core import open_workspace

    ws = open_workspace(tiny_workspace)
    for split in ("eval", "train"):
        ws.outputs(split, device="cpu")
    return tiny_workspace


def outputs_arrays(path) -> dict[str, np.ndarray]:
    from workspace.core import open_workspace

    out = open_workspace(path).cached_outputs("eval")
    assert out is not None, "the stored eval outputs no longer read back"
    return {k: np.array(getattr(out, k)) for k in ("logits", "probs", "labels", "embeddings", "indices")}


def assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


# ---- disk full ------------------------------------------------------------------------------------
def failing_np_save(after: int):
    """``np.save`` that writes ``after`` files, then half of the next one and raises ENOSPC."""
    real = np.save
    calls = {"n": 0}

    def save(file, arr, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] > after:
            Path(file).write_bytes(b"\x93NUMPY" + b"\x00" * 10)  # what a full disk leaves: a stub
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(file))
        return real(file, arr, *args, **kwargs)
    return save


def test_disk_full_during_a_cache_build_is_one_line_and_the_old_entry_survives(warm, monkeypatch, capsys):
    from workspace.__main__ import main

    before = outputs_arrays(warm)
    monkeypatch.setattr(np, "save", failing_np_save(after=2))
    code = run_cli(main, ["cache", "--workspace", str(warm), "--split", "eval", "--rebuild", "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    lines = error_lines(err)
    assert len(lines) == 1 and lines[0].startswith("error: cannot write the outputs artifact under ")
    assert lines[0].endswith("orig/eval: No space left on device"), lines[0]
    monkeypatch.undo()
    state = warm.parent / ".groupfix"
    assert temporaries(state) == []  # the half-written entry was removed, never renamed into place
    assert_same(outputs_arrays(warm), before)  # the previous entry reads back whole
    assert run_cli(main, ["cache", "--workspace", str(warm), "--split", "eval", "--rebuild", "--device", "cpu"]) == 0
    assert "eval: 9 images, built" in capsys.readouterr().out
    assert_same(outputs_arrays(warm), before)


def half_torch_save(obj, f, *args, **kwargs):
    """``torch.save`` on a full disk: a partial file, then torch's own error (seen on a full tmpfs)."""
    Path(f).write_bytes(b"PK\x03\x04" + b"\x00" * 100)
    raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534")


def test_disk_full_during_a_version_save_leaves_no_file_and_no_row(warm, monkeypatch):
    from workspace.core import open_workspace

    ws = open_workspace(warm)
    model = ws.load_model()
    monkeypatch.setattr(torch, "save", half_torch_save)
    with pytest.raises(WorkspaceError) as info:
        ws.save_version(model, method="orig-ft")
    message = str(info.value)
    assert message.startswith(f"cannot save the orig-ft model version in {ws.state_dir / 'models'}: torch could "
                              "not write the file ([enforce fail at inline_container.cc:672] . unexpected pos")
    assert message.endswith("is the disk full?") and "\n" not in message
    assert list((ws.state_dir / "models").iterdir()) == [] and [v["id"] for v in ws.versions()] == ["orig"]
    monkeypatch.undo()
    row = ws.save_version(model, method="orig-ft")
    assert row["id"] == "v1-orig-ft" and sorted(p.name for p in (ws.state_dir / "models").iterdir()) == ["v1-orig-ft.pt"]
    reloaded = ws.load_model("v1-orig-ft")
    for key, value in model.state_dict().items():
        assert torch.equal(reloaded.state_dict()[key], value), key


def test_disk_full_at_the_end_of_a_repair_run_fails_the_run_in_one_line(warm, monkeypatch, capsys):
    from repair.__main__ import main

    args = ["run", "--workspace", str(warm), "--method", "orig-ft", "--targets", "cat,dog", "--scope", "head",
            "--epochs", "1", "--device", "cpu", "--json"]
    monkeypatch.setattr(torch, "save", half_torch_save)
    assert run_cli(main, args) == 1  # the run was accepted and failed: its row says why
    captured = capsys.readouterr()
    lines = error_lines(captured.err)
    assert len(lines) == 1 and lines[0].startswith("error: run 1 failed: cannot save the orig-ft model version in ")
    assert "is the disk full?" in lines[0] and "Traceback" not in captured.err
    monkeypatch.undo()
    assert run_cli(main, ["list", "--workspace", str(warm), "--json"]) == 0
    runs = json.loads(capsys.readouterr().out)
    assert runs[0]["status"] == "failed" and "\n" not in runs[0]["error"] and runs[0]["model_version"] is None
    assert run_cli(main, args) == 0  # the next run works, and takes the first free id
    assert json.loads(capsys.readouterr().out)["model_version"]["id"] == "v1-orig-ft"


@pytest.fixture
def small_tmpfs(tmp_path):
    """``mount(folder, size)``: a tmpfs of ``size`` bytes over ``folder``, keeping its files; unmounted after."""
    mounted = []

    def mount(folder: Path, size: int) -> Path:
        if os.geteuid() != 0:
            pytest.skip("mounting a tmpfs needs root")
        keep = folder.with_name(folder.name + ".orig")
        folder.rename(keep)
        folder.mkdir()
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                              capture_output=True, text=True)
        if done.returncode != 0:
            folder.rmdir()
            keep.rename(folder)
            pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
        mounted.append(folder)
        subprocess.run(["cp", "-a", f"{keep}/.", str(folder)], check=True)
        return folder

    yield mount
    for folder in mounted:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def fill(folder: Path, leave: int) -> Path:
    """A filler file that leaves about ``leave`` bytes free on ``folder``'s file system."""
    st = os.statvfs(folder)
    free = st.f_bavail * st.f_frsize
    filler = folder / "filler"
    filler.write_bytes(b"\x00" * max(0, free - leave))
    return filler


def test_a_really_full_disk_during_a_cache_build(warm, small_tmpfs, capsys):
    from workspace.__main__ import main

    before = outputs_arrays(warm)
    artifacts = small_tmpfs(warm.parent / ".groupfix" / "artifacts", 1 << 20)
    filler = fill(artifacts, leave=4096)  # one page: the first array of a new entry fits, the rest do not
    code = run_cli(main, ["cache", "--workspace", str(warm), "--split", "eval", "--rebuild", "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err, err
    lines = error_lines(err)
    assert len(lines) == 1 and "cannot write the outputs artifact" in lines[0], err
    assert lines[0].endswith("No space left on device"), lines[0]
    assert temporaries(artifacts) == []
    assert_same(outputs_arrays(warm), before)
    filler.unlink()
    assert run_cli(main, ["cache", "--workspace", str(warm), "--split", "eval", "--rebuild", "--device", "cpu"]) == 0
    assert_same(outputs_arrays(warm), before)


def test_a_really_full_disk_during_a_version_save(warm, small_tmpfs):
    from workspace.core import open_workspace

    ws = open_workspace(warm)
    models = small_tmpfs(ws.models_dir(), 16384)
    filler = fill(models, leave=0)
    with pytest.raises(WorkspaceError, match=r"^cannot save the orig-ft model version in .*(disk full|No space)"):
        ws.save_version(ws.load_model(), method="orig-ft")
    assert sorted(p.name for p in models.iterdir()) == ["filler"] and len(ws.versions()) == 1
    filler.unlink()
    assert ws.save_version(ws.load_model(), method="orig-ft")["id"] == "v1-orig-ft"
    assert ws.load_model("v1-orig-ft") is not None


# ---- SIGKILL ------------------------------------------------------------------------------------------
def start(script: str, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(script), *args], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO)})


def wait_for(path: Path, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None:
            raise AssertionError(f"the child ended early ({proc.returncode}): {proc.stderr.read()[-2000:]}")
        assert time.monotonic() < deadline, "the child never reached the kill point"
        time.sleep(0.02)


def kill(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL


KILL_IN_CACHE_WRITE = """
    import sys, time
    from pathlib import Path
    import numpy as np
    from workspace.core import open_workspace

    workspace, marker = sys.argv[1], Path(sys.argv[2])
    ws = open_workspace(workspace)
    out = ws.cached_outputs("eval")
    n = 400_000  # a big entry: 400k rows of the same columns
    rows = np.arange(n) % out.n
    big = type(out)(logits=np.asarray(out.logits)[rows] + 1, probs=np.asarray(out.probs)[rows],
                    preds=np.asarray(out.preds)[rows], labels=np.asarray(out.labels)[rows],
                    embeddings=np.asarray(out.embeddings)[rows], indices=np.arange(n), class_names=out.class_names)
    real, calls = np.save, []

    def save(file, arr, *args, **kwargs):
        real(file, arr, *args, **kwargs)
        calls.append(file)
        if len(calls) == 3:  # three of the six arrays are on disk: stop here until killed
            marker.write_text(str(file))
            time.sleep(600)

    np.save = save
    ws.save_outputs(big, "eval", "orig")
"""


@pytest.mark.slow
def test_sigkill_while_writing_a_big_artifact(warm, tmp_path):
    from workspace.core import open_workspace

    before = outputs_arrays(warm)
    marker = tmp_path / "paused"
    proc = start(KILL_IN_CACHE_WRITE, str(warm), str(marker))
    wait_for(marker, proc)
    assert Path(marker.read_text()).stat().st_size > 1_000_000  # really in the middle of a big write
    kill(proc)
    state = warm.parent / ".groupfix"
    left = temporaries(state / "artifacts")
    assert len(left) == 1 and len(list(left[0].iterdir())) == 3  # the killed write's folder: never read
    assert_same(outputs_arrays(warm), before)  # the next open reads the old entry, whole
    ws = open_workspace(warm)
    again = ws.outputs("eval", device="cpu", rebuild=True)  # the next write works and sweeps the leftover
    np.testing.assert_array_equal(np.asarray(again.logits), before["logits"])
    assert temporaries(state / "artifacts") == []


KILL_IN_LOOP = """
    import sys, time
    from pathlib import Path
    import numpy as np
    from workspace.artifacts import ArtifactStore

    store, marker = ArtifactStore(sys.argv[1]), Path(sys.argv[2])
    for i in range(10_000):  # two values of 3 x 16 MB, saved in turn under one key until killed
        value = {"a": np.full(4_000_000, i % 2, np.float32), "b": np.full(4_000_000, i % 2, np.float32),
                 "c": np.full(4_000_000, i % 2, np.float32), "turn": i % 2}
        store.save("big", "k", value)
        marker.write_text(str(i))
"""


@pytest.mark.slow
@pytest.mark.parametrize("delay", [0.05, 0.17, 0.4])
def test_sigkill_at_any_moment_reads_back_a_whole_value_or_none(tmp_path, delay):
    from workspace.artifacts import ArtifactStore

    marker = tmp_path / "saved"
    proc = start(KILL_IN_LOOP, str(tmp_path / "artifacts"), str(marker))
    wait_for(marker, proc)
    time.sleep(delay)
    kill(proc)
    store = ArtifactStore(tmp_path / "artifacts")
    value = store.load("big", "k")
    if value is not None:  # None only when killed between removing the old entry and renaming the new one
        turn = value["turn"]
        for name in "abc":
            assert value[name].shape == (4_000_000,) and (value[name] == turn).all(), name
    store.save("big", "k", {"a": np.zeros(3), "turn": 5})
    assert store.load("big", "k")["turn"] == 5 and temporaries(tmp_path / "artifacts") == []


OLD_ROWS = 500


def v1_store(path: Path) -> dict:
    """A store as schema version 1 wrote it, with rows in every table. Returns the row counts."""
    from workspace.store import _SCHEMA

    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    for statement in _SCHEMA.split(";"):
        if statement.strip():
            db.execute(statement)
    db.execute("BEGIN")
    db.execute("INSERT INTO meta VALUES ('schema_version', '1')")
    db.execute("INSERT INTO model_versions (id, path, created_at) VALUES ('orig', '/m.pt', 1)")
    payload = "x" * 2000  # enough rows that the backup copy takes many pages
    for i in range(OLD_ROWS):
        db.execute("INSERT INTO runs (method, status, created_at, log_tail) VALUES ('w-aug', 'done', ?, ?)",
                   (i, payload))
        db.execute("INSERT INTO reviews (kind, key, model_version, verdict, created_at, updated_at) "
                   "VALUES ('association', ?, 'orig', 'spurious', 1, 1)", (f"k{i}",))
    db.execute("COMMIT")
    db.close()
    return {"runs": OLD_ROWS, "reviews": OLD_ROWS, "model_versions": 1}


KILL_IN_MIGRATION = """
    import sqlite3, sys, time
    from pathlib import Path
    from workspace import store as S

    path, marker, where = sys.argv[1], Path(sys.argv[2]), sys.argv[3]

    def pause():
        marker.write_text(where)
        time.sleep(600)

    class Pausing(sqlite3.Connection):
        def backup(self, target, **kwargs):  # copy page by page; stop after the first step
            return super().backup(target, pages=1, progress=lambda status, remaining, total: pause())

    real = sqlite3.connect

    def connect(*args, **kwargs):
        db = real(*args, factory=Pausing if where == "backup" else sqlite3.Connection, **kwargs)
        db.create_function("pause_here", 0, pause)
        return db

    sqlite3.connect = connect
    if where == "statements":  # half of the ALTER TABLEs have run inside the migration's transaction
        S.MIGRATIONS[2].insert(len(S.MIGRATIONS[2]) // 2, "SELECT pause_here()")
    S.Store(path)
"""


def counts(path: Path) -> dict:
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        return {t: db.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in ("runs", "reviews", "model_versions")}


@pytest.mark.parametrize("where", ["backup", "statements"])
def test_sigkill_during_a_store_migration(tmp_path, where):
    from workspace.store import SCHEMA_VERSION, Store

    path = tmp_path / "store.sqlite"
    rows = v1_store(path)
    marker = tmp_path / "paused"
    proc = start(KILL_IN_MIGRATION, str(path), str(marker), where)
    wait_for(marker, proc)
    kill(proc)
    backup = tmp_path / "store.sqlite.v1.bak"
    if where == "backup":
        assert not backup.exists()  # a half copy never takes the backup's name
    else:
        assert counts(backup) == rows  # the backup was whole before the first statement ran
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        assert db.execute("SELECT value FROM meta").fetchone()[0] == "1"  # the killed step left version 1
        assert "kind" not in [r[1] for r in db.execute("PRAGMA table_info(runs)")]
    store = Store(path)  # the next open migrates from the start
    assert store.schema_version == SCHEMA_VERSION
    assert counts(path) == rows and counts(backup) == rows
    assert {r["kind"] for r in store.list_runs()} == {"repair"}
    with sqlite3.connect(f"file:{backup}?mode=ro", uri=True) as db:
        assert db.execute("SELECT value FROM meta").fetchone()[0] == "1"
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert sorted(p.name for p in tmp_path.iterdir() if ".bak" in p.name) == ["store.sqlite.v1.bak"]


def test_a_fresh_store_is_created_without_a_backup(tmp_path):
    from workspace.store import SCHEMA_VERSION, Store

    assert Store(tmp_path / "store.sqlite").schema_version == SCHEMA_VERSION
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(("-wal", "-shm"))) == ["store.sqlite"]


# ---- two writers at once ------------------------------------------------------------------------------
WRITER = """
    import sys, time
    from pathlib import Path
    from workspace.store import Store

    path, me, n, go = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), Path(sys.argv[4])
    while not go.exists():
        time.sleep(0.005)
    store = Store(path)  # the first open may also create or migrate the store: all start at once
    for i in range(n):
        store.upsert_review("association", f"w{me}-{i}", model_version="orig", verdict="spurious", note=str(i))
        store.upsert_review("association", "shared", model_version="orig", verdict="unsure", note=f"{me}-{i}")
        run = store.create_run(method="w-aug", targets=[["cat", "dog"]], rho=0.5, config={"writer": me})
        store.update_run(run, status="running", progress=0.5)
        store.add_metrics(run, [{"epoch": 1, "step": s, "loss": 0.1} for s in range(3)])
        store.update_run(run, status="done", progress=1.0)
    print("ok")
"""


@pytest.mark.slow
@pytest.mark.parametrize("start_from", ["new", "v1"])
def test_writers_in_several_processes_lose_nothing(tmp_path, start_from):
    from workspace.store import SCHEMA_VERSION, Store

    path, go, n, writers = tmp_path / "store.sqlite", tmp_path / "go", 60, 4
    if start_from == "v1":
        v1_store(path)
    procs = [start(WRITER, str(path), str(me), str(n), str(go)) for me in range(writers)]
    time.sleep(0.5)
    go.touch()
    for proc in procs:
        out, err = proc.communicate(timeout=240)
        assert proc.returncode == 0 and out.strip() == "ok", err[-2000:]
        assert "locked" not in err and "Traceback" not in err
    store = Store(path)
    assert store.schema_version == SCHEMA_VERSION
    old = OLD_ROWS if start_from == "v1" else 0
    runs = store.list_runs()
    mine = [r for r in runs if r["config"]]
    assert len(runs) == old + writers * n and len(mine) == writers * n
    assert all(r["status"] == "done" and r["progress"] == 1.0 for r in mine)
    assert sorted(r["config"]["writer"] for r in mine) == sorted(list(range(writers)) * n)
    assert all(len(store.run_metrics(r["id"])) == 3 for r in mine[:: n // 3])
    keys = {r["key"] for r in store.list_reviews("association")}
    assert {f"w{me}-{i}" for me in range(writers) for i in range(n)} <= keys
    shared = store.get_review("association", "shared", model_version="orig")
    assert shared["verdict"] == "unsure" and shared["note"].endswith(f"-{n - 1}")  # one row, updated in place
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT count(*) FROM reviews WHERE key='shared'").fetchone()[0] == 1
    backups = [p.name for p in tmp_path.iterdir() if ".bak" in p.name]
    assert backups == (["store.sqlite.v1.bak"] if start_from == "v1" else [])


# ---- files the user asked for (--out) -------------------------------------------------------------------
def test_write_output_moves_only_a_complete_file_into_place(tmp_path):
    from workspace.cli import write_output

    def write(tmp: Path) -> None:
        assert tmp.parent == tmp_path and tmp.name.startswith(".scores.csv.")
        tmp.write_text("a,b\n1,2\n")

    old = os.umask(0o022)
    try:
        assert write_output(tmp_path / "scores.csv", write) == tmp_path / "scores.csv"
    finally:
        os.umask(old)
    assert (tmp_path / "scores.csv").read_text() == "a,b\n1,2\n"
    assert (tmp_path / "scores.csv").stat().st_mode & 0o777 == 0o644  # as a plain write would make it
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scores.csv"]


def test_write_output_on_a_full_disk_leaves_nothing(tmp_path):
    from workspace.cli import write_output

    def write(tmp: Path) -> None:
        tmp.write_text("a,b\n1,")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with pytest.raises(WorkspaceError, match=r"^cannot write .*scores.csv: No space left on device$"):
        write_output(tmp_path / "scores.csv", write)
    assert list(tmp_path.iterdir()) == []


def test_write_output_never_replaces_a_file(tmp_path):
    from workspace.cli import write_output

    (tmp_path / "r.html").write_text("mine")
    with pytest.raises(WorkspaceError, match="r.html exists; refusing to overwrite it"):
        write_output(tmp_path / "r.html", lambda tmp: tmp.write_text("new"))

    def racing(tmp: Path) -> None:  # another program creates the file while we write
        tmp.write_text("new")
        (tmp_path / "late.html").write_text("theirs")

    with pytest.raises(WorkspaceError, match="late.html exists"):
        write_output(tmp_path / "late.html", racing)
    assert (tmp_path / "r.html").read_text() == "mine" and (tmp_path / "late.html").read_text() == "theirs"
    with pytest.raises(WorkspaceError, match="folder .*nowhere does not exist"):
        write_output(tmp_path / "nowhere" / "x.csv", lambda tmp: None)
    write_output(tmp_path / "r.html", lambda tmp: tmp.write_text("new"), overwrite=True)
    assert (tmp_path / "r.html").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["late.html", "r.html"]


def test_gradients_out_on_a_full_disk_is_one_line_and_leaves_no_csv(warm, tmp_path, monkeypatch, capsys):
    import pandas as pd

    from diagnostics.__main__ import main

    def full(self, path, *args, **kwargs):
        Path(path).write_text("index,label\n0,")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(pd.DataFrame, "to_csv", full)
    out = tmp_path / "out"
    out.mkdir()
    code = run_cli(main, ["gradients", "--workspace", str(warm), "--out", str(out / "scores.csv")])
    err = capsys.readouterr().err
    assert list(out.iterdir()) == []
    assert code == 2 and len(error_lines(err)) == 1 and "No space left on device" in err, err


def test_a_report_that_cannot_be_written_leaves_neither_file(warm, tmp_path, monkeypatch, capsys):
    from diagnostics.__main__ import main

    real = Path.write_text

    def full_on_json(self, data, *args, **kwargs):
        if ".json" in self.name:  # the twin, under whatever temporary name
            real(self, data[:10], *args, **kwargs)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(self, data, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", full_on_json)
    out = tmp_path / "out"
    out.mkdir()
    code = run_cli(main, ["report", "--workspace", str(warm), "--out", str(out / "r.html")])
    err = capsys.readouterr().err
    assert code == 2 and len(error_lines(err)) == 1 and "No space left on device" in err, err
    assert list(out.iterdir()) == []


# ---- a job whose worker never started ----------------------------------------------------------------
def test_a_job_queued_by_a_process_that_died_does_not_hold_the_queue_forever(tiny_workspace):
    import repair.runs  # noqa: F401 - registers the "repair" job kind
    from workspace import jobs
    from workspace.core import open_workspace

    ws = open_workspace(tiny_workspace)
    orphan = jobs.create_job(ws, "repair", queue="cpu", label="w-aug")  # its process died before start_worker
    fresh = jobs.create_job(ws, "repair", queue="cpu", label="w-aug")  # just queued: its worker is starting
    assert jobs.jobs_ahead(ws.store, fresh) == [orphan]
    assert jobs.reap_stale_jobs(ws.store) == []  # within the grace period nothing is reaped
    with sqlite3.connect(ws.store.path) as db:
        db.execute("UPDATE runs SET created_at = created_at - ? WHERE id = ?", (jobs.UNCLAIMED_GRACE + 1, orphan))
    db.close()
    assert jobs.reap_stale_jobs(ws.store) == [orphan]
    row = ws.store.get_run(orphan)
    assert row["status"] == "failed" and row["error"] == ("no worker process ever started it (the process that "
                                                          "queued it ended first)")
    assert jobs.jobs_ahead(ws.store, fresh) == [] and ws.store.get_run(fresh)["status"] == "queued"
