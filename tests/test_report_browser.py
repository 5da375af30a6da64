"""The report in a real browser: headless Chromium (Playwright driving the system's chromium) opens
it with every network route refused, and every chart must render (an SVG of real size, drawn marks,
non-blank coloured pixels in its screenshot). Skips, saying why, only where no browser can be had."""

from __future__ import annotations

import io
import os
import shutil

import pytest

from report_docs import HOSTILE, attack_grid, numeric_grid, single
from test_report import hostile_docs, write_docs

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
# No traffic at all outside the page: no DNS, no proxy, no background services of the browser.
LAUNCH_ARGS = [
    "--host-resolver-rules=MAP * ~NOTFOUND",
    "--proxy-server=http://127.0.0.1:9",  # discard port on loopback: anything that slips through dies here
    "--proxy-bypass-list=<-loopback>",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-default-apps",
    "--disable-sync",
    "--no-first-run",
    "--metrics-recording-only",
    "--disable-domain-reliability",
]


def no_browser(reason: str) -> None:
    """Skip, unless the environment requires the browser (``.ci/run`` does): then fail."""
    if os.environ.get("HARNESS_REQUIRE_BROWSER"):
        pytest.fail(f"HARNESS_REQUIRE_BROWSER is set but {reason}")
    pytest.skip(reason)


def browser_path() -> str:
    found = os.environ.get("HARNESS_CHROMIUM") or next((shutil.which(b) for b in BROWSERS if shutil.which(b)), None)
    if not found:
        no_browser("no Chromium found (apt-get install -y chromium, or set HARNESS_CHROMIUM): .ci/run installs it")
    return found


@pytest.fixture(scope="module")
def browser():
    try:
        from playwright import sync_api
    except ImportError:
        no_browser("playwright is not installed (pip install -e '.[test]')")
    path = browser_path()
    args = LAUNCH_ARGS + (["--no-sandbox"] if hasattr(os, "geteuid") and os.geteuid() == 0 else [])  # root: no sandbox
    with sync_api.sync_playwright() as p:
        try:
            b = p.chromium.launch(executable_path=path, args=args, headless=True)
        except Exception as exc:  # noqa: BLE001 - a browser that cannot start here is a skip, said clearly
            no_browser(f"{path} does not start headless here: {str(exc).splitlines()[0]}")
        yield b
        b.close()


def open_report(browser, path):
    """The page, with a log of every request and console message; anything but the file itself is refused."""
    context = browser.new_context(offline=True, viewport={"width": 1280, "height": 900}, java_script_enabled=True)
    requests, console = [], []
    target = path.as_uri()

    def route(r):
        requests.append(r.request.url)
        (r.continue_() if r.request.url == target else r.abort())

    context.route("**/*", route)
    page = context.new_page()
    page.on("console", lambda m: console.append(f"{m.type}: {m.text}"))
    page.on("request", lambda r: requests.append(r.url))
    page.goto(target, wait_until="load")
    return context, page, requests, console


def check_charts(page, expected):
    from PIL import Image

    import numpy as np

    figures = page.query_selector_all("figure.chart")
    assert len(figures) == expected
    for fig in figures:
        kind = fig.get_attribute("data-chart")
        svg = fig.query_selector("svg")
        assert svg is not None, kind
        box = svg.bounding_box()
        assert box and box["width"] > 200 and box["height"] > 100, (kind, box)
        marks = svg.eval_on_selector_all("path, use, rect, text", "els => els.length")
        assert marks > 20, (kind, marks)
        shot = np.asarray(Image.open(io.BytesIO(fig.screenshot())).convert("RGB")).astype(int)
        ink = (shot.min(axis=2) < 200).mean()  # not white: axes, text, lines, bars
        colour = ((shot.max(axis=2) - shot.min(axis=2)) > 60).mean()  # saturated: the data itself
        assert ink > 0.01 and colour > 0.002, (kind, ink, colour)


def test_every_chart_renders_offline(browser, tmp_path, capsys):
    from test_board import run_cli

    paths = write_docs(tmp_path, hostile_docs() + [attack_grid(task="again"), numeric_grid(task="pca2")])
    db = str(tmp_path / "b.db")
    sub = tmp_path / "board"
    sub.mkdir()
    for name, p in zip(("x", "y"), write_docs(sub, [single(0.7), single(0.5)])):
        assert run_cli(["board", "add", db, p, "--name", name], capsys)[0] == 0
    out = tmp_path / "report.html"
    assert run_cli(["report", *paths, "--board", db, "-o", str(out)], capsys)[0] == 0
    expected = out.read_text().count('<figure class="chart"')
    assert expected == 11  # 6 (hostile set) + 3 (attack grid) + 1 (numeric) + 1 (board PR)
    context, page, requests, console = open_report(browser, out)
    try:
        check_charts(page, expected)
        assert page.eval_on_selector_all("script", "els => els.length") == 0
        assert page.evaluate("document.documentElement.scrollWidth") <= 1280  # wide tables scroll in place
        assert HOSTILE.split("<img")[0] in page.inner_text("body")  # hostile strings are text, not markup
        assert page.eval_on_selector_all("img, iframe, object, embed", "els => els.length") == 0
        ranks = page.eval_on_selector_all("#leaderboard table tr td:nth-child(2)", "els => els.map(e => e.textContent)")
        assert ranks == ["x v1", "y v1"]
    finally:
        context.close()
    assert set(requests) == {out.as_uri()}, requests  # the file itself, nothing else, nothing remote
    assert not [m for m in console if m.startswith("error")], console


def test_a_broken_chart_and_a_fetch_are_caught(browser, tmp_path):
    """The checks can fail: a blank chart is reported, and so is a page that tries to fetch (refused
    by the route before any traffic: 192.0.2.1 is a documentation address)."""
    out = tmp_path / "blank.html"
    out.write_text('<!DOCTYPE html><html><head><link rel="stylesheet" href="http://192.0.2.1/x.css"></head><body>'
                   '<figure class="chart" data-chart="x"><svg width="400" height="300">'
                   + '<rect width="400" height="300" fill="#fff"/>' * 30 + "</svg></figure></body></html>")
    context, page, requests, _ = open_report(browser, out)
    try:
        with pytest.raises(AssertionError):
            check_charts(page, 1)
    finally:
        context.close()
    assert "http://192.0.2.1/x.css" in requests
