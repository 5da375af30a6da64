"""Screenshot of a report's first screen for the README: python docs/screenshot.py report.html docs/report.png
(or of one element: a CSS selector as third argument, e.g. 'figure[data-chart=robustness]').

Drives the system's Chromium with Playwright (as tests/test_report_browser.py does), then scales the
image down and reduces it to a 96-colour palette so that it stays well under 200 kB."""

from __future__ import annotations

import io
import os
import shutil
import sys
from pathlib import Path


def main(html: str, png: str, selector: str | None = None, width: int = 1200, height: int = 1500) -> None:
    scale = 1.0 if selector else 0.7  # the first screen scaled down; an element as drawn
    from PIL import Image
    from playwright.sync_api import sync_playwright

    exe = os.environ.get("HARNESS_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    args = ["--no-sandbox"] if os.geteuid() == 0 else []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=exe, args=args)
        page = browser.new_context(offline=True, viewport={"width": width, "height": height}).new_page()
        page.goto(Path(html).resolve().as_uri())
        shot = page.locator(selector).first.screenshot() if selector else page.screenshot()
        browser.close()
    im = Image.open(io.BytesIO(shot)).convert("RGB")
    im = im.resize((int(im.width * scale), int(im.height * scale)), Image.LANCZOS)
    im.quantize(colors=96, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(png, optimize=True)
    print(f"{png}: {Path(png).stat().st_size / 1024:.0f} kB")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], *sys.argv[3:4])
