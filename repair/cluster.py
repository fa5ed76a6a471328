"""Sweeps on a Ray cluster: every (method, rho, seed) run of a sweep as a Ray task.

``python -m repair sweep ... --executor ray [--address auto|ray://host:10001]`` submits the runs a
sweep can compute next (the whole grid, then the w-os search and the seeds once their inputs are
known) as Ray tasks, each with its resource request (one GPU when the cluster has GPUs, else
``cpus_per_run`` CPUs). A task opens the workspace on its node (the workspace folder must be on a
filesystem every node sees, as the data and the model already must be), executes the run with a
:class:`workspace.jobs.MemoryReporter` and returns what it reported; the sweep's process, which
owns the store, writes it (no SQLite writes from the nodes). A task whose worker dies (a lost node,
a killed process) is retried by Ray (``max_retries``); an application error is not retried and is
recorded as the run's failure. Without ``--executor`` the sweep runs locally, one run at a time.

Ray is an optional extra (``pip install -r requirements-cluster.txt``); this module imports it
lazily and says how to install it when it is missing.
"""

from __future__ import annotations

import os
import time

from workspace import jobs
from workspace.errors import Cancelled, WorkspaceError

EXECUTORS = ("local", "ray")
MAX_RETRIES = 3
#: a test hook: a path; the first attempt of a task creates it and exits hard (a lost worker)
CRASH_ONCE_ENV = "GROUPFIX_TEST_RAY_CRASH_ONCE"


def ray_module():
    try:
        import ray
    except ImportError:
        raise WorkspaceError("the ray executor needs Ray: pip install -r requirements-cluster.txt") from None
    return ray


def _run_child(spec: str, home: str | None, job: dict, crash_once: str | None) -> dict:
    """The body of one Ray task (module-level so Ray can ship it)."""
    if home:
        os.environ["GROUPFIX_HOME"] = home
    if crash_once and not os.path.exists(crash_once):
        open(crash_once, "w").close()
        os._exit(17)  # a worker process dying in the middle of a run
    from workspace.core import open_workspace

    import repair.runs  # noqa: F401  (registers the repair job kind in this worker)

    ws = open_workspace(spec)
    started = time.time()
    report = jobs.execute_detached(ws, job)
    report["started_at"] = started
    return report


class RayExecutor:
    """Runs a batch of a sweep's child runs as Ray tasks and writes their reports to the store."""

    def __init__(self, address: str | None = None, *, num_cpus: int | None = None, cpus_per_run: int = 1):
        ray = ray_module()
        if not ray.is_initialized():
            if address:
                ray.init(address=address, ignore_reinit_error=True, log_to_driver=False)
            else:
                ray.init(num_cpus=num_cpus, ignore_reinit_error=True, log_to_driver=False,
                         include_dashboard=False)
        self.ray = ray
        gpus = ray.cluster_resources().get("GPU", 0)
        options = {"num_gpus": 1} if gpus else {"num_cpus": cpus_per_run}
        self.task = ray.remote(max_retries=MAX_RETRIES, retry_exceptions=False, **options)(_run_child)
        self.resources = ray.cluster_resources()

    def describe(self) -> str:
        r = self.resources
        return f"Ray: {int(r.get('CPU', 0))} CPUs, {int(r.get('GPU', 0))} GPUs, {int(r.get('node:__internal_head__', 0) or 1)}+ nodes"

    def run(self, ws, child_ids: list[int], *, on_done=None, should_stop=None) -> None:
        """Run the children (already created as queued rows) and record each result as it arrives."""
        home = os.environ.get("GROUPFIX_HOME")
        crash = os.environ.get(CRASH_ONCE_ENV)
        pending = {}
        for child in child_ids:
            job = jobs.get_job(ws, child)
            ws.store.update_run(child, status="running", started_at=time.time(), pid=os.getpid())
            pending[self.task.remote(ws.spec, home, job, crash)] = child
        while pending:
            if should_stop is not None and should_stop():
                for ref, child in pending.items():
                    self.ray.cancel(ref, force=True)
                    ws.store.update_run(child, status="cancelled", finished_at=time.time())
                raise Cancelled()
            ready, _ = self.ray.wait(list(pending), num_returns=1, timeout=1.0)
            for ref in ready:
                child = pending.pop(ref)
                try:
                    report = self.ray.get(ref)
                except Exception as exc:  # noqa: BLE001 - a task that failed even after its retries
                    ws.store.update_run(child, status="failed", error=jobs.one_line(exc), finished_at=time.time())
                else:
                    jobs.apply_report(ws, child, report, started_at=report.pop("started_at", None))
                if on_done is not None:
                    on_done(child)
