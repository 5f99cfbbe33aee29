"""The real app in a real browser: `streamlit run app.py` on 127.0.0.1, every page in headless Chromium (screenshots
of each with SCREENSHOTS=1 in the environment, in test-artifacts/screenshots/)."""
from __future__ import annotations

import base64
import itertools
import json
import math
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest
from PIL import Image
from websockets.sync.client import connect

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOTS = REPO / "test-artifacts" / "screenshots"
PAGES = {"home": "", "curves": "curves", "gradients": "gradients", "responses": "responses", "landscape": "landscape",
         "predict": "predict", "classes": "classes", "architecture": "architecture"}
# Offline and quiet: no sandbox (root in a container), no GPU, nothing that calls home.
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--hide-scrollbars", "--window-size=1400,1000", "--remote-debugging-port=0"]
# Done = the page's title is there, no script is running, and every chart has been drawn by vega-embed.
READY = """(() => {
  const app = document.querySelector('[data-testid="stApp"]');
  if (!app || !document.querySelector('h1')) return false;
  if (document.querySelector('[data-testid="stStatusWidget"]')) return false;
  if (document.querySelector('[data-testid="stSkeleton"]')) return false;
  const drawn = (id, what) => [...document.querySelectorAll(`[data-testid="${id}"]`)].every(c => c.querySelector(what));
  return drawn("stVegaLiteChart", "canvas, svg") && drawn("stGraphVizChart", "svg");
})()"""
STEADY_CHECKS = 4  # Streamlit shows its running indicator a moment after a run starts: ready must hold this many polls
STATE = """JSON.stringify({title: !!document.querySelector('h1'),
  running: !!document.querySelector('[data-testid="stStatusWidget"]'),
  skeletons: document.querySelectorAll('[data-testid="stSkeleton"]').length,
  charts: [...document.querySelectorAll('[data-testid="stVegaLiteChart"]')].map(c => !!c.querySelector('canvas, svg')),
  diagrams: [...document.querySelectorAll('[data-testid="stGraphVizChart"]')].map(c => !!c.querySelector('svg'))})"""
LAYOUT = """JSON.stringify([...document.querySelectorAll('[data-testid="stMain"] :is(svg, canvas, img)')]
  .map(e => { const r = e.getBoundingClientRect(); return [r.left, r.top, r.width, r.height]; }))"""
# The top edges of the first two charts: on these pages, the plain and the residual panel (pages.common.show_panels)
PANEL_TOPS = """[...document.querySelectorAll('[data-testid="stVegaLiteChart"]')].slice(0, 2)
  .map(c => Math.round(c.getBoundingClientRect().top))"""
# The window width (px) from which each of these pages' plain and residual panels stand abreast: the loss surfaces are
# 300 px squares, readable from the back of a room, and so side by side from 1280 px, one above the other at 1024.
PANEL_PAGES = {"curves": 1024, "gradients": 1024, "landscape": 1280}
EXCEPTIONS = """[...document.querySelectorAll('[data-testid="stException"]')].map(e => e.innerText)"""
# What does not fit the window: the page scrolling sideways; a chart or image past the right edge of its column
# (or of the page) or drawn over another; a button's or link's label cut short ("#.." for "#128").
MISFITS = """(() => {
  const misfits = [], main = document.querySelector('[data-testid="stMain"]');
  for (const [what, el] of [["page", document.documentElement], ["main area", main]])
    if (el.scrollWidth > el.clientWidth)
      misfits.push(`${what} scrolls sideways: ${el.scrollWidth} > ${el.clientWidth} px`);
  const charts = [...main.querySelectorAll('[data-testid="stVegaLiteChart"]')];
  const name = el => el.tagName === "IMG" ? `image "${el.closest('[data-testid="stImage"]').innerText}"`
    : `chart ${charts.indexOf(el.closest('[data-testid="stVegaLiteChart"]')) + 1}`;
  const shown = [...main.querySelectorAll('[data-testid="stVegaLiteChart"] :is(svg, canvas).marks, '
                                          + '[data-testid="stImage"] img')]
    .map(el => [el, el.getBoundingClientRect()]).filter(([, r]) => r.width > 0);
  const page = main.querySelector('[data-testid="stMainBlockContainer"]');
  for (const [el, r] of shown) {
    const column = (el.closest('[data-testid="stColumn"]') || page).getBoundingClientRect();
    if (r.right > Math.min(column.right, document.documentElement.clientWidth) + 1)
      misfits.push(`${name(el)} ends at ${Math.round(r.right)} px, past its column's ${Math.round(column.right)} px`);
  }
  const apart = (a0, a1, b0, b1) => Math.min(a1, b1) - Math.max(a0, b0) <= 1;
  shown.forEach(([a, p], i) => shown.slice(i + 1).forEach(([b, q]) => {
    if (!apart(p.left, p.right, q.left, q.right) && !apart(p.top, p.bottom, q.top, q.bottom))
      misfits.push(`${name(a)} and ${name(b)} overlap`);
  }));
  for (const el of main.querySelectorAll('button *, a *'))
    if (getComputedStyle(el).textOverflow === "ellipsis" && el.scrollWidth > el.clientWidth)
      misfits.push(`label "${el.innerText}" cut short`);
  return misfits;
})()"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(check, timeout: float, what: str, state=lambda: ""):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.2)
    raise TimeoutError(f"gave up after {timeout:.0f} s waiting for {what} {state()}")


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


def start_app(checkpoints: Path, port: int, **env: str) -> subprocess.Popen:
    """`streamlit run app.py` on 127.0.0.1:port reading `checkpoints` (more environment variables in `env`);
    returns once it answers its health check."""
    env = dict(os.environ, RESNET_CHECKPOINTS=str(checkpoints), **env)
    server = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true", "--server.address",
         "127.0.0.1", "--server.port", str(port), "--browser.gatherUsageStats", "false"],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: server.poll() is not None or http_ok(f"http://127.0.0.1:{port}/_stcore/health"), 60,
                 "the Streamlit server")
    except TimeoutError:
        server.kill()
        raise
    if server.poll() is not None:
        raise RuntimeError(f"streamlit exited: {server.stdout.read().decode(errors='replace')}")
    return server


class Browser:
    """Headless Chromium driven over the DevTools protocol (the `websockets` package Streamlit already needs)."""

    def __init__(self):
        self.profile = tempfile.TemporaryDirectory(prefix="chromium-", ignore_cleanup_errors=True)
        self.process = subprocess.Popen([str(CHROMIUM), *CHROMIUM_FLAGS, f"--user-data-dir={self.profile.name}",
                                         "about:blank"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        port_file = Path(self.profile.name) / "DevToolsActivePort"
        port = wait_for(lambda: port_file.is_file() and port_file.read_text().split("\n")[0], 30, "Chromium")
        targets = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list"))
        page = next(t for t in targets if t["type"] == "page")
        self.ws = connect(page["webSocketDebuggerUrl"], max_size=None, open_timeout=30).__enter__()
        self.ids = itertools.count(1)

    def call(self, method: str, **params) -> dict:
        n = next(self.ids)
        self.ws.send(json.dumps({"id": n, "method": method, "params": params}))
        while True:  # skip events until our answer comes
            message = json.loads(self.ws.recv(timeout=60))
            if message.get("id") == n:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message["result"]

    def evaluate(self, expression: str):
        return self.call("Runtime.evaluate", expression=expression, returnByValue=True)["result"].get("value")

    def open(self, url: str, timeout: float = 60) -> float:
        """Load url and wait until the Streamlit page has finished; returns the seconds it took."""
        start = time.monotonic()
        self.call("Page.navigate", url=url)
        self.settle(timeout, url)
        return time.monotonic() - start - 0.2 * (STEADY_CHECKS - 1)

    def settle(self, timeout: float, what: str) -> None:
        """Wait until the page is READY and stays so."""
        steady = 0

        def settled() -> bool:
            nonlocal steady
            steady = steady + 1 if self.evaluate(READY) else 0
            return steady >= STEADY_CHECKS

        wait_for(settled, timeout, f"{what} to render", lambda: self.evaluate(STATE))

    def window(self, width: int, height: int) -> None:
        self.call("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1, mobile=False)

    def upload(self, files: list[Path], timeout: float = 60) -> None:
        """Give the page's file uploader these images, as a visitor choosing them would, and wait until Predict has
        drawn a chart for each."""
        count = """document.querySelectorAll('[data-testid="stVegaLiteChart"]').length"""
        before = self.evaluate(count)
        root = self.call("DOM.getDocument")["root"]["nodeId"]
        node = self.call("DOM.querySelector", nodeId=root, selector='input[type="file"]')["nodeId"]
        self.call("DOM.setFileInputFiles", nodeId=node, files=[str(f) for f in files])
        wait_for(lambda: self.evaluate(count) >= before + len(files), timeout, "a chart per upload")
        self.settle(timeout, "the uploads")

    def hold_still(self, what: str, timeout: float = 10) -> None:
        """Wait until every chart and image on the page keeps its place (LAYOUT) for STEADY_CHECKS polls."""
        layouts = []

        def still() -> bool:
            layouts.append(self.evaluate(LAYOUT))
            return len(layouts) >= STEADY_CHECKS and len(set(layouts[-STEADY_CHECKS:])) == 1

        wait_for(still, timeout, what)

    def screenshot(self, path: Path, width: int = 1400) -> None:
        """The whole page, not just the window: Streamlit scrolls inside its own container, so size the window to it."""
        height = self.evaluate("""Math.max(...[...document.querySelectorAll('[data-testid="stMain"], section, body')]
                                  .map(e => e.scrollHeight))""") or 1000
        self.window(width, min(int(height) + 40, 8000))
        # The width is unchanged, but what is drawn may still move to the new height: wait until it stays put.
        self.hold_still("the page's layout")
        path.write_bytes(base64.b64decode(self.call("Page.captureScreenshot", format="png")["data"]))
        self.call("Emulation.clearDeviceMetricsOverride")

    def close(self) -> None:
        self.ws.__exit__(None, None, None)
        self.process.terminate()
        self.process.wait(10)
        self.profile.cleanup()


@pytest.fixture(scope="module")
def app_url(tiny_landscapes, tmp_path_factory):
    port = free_port()
    # No CIFAR-10 here: the Classes page searches the 100 shipped test images for mistakes, not all 10,000 (about
    # 20 s on two cores); tests/test_app.py checks the search of the full test set.
    server = start_app(tiny_landscapes, port, CIFAR10_DIR=str(tmp_path_factory.mktemp("no-cifar10")))
    yield f"http://127.0.0.1:{port}/"
    server.terminate()
    server.wait(10)


@pytest.mark.skipif(not CHROMIUM.is_file(), reason="needs Debian's chromium at /usr/bin/chromium "
                    "(apt-get install -y chromium chromium-driver)")
def test_a_deep_link_gets_the_navigation_and_its_page(app_url):
    browser = Browser()
    try:
        # A deep link as the server's very first request must still get app.py's navigation, not pages/ listed,
        # and the page it asked for, not Home.
        browser.open(app_url + "curves")
        assert browser.evaluate("document.querySelector('h1').innerText") == "Degradation curves"
        assert browser.evaluate("location.pathname") == "/curves"
        links = browser.evaluate("""[...document.querySelectorAll('[data-testid="stSidebarNavLink"]')]
                                    .map(e => e.innerText.split('\\n').pop())""")
        assert links == ["Home", "Degradation curves", "Gradient flow", "Layer responses", "Loss landscape", "Predict",
                         "Classes", "Architecture"], links
        assert not browser.evaluate(EXCEPTIONS)  # every other page is checked so in the next test, at two sizes
    finally:
        browser.close()


@pytest.mark.skipif(not CHROMIUM.is_file(), reason="needs Debian's chromium at /usr/bin/chromium")
def test_every_page_fits_a_projector_and_a_wide_window(app_url, tmp_path):
    """At a projector's 1024x768 with the sidebar open, and then widened to a 1280x800 projector's and to 1400x1000
    as a visitor drags the window, every page renders without an exception and nothing misfits (MISFITS): no page
    scrolls sideways, no chart or image runs out of its column or over another, no label is cut short; the plain
    and residual panels stand abreast where the window is wide enough for them (PANEL_PAGES), to be compared at a
    glance. Predict also with uploads (a 1x1 speck, a white photo and a strip) above the gallery image. With
    SCREENSHOTS=1 in the environment, screenshots: <page>-<width>.png."""
    uploads = {"speck.png": (1, 1), "white.png": (300, 200), "strip.png": (2000, 40)}
    for name, size in uploads.items():
        Image.new("RGB", size, (255, 255, 255) if name == "white.png" else (200, 30, 30)).save(tmp_path / name)
    browser = Browser()
    try:
        for name, path in PAGES.items():
            browser.window(1024, 768)
            seconds = browser.open(app_url + path)
            if name == "predict":
                browser.upload([tmp_path / n for n in uploads])
            for width, height in ((1024, 768), (1280, 800), (1400, 1000)):
                if width != 1024:  # the same page, widened: charts and columns redraw in the browser alone
                    browser.window(width, height)
                    browser.hold_still(f"{name} widened to {width}")
                exceptions, misfits = browser.evaluate(EXCEPTIONS), browser.evaluate(MISFITS)
                tops = browser.evaluate(PANEL_TOPS) if width >= PANEL_PAGES.get(name, math.inf) else [0, 0]
                if os.environ.get("SCREENSHOTS"):  # about 1 s each
                    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
                    browser.screenshot(SCREENSHOTS / f"{name}-{width}.png", width)
                assert not exceptions, f"{name} at {width}x{height}: {exceptions}"
                assert "Traceback" not in browser.evaluate("document.body.innerText"), f"{name} at {width}x{height}"
                assert not misfits, f"{name} at {width}x{height}: {misfits}"
                assert len(tops) == 2 and tops[0] == tops[1], f"{name} at {width}: plain and residual not abreast {tops}"
            print(f"{name}: {seconds:.1f} s")
    finally:
        browser.close()


# -- load: `python tests/test_browser.py CHECKPOINTS --sessions 1 10` (127.0.0.1 only) ------------------------
def rss_mib(pid: int) -> float:
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
    return int(fields["VmRSS"].split()[0]) / 1024


def visit(url: str, browser: Browser, timings: list) -> None:
    """Predict (both models load, a gallery image is classified), then Gradient flow with the live analysis."""
    timings.append(("predict", browser.open(url + "predict", timeout=300)))
    timings.append(("gradients", browser.open(url + "gradients", timeout=300)))
    browser.evaluate("document.querySelector('.st-key-run-live button').click()")
    start = time.monotonic()
    charts = """document.querySelectorAll('[data-testid="stVegaLiteChart"]').length"""
    wait_for(lambda: browser.evaluate(charts) >= 3 and browser.evaluate(READY), 900, "the live analysis")
    timings.append(("live analysis", time.monotonic() - start))
    assert not browser.evaluate(EXCEPTIONS)


def load(checkpoints: Path, sessions: int) -> dict:
    """Server RSS (MiB) idle, at peak, and with `sessions` visitors still connected, on a fresh server; plus
    each page's load time in one more browser once everything is warm."""
    import threading

    port = free_port()
    server = start_app(checkpoints, port)
    url, timings, browsers, peak, done = f"http://127.0.0.1:{port}/", [], [], [0.0], threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], rss_mib(server.pid))
            time.sleep(0.2)

    sampler = threading.Thread(target=sample)
    try:
        idle = rss_mib(server.pid)
        sampler.start()
        browsers = [Browser() for _ in range(sessions)]
        start = time.monotonic()
        visitors = [threading.Thread(target=visit, args=(url, b, timings)) for b in browsers]
        for v in visitors:
            v.start()
        for v in visitors:
            v.join()
        elapsed = time.monotonic() - start
        time.sleep(2)
        connected = rss_mib(server.pid)
        browsers.append(Browser())
        for path in PAGES.values():
            browsers[-1].open(url + path)
        warm = {name: round(browsers[-1].open(url + path), 2) for name, path in PAGES.items()}
        return dict(sessions=sessions, visits_done=sum(n == "live analysis" for n, _ in timings), idle_mib=round(idle),
                    peak_mib=round(peak[0]), connected_mib=round(connected), wall_s=round(elapsed, 1),
                    slowest_s={k: round(max(t for n, t in timings if n == k), 1) for k, _ in timings},
                    warm_page_s=warm)
    finally:
        done.set()
        if sampler.is_alive():
            sampler.join()
        for b in browsers:
            b.close()
        server.terminate()
        server.wait(10)


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=load.__doc__)
    parser.add_argument("checkpoints", type=Path)
    parser.add_argument("--sessions", type=int, nargs="+", default=[1, 10])
    args = parser.parse_args()
    for n in args.sessions:
        print(json.dumps(load(args.checkpoints, n)), flush=True)
