"""The one job runner: every long task of a workspace is a job row and, in the background, a process.

A job is a row of the store's ``runs`` table with a ``kind`` (a repair run, the GCE biased
model, a sweep, ...) and an ``entry``: the ``"module:function"`` that executes it, registered
by the module that owns the kind (:func:`register_job_kind`). Its life:

1. :func:`create_job` writes a ``queued`` row (parameters, the device queue it waits in);
2. :func:`start_worker` starts ``python -m workspace worker --workspace W --job-id N`` in its
   own session, so it outlives a page reload or the page's process (the only place in the
   project that starts processes); the CLI may instead call :func:`run_job` in the foreground;
3. the worker waits its turn (one running job per device queue, oldest first; a job with queue
   ``None`` never waits), marks the row ``running`` and calls ``entry(ws, job, reporter)``;
4. the entry reports progress through the :class:`Reporter` (throttled writes of progress,
   ETA, message, log tail, per-step losses) and checks ``reporter.should_stop()``; it returns a
   result dict, stored with status ``done``; raising :class:`~workspace.errors.Cancelled` gives
   ``cancelled``, any other exception ``failed`` with a one-line error (the traceback goes to
   the job's log file only).

A worker that dies without reporting (SIGKILL, power loss) leaves an active row whose process
is gone; :func:`reap_stale_jobs`, run by every listing, marks it ``failed``.
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import time
import traceback
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from workspace.errors import Cancelled, WorkspaceError

REPO = Path(__file__).resolve().parent.parent
REPAIR_KIND = "repair"  # the job kind of repair runs (registered by repair.runs; reports read them)
ACTIVE = ("queued", "running")
LOG_LINES = 40
UNCLAIMED_GRACE = 120.0  # seconds a queued job may wait for the process that queued it to start its worker


@dataclass(frozen=True)
class JobKind:
    name: str
    entry: str           # "module:function" called as function(ws, job, reporter) -> dict
    description: str = ""


_KINDS: dict[str, JobKind] = {}


def register_job_kind(name: str, entry: str, *, description: str = "") -> JobKind:
    """Declare a kind of job (idempotent for the same entry; a different entry is refused)."""
    kind = JobKind(name, entry, description)
    if name in _KINDS and _KINDS[name] != kind:
        raise ValueError(f"job kind {name!r} is already registered with {_KINDS[name].entry}")
    _KINDS[name] = kind
    return kind


def job_kinds() -> list[str]:
    return sorted(_KINDS)


def _resolve(entry: str) -> Callable:
    module, _, name = (entry or "").partition(":")
    if not module.startswith(("workspace.", "diagnostics.", "repair.")):
        raise WorkspaceError(f"job entry {entry!r} is not part of this project")
    return getattr(importlib.import_module(module), name)


# ---- rows --------------------------------------------------------------------------------------
def create_job(ws, kind: str, *, queue: str | None, label: str | None = None, params: dict | None = None,
               targets=None, rho=None, seed=None, config=None, parent_version: str = "orig",
               parent_run: int | None = None, run_key: str | None = None) -> int:
    """Write a ``queued`` job row. ``queue``: the device type it waits for ("cpu", "cuda", ...)
    or None for work that never waits (post-hoc, bookkeeping). Returns the job id."""
    if kind not in _KINDS:
        raise ValueError(f"unknown job kind {kind!r}; registered: {', '.join(job_kinds())}")
    return ws.store.create_run(method=label or kind, targets=targets, rho=rho, seed=seed, config=config,
                               parent_version=parent_version, kind=kind, entry=_KINDS[kind].entry,
                               params=params, device=queue, parent_run=parent_run, run_key=run_key)


def pid_alive(pid: int | None) -> bool:
    """Whether process ``pid`` still runs (a zombie counts as dead; our own child is reaped)."""
    if not pid:
        return False
    try:
        done, _ = os.waitpid(int(pid), os.WNOHANG)
        if done == int(pid):
            return False
    except (ChildProcessError, OSError, ValueError):
        pass
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except (OSError, ValueError):
        return False
    try:
        return Path(f"/proc/{int(pid)}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def reap_stale_jobs(store) -> list[int]:
    """Mark active jobs whose process is gone as failed (or cancelled if asked). Returns their ids.

    Also a job queued :data:`UNCLAIMED_GRACE` seconds ago that no process ever claimed (the one
    that queued it ended before starting its worker): left queued, it would hold every later job
    of its device queue back for ever. A sweep's queued runs wait for their live sweep instead.
    """
    if store.read_only:
        return []
    reaped = []
    now = time.time()
    jobs = store.list_runs()
    active = {j["id"] for j in jobs if j["status"] in ACTIVE}
    for job in jobs:
        if job["status"] not in ACTIVE:
            continue
        if job["pid"]:
            if pid_alive(job["pid"]):
                continue
            error = f"the worker process {job['pid']} ended without reporting (killed?)"
        elif (job["status"] == "queued" and now - job["created_at"] > UNCLAIMED_GRACE
              and job["parent_run"] not in active):
            error = "no worker process ever started it (the process that queued it ended first)"
        else:
            continue
        status = "cancelled" if job["cancel_requested"] else "failed"
        store.update_run(job["id"], status=status, finished_at=now, eta=None,
                         error=None if status == "cancelled" else error)
        reaped.append(job["id"])
    return reaped


def list_jobs(ws, *, kind: str | None = None, parent_run: int | None = None) -> list[dict]:
    reap_stale_jobs(ws.store)
    return ws.store.list_runs(kind=kind, parent_run=parent_run)


def get_job(ws, job_id: int) -> dict:
    job = ws.store.get_run(int(job_id))
    if job is None:
        raise WorkspaceError(f"no job {job_id}")
    return job


def request_cancel(ws, job_id: int) -> dict:
    """Ask a job to stop; a queued job with no live worker is cancelled at once."""
    job = get_job(ws, job_id)
    if job["status"] in ACTIVE:
        ws.store.update_run(job["id"], cancel_requested=1)
        if job["status"] == "queued" and not pid_alive(job["pid"]):
            ws.store.update_run(job["id"], status="cancelled", finished_at=time.time())
        for child in ws.store.list_runs(parent_run=job["id"]):  # a sweep's runs stop with it
            if child["status"] in ACTIVE:
                request_cancel(ws, child["id"])
    return get_job(ws, job_id)


def log_path(ws, job_id: int) -> Path:
    folder = Path(ws.state_dir) / "jobs"
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"job-{job_id}.log"


def start_worker(ws, job_id: int, *, nproc: int = 1) -> int:
    """Start the worker process of a queued job; returns its pid.

    ``nproc`` > 1 starts ``torchrun`` with that many worker processes (data-parallel training:
    rank 0 reports, see :func:`run_worker`); the recorded pid is torchrun's.
    """
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    worker = ["-m", "workspace", "worker", "--workspace", ws.spec, "--job-id", str(job_id)]
    if nproc > 1:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={int(nproc)}", *worker]
    else:
        cmd = [sys.executable, *worker]
    with open(log_path(ws, job_id), "ab") as out:
        proc = subprocess.Popen(cmd, cwd=str(REPO), env=env, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    ws.store.update_run(job_id, pid=proc.pid)
    return proc.pid


def submit(ws, kind: str, **fields) -> int:
    """:func:`create_job` and :func:`start_worker`. Returns the job id."""
    job_id = create_job(ws, kind, **fields)
    start_worker(ws, job_id)
    return job_id


def jobs_ahead(store, job_id: int) -> list[int]:
    """Ids of the jobs this one waits for: running in its queue, or queued before it."""
    me = store.get_run(job_id)
    if me["device"] is None:
        return []
    return [j["id"] for j in store.list_runs() if j["id"] != job_id and j["status"] in ACTIVE
            and j["device"] == me["device"] and (j["status"] == "running" or j["id"] < job_id)
            and j["id"] != me["parent_run"]]  # a sweep never waits for itself


def wait_for_turn(store, job_id: int, *, poll: float = 0.5, on_wait=None) -> bool:
    """Block until no other job of this queue runs and no older one is queued.

    Returns False if the job was cancelled while waiting.
    """
    while True:
        reap_stale_jobs(store)
        if store.get_run(job_id)["cancel_requested"]:
            return False
        ahead = jobs_ahead(store, job_id)
        if not ahead:
            return True
        if on_wait:
            on_wait(ahead)
        time.sleep(poll)


# ---- reporting -----------------------------------------------------------------------------------
def format_seconds(seconds: float | None) -> str:
    """``"1:05"``, ``"1:02:03"``; "?" when unknown."""
    if seconds is None or seconds != seconds or seconds < 0:
        return "?"
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class EtaClock:
    """Elapsed time and the remaining-time estimate of one phase of work.

    The rate is measured from the first update (so a slow start-up such as worker spawning
    or a first evaluation is not counted as per-item time) and smoothed over a window.
    """

    def __init__(self, window: int = 50):
        self.start = time.monotonic()
        self.marks: deque[tuple[float, int]] = deque(maxlen=window)

    def update(self, done: int, total: int) -> float | None:
        now = time.monotonic()
        self.marks.append((now, done))
        if len(self.marks) < 2 or total <= 0:
            return None
        (t0, d0), (t1, d1) = self.marks[0], self.marks[-1]
        if d1 <= d0 or t1 <= t0:
            return None
        return (total - done) * (t1 - t0) / (d1 - d0)

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.start


class Reporter:
    """What a running job tells the world: progress with ETA, messages, a log tail, losses.

    Writes to the job row are throttled (every ``interval`` seconds, and always at the end of a
    phase); ``echo(line)`` (the CLI) and ``on_progress(done, total, message, eta)`` (a tqdm bar)
    see every update.
    """

    def __init__(self, store, job_id: int, *, echo=None, on_progress=None, interval: float = 0.5):
        self.store, self.job_id, self.echo, self.on_progress = store, job_id, echo, on_progress
        self.interval = interval
        self.lines: deque[str] = deque(maxlen=LOG_LINES)
        self.clock = EtaClock()
        self.phase_name = ""
        self._last_write = 0.0
        self._last_check = 0.0
        self._cancel = False
        self._losses: list[dict] = []
        self.progress_range = (0.0, 1.0)

    def log(self, text: str) -> None:
        line = f"{time.strftime('%H:%M:%S')} {text}"
        self.lines.append(line)
        if self.echo:
            self.echo(line)
        self.store.update_run(self.job_id, log_tail="\n".join(self.lines), message=text)

    def phase(self, name: str, *, share: tuple[float, float] = (0.0, 1.0)) -> None:
        """Start a phase of work; its progress maps onto ``share`` of the job's bar."""
        self.phase_name = name
        self.clock = EtaClock()
        self.progress_range = share
        self.log(name)

    def progress(self, done: int, total: int, message: str | None = None) -> None:
        eta = self.clock.update(done, total)
        lo, hi = self.progress_range
        fraction = lo + (hi - lo) * (done / max(total, 1))
        text = message or f"{self.phase_name}: {done:,}/{total:,}"
        if self.on_progress:
            self.on_progress(done, total, text, eta)
        now = time.monotonic()
        if now - self._last_write >= self.interval or done >= total:
            self._last_write = now
            self.store.update_run(self.job_id, progress=min(max(fraction, 0.0), 1.0), eta=eta,
                                  message=f"{text} · elapsed {format_seconds(self.clock.elapsed)}"
                                          f" · ETA {format_seconds(eta)}")
            self.flush()

    def step_loss(self, epoch: float, step: int, loss: float) -> None:
        """A training loss point (written in batches with the progress)."""
        self._losses.append({"epoch": round(epoch, 5), "step": step, "loss": loss})

    def flush(self) -> None:
        if self._losses:
            self.store.add_metrics(self.job_id, self._losses)
            self._losses = []

    def update(self, **fields) -> None:
        self.store.update_run(self.job_id, **fields)

    def metric(self, *, epoch: float, step: int, accuracy=None, target_error=None, loss=None, extra=None) -> None:
        """An evaluation's metrics (written at once, after the pending step losses)."""
        self.flush()
        self.store.add_metric(self.job_id, epoch=epoch, step=step, accuracy=accuracy, target_error=target_error,
                              loss=loss, extra=extra)

    def should_stop(self) -> bool:
        now = time.monotonic()
        if now - self._last_check >= 0.2:
            self._last_check = now
            self._cancel = bool(self.store.get_run(self.job_id)["cancel_requested"])
        return self._cancel

    def check(self) -> None:
        """Raise :class:`Cancelled` if the job was asked to stop."""
        if self.should_stop():
            raise Cancelled()


def one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if not isinstance(exc, WorkspaceError) else text


def run_job(ws, job_id: int, *, echo=None, on_progress=None) -> dict:
    """Execute a (queued or claimed) job in this process to its end, writing everything to the store.

    Returns the final job row. Never raises for a failed job: the error goes to the row (one line)
    and the traceback to the job's log file. Ctrl-C marks the job cancelled and re-raises.
    """
    store = ws.store
    job = get_job(ws, job_id)
    rep = Reporter(store, job_id, echo=echo, on_progress=on_progress)
    claim = {"pid": os.getpid()} if "TORCHELASTIC_RUN_ID" not in os.environ else {}  # torchrun's pid stays
    store.update_run(job_id, status="running", started_at=time.time(), progress=0.0, error=None, **claim)
    try:
        entry = _resolve(job["entry"] or _KINDS[job["kind"]].entry)
        result = entry(ws, job, rep) or {}
        rep.flush()
        store.update_run(job_id, status="done", progress=1.0, eta=0.0, result=result, finished_at=time.time())
    except (Cancelled, KeyboardInterrupt) as exc:
        rep.flush()
        rep.log("cancelled" if isinstance(exc, Cancelled) else "interrupted (Ctrl-C)")
        store.update_run(job_id, status="cancelled", eta=None, finished_at=time.time())
        if isinstance(exc, KeyboardInterrupt):
            raise
    except Exception as exc:  # noqa: BLE001 - every failure is reported on the job row
        detail = traceback.format_exc()
        try:
            with open(log_path(ws, job_id), "a") as f:
                f.write(detail)
        except OSError:
            pass
        rep.log(f"failed: {one_line(exc)}")
        store.update_run(job_id, status="failed", eta=None, finished_at=time.time(), error=one_line(exc))
    return get_job(ws, job_id)


class SilentReporter(Reporter):
    """The reporter of a data-parallel rank other than 0: it only reads the cancel flag."""

    def metric(self, **fields) -> None:
        pass

    def log(self, text: str) -> None:
        pass

    def progress(self, done: int, total: int, message: str | None = None) -> None:
        pass

    def step_loss(self, epoch: float, step: int, loss: float) -> None:
        pass

    def flush(self) -> None:
        pass

    def update(self, **fields) -> None:
        pass


class MemoryReporter(Reporter):
    """A reporter that keeps everything in memory: a job executed away from the store (a Ray worker)
    hands it back to the process that owns the store (:func:`apply_report`)."""

    def __init__(self, job_id: int, *, cancelled=None):
        super().__init__(None, job_id)
        self.updates: dict = {}
        self.metrics: list[dict] = []
        self.cancelled = cancelled or (lambda: False)

    def log(self, text: str) -> None:
        self.lines.append(f"{time.strftime('%H:%M:%S')} {text}")

    def progress(self, done: int, total: int, message: str | None = None) -> None:
        self.updates["progress"] = done / max(total, 1)

    def step_loss(self, epoch: float, step: int, loss: float) -> None:
        self.metrics.append({"epoch": round(epoch, 5), "step": step, "loss": loss})

    def flush(self) -> None:
        pass

    def update(self, **fields) -> None:
        self.updates.update(fields)

    def metric(self, **fields) -> None:
        self.metrics.append(fields)

    def should_stop(self) -> bool:
        return bool(self.cancelled())

    def report(self) -> dict:
        return {"updates": self.updates, "metrics": self.metrics, "log_tail": "\n".join(self.lines)}


def execute_detached(ws, job: dict, *, cancelled=None) -> dict:
    """Run a job's entry without touching the store; returns everything it reported.

    Returns:
        ``{"status", "result", "error", "updates", "metrics", "log_tail"}`` for :func:`apply_report`.
    """
    rep = MemoryReporter(job["id"], cancelled=cancelled)
    try:
        result = _resolve(job["entry"])(ws, job, rep) or {}
        return {"status": "done", "result": result, "error": None, **rep.report()}
    except Cancelled:
        return {"status": "cancelled", "result": None, "error": None, **rep.report()}
    except Exception as exc:  # noqa: BLE001 - reported on the job row by the store's owner
        return {"status": "failed", "result": None, "error": one_line(exc), **rep.report()}


def apply_report(ws, job_id: int, report: dict, *, started_at: float | None = None) -> dict:
    """Write a detached execution's report to the job row (the store's owner does this)."""
    steps = [m for m in report["metrics"] if "accuracy" not in m]
    if steps:
        ws.store.add_metrics(job_id, steps)
    for m in report["metrics"]:
        if "accuracy" in m:
            ws.store.add_metric(job_id, **m)
    fields = {k: v for k, v in report["updates"].items() if k not in ("progress", "eta")}
    if report["status"] == "done":
        fields["progress"] = 1.0
    if started_at is not None:
        fields["started_at"] = started_at
    ws.store.update_run(job_id, status=report["status"], result=report["result"], error=report["error"],
                        log_tail=report["log_tail"], finished_at=time.time(), eta=None, **fields)
    return get_job(ws, job_id)


def _check_runnable(ws, job_id: int) -> None:
    job = get_job(ws, job_id)
    if job["status"] not in ACTIVE:
        raise WorkspaceError(f"job {job_id} has already ended ({job['status']}); start a new one instead")


def _rank() -> int:
    return int(os.environ.get("RANK", "0"))


def run_worker(ws, job_id: int) -> dict:
    """The worker process's body: wait for the device queue, then execute the job.

    Under torchrun (``RANK`` set) rank 0 claims the job and writes everything; the other ranks
    wait until it runs and execute the same entry with a :class:`SilentReporter`.

    Raises:
        WorkspaceError: no such job, or one that already ended (it is never run twice).
    """
    _check_runnable(ws, job_id)
    if _rank() != 0:
        while get_job(ws, job_id)["status"] == "queued":
            time.sleep(0.2)
        job = get_job(ws, job_id)
        if job["status"] == "running":
            _resolve(job["entry"])(ws, job, SilentReporter(ws.store, job_id))
        return job
    if not wait_for_turn(ws.store, job_id, on_wait=lambda ahead: ws.store.update_run(
            job_id, message=f"queued behind job(s) {', '.join(map(str, ahead))}")):
        ws.store.update_run(job_id, status="cancelled", finished_at=time.time())
        return get_job(ws, job_id)
    return run_job(ws, job_id, echo=lambda line: print(line, flush=True))


def run_foreground(ws, job_id: int, *, echo=None, on_progress=None) -> dict:
    """The CLI's way: claim the job in this process, wait for the queue, run it.

    Raises:
        WorkspaceError: no such job, or one that already ended (it is never run twice).
    """
    _check_runnable(ws, job_id)
    ws.store.update_run(job_id, pid=os.getpid())
    if not wait_for_turn(ws.store, job_id, on_wait=lambda ahead: echo and echo(
            f"queued behind job(s) {', '.join(map(str, ahead))}")):
        ws.store.update_run(job_id, status="cancelled", finished_at=time.time())
        return get_job(ws, job_id)
    return run_job(ws, job_id, echo=echo, on_progress=on_progress)


def follow(ws, job_id: int, *, on_progress=None, poll: float = 0.5) -> dict:
    """Wait for a background job to end, reporting its progress (a CLI following its workers)."""
    while True:
        reap_stale_jobs(ws.store)
        job = get_job(ws, job_id)
        if on_progress is not None and job["status"] == "running":
            on_progress(int(1000 * (job["progress"] or 0)), 1000, job["message"] or "", job["eta"])
        if job["status"] not in ACTIVE:
            return job
        time.sleep(poll)


def job_seconds(job: dict) -> float | None:
    if not job.get("started_at"):
        return None
    return (job.get("finished_at") or time.time()) - job["started_at"]
