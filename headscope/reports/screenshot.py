"""Render report.html in headless Chromium and save a PNG: proof that the page opens, and a picture of it.

Usage: ``python -m headscope.reports.screenshot OUT/report.html shot.png`` (needs a Chromium or
Chrome binary on PATH, or its path in ``$CHROMIUM``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from ..errors import HeadscopeError

NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")


def find_chromium() -> str | None:
    """The Chromium / Chrome binary: ``$CHROMIUM`` or the first of NAMES on PATH; None if there is none."""
    env = os.environ.get("CHROMIUM")
    if env and Path(env).is_file():
        return env
    for name in NAMES:
        found = shutil.which(name)
        if found:
            return found
    return None


def screenshot(html: str | Path, png: str | Path, *, width: int = 1280, height: int = 4000,
               timeout: float = 120.0) -> tuple[Path, list[str]]:
    """Open ``html`` headless, save the first ``height`` pixels to ``png``; return it and the page's console lines."""
    binary = find_chromium()
    if binary is None:
        raise HeadscopeError("no Chromium found; install it (Debian: apt-get install chromium) or set $CHROMIUM")
    html, png = Path(html).resolve(), Path(png).resolve()
    if not html.is_file():
        raise HeadscopeError(f"{html}: file not found; pass a run's report.html")
    png.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as profile:
        cmd = [binary, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run",
               f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0",
               f"--window-size={width},{height}", f"--screenshot={png}", html.as_uri()]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0 or not png.is_file():
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise HeadscopeError(f"chromium could not render {html} (exit {proc.returncode}): {last}")
    console = [line for line in proc.stderr.splitlines() if "CONSOLE" in line or "Uncaught" in line
               or "Refused to" in line]
    return png, console


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: python -m headscope.reports.screenshot REPORT.html OUT.png", file=sys.stderr)
        return 2
    try:
        png, console = screenshot(args[0], args[1])
    except HeadscopeError as exc:
        print(f"headscope: error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {png} ({png.stat().st_size} bytes); page console messages: {len(console)}")
    for line in console:
        print(line)
    return 1 if console else 0


if __name__ == "__main__":
    raise SystemExit(main())
