"""Repair runs: jobs of kind "repair" on the one job runner (:mod:`workspace.jobs`).

:func:`create_run` validates a request and writes the job row (method, targets, rho, seed and
the training settings, with the scope); :func:`execute` is the job's entry: it evaluates the
parent version (the baseline), lets the method prepare, then either applies a post-hoc method to
the cached outputs or fine-tunes (:func:`repair.loop.finetune`), writing per-step losses and
per-evaluation metrics (with the full confusion matrix) as it goes, and saves a fine-tuned model
as a new model version (with its eval outputs, and for the head scope its train outputs, stored
so that no page has to run it again).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from repair import distributed
from repair.loop import TrainConfig, eval_metrics, head_train_outputs
from repair.methods import TargetContext, get_method
from workspace import jobs
from workspace.cache import InferenceOutputs
from workspace.core import ORIG, file_sha256
from workspace.models import select_device
from workspace.targets import Target

KIND = jobs.REPAIR_KIND
jobs.register_job_kind(KIND, "repair.runs:execute", description="fine-tuning or post-hoc repair of a model version")


def create_run(ws, method: str, target: Target, rho: float | None, config: TrainConfig, *, parent: str = ORIG,
               parent_run: int | None = None, run_key: str | None = None) -> int:
    """Validate the request and write a ``queued`` run. Returns the run (job) id.

    Raises:
        ValueError: unknown method, bad targets, rho or settings, or a method not applicable here.
    """
    m = get_method(method)
    rho = 1.0 if m.param is None else m.param.validate(m.param.default if rho is None else rho)
    ctx = TargetContext.of(target, rho, ws.task, config.scope)
    config.validate()
    reason = m.applicability(ws.model(parent), ws, config.scope)
    if reason:
        raise ValueError(reason if reason.startswith(method) else f"{method} is unavailable: {reason}")
    queue = None if m.post_hoc else select_device(config.device).type  # post-hoc runs never queue
    return jobs.create_job(ws, KIND, queue=queue, label=method, targets=target.to_dict(), rho=ctx.rho,
                           seed=config.seed, config=vars(config), parent_version=parent, parent_run=parent_run,
                           run_key=run_key)


def submit(ws, method: str, target: Target, rho: float | None, config: TrainConfig, *, parent: str = ORIG,
           nproc: int = 1) -> int:
    """Create a run and start its worker process (post-hoc runs are executed at once, here).

    ``nproc`` > 1: data-parallel fine-tuning over that many processes (one per GPU).
    """
    if nproc > 1 and config.scope == "head":
        raise ValueError("the head scope trains in seconds in one process; use nproc 1")
    run_id = create_run(ws, method, target, rho, config, parent=parent)
    if get_method(method).post_hoc:
        jobs.run_job(ws, run_id)
    else:
        jobs.start_worker(ws, run_id, nproc=nproc)
    return run_id


def _summary(metric: dict, ws=None, outputs=None) -> dict:
    """Accuracy and target error; with the workspace's groups, the worst group's accuracy too."""
    out = {"accuracy": metric["accuracy"], "target_error": metric["target_error"]}
    groups = None if ws is None or outputs is None else ws.groups(outputs.split or "eval")
    if groups is not None:
        ids, names = groups
        worst = worst_group(np.asarray(outputs.correct), ids[np.asarray(outputs.indices)], names)
        if worst is not None:
            out.update(worst_group_accuracy=worst[0], worst_group=worst[1])
    return out


def worst_group(correct: np.ndarray, groups: np.ndarray, names: list[str]) -> tuple[float, str] | None:
    """The lowest per-group accuracy and its group's name (groups without samples are left out)."""
    values = [(float(correct[groups == g].mean()), names[g]) for g in range(len(names)) if (groups == g).any()]
    return min(values) if values else None


def execute(ws, job: dict, rep: jobs.Reporter) -> dict:
    """The job entry of a repair run."""
    method = get_method(job["method"])
    target = Target.from_names(job["targets"]["targets"], ws.class_names)
    config = TrainConfig.from_dict(job["config"])
    ctx = TargetContext.of(target, float(job["rho"]), ws.task, config.scope)
    parent = job["parent_version"] or ORIG
    parent_path = ws.version(parent)["path"]
    parent_sha = file_sha256(Path(parent_path)) if parent_path else None
    rep.phase(f"baseline: evaluating {parent} on eval", share=(0.0, 0.05))
    base_outputs = ws.outputs("eval", parent, progress=rep.progress)
    base = eval_metrics(base_outputs, ctx)
    main = distributed.is_main()  # data-parallel ranks other than 0 write nothing
    base_summary = _summary(base, ws, base_outputs)
    rep.update(baseline=base_summary)
    if main:
        rep.metric(epoch=0, step=0, accuracy=base["accuracy"],
                            target_error=base["target_error"], extra={"confusion": base["confusion"]})
    rep.phase(f"{method.name}: preparing", share=(0.05, 0.1))
    method.prepare(ws, parent, progress=rep.progress)
    version = None
    if method.post_hoc:
        preds = method.apply(base_outputs.probs, base_outputs.preds, ctx, threshold=base_outputs.threshold)
        after = InferenceOutputs(logits=base_outputs.logits, probs=base_outputs.probs, preds=preds,
                                 labels=base_outputs.labels, embeddings=None, indices=base_outputs.indices,
                                 class_names=base_outputs.class_names, task=base_outputs.task,
                                 threshold=base_outputs.threshold)
        final = eval_metrics(after, ctx)
        final_summary = _summary(final, ws, dataclasses.replace(base_outputs, preds=preds))
        rep.metric(epoch=1, step=1, accuracy=final["accuracy"],
                            target_error=final["target_error"], extra={"confusion": final["confusion"]})
    else:

        def phase(name: str) -> None:  # a stage of the method's preparation, with its own ETA
            rep.phase(f"{method.name}: {name}", share=(0.05, 0.1))

        def on_step(step, total, loss, epoch=None, stage=None):
            # epoch: where the step lies, from methods whose epochs are not config.epochs (BIR's
            # early-stopped treatment); else the share of the run times its epochs. stage: what is
            # trained, from methods with their own procedure (BIR trains only the layers it chose)
            if step == 1:  # the ETA counts training steps only, not the preparation
                rep.phase(f"{method.name}: {stage or f'fine-tuning ({config.scope} scope)'}", share=(0.1, 1.0))
            rep.step_loss(step / max(total, 1) * config.epochs if epoch is None else epoch, step, loss)
            rep.progress(step, total, f"step {step:,}/{total:,}, loss {loss:.4f}")
            rep.check()

        def on_eval(metric):
            rep.flush()
            if main:
                rep.metric(epoch=metric["epoch"], step=metric["step"],
                                    accuracy=metric["accuracy"], target_error=metric["target_error"],
                                    loss=metric["loss"], extra={"confusion": metric["confusion"]})

        model, history, outputs = method.train(ws, ctx, config, parent=parent, on_step=on_step, on_eval=on_eval,
                                           should_stop=rep.should_stop, log=rep.log, progress=rep.progress,
                                               phase=phase)
        final = history[-1]
        outputs.split = "eval"
        final_summary = _summary(final, ws, outputs)
        if not main:
            distributed.shutdown()
            return {}
        if not job.get("parent_run") or job.get("params", {}) and job["params"].get("keep_version"):
            row = ws.save_version(model, method=method.name, parent=parent, rho=ctx.rho, targets=target.to_dict(),
                                  # the epochs it trained: a step budget or early stopping (bir) ends
                                  # before config.epochs
                                  seed=config.seed, epochs=final.get("epoch", config.epochs),
                                  metrics={**final_summary, "baseline": base_summary, "scope": config.scope},
                                  run_id=job["id"])
            ws.save_outputs(outputs, "eval", row["id"])
            if config.scope == "head":
                train_out = head_train_outputs(ws, model, parent)
                if train_out is not None:
                    ws.save_outputs(train_out, "train", row["id"])
            version = row["id"]
    if parent_sha is not None and file_sha256(Path(parent_path)) != parent_sha:
        raise RuntimeError("the parent model file changed during the run")  # must never happen
    distributed.shutdown()
    rep.log(f"done: accuracy {final['accuracy']:.4f}, target error {final['target_error']:.4f}"
            + ("" if version is None else f", saved as {version}"))
    rep.update(final=final_summary, model_version=version)
    return {"final": final_summary, "baseline": base_summary, "model_version": version}


def list_runs(ws, *, method: str | None = None, sweeps: bool = False) -> list[dict]:
    """Repair runs (newest last), stale workers reaped; a sweep's runs only with ``sweeps`` (the
    Sweep page shows them)."""
    return [r for r in jobs.list_jobs(ws, kind=KIND) if (method is None or r["method"] == method)
            and (sweeps or not r["parent_run"])]


def run_result(ws, run_id: int) -> dict:
    """The CLI's JSON for a run."""
    run = jobs.get_job(ws, run_id)
    evals = [{"epoch": m["epoch"], "step": m["step"], "accuracy": m["accuracy"], "target_error": m["target_error"]}
             for m in ws.store.run_metrics(run_id) if m["step"] > 0 and m["accuracy"] is not None]
    version = None
    if run["model_version"]:
        row = ws.version(run["model_version"])
        version = {"id": row["id"], "path": row["path"]}
    seconds = jobs.job_seconds(run) if run["finished_at"] else None
    return {"run_id": run_id, "method": run["method"], "rho": run["rho"], "targets": run["targets"],
            "scope": (run["config"] or {}).get("scope", "all"), "status": run["status"],
            "error": run["error"] or None, "baseline": run["baseline"], "epochs": evals, "final": run["final"],
            "model_version": version, "minutes": None if seconds is None else round(seconds / 60, 3)}
