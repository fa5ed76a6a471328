"""Real JPEGs: a CIFAR-10 workspace with a small factory model (``../shared/data/cifar10-jpeg``).

``python -m tests.integration.cifar10 [--per-class N] [--epochs E]`` extracts the tarballs
into the git-ignored ``data/cifar10`` folder, trains a small BatchNorm CNN for a few epochs
on CPU, writes ``data/cifar10/workspace.toml`` and times two ``python -m workspace cache``
calls (the second must reuse the cache). The test in ``test_cifar10.py`` does the same on a
few images per class and skips when ``../shared`` is absent (as on users' machines).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tarfile
import textwrap
import time
from pathlib import Path

import torch
from torch import nn

REPO = Path(__file__).resolve().parents[2]
SOURCE = REPO.parent / "shared" / "data" / "cifar10-jpeg"

MODEL_FILE = textwrap.dedent('''
    """A small CIFAR-10 CNN with BatchNorm (the user's own model code)."""
    from torch import nn


    def block(cin, cout):
        return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout),
                             nn.ReLU(inplace=True), nn.MaxPool2d(2))


    class SmallCifarNet(nn.Module):
        def __init__(self, num_classes=10):
            super().__init__()
            self.features = nn.Sequential(block(3, 32), block(32, 64), block(64, 128))
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(128, num_classes)

        def forward(self, x):
            return self.fc(self.pool(self.features(x)).flatten(1))


    def build(num_classes=10):
        return SmallCifarNet(num_classes)
''')

WORKSPACE = textwrap.dedent('''
    name = "cifar10-jpeg"
    task = "single_label"
    [model]
    factory = "cifar_model:build"
    weights = "cifar_model.pth"
    [data]
    format = "imagefolder"
    train = "train"
    eval = "test"
    [transform]
    resize = 32
    mean = [0.4914, 0.4822, 0.4465]
    std = [0.247, 0.243, 0.261]
''')


def extract(dest: Path, per_class: int | None = None) -> None:
    """Extract train/ and test/ (at most ``per_class`` images per class and split)."""
    for name in ("train", "test"):
        if (dest / name).is_dir() and per_class is None:
            continue
        seen: dict[str, int] = {}
        with tarfile.open(SOURCE / f"{name}.tar.gz") as tar:
            members = []
            for m in tar:
                parts = Path(m.name).parts
                if not m.isfile() or len(parts) < 3:
                    continue
                if per_class is not None:
                    if seen.get(parts[-2], 0) >= per_class:
                        continue
                    seen[parts[-2]] = seen.get(parts[-2], 0) + 1
                members.append(m)
            tar.extractall(dest, members=members, filter="data")


def write_workspace(dest: Path, model: nn.Module) -> Path:
    (dest / "cifar_model.py").write_text(MODEL_FILE)
    torch.save({"state_dict": model.state_dict(), "epoch": 0}, dest / "cifar_model.pth")
    (dest / "workspace.toml").write_text(WORKSPACE)
    return dest / "workspace.toml"


def build_model() -> nn.Module:
    namespace: dict = {}
    exec(compile(MODEL_FILE, "cifar_model.py", "exec"), namespace)  # the same code the workspace loads
    return namespace["build"](10)


def train(dest: Path, epochs: int) -> nn.Module:
    from torchvision import datasets, transforms

    tf = transforms.Compose([transforms.RandomCrop(32, padding=4), transforms.RandomHorizontalFlip(),
                             transforms.ToTensor(),
                             transforms.Normalize((0.4914, 0.4822, 0.4465), (0.247, 0.243, 0.261))])
    data = datasets.ImageFolder(dest / "train", tf)
    loader = torch.utils.data.DataLoader(data, batch_size=128, shuffle=True, num_workers=2)
    model = build_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4, nesterov=True)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, 0.1, total_steps=epochs * len(loader))
    for epoch in range(epochs):
        model.train()
        start, total, correct = time.perf_counter(), 0, 0
        for x, y in loader:
            out = model(x)
            loss = nn.functional.cross_entropy(out, y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += len(y)
            correct += (out.argmax(1) == y).sum().item()
        print(f"epoch {epoch + 1}: train acc {correct / total:.3f} ({time.perf_counter() - start:.0f}s)",
              file=sys.stderr)
    return model.eval()


def cache_twice(workspace: Path) -> list[dict]:
    reports = []
    for _ in range(2):
        start = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "workspace", "cache", "--workspace", str(workspace), "--json"],
                              cwd=REPO, capture_output=True, text=True, check=True)
        report = json.loads(proc.stdout)
        report["wall_seconds"] = round(time.perf_counter() - start, 2)
        reports.append(report)
    return reports


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dest", type=Path, default=REPO / "data" / "cifar10")
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()
    torch.manual_seed(0)
    args.dest.mkdir(parents=True, exist_ok=True)
    extract(args.dest)
    model = train(args.dest, args.epochs)
    workspace = write_workspace(args.dest, model)
    for r in cache_twice(workspace):
        print(json.dumps(r))


if __name__ == "__main__":
    main()
