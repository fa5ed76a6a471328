"""Repair runs as jobs: rows in the store's ``runs`` table, executed by a worker process.

Life of a run: :func:`create_run` writes a ``queued`` row; :func:`start_worker` starts
``python -m repair worker --workspace W --run-id N`` in its own session (so it outlives a
page reload or the page's process) and records its pid. The worker waits its turn (one
running job per device, oldest queued first), marks the row ``running``, and
:func:`execute_run` writes progress, a log tail, per-evaluation metrics (with the full
confusion matrix) and finally ``done`` (with the new model version), ``failed`` (with the
error) or ``cancelled`` (``cancel_requested`` is read every step). The CLI runs the same
:func:`execute_run` in the foreground.

A worker that dies without reporting (SIGKILL, power loss) leaves a ``running`` row whose
pid is gone; :func:`reap_stale_runs`, called by every listing, marks it ``failed``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import traceback
from collections import deque
from pathlib import Path

import numpy as np

from diagnostics.confusion import error_matrix, target_error
from repair.loop import Cancelled, TrainConfig, eval_metrics, finetune
from repair.methods import PGD, TargetContext, get_method
from repair.wos import apply_wos
from workspace.cache import InferenceOutputs
from workspace.core import ORIG, file_sha256
from workspace.models import select_device

REPO = Path(__file__).resolve().parent.parent
ACTIVE = ("queued", "running")
LOG_LINES = 30


def targets_to_names(targets, class_names) -> list[list[str]]:
    return [[class_names[int(c)] for c in t] for t in targets]


def targets_from_names(names, class_names) -> list[tuple[int, ...]]:
    index = {n: k for k, n in enumerate(class_names)}
    try:
        return [tuple(index[n] for n in t) for t in names]
    except KeyError as exc:
        raise ValueError(f"unknown class {exc.args[0]!r} in the targets") from None


def create_run(ws, method: str, targets, rho: float, config: TrainConfig, *, parent: str = ORIG) -> int:
    """Validate the request and write a ``queued`` run row. Returns the run id.

    Raises:
        ValueError: unknown method, bad targets or rho, or a method not applicable here.
    """
    m = get_method(method)
    ctx = TargetContext(tuple(tuple(int(c) for c in t) for t in targets), float(rho), ws.num_classes, ws.task)
    reason = m.applicability(ws.model(parent), ws)
    if reason:
        raise ValueError(reason if reason.startswith(method) else f"{method} is unavailable: {reason}")
    config.validate()
    device = "post-hoc" if not m.finetunes else select_device(config.device).type  # post-hoc runs never queue
    return ws.store.create_run(
        method=method, targets={"kind": ctx.kind, "targets": targets_to_names(ctx.targets, ws.class_names)},
        rho=float(rho), seed=config.seed, config={**vars(config), "device_type": device},
        parent_version=parent)


def pid_alive(pid: int | None) -> bool:
    """Whether process ``pid`` still runs (a zombie counts as dead; our own child is reaped)."""
    if not pid:
        return False
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    except ChildProcessError:
        pass
    except OSError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    stat = Path(f"/proc/{pid}/stat")
    try:
        return stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def reap_stale_runs(store) -> list[int]:
    """Mark active runs whose worker process is gone as failed. Returns their ids."""
    reaped = []
    for run in store.list_runs():
        if run["status"] in ACTIVE and run["pid"] and not pid_alive(run["pid"]):
            status = "cancelled" if run["cancel_requested"] and run["status"] == "queued" else "failed"
            store.update_run(run["id"], status=status, finished_at=time.time(),
                             error=None if status == "cancelled" else
                             f"the worker process {run['pid']} ended without reporting (killed?)")
            reaped.append(run["id"])
    return reaped


def list_runs(ws, *, method: str | None = None) -> list[dict]:
    reap_stale_runs(ws.store)
    runs = ws.store.list_runs()
    return [r for r in runs if method is None or r["method"] == method]


def request_cancel(ws, run_id: int) -> dict:
    """Ask a run to stop; a queued run with no live worker is cancelled at once."""
    run = ws.store.get_run(run_id)
    if run is None:
        raise ValueError(f"no run {run_id}")
    if run["status"] in ACTIVE:
        ws.store.update_run(run_id, cancel_requested=1)
        if run["status"] == "queued" and not pid_alive(run["pid"]):
            ws.store.update_run(run_id, status="cancelled", finished_at=time.time())
    return ws.store.get_run(run_id)


def start_worker(ws, run_id: int) -> int:
    """Start the worker process for a queued run; returns its pid."""
    log_dir = ws.state_dir / "repair"
    log_dir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    with open(log_dir / f"run-{run_id}.log", "ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "repair", "worker", "--workspace", ws.spec, "--run-id", str(run_id)],
            cwd=str(REPO), env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True)
    ws.store.update_run(run_id, pid=proc.pid)
    return proc.pid


def submit(ws, method: str, targets, rho: float, config: TrainConfig, *, parent: str = ORIG) -> int:
    """Create a run and start its worker process. Returns the run id."""
    run_id = create_run(ws, method, targets, rho, config, parent=parent)
    start_worker(ws, run_id)
    return run_id


def runs_ahead(store, run_id: int) -> list[int]:
    """Ids of the runs this one waits for: running on its device, or queued before it."""
    me = store.get_run(run_id)
    device = (me["config"] or {}).get("device_type")
    return [r["id"] for r in store.list_runs() if r["id"] != run_id and r["status"] in ACTIVE
            and (r["config"] or {}).get("device_type") == device
            and (r["status"] == "running" or r["id"] < run_id)]


def wait_for_turn(store, run_id: int, *, poll: float = 0.5, on_wait=None) -> bool:
    """Block until no other run of this device runs and no older one is queued.

    Returns False if the run was cancelled while waiting.
    """
    while True:
        reap_stale_runs(store)
        if store.get_run(run_id)["cancel_requested"]:
            return False
        ahead = runs_ahead(store, run_id)
        if not ahead:
            return True
        if on_wait:
            on_wait(ahead)
        time.sleep(poll)


class _Reporter:
    """Throttled writes of progress and the log tail to the run row."""

    def __init__(self, store, run_id: int, echo=None):
        self.store, self.run_id, self.echo = store, run_id, echo
        self.lines: deque[str] = deque(maxlen=LOG_LINES)
        self.last = 0.0
        self.last_check = 0.0
        self.cancel = False

    def log(self, text: str) -> None:
        line = f"{time.strftime('%H:%M:%S')} {text}"
        self.lines.append(line)
        if self.echo:
            self.echo(line)
        self.store.update_run(self.run_id, log_tail="\n".join(self.lines), message=text)

    def step(self, done: int, total: int, loss: float) -> None:
        now = time.monotonic()
        if now - self.last >= 0.5 or done == total:
            self.last = now
            self.store.update_run(self.run_id, progress=done / max(total, 1),
                                  message=f"step {done}/{total}, loss {loss:.4f}")

    def should_stop(self) -> bool:
        now = time.monotonic()
        if now - self.last_check >= 0.2:
            self.last_check = now
            self.cancel = bool(self.store.get_run(self.run_id)["cancel_requested"])
        return self.cancel


def baseline_outputs(ws, parent: str) -> InferenceOutputs:
    return ws.outputs("eval", parent)


def _summary(metric: dict) -> dict:
    return {"accuracy": metric["accuracy"], "target_error": metric["target_error"]}


def execute_run(ws, run_id: int, *, echo=None) -> dict:
    """Run a claimed (or queued) run to its end, writing everything to the store.

    Returns the final run row. Never raises for a failed run: the error goes to the row.
    """
    store = ws.store
    run = store.get_run(run_id)
    rep = _Reporter(store, run_id, echo)
    store.update_run(run_id, status="running", pid=os.getpid(), started_at=time.time(), progress=0.0,
                     device=(run["config"] or {}).get("device_type"))
    try:
        method = get_method(run["method"])
        targets = targets_from_names(run["targets"]["targets"], ws.class_names)
        ctx = TargetContext(tuple(targets), float(run["rho"]), ws.num_classes, ws.task)
        conf = {k: v for k, v in (run["config"] or {}).items() if k in TrainConfig.__dataclass_fields__}
        config = TrainConfig(**conf)
        parent = run["parent_version"] or ORIG
        parent_sha = file_sha256(Path(ws.version(parent)["path"])) if ws.version(parent)["path"] else None
        rep.log(f"baseline: evaluating {parent} on eval")
        base = eval_metrics(baseline_outputs(ws, parent), ctx)
        store.update_run(run_id, baseline=_summary(base))
        store.add_metric(run_id, epoch=0, step=0, accuracy=base["accuracy"], target_error=base["target_error"],
                         extra={"confusion": base["confusion"]})
        if run["method"] == "orig":
            final, version = base, None
        elif run["method"] == "w-os":
            final, version = _run_wos(ws, parent, ctx), None
            store.add_metric(run_id, epoch=1, step=1, accuracy=final["accuracy"],
                             target_error=final["target_error"], extra={"confusion": final["confusion"]})
        else:
            if isinstance(method, PGD):
                rep.log("pgd: loading the gradient-based sampling probabilities p_s")
                method.load(ws, parent)

            def on_eval(metric):
                store.add_metric(run_id, epoch=metric["epoch"], step=metric["step"], accuracy=metric["accuracy"],
                                 target_error=metric["target_error"], loss=metric["loss"],
                                 extra={"confusion": metric["confusion"]})

            model, history, outputs = finetune(ws, method, ctx, config, parent=parent, on_step=rep.step,
                                               on_eval=on_eval, should_stop=rep.should_stop, log=rep.log)
            final = history[-1]
            row = ws.save_version(model, method=run["method"], parent=parent, rho=ctx.rho,
                                  targets=run["targets"], seed=config.seed, epochs=config.epochs,
                                  metrics={**_summary(final), "baseline": _summary(base)}, run_id=run_id)
            outputs.model_version = row["id"]
            ws.cache.save(outputs, row["id"], "eval", ws.outputs_key("eval", row["id"]))
            version = {"id": row["id"], "path": row["path"]}
        if parent_sha is not None and file_sha256(Path(ws.version(parent)["path"])) != parent_sha:
            raise RuntimeError("the parent model file changed during the run")  # must never happen
        rep.log(f"done: accuracy {final['accuracy']:.4f}, target error {final['target_error']:.4f}"
                + ("" if version is None else f", saved as {version['id']}"))
        store.update_run(run_id, status="done", progress=1.0, final=_summary(final), finished_at=time.time(),
                         model_version=None if version is None else version["id"])
    except (Cancelled, KeyboardInterrupt) as exc:
        rep.log("cancelled" if isinstance(exc, Cancelled) else "interrupted (Ctrl-C)")
        store.update_run(run_id, status="cancelled", finished_at=time.time())
        if isinstance(exc, KeyboardInterrupt):
            raise
    except Exception as exc:  # noqa: BLE001 - every failure is reported on the run row
        rep.log(f"failed: {type(exc).__name__}: {exc}")
        store.update_run(run_id, status="failed", finished_at=time.time(),
                         error=f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=6)}")
    return store.get_run(run_id)


def _run_wos(ws, parent: str, ctx: TargetContext) -> dict:
    """w-os on the cached eval outputs: the what-if slider's code (:func:`repair.wos.apply_wos`)."""
    out = baseline_outputs(ws, parent)
    preds = apply_wos(out.probs, ctx.targets, ctx.rho, task=out.task, threshold=out.threshold, preds=out.preds)
    after = InferenceOutputs(logits=out.logits, probs=out.probs, preds=preds, labels=out.labels,
                             embeddings=None, indices=out.indices, class_names=out.class_names,
                             task=out.task, threshold=out.threshold)
    return eval_metrics(after, ctx)


def run_worker(ws, run_id: int) -> dict:
    """The worker process's body: wait for the device, then execute the run."""
    if not wait_for_turn(ws.store, run_id, on_wait=lambda ahead: ws.store.update_run(
            run_id, message=f"queued behind run(s) {', '.join(map(str, ahead))}")):
        ws.store.update_run(run_id, status="cancelled", finished_at=time.time())
        return ws.store.get_run(run_id)
    return execute_run(ws, run_id, echo=lambda line: print(line, flush=True))


def run_result(ws, run_id: int) -> dict:
    """The CLI's JSON for a run (see the issue's contract)."""
    run = ws.store.get_run(run_id)
    epochs = [{"epoch": m["epoch"], "accuracy": m["accuracy"], "target_error": m["target_error"]}
              for m in ws.store.run_metrics(run_id) if m["step"] > 0]
    version = None
    if run["model_version"]:
        row = ws.version(run["model_version"])
        version = {"id": row["id"], "path": row["path"]}
    return {"run_id": run_id, "method": run["method"], "rho": run["rho"], "targets": run["targets"],
            "status": run["status"], "error": (run["error"] or "").split("\n")[0] or None,
            "baseline": run["baseline"], "epochs": epochs, "final": run["final"], "model_version": version,
            "minutes": None if not run["finished_at"] or not run["started_at"]
            else round((run["finished_at"] - run["started_at"]) / 60, 3)}


def errors_of(outputs: InferenceOutputs) -> np.ndarray:
    return error_matrix(outputs.labels, outputs.preds, outputs.num_classes, task=outputs.task)


__all__ = ["create_run", "submit", "start_worker", "execute_run", "run_worker", "list_runs", "request_cancel",
           "reap_stale_runs", "pid_alive", "run_result", "target_error"]
