"""Real-browser smoke test: Debian's chromium, driven by Playwright, against `streamlit run`.

Loads the demo, checks the overview, then clicks through every page in the sidebar and
checks none shows an exception; opens a user workspace by URL with a target and checks the
workspace, model version and target survive a reload. Skips when chromium is missing, unless
``GROUPFIX_REQUIRE_BROWSER=1`` (set by ``.ci/run`` when it could install chromium).
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from urllib.parse import parse_qs, quote, urlparse

import pytest

from tests.conftest import REPO

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage"]
PAGES = ["Confusion", "Bias triplets", "What-if (w-os)", "Grad-CAM", "Gradient scores",
         "Weakspots", "Neurons", "BIR", "Repair", "Sweep", "Sample", "Overview"]

pytestmark = pytest.mark.browser


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(demo_eval):
    """`streamlit run app.py` on a free port (the demo and its eval cache already built)."""
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "app.py", "--server.address", "127.0.0.1",
         "--server.port", str(port), "--server.headless", "true", "--browser.gatherUsageStats", "false",
         "--", "--workspace", "demo"],
        cwd=REPO, env=os.environ.copy(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            if urllib.request.urlopen(f"{url}/_stcore/health", timeout=2).read() == b"ok":
                break
        except OSError:
            time.sleep(0.5)
    else:
        proc.kill()
        pytest.fail(f"streamlit did not start: {proc.stderr.read()[-2000:]}")
    yield url
    proc.terminate()
    proc.wait(timeout=20)


def _need_chromium() -> None:
    if CHROMIUM is None:
        if os.environ.get("GROUPFIX_REQUIRE_BROWSER") == "1":
            pytest.fail("GROUPFIX_REQUIRE_BROWSER=1 but chromium is not installed")
        pytest.skip("chromium not installed (apt-get install chromium)")


def test_first_request_to_a_page_url_goes_through_the_app(server):
    """Runs first on a fresh server: /weakspots must get app.py's sidebar, not a bare page."""
    _need_chromium()
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=120_000)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page()
        page.goto(f"{server}/weakspots")
        sidebar = page.get_by_test_id("stSidebar")
        expect(sidebar.get_by_text("Model version")).to_be_visible()
        expect(sidebar.get_by_role("link", name="Overview", exact=True)).to_be_visible()
        expect(page.get_by_role("heading", name="Weakspots and pivotal images")).to_be_visible()
        browser.close()


def test_demo_click_through_in_chromium(server):
    _need_chromium()
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=120_000)  # the first run opens the workspace on a busy CI machine
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(120_000)
        page.goto(server)
        expect(page.get_by_role("heading", name="demo (shapes)")).to_be_visible()
        expect(page.get_by_text("Eval accuracy")).to_be_visible()
        nav = page.get_by_test_id("stSidebarNav")
        for name in PAGES:
            nav.get_by_role("link", name=name, exact=True).click()
            page.wait_for_load_state("networkidle")
            # wait for the script run to finish before looking for errors
            page.wait_for_function("() => !document.querySelector('[data-testid=\"stStatusWidget\"]')")
            assert page.get_by_test_id("stException").count() == 0, f"exception on page {name}"
            expect(page.locator("h1").first).to_be_visible()
        browser.close()


def _settled(page) -> None:
    """Wait until the script run has finished (no running indicator)."""
    page.wait_for_load_state("networkidle")
    page.wait_for_function("() => !document.querySelector('[data-testid=\"stStatusWidget\"]')")


def test_url_state_survives_a_reload(server, tiny_workspace):
    """A shared link opens the workspace, model version and target it names, and a reload keeps them."""
    _need_chromium()
    from playwright.sync_api import expect, sync_playwright

    spec = str(tiny_workspace)
    expect.set_options(timeout=120_000)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(120_000)
        page.goto(f"{server}/wos?workspace={quote(spec)}&target=cat,dog")
        for attempt in ("opened by URL", "after a reload"):
            expect(page.get_by_role("heading", name="What-if: w-os post-hoc repair")).to_be_visible()
            _settled(page)
            assert page.get_by_test_id("stException").count() == 0, attempt
            expect(page.get_by_label("Targets", exact=True)).to_have_value("cat,dog")
            expect(page.get_by_text("Confusion target: cat / dog (from the link)")).to_be_visible()
            sidebar = page.get_by_test_id("stSidebar")
            expect(sidebar.get_by_role("combobox", name="Open")).to_have_value(spec, timeout=30_000)
            expect(sidebar.get_by_role("combobox", name="Model version")).to_have_value("orig", timeout=30_000)
            params = parse_qs(urlparse(page.url).query)
            assert params["workspace"] == [spec] and params["version"] == ["orig"], (attempt, page.url)
            assert params["target"] == ["cat,dog"], (attempt, page.url)
            assert urlparse(page.url).path.endswith("/wos"), page.url
            if attempt == "opened by URL":
                page.reload()
        browser.close()


def test_gallery_link_opens_the_sample_view(server):
    """A thumbnail's link opens its image in the sample view; next and reload keep the sample in the URL."""
    _need_chromium()
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=120_000)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(120_000)
        page.goto(server)
        link = page.get_by_role("link", name=re.compile(r"^eval:\d+$")).nth(1)  # an Overview thumbnail's caption
        n = int(re.search(r"eval:(\d+)", link.inner_text()).group(1))
        if link.get_attribute("target") == "_blank":  # gallery captions open the sample view in a new tab
            with page.context.expect_page() as opened:
                link.click()
            page = opened.value
            page.set_default_timeout(120_000)
        else:
            link.click()
        expect(page.get_by_role("heading", name=f"eval:{n}", exact=True)).to_be_visible()
        page.get_by_role("link", name=f"eval:{n + 1} →").click()
        expect(page.get_by_role("heading", name=f"eval:{n + 1}", exact=True)).to_be_visible()
        page.reload()
        expect(page.get_by_role("heading", name=f"eval:{n + 1}", exact=True)).to_be_visible()
        _settled(page)
        assert page.get_by_test_id("stException").count() == 0
        params = parse_qs(urlparse(page.url).query)
        assert (params["split"], params["index"], params["workspace"]) == (["eval"], [str(n + 1)], ["demo"]), page.url
        browser.close()
