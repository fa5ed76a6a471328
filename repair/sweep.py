"""Sweeps: which repair really works, as ONE job of the job runner (job kind "sweep").

"Repairing Group-Level Errors for DNNs Using Weighted Regularization" (WR), sections 4.3 and
4.4, Tables 2-5 and Appendix A, end to end:

1. **Grid**: every method once per rho of the grid (default 0.1, 0.3, 0.5, 0.7, 0.9; methods
   without a parameter once), seed 0, plus the baseline (orig-ft). A method whose parameter
   declares ``search`` (w-os) then goes on to 0.01, 0.001 and 1e-4 in turn while its target
   error is not yet ``lambda1`` below orig-ft's (:func:`repair.selection.next_wos_rho`).
2. **Selection** per method by the paper's rule (:func:`repair.selection.select_rhos`).
3. **Seeds**: every selected setting and the baseline again with seeds 1 .. S-1 (the grid run
   is seed 0 and is reused); deterministic (post-hoc) methods run once.
4. **Table** (:func:`repair.selection.build_table`): mean +- std, ranks and rank sums,
   Wilcoxon rank-sum p-values and Vargha-Delaney A12 against orig-ft, verdicts.

The sweep's entry (:func:`execute`) runs its child repair runs one after another in its own
process (:func:`workspace.jobs.run_job`; children are ordinary "repair" jobs with
``parent_run`` = the sweep), reporting progress over the grid with an ETA and checking cancel.
Every child carries a **resume key**, the content of (method, rho, seed, scope, training
settings, parent version and its checksum, data, targets): a finished run with the same key is
reused, never recomputed, so a sweep killed midway and started again (:func:`resume_sweep`, or
the same command again) continues where it stopped.

Child runs keep metrics, not weights: :func:`keep_as_version` turns a run into a model version
by running its setting again as an ordinary repair run (on CPU the same seed gives the same
weights). Nothing here tests a method's name: the registry says which method is the baseline,
which is deterministic and which searches its rho.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field
from typing import Callable

import pandas as pd

from repair import runs
from repair.loop import TrainConfig, eval_metrics
from repair.methods import SCOPES, TargetContext, baseline_methods, get_method, list_methods
from repair.selection import (
    DEFAULT_RHOS, _rho_key, build_table, format_setting, next_wos_rho, plan_grid, select_rhos, table_to_csv,
    table_to_json_rows, table_to_latex, table_to_markdown,
)
from workspace import jobs
from workspace.artifacts import content_key
from workspace.core import ORIG
from workspace.errors import Cancelled, WorkspaceError
from workspace.models import select_device
from workspace.targets import Target

KIND = "sweep"
jobs.register_job_kind(KIND, "repair.sweep:execute",
                       description="a rho grid, the paper's selection, seeds and the statistics table")

ORIGINAL, BASELINE = baseline_methods()
#: Bump when a change makes earlier child runs unfit for reuse.
KEY_VERSION = 2  # 2: w-dbr-code runs with its joined target samples, w-bn-code with its extra batch size
#: The phases of a sweep's runs.
PHASES = ("grid", "search", "seeds")
#: Grid statuses besides the job statuses: not started yet.
PENDING = "pending"
#: Relative cost of a post-hoc run against a fine-tuning run (for the progress bar and its ETA).
POST_HOC_COST = 0.05
#: Scopes a method falls back to, in order, when it cannot run at the sweep's scope.
FALLBACK_SCOPES = ("all", "last-block")


@dataclass(frozen=True)
class SweepSpec:
    """What a sweep runs (stored as the job's ``params``).

    Attributes:
        methods: method names, the baseline (orig-ft) first.
        rhos: the grid (WR 4.4).
        seeds: S: seeds 0 .. S-1 for every selected setting and the baseline.
        lambda1: least relative drop of the target error (selection rule (a), "repaired").
        lambda2: largest relative drop of accuracy for "repaired".
        method_scopes: method -> scope, where it differs from the sweep's scope.
        scope_max_steps: scope -> step budget of the runs at that scope (e.g. a short ``all``).
    """

    methods: tuple[str, ...]
    rhos: tuple[float, ...] = DEFAULT_RHOS
    seeds: int = 5
    lambda1: float = 0.25
    lambda2: float = 0.01
    method_scopes: dict[str, str] = field(default_factory=dict)
    scope_max_steps: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {**asdict(self), "methods": list(self.methods), "rhos": list(self.rhos)}

    @classmethod
    def from_dict(cls, data: dict) -> "SweepSpec":
        return cls(methods=tuple(data["methods"]), rhos=tuple(float(r) for r in data["rhos"]),
                   seeds=int(data["seeds"]), lambda1=float(data["lambda1"]), lambda2=float(data["lambda2"]),
                   method_scopes=dict(data.get("method_scopes") or {}),
                   scope_max_steps={k: int(v) for k, v in (data.get("scope_max_steps") or {}).items()})


@dataclass(frozen=True)
class Item:
    """One run of a sweep: a method at a rho (None: no parameter) with a seed, at a scope."""

    method: str
    rho: float | None
    seed: int
    scope: str
    phase: str

    @property
    def setting(self) -> tuple[str, float | None]:
        return self.method, _rho_key(self.rho)

    @property
    def label(self) -> str:
        return f"{format_setting(self.method, self.rho)} seed {self.seed}"


# ---- planning (pure) ---------------------------------------------------------------------------
def default_methods() -> list[str]:
    """The baseline and every method with a trade-off parameter (the WR methods and their variants)."""
    return [BASELINE] + [n for n in list_methods() if n != BASELINE and get_method(n).param is not None]


def method_scope(spec_scope: str, method: str, overrides: dict[str, str] | None = None) -> str:
    """The scope a method runs at: its override, else the sweep's scope when it supports it, else
    the first of :data:`FALLBACK_SCOPES` it supports (post-hoc methods ignore scopes)."""
    if overrides and method in overrides:
        return overrides[method]
    m = get_method(method)
    if m.scope_reason(spec_scope) is None:
        return spec_scope
    return next((s for s in FALLBACK_SCOPES if m.scope_reason(s) is None), spec_scope)


def plan(spec: SweepSpec, scope: str, original: dict | None,
         result: Callable[[Item], tuple[str | None, dict | None]]) -> tuple[list[Item], pd.DataFrame | None, bool]:
    """The runs of a sweep known so far, given the results so far (WR 4.4; see the module docstring).

    Args:
        spec: the sweep.
        scope: the sweep's scope (methods may run at another, :func:`method_scope`).
        original: ``{"accuracy", "target_error"}`` of the model the sweep starts from (orig);
            None while unknown (no selection then).
        result: ``result(item) -> (state, metrics)``: state "done" with
            ``{"accuracy", "target_error"}``, "failed" (given up: the plan goes on without
            it), or None (not run yet: what depends on it waits).

    Returns:
        ``(items, selection, complete)``: the runs planned so far in run order; the frame of
        :func:`~repair.selection.select_rhos` (plus one row per method without a parameter,
        rule "-"), None until every grid and search run has a result; whether every planned
        run has a result.
    """
    items: list[Item] = []
    waiting = False

    def add(item: Item) -> tuple[str | None, dict | None]:
        nonlocal waiting
        items.append(item)
        state, metrics = result(item)
        waiting = waiting or state is None
        return state, metrics

    def scope_of(method: str) -> str:
        return method_scope(scope, method, spec.method_scopes)

    ft_state, ft = add(Item(BASELINE, None, 0, scope_of(BASELINE), "grid"))
    grid: dict[str, list[tuple[float | None, dict]]] = {}
    for name, rho in [(n, None) for n in spec.methods[1:] if get_method(n).param is None] + \
            plan_grid([n for n in spec.methods[1:] if get_method(n).param is not None], rhos=spec.rhos):
        state, metrics = add(Item(name, rho, 0, scope_of(name), "grid"))
        if state == "done":
            grid.setdefault(name, []).append((rho, metrics))
    for name in spec.methods[1:]:
        param = get_method(name).param
        if param is None or not param.search or ft_state != "done":
            continue
        ours = [i for i in items if i.method == name]
        if any(result(i)[0] is None for i in ours):
            continue  # the search starts from the finished grid
        while True:
            tried = {r: m["target_error"] for r, m in grid.get(name, [])}
            rho = next_wos_rho(tried, ft["target_error"], lambda1=spec.lambda1)
            if rho is None or any(i.setting == (name, _rho_key(rho)) for i in items):
                break  # done, or the next rho is a grid rho that failed
            state, metrics = add(Item(name, rho, 0, scope_of(name), "search"))
            if state != "done":
                break  # pending: wait for it; failed: the search cannot go on
            grid.setdefault(name, []).append((rho, metrics))
    if waiting or original is None:
        return items, None, False

    rows = [{"method": ORIGINAL, "rho": None, **original}]
    rows += [{"method": n, "rho": r, **m} for n, runs_ in grid.items() for r, m in runs_
             if get_method(n).param is not None]
    selection = select_rhos(pd.DataFrame(rows, columns=["method", "rho", "accuracy", "target_error"]),
                            original=ORIGINAL, baseline=BASELINE, lambda1=spec.lambda1)
    fixed = [{"method": n, "rho": float("nan"), **runs_[0][1], "rule": "-", "reason": "no parameter to select"}
             for n, runs_ in grid.items() if get_method(n).param is None]
    if fixed:
        selection = pd.concat([selection, pd.DataFrame(fixed)], ignore_index=True)
    settings = [(BASELINE, None)] + [(m, None if pd.isna(r) else float(r))
                                     for m, r in zip(selection["method"], selection["rho"])]
    for seed in range(1, spec.seeds):
        for name, rho in settings:
            if not get_method(name).deterministic:
                add(Item(name, rho, seed, scope_of(name), "seeds"))
    return items, selection, not waiting


# ---- keys and runs -------------------------------------------------------------------------------
def item_config(config: TrainConfig, spec: SweepSpec, item: Item) -> TrainConfig:
    """The training settings of one run: the sweep's, with the item's seed and scope (and budget)."""
    return config.replace(seed=item.seed, scope=item.scope,
                          max_steps=spec.scope_max_steps.get(item.scope, config.max_steps))


class Keys:
    """Resume keys of a sweep's runs (the content of everything that determines a run's result)."""

    def __init__(self, ws, target: Target, config: TrainConfig, spec: SweepSpec, parent: str, *,
                 version: int = KEY_VERSION):
        row = ws.version(parent)
        self.config, self.spec = config, spec
        # the parent's weights, the data and the transform (via the eval outputs' key) and the train split;
        # a sweep keeps the key version it was created with, so an older sweep still finds its runs
        self.base = content_key("sweep-run", version, parent, str(row["sha256"]), ws.outputs_key("eval", parent),
                                ws.split("train").fingerprint(), target.to_dict())
        self._memo: dict[Item, str] = {}

    def __call__(self, item: Item) -> str:
        if item not in self._memo:
            method = get_method(item.method)
            # post-hoc results depend on neither the seed nor the training settings
            settings = None if method.post_hoc else {k: v for k, v in asdict(item_config(
                self.config, self.spec, item)).items() if k != "device"}
            seed = 0 if method.deterministic else item.seed
            self._memo[item] = content_key(self.base, item.method, _rho_key(item.rho), seed, settings)
        return self._memo[item]


def _runs_by_key(ws) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for r in ws.store.list_runs(kind=runs.KIND):
        if r["run_key"]:
            out.setdefault(r["run_key"], []).append(r)
    return out


def _done(rows: list[dict]) -> dict | None:
    done = [r for r in rows if r["status"] == "done" and r["final"]]
    return done[-1] if done else None


def _metrics(row: dict) -> dict:
    return {"accuracy": float(row["final"]["accuracy"]), "target_error": float(row["final"]["target_error"])}


def key_version(job: dict) -> int:
    """The resume-key version a sweep was created with (sweeps from before versions were stored: 1)."""
    return int((job["params"] or {}).get("key_version", 1))


def _context(ws, job: dict):
    if job["kind"] != KIND:
        raise WorkspaceError(f"job {job['id']} is a {job['kind']} job, not a sweep")
    spec = SweepSpec.from_dict(job["params"])
    target = Target.from_names(job["targets"]["targets"], ws.class_names)
    config = TrainConfig.from_dict(job["config"])
    parent = job["parent_version"] or ORIG
    return spec, target, config, parent


# ---- creating and running ----------------------------------------------------------------------------
def create_sweep(ws, target: Target, methods: list[str] | None = None, *, config: TrainConfig,
                 rhos=DEFAULT_RHOS, seeds: int = 5, parent: str = ORIG, method_scopes: dict[str, str] | None = None,
                 scope_max_steps: dict[str, int] | None = None, lambda1: float = 0.25,
                 lambda2: float = 0.01, executor: str = "local", address: str | None = None) -> int:
    """Validate a sweep and write its ``queued`` job row. Returns the sweep (job) id.

    Args:
        target: the repair target (pairs or triplets).
        methods: method names; None: :func:`default_methods` that can run here. The baseline is
            always added (first); the untouched model is the sweep's reference row, not a run.
        config: training settings; ``config.scope`` is the sweep's scope; the seed is ignored.
        rhos: the grid, each in (0, 1].
        seeds: S >= 1 (the paper: 5; statistics need 2 or more).
        method_scopes: method -> scope overrides (default: :func:`method_scope`).
        scope_max_steps: scope -> step budget for the runs at that scope.
        executor: "local" (one run after another in the sweep's process) or "ray" (every run that
            can start as a Ray task: :mod:`repair.cluster`); ``address`` the Ray cluster
            ("auto", "ray://host:10001"; None starts a local Ray).

    Raises:
        ValueError: an unknown method or scope, a method not applicable here, a bad grid or setting.
    """
    from repair.cluster import EXECUTORS

    if executor not in EXECUTORS:
        raise ValueError(f"executor must be one of {', '.join(EXECUTORS)}, got {executor!r}")
    config = config.replace(seed=0)
    names = default_methods() if methods is None else list(dict.fromkeys(methods))
    for name in names:
        get_method(name)  # unknown names raise with the valid ones
    if ORIGINAL in names:
        names.remove(ORIGINAL)
    names = [BASELINE] + [n for n in names if n != BASELINE]
    if not (isinstance(seeds, int) and seeds >= 1):
        raise ValueError(f"seeds must be a whole number >= 1, got {seeds}")
    try:
        rhos = tuple(r for _, r in plan_grid(["-"], rhos=rhos))
    except WorkspaceError as exc:
        raise ValueError(str(exc)) from None
    if not rhos:
        raise ValueError("the rho grid is empty")
    overrides = dict(method_scopes or {})
    budgets = {str(k): int(v) for k, v in (scope_max_steps or {}).items()}
    for name, scope in list(overrides.items()) + [(s, s) for s in budgets]:
        if scope not in SCOPES:
            raise ValueError(f"scope must be one of {', '.join(SCOPES)}, got {scope!r}")
    unknown = [m for m in overrides if m not in names]
    if unknown:
        raise ValueError(f"--method-scope names method(s) not in the sweep: {', '.join(unknown)}")
    if any(v < 1 for v in budgets.values()):
        raise ValueError("step budgets must be >= 1")
    model = ws.model(parent)
    kept, skipped = [], []
    for name in names:
        reason = get_method(name).applicability(model, ws, method_scope(config.scope, name, overrides))
        if reason and methods is not None:
            raise ValueError(reason if reason.startswith(name) else f"{name} is unavailable: {reason}")
        (skipped if reason else kept).append(name)
    TargetContext.of(target, 1.0, ws.task, config.scope)
    spec = SweepSpec(tuple(kept), rhos, seeds, float(lambda1), float(lambda2), overrides, budgets)
    for value, name in ((lambda1, "lambda1"), (lambda2, "lambda2")):
        if not 0 <= float(value) < 1:
            raise ValueError(f"{name} must be in [0, 1), got {value}")
    queue = select_device(config.device).type
    return jobs.create_job(ws, KIND, queue=queue, label=KIND,
                           params={**spec.to_dict(), "skipped": skipped, "executor": executor, "address": address,
                                   "key_version": KEY_VERSION},
                           targets=target.to_dict(), config=vars(config), parent_version=parent)


def submit_sweep(ws, target: Target, methods: list[str] | None = None, **options) -> int:
    """:func:`create_sweep` and a worker process for it. Returns the sweep id."""
    sweep_id = create_sweep(ws, target, methods, **options)
    jobs.start_worker(ws, sweep_id)
    return sweep_id


def resume_sweep(ws, sweep_id: int) -> int:
    """Make a stopped (failed, cancelled, killed) sweep runnable again: its finished runs are
    reused when it runs (:func:`workspace.jobs.run_job` or a worker). Returns the sweep id.

    Raises:
        WorkspaceError: no such sweep, or it is still running.
    """
    job = jobs.get_job(ws, sweep_id)
    _context(ws, job)
    jobs.reap_stale_jobs(ws.store)
    job = jobs.get_job(ws, sweep_id)
    if job["status"] in jobs.ACTIVE and jobs.pid_alive(job["pid"]):
        raise WorkspaceError(f"sweep {sweep_id} is {job['status']} (process {job['pid']}): cancel it first")
    for child in ws.store.list_runs(parent_run=sweep_id):
        if child["status"] in jobs.ACTIVE:  # left behind by the stopped sweep: never to run
            ws.store.update_run(child["id"], status="failed", finished_at=time.time(), eta=None,
                                error=f"abandoned: sweep {sweep_id} stopped before this run finished")
    ws.store.update_run(sweep_id, status="queued", cancel_requested=0, finished_at=None, error=None, pid=None)
    return sweep_id


def execute(ws, job: dict, rep: jobs.Reporter) -> dict:
    """The job entry of a sweep (see the module docstring). Returns :func:`sweep_result`."""
    spec, target, config, parent = _context(ws, job)
    keys = Keys(ws, target, config, spec, parent, version=key_version(job))
    params = job["params"] or {}
    executor = None
    if params.get("executor", "local") != "local":
        from repair.cluster import RayExecutor

        executor = RayExecutor(params.get("address"))
        rep.log(f"executor: {executor.describe()}")
    rep.phase(f"orig: evaluating {parent} on eval", share=(0.0, 0.02))
    original = _original(ws, target, parent, progress=rep.progress)
    rep.update(baseline=original)
    failed_here: set[str] = set()  # retried on a later resume, not within this execution
    computed: set[str] = set()

    def result(item: Item):
        key = keys(item)
        found = _done(by_key.get(key, []))
        if found is not None:
            return "done", _metrics(found)
        return ("failed", None) if key in failed_here else (None, None)

    def cost(item: Item) -> float:
        return POST_HOC_COST if get_method(item.method).post_hoc else 1.0

    rep.phase(f"sweep over {len(spec.methods)} methods, {len(spec.rhos)} rhos, {spec.seeds} seed(s)",
              share=(0.02, 1.0))
    started = time.monotonic()
    while True:
        by_key = _runs_by_key(ws)
        items, _, _ = plan(spec, config.scope, original, result)
        todo = [i for i in items if result(i)[0] is None]
        reused = sum(1 for i in items if keys(i) not in computed and result(i)[0] == "done")
        if not todo:
            break
        rep.check()
        # what is left to compute, with a guess for the seeds of settings not selected yet
        left = sum(cost(i) for i in todo) + (0 if any(i.phase == "seeds" for i in items) else
                                              (spec.seeds - 1) * sum(not get_method(m).deterministic
                                                                     for m in spec.methods))
        done_cost = sum(cost(i) for i in items if keys(i) in computed)
        batch = todo if executor is not None else todo[:1]  # a cluster runs everything that can start
        if executor is not None:
            _run_items_on_cluster(ws, job, rep, executor, spec, target, config, parent, batch, keys, done_cost,
                                  done_cost + left)
        else:
            _run_item(ws, job, rep, spec, target, config, parent, batch[0], keys(batch[0]), done_cost,
                      done_cost + left, f"{len(computed) + 1}/{len(computed) + len(todo)} to compute ({reused} reused)")
        for item in batch:
            computed.add(keys(item))
        by_key = _runs_by_key(ws)
        for item in batch:
            if _done(by_key.get(keys(item), [])) is None:
                failed_here.add(keys(item))
    rep.log(f"sweep finished in {jobs.format_seconds(time.monotonic() - started)}: {len(computed)} run(s) computed, "
            f"{reused} reused")
    return sweep_result(ws, job["id"], finished=True)


def _run_item(ws, job, rep, spec, target, config, parent, item, key, done_cost, total_cost, counter) -> None:
    units = 1000  # integer progress units per unit of cost
    try:
        child = runs.create_run(ws, item.method, target, item.rho, item_config(config, spec, item), parent=parent,
                                parent_run=job["id"], run_key=key)
    except (ValueError, WorkspaceError) as exc:
        rep.log(f"{item.label}: cannot run: {exc}")
        return
    ws.store.update_run(child, pid=os.getpid())  # if this process dies, the child is reaped with it
    cost = POST_HOC_COST if get_method(item.method).post_hoc else 1.0
    last = {"t": 0.0}

    def on_progress(done, total, message, eta):
        now = time.monotonic()
        if now - last["t"] < 0.5:
            return
        last["t"] = now
        fraction = float(ws.store.get_run(child)["progress"] or 0.0)
        rep.progress(int(units * (done_cost + cost * fraction)), int(units * total_cost),
                     f"{counter}: {item.label} ({item.scope}) {fraction:.0%}")

    rep.progress(int(units * done_cost), int(units * total_cost), f"{counter}: {item.label} ({item.scope})")
    row = jobs.run_job(ws, child, on_progress=on_progress)
    if row["status"] == "done":
        fin = row["final"]
        rep.log(f"run {child} {item.label} ({item.scope}): accuracy {fin['accuracy']:.4f}, "
                f"target error {fin['target_error']:.4f}")
    elif rep.should_stop() or ws.store.get_run(job["id"])["cancel_requested"]:
        raise Cancelled()
    else:
        rep.log(f"run {child} {item.label}: {row['status']}" + (f": {row['error']}" if row["error"] else ""))
    rep.progress(int(units * (done_cost + cost)), int(units * total_cost), f"{counter}: {item.label} finished")


def _run_items_on_cluster(ws, job, rep, executor, spec, target, config, parent, items, keys, done_cost,
                          total_cost) -> None:
    """Create the child runs of ``items`` and run them all at once on the cluster."""
    units = 1000
    children = {}
    for item in items:
        try:
            child = runs.create_run(ws, item.method, target, item.rho, item_config(config, spec, item),
                                    parent=parent, parent_run=job["id"], run_key=keys(item))
        except (ValueError, WorkspaceError) as exc:
            rep.log(f"{item.label}: cannot run: {exc}")
            continue
        children[child] = item
    finished = {"cost": 0.0}
    rep.log(f"submitted {len(children)} run(s) to the cluster")

    def on_done(child):
        item = children[child]
        row = ws.store.get_run(child)
        finished["cost"] += POST_HOC_COST if get_method(item.method).post_hoc else 1.0
        text = (f"accuracy {row['final']['accuracy']:.4f}, target error {row['final']['target_error']:.4f}"
                if row["status"] == "done" and row["final"] else f"{row['status']}: {row['error'] or ''}")
        rep.log(f"run {child} {item.label} ({item.scope}): {text}")
        rep.progress(int(units * (done_cost + finished["cost"])), int(units * total_cost),
                     f"cluster: {item.label} finished")

    executor.run(ws, list(children), on_done=on_done, should_stop=rep.should_stop)


def _original(ws, target: Target, parent: str, *, progress=None, cached_only: bool = False) -> dict | None:
    """Accuracy and target error of the parent version on eval (the sweep's reference row)."""
    out = ws.cached_outputs("eval", parent) if cached_only else ws.outputs("eval", parent, progress=progress)
    if out is None:
        return None
    metrics = eval_metrics(out, TargetContext.of(target, 1.0, ws.task))
    return {"accuracy": float(metrics["accuracy"]), "target_error": float(metrics["target_error"])}


# ---- state, results, exports ----------------------------------------------------------------------
@dataclass
class SweepState:
    """A sweep as it stands (read from the store; works while it runs and after).

    Attributes:
        job: the sweep's job row.
        target: its target.
        original: accuracy and target error of the starting model (None until known).
        grid: one row per run (the original first): ``method``, ``rho`` (NaN: none), ``seed``,
            ``scope``, ``phase``, ``accuracy``, ``target_error`` (NaN until done), ``status``
            ("pending" or the run's status), ``run_id`` (None while pending), ``reused``
            (a finished run of an earlier sweep), ``selected``.
        selection: :func:`~repair.selection.select_rhos`' frame (None until the grid is done).
        table: :func:`~repair.selection.build_table` (None until the selection; provisional
            while seeds are missing).
        complete: every planned run has a result.
    """

    job: dict
    target: Target
    original: dict | None
    grid: pd.DataFrame
    selection: pd.DataFrame | None
    table: pd.DataFrame | None
    complete: bool

    @property
    def error_name(self) -> str:
        return "Confusion" if self.target.kind == "confusion" else "Bias"


GRID_COLUMNS = ["method", "rho", "seed", "scope", "phase", "accuracy", "target_error", "status", "run_id", "reused",
                "selected"]


def sweep_state(ws, sweep_id: int, *, finished: bool | None = None) -> SweepState:
    """The state of a sweep from the store (see :class:`SweepState`).

    Args:
        finished: whether the sweep has ended (default: its status is "done"). In an ended
            sweep a run that did not finish is given up and the plan goes on without it; in a
            running or stopped one it is still to come (a stopped sweep runs it when resumed).

    Raises:
        WorkspaceError: no such job, or it is not a sweep.
    """
    job = jobs.get_job(ws, sweep_id)
    spec, target, config, parent = _context(ws, job)
    jobs.reap_stale_jobs(ws.store)
    by_key = _runs_by_key(ws)
    keys = Keys(ws, target, config, spec, parent, version=key_version(job))
    original = job["baseline"] or _original(ws, target, parent, cached_only=True)
    finished = job["status"] == "done" if finished is None else finished

    def latest(item: Item) -> dict | None:
        rows = by_key.get(keys(item), [])
        return _done(rows) or next((r for r in reversed(rows) if r["parent_run"] == sweep_id), None)

    def result(item: Item):
        row = latest(item)
        if row is not None and row["status"] == "done":
            return "done", _metrics(row)
        if finished and (row is None or row["status"] not in jobs.ACTIVE):
            return "failed", None
        return None, None

    items, selection, complete = plan(spec, config.scope, original, result)
    chosen = set() if selection is None else {(m, _rho_key(r)) for m, r in zip(selection["method"],
                                                                                 selection["rho"])}
    rows = []
    if original is not None:
        rows.append({"method": ORIGINAL, "rho": float("nan"), "seed": 0, "scope": "-", "phase": "grid", **original,
                     "status": "done", "run_id": None, "reused": False, "selected": False})
    for item in items:
        row = latest(item)
        metrics = _metrics(row) if row is not None and row["status"] == "done" else {}
        rows.append({"method": item.method, "rho": float("nan") if item.rho is None else item.rho, "seed": item.seed,
                     "scope": "-" if get_method(item.method).post_hoc else item.scope, "phase": item.phase,
                     "accuracy": metrics.get("accuracy", float("nan")),
                     "target_error": metrics.get("target_error", float("nan")),
                     "status": PENDING if row is None else row["status"], "run_id": None if row is None else row["id"],
                     "reused": row is not None and row["parent_run"] != sweep_id,
                     "selected": item.method == BASELINE or item.setting in chosen})
    grid = pd.DataFrame(rows, columns=GRID_COLUMNS)
    table = None
    done = grid[grid["status"] == "done"]
    if selection is not None and (done["method"] == BASELINE).any():
        deterministic = [m for m in spec.methods if get_method(m).deterministic]
        picked = [(m, None if pd.isna(r) else r) for m, r in zip(selection["method"], selection["rho"])]
        have = set(zip(done["method"], done["rho"].map(_rho_key)))
        table = build_table(done[["method", "rho", "seed", "accuracy", "target_error"]], deterministic=deterministic,
                            selected=[s for s in picked if (s[0], _rho_key(s[1])) in have],
                            lambda1=spec.lambda1, lambda2=spec.lambda2)
    return SweepState(job, target, original, grid, selection, table, complete)


def sweep_result(ws, sweep_id: int, *, finished: bool | None = None) -> dict:
    """The sweep's JSON (the CLI's ``--json`` and the job's stored result).

    Returns:
        ``{"sweep_id", "targets", "status", "complete", "grid": [{"method", "rho", "seed",
        "accuracy", "target_error", "status", "scope", "phase", "run_id", "reused"}],
        "selection": [{"method", "rho", "rule", "reason"}], "table": [table_to_json_rows rows],
        "skipped": [...], "minutes"}``; the original model is the grid's first row (seed 0,
        rho None); NaN is None.
    """
    state = sweep_state(ws, sweep_id, finished=finished)

    def num(v):
        return None if v is None or pd.isna(v) else float(v)

    grid = [{"method": r.method, "rho": num(r.rho), "seed": int(r.seed), "accuracy": num(r.accuracy),
             "target_error": num(r.target_error), "status": r.status, "scope": r.scope, "phase": r.phase,
             "run_id": None if pd.isna(r.run_id) else int(r.run_id), "reused": bool(r.reused)}
            for r in state.grid.itertuples()]
    selection = [] if state.selection is None else [
        {"method": r.method, "rho": num(r.rho), "rule": r.rule, "reason": r.reason}
        for r in state.selection.itertuples()]
    seconds = jobs.job_seconds(state.job)
    return {"sweep_id": int(sweep_id), "targets": state.target.to_dict(), "status": state.job["status"],
            "complete": state.complete, "grid": grid, "selection": selection,
            "table": [] if state.table is None else table_to_json_rows(state.table),
            "skipped": (state.job["params"] or {}).get("skipped", []),
            "minutes": None if seconds is None else round(seconds / 60, 3)}


def export_table(state: SweepState, fmt: str) -> str:
    """The table as "csv", "markdown" or "latex" text.

    Raises:
        ValueError: an unknown format, or no table yet.
    """
    formats = ("csv", "markdown", "latex")
    if fmt not in formats:
        raise ValueError(f"format must be one of {', '.join(formats)}, got {fmt!r}")
    if state.table is None:
        raise ValueError("the sweep has no table yet (it appears once the grid is done)")
    if fmt == "csv":
        return table_to_csv(state.table)
    if fmt == "markdown":
        return table_to_markdown(state.table, error_name=state.error_name)
    return table_to_latex(state.table, error_name=state.error_name,
                          caption=f"Repairs of {state.target.label} (sweep {state.job['id']})",
                          label=f"tab:sweep-{state.job['id']}")


def list_sweeps(ws) -> list[dict]:
    """Sweep job rows, oldest first (stale workers reaped)."""
    return jobs.list_jobs(ws, kind=KIND)


def keep_as_version(ws, run_id: int, *, background: bool = True) -> int:
    """Turn a finished fine-tuning run of a sweep into a model version.

    Sweep runs keep metrics, not weights: the run's setting (method, rho, seed, scope, training
    settings, parent, targets) runs again as an ordinary repair run, which saves a new version.
    On CPU a seed gives the same weights again; on a GPU the result may differ in the last digits.

    Args:
        background: start a worker process (else run here, to the end).

    Returns:
        The new run's id (its ``model_version`` is set when it finishes).

    Raises:
        WorkspaceError: no such run, not finished, or a post-hoc run (no weights to keep).
    """
    row = jobs.get_job(ws, run_id)
    if row["kind"] != runs.KIND or row["status"] != "done":
        raise WorkspaceError(f"run {run_id} is not a finished repair run")
    method = get_method(row["method"])
    if method.post_hoc:
        raise WorkspaceError(f"run {run_id} ({row['method']}) is post-hoc: it has no weights to keep "
                             "(apply it on the What-if page)")
    if row["model_version"]:
        raise WorkspaceError(f"run {run_id} already has the model version {row['model_version']}")
    target = Target.from_names(row["targets"]["targets"], ws.class_names)
    config = TrainConfig.from_dict(row["config"])
    rho = row["rho"] if method.param is not None else None
    new = runs.create_run(ws, row["method"], target, rho, config, parent=row["parent_version"] or ORIG)
    if background:
        jobs.start_worker(ws, new)
    else:
        jobs.run_job(ws, new)
    return new
