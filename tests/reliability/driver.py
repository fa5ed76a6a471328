"""Run many command lines fast: import the three CLIs once, run each case in its own process.

``python -m tests.reliability.driver CASES.json RESULTS.json [--jobs N]``

Each case (a JSON object: ``id``, ``cli`` = "workspace" | "diagnostics" | "repair", ``argv``,
``cwd``, ``env``, ``timeout``, optional ``exec``) runs in a child process forked after the imports
(about 4 s of the 6 s that ``python -m ...`` takes here), which calls the same ``run_cli(main)``
as ``python -m <cli>`` does, with stdout and stderr redirected at the file-descriptor level (so
anything written by C code or by a stray ``print`` is seen too). ``SystemExit`` is handled as
the interpreter does. With ``"exec": true`` the child instead ``exec``s the real
``python -m <cli> ...``, for the cases that must prove the entry point itself.

RESULTS maps each id to ``{"code", "stdout", "stderr", "seconds"}``; ``code`` is 124 when the
case ran past its timeout (the child is killed).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import tempfile
import time
import traceback

MODULES = ("workspace", "diagnostics", "repair")


def _mains() -> dict:
    """The three ``main`` functions, with their registries loaded (the costly imports, done once)."""
    from diagnostics.__main__ import main as diagnostics_main
    from diagnostics.registry import list_diagnostics
    from repair.__main__ import main as repair_main
    from repair.methods import list_methods
    from workspace.__main__ import main as workspace_main

    list_diagnostics()
    list_methods()

    return {"workspace": workspace_main, "diagnostics": diagnostics_main, "repair": repair_main}


def _child(case: dict, out_path: str, err_path: str, mains: dict) -> None:
    """The forked child: never returns."""
    code = 1
    try:
        os.chdir(case["cwd"])
        os.environ.update(case.get("env") or {})
        for fd, path in ((1, out_path), (2, err_path)):
            target = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            os.dup2(target, fd)
            os.close(target)
        if case.get("exec"):
            os.execve(sys.executable, [sys.executable, "-m", case["cli"], *case["argv"]], dict(os.environ))
        import torch

        torch.set_num_threads(1)  # a forked child must not reuse the parent's thread pool
        from workspace.cli import run_cli

        try:
            code = run_cli(mains[case["cli"]], list(case["argv"]))
        except SystemExit as exc:  # what the interpreter does with it at the top level
            if exc.code is None:
                code = 0
            elif isinstance(exc.code, int):
                code = exc.code
            else:
                print(exc.code, file=sys.stderr)
                code = 1
    except BaseException:  # noqa: BLE001 - an escaped exception prints its traceback, as python does
        traceback.print_exc()
        code = 1
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


def run_cases(cases: list[dict], *, jobs: int = 1) -> dict:
    """Run ``cases`` (at most ``jobs`` at a time); returns {id: result}."""
    mains = _mains()
    scratch = tempfile.mkdtemp(prefix="cli-driver-")
    pending = list(cases)
    running: dict[int, tuple[dict, float, str, str]] = {}
    results: dict[str, dict] = {}
    while pending or running:
        while pending and len(running) < jobs:
            case = pending.pop(0)
            out_path = os.path.join(scratch, f"{len(results) + len(running)}-{os.getpid()}.out")
            err_path = out_path[:-4] + ".err"
            sys.stdout.flush()
            sys.stderr.flush()
            pid = os.fork()
            if pid == 0:
                _child(case, out_path, err_path, mains)
            running[pid] = (case, time.monotonic(), out_path, err_path)
        time.sleep(0.02)
        for pid, (case, start, out_path, err_path) in list(running.items()):
            done, status = os.waitpid(pid, os.WNOHANG)
            elapsed = time.monotonic() - start
            if done == 0 and elapsed > float(case.get("timeout", 120)):
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                code = 124
            elif done == 0:
                continue
            else:
                code = os.waitstatus_to_exitcode(status)
            with open(out_path, errors="replace") as f_out, open(err_path, errors="replace") as f_err:
                results[case["id"]] = {"code": code, "stdout": f_out.read(), "stderr": f_err.read(),
                                       "seconds": round(elapsed, 2)}
            del running[pid]
    return results


def main(argv: list[str]) -> int:
    jobs = 1
    if "--jobs" in argv:
        i = argv.index("--jobs")
        jobs = int(argv[i + 1])
        argv = argv[:i] + argv[i + 2:]
    cases_path, results_path = argv
    with open(cases_path) as f:
        cases = json.load(f)
    results = run_cases(cases, jobs=jobs)
    with open(results_path, "w") as f:
        json.dump(results, f)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
