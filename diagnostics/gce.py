"""The GCE-trained "biased model" of the PGD paper (Algorithm 2, step 1).

A copy of the workspace's architecture, re-initialised, is trained on the raw train split
with the generalised cross-entropy ``L = (1 - p_y^q) / q`` (Zhang & Sabuncu 2018, q = 0.7),
which down-weights hard (bias-conflicting) samples so the model leans on the easy, biased
cue; its per-sample gradients then single out the minority. The loaded model is never
touched: the architecture is deep-copied and every module with ``reset_parameters`` is
re-initialised.

Files under ``ws.state_dir / "gradients" / "gce-<key>"`` (key: data fingerprint,
architecture and training options): ``weights.pt``, ``status.json`` (status, progress,
message, error, pid) and ``cancel`` (created to ask a running job to stop).

As a background job: :func:`start_job` launches ``python -m diagnostics gce --workspace W``
as its own process (it survives a page reload); pages poll :func:`job_status` and call
:func:`cancel_job`.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from workspace.cache import InferenceOutputs, OutputCache, cache_key, make_loader, run_inference
from workspace.errors import WorkspaceError

REPO = Path(__file__).resolve().parent.parent


class Cancelled(WorkspaceError):
    """The user asked the GCE job to stop."""


@dataclass(frozen=True)
class GCEConfig:
    q: float = 0.7
    epochs: int = 4
    lr: float = 1e-3
    batch_size: int = 128
    seed: int = 0

    def validate(self) -> None:
        if not 0.0 < self.q <= 1.0:
            raise WorkspaceError(f"GCE q must be in (0, 1], got {self.q}")
        if self.epochs < 1 or self.batch_size < 1 or self.lr <= 0:
            raise WorkspaceError("GCE epochs and batch size must be >= 1 and lr > 0")


def gce_loss(logits: torch.Tensor, labels: torch.Tensor, q: float = 0.7) -> torch.Tensor:
    """Mean generalised cross-entropy ``(1 - p_y^q) / q`` ((B, K) logits, (B,) labels)."""
    p_y = torch.softmax(logits, dim=1).gather(1, labels[:, None]).squeeze(1).clamp_min(1e-12)
    return ((1.0 - p_y.pow(q)) / q).mean()


def gce_key(ws, config: GCEConfig = GCEConfig()) -> str:
    spec = ws.config.model
    arch = f"{spec.kind}:{spec.torchvision or spec.factory or spec.torchscript}"
    return cache_key("gce", ws.split("train").fingerprint(), arch, json.dumps(asdict(config), sort_keys=True))


def job_dir(ws, config: GCEConfig = GCEConfig()) -> Path:
    path = Path(ws.state_dir) / "gradients" / f"gce-{gce_key(ws, config)}"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _write_status(folder: Path, **fields) -> None:
    status = {**read_status(folder), **fields, "updated_at": time.time()}
    tmp = folder / "status.json.tmp"
    tmp.write_text(json.dumps(status))
    os.replace(tmp, folder / "status.json")


def read_status(folder: Path) -> dict:
    try:
        return json.loads((Path(folder) / "status.json").read_text())
    except (OSError, ValueError):
        return {}


def fresh_copy(model: nn.Module) -> nn.Module:
    """A re-initialised deep copy of ``model`` (the loaded model is left as it is)."""
    if isinstance(model, torch.jit.ScriptModule):
        raise WorkspaceError("training a GCE biased model needs a Python model; TorchScript cannot be re-initialised")
    new = copy.deepcopy(model)
    reset = 0
    for module in new.modules():
        if hasattr(module, "reset_parameters") and callable(module.reset_parameters):
            module.reset_parameters()
            reset += 1
    if reset == 0:
        raise WorkspaceError("no layer of the model can be re-initialised (no reset_parameters)")
    return new


def train_gce_model(ws, config: GCEConfig = GCEConfig(), *, progress=None, device: str = "auto",
                    should_stop=None) -> nn.Module:
    """Train the GCE biased model from scratch on the train split (Adam, no augmentation).

    Args:
        progress: ``progress(done, total)`` per step; raise from it to cancel.
        should_stop: optional ``() -> bool`` checked every step; True raises :class:`Cancelled`.

    Returns:
        The trained model in eval mode on CPU.
    """
    from workspace.models import select_device

    config.validate()
    if ws.multi_label:
        raise WorkspaceError("the GCE biased model is single-label only")
    torch.manual_seed(config.seed)
    gen = torch.Generator().manual_seed(config.seed)
    dev = select_device(device)
    model = fresh_copy(ws.model()).to(dev).train()
    labels = torch.as_tensor(ws.split("train").labels)
    data = ws.dataset("train")
    loader = torch.utils.data.DataLoader(data, batch_size=config.batch_size, shuffle=True, generator=gen,
                                         num_workers=0, drop_last=len(data) > config.batch_size)
    opt = torch.optim.Adam(model.parameters(), lr=config.lr)
    steps, step = config.epochs * len(loader), 0
    for _ in range(config.epochs):
        for x, index, ok in loader:
            ok = ok.bool()
            if ok.sum() > 1:
                loss = gce_loss(model(x[ok].to(dev)), labels[index[ok]].to(dev), config.q)
                if not torch.isfinite(loss):
                    raise WorkspaceError("GCE training diverged (non-finite loss); lower the learning rate")
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            step += 1
            if should_stop is not None and should_stop():
                raise Cancelled("GCE training cancelled")
            if progress is not None:
                progress(step, steps)
    return model.to("cpu").eval()


def weights_path(ws, config: GCEConfig = GCEConfig()) -> Path:
    return job_dir(ws, config) / "weights.pt"


def load_gce_model(ws, config: GCEConfig = GCEConfig()) -> nn.Module | None:
    """The trained GCE model if its weights exist for this data, else None."""
    path = weights_path(ws, config)
    if not path.is_file():
        return None
    from workspace.models import apply_state_dict, load_checkpoint

    model = fresh_copy(ws.model())
    apply_state_dict(model, load_checkpoint(path), source="GCE biased model")
    return model.eval()


def save_gce_model(ws, model: nn.Module, config: GCEConfig = GCEConfig()) -> Path:
    path = weights_path(ws, config)
    tmp = path.with_suffix(".tmp")
    torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, tmp)
    os.replace(tmp, path)
    return path


def load_or_train(ws, config: GCEConfig = GCEConfig(), *, progress=None) -> nn.Module:
    """The GCE model from disk, or trained now (in this process) and saved."""
    model = load_gce_model(ws, config)
    if model is None:
        model = train_gce_model(ws, config, progress=progress)
        save_gce_model(ws, model, config)
    return model


def gce_outputs(ws, model: nn.Module, config: GCEConfig = GCEConfig(), *, progress=None) -> InferenceOutputs:
    """Outputs (logits, probabilities, embeddings) of the GCE model on the train split, cached."""
    folder = job_dir(ws, config)
    cache = OutputCache(folder / "cache")
    key = cache_key(gce_key(ws, config), ws.outputs_key("train"))
    found = cache.load("gce", "train", key)
    if found is not None:
        return found
    data = ws.split("train")
    out = run_inference(model, make_loader(ws.dataset("train")), tap=ws.embedding_tap(model), labels=data.labels,
                        class_names=data.class_names, task=ws.task, progress=progress)
    out.split, out.model_version = "train", "gce"
    cache.save(out, "gce", "train", key)
    return out


# ---- the background job ------------------------------------------------------------------
def run_job(ws, config: GCEConfig = GCEConfig(), *, progress=None) -> dict:
    """Body of ``python -m diagnostics gce``: train, save, write status; honours ``cancel``."""
    folder = job_dir(ws, config)
    cancel = folder / "cancel"
    _write_status(folder, status="running", progress=0.0, message="training", error=None, pid=os.getpid(),
                  started_at=time.time())

    def report(done: int, total: int) -> None:
        if progress is not None:
            progress(done, total)
        if done == total or done % 5 == 0:
            _write_status(folder, progress=done / max(total, 1), message=f"step {done}/{total}")

    try:
        model = train_gce_model(ws, config, progress=report, should_stop=cancel.exists)
        save_gce_model(ws, model, config)
        _write_status(folder, message="scoring the train split")
        gce_outputs(ws, model, config)
    except Cancelled:
        cancel.unlink(missing_ok=True)
        _write_status(folder, status="cancelled", message="cancelled", finished_at=time.time())
        raise
    except Exception as exc:
        _write_status(folder, status="failed", error=f"{type(exc).__name__}: {exc}", finished_at=time.time())
        raise
    _write_status(folder, status="done", progress=1.0, message="done", finished_at=time.time())
    return {"status": "done", "weights": str(weights_path(ws, config)), "key": gce_key(ws, config)}


def _alive(pid) -> bool:
    if not pid:
        return False
    try:  # reap our own finished child first (a zombie still answers kill 0)
        if os.waitpid(int(pid), os.WNOHANG)[0] != 0:
            return False
    except (ChildProcessError, OSError, ValueError):
        pass
    try:
        os.kill(int(pid), 0)
    except (OSError, ValueError):
        return False
    return True


def job_status(ws, config: GCEConfig = GCEConfig()) -> dict:
    """``{"status": "none"|"running"|"done"|"failed"|"cancelled", "progress", "message", "error"}``.

    A job whose process died without writing its end is reported as failed.
    """
    folder = job_dir(ws, config)
    status = read_status(folder)
    if weights_path(ws, config).is_file() and status.get("status") in (None, "done"):
        return {"status": "done", "progress": 1.0, "message": "done", "error": None}
    if not status:
        return {"status": "none", "progress": 0.0, "message": "", "error": None}
    if status.get("status") == "running" and not _alive(status.get("pid")):
        status = {**status, "status": "failed", "error": status.get("error") or "the job process ended unexpectedly"}
    return status


def start_job(ws, config: GCEConfig = GCEConfig()) -> int:
    """Launch the GCE job as its own process; returns its pid (refuses a second one)."""
    config.validate()
    current = job_status(ws, config)
    if current["status"] == "running":
        raise WorkspaceError("a GCE job is already running for this workspace")
    folder = job_dir(ws, config)
    (folder / "cancel").unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "diagnostics", "gce", "--workspace", ws.spec, "--epochs", str(config.epochs),
           "--lr", str(config.lr), "--q", str(config.q), "--batch-size", str(config.batch_size),
           "--seed", str(config.seed)]
    log = open(folder / "job.log", "ab")
    proc = subprocess.Popen(cmd, cwd=str(REPO), stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    log.close()
    _write_status(folder, status="running", progress=0.0, message="starting", error=None, pid=proc.pid)
    return proc.pid


def cancel_job(ws, config: GCEConfig = GCEConfig()) -> None:
    """Ask a running GCE job to stop (it checks between steps)."""
    (job_dir(ws, config) / "cancel").touch()


__all__ = ["GCEConfig", "gce_loss", "train_gce_model", "load_gce_model", "load_or_train", "gce_outputs",
           "start_job", "job_status", "cancel_job", "run_job", "Cancelled"]
