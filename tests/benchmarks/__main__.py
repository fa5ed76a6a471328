"""``make bench``: speed targets as ratios against a baseline measured in the same run.

Every ``tests/benchmarks/bench_*.py`` module exposes ``run() -> list[dict]``; each dict has
``name``, ``value`` (the ratio or time), ``unit``, ``target`` (text, e.g. ">= 0.9") and
``ok`` (bool or None when the target is informational), plus free-form ``detail``.
Run one module with ``python -m tests.benchmarks inference``.
"""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main(argv: list[str]) -> int:
    names = argv or sorted(p.stem[len("bench_"):] for p in HERE.glob("bench_*.py"))
    results, failed = [], 0
    for name in names:
        module = importlib.import_module(f"tests.benchmarks.bench_{name}")
        print(f"== {name}", flush=True)
        for row in module.run():
            row = {"bench": name, **row}
            results.append(row)
            mark = {True: "ok", False: "MISSED", None: "info"}[row.get("ok")]
            failed += row.get("ok") is False
            print(f"  {row['name']:<58} {row['value']:>10.3f} {row.get('unit', ''):<8} "
                  f"target {row.get('target', '-'):<10} {mark}  {row.get('detail', '')}", flush=True)
    out = Path("bench_out")
    out.mkdir(exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=2))
    print(f"{len(results)} measurements, {failed} targets missed; bench_out/results.json")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
