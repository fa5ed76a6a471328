"""Start-up and idle costs: a CLI call on a cached workspace, and an idle dashboard server.

* ``python -m diagnostics confusion`` on a cached workspace (the 60,000-image CIFAR-10 ResNet-56
  workspace when ``data/resnet56`` can be prepared, else the demo) against ``python -c "import
  torch"``: target <= 3x. Both are whole processes, median of 3, the cache built beforehand.
* An idle server: ``streamlit run`` on the demo with the project's settings, every page rendered
  once in headless Chromium, then the server's CPU time over 60 s: target < 2 % of one core.
"""

from __future__ import annotations

import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
IDLE_SECONDS = 60


def _wall(cmd: list[str], env) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, cwd=REPO, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def _cli_rows(env) -> list[dict]:
    from tests.benchmarks.real_model import prepare

    path = prepare()
    spec, what = (str(path), "CIFAR-10 ResNet-56, 60,000 images") if path else ("demo", "demo, 9,000 images")
    subprocess.run([sys.executable, "-m", "workspace", "cache", "--workspace", spec], cwd=REPO, env=env, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    cli = statistics.median(_wall([sys.executable, "-m", "diagnostics", "confusion", "--workspace", spec, "--json"],
                                  env) for _ in range(3))
    torch_only = statistics.median(_wall([sys.executable, "-c", "import torch"], env) for _ in range(3))
    return [{"name": "diagnostics confusion on a cached workspace / python -c 'import torch'",
             "value": cli / torch_only, "unit": "x", "target": "<= 3", "ok": cli / torch_only <= 3,
             "detail": f"{cli:.2f} s vs {torch_only:.2f} s ({what}; load {os.getloadavg()[0]:.1f})"}]


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _idle_rows(env) -> list[dict]:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None or not Path("/proc/self/stat").exists():
        return [{"name": "idle server CPU", "value": float("nan"), "unit": "%", "target": "< 2", "ok": None,
                 "detail": "skipped: needs Debian's chromium and /proc"}]
    from playwright.sync_api import sync_playwright

    from tests.test_browser import CHROMIUM_ARGS, PAGES

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port),
                             "--", "--workspace", "demo"], cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):
            try:
                if urllib.request.urlopen(f"{url}/_stcore/health", timeout=2).read() == b"ok":
                    break
            except OSError:
                time.sleep(0.5)
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(300_000)
            page.goto(url)
            page.get_by_text("Eval accuracy").wait_for()
            for name in PAGES:
                page.get_by_test_id("stSidebarNav").get_by_role("link", name=name, exact=True).click()
                page.wait_for_load_state("networkidle")
                page.wait_for_function("() => !document.querySelector('[data-testid=\"stStatusWidget\"]')")
            browser.close()
        time.sleep(5)  # let the last rerun settle
        before = _cpu_seconds(proc.pid)
        time.sleep(IDLE_SECONDS)
        used = _cpu_seconds(proc.pid) - before
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    share = 100 * used / IDLE_SECONDS
    return [{"name": "idle server CPU after every page rendered", "value": share, "unit": "% core",
             "target": "< 2", "ok": share < 2, "detail": f"{used:.2f} CPU s over {IDLE_SECONDS} s (demo)"}]


def run() -> list[dict]:
    env = {**os.environ, "GROUPFIX_HOME": os.environ.get("GROUPFIX_HOME") or tempfile.mkdtemp(prefix="gf-bench-")}
    return _cli_rows(env) + _idle_rows(env)
