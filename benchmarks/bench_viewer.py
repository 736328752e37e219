"""The attention viewer on long inputs (issue 16): explain.html for smollm2 on one document of EWT train text at
about 1k and 8k tokens: its size, the time to make it, and the time headless Chromium takes to open it (until the
viewer has read its data and drawn its thumbnails) and to redraw after a click on a word and a head switch.

    python benchmarks/bench_viewer.py [--tokens 1024,8000] [--model smollm2] [--repeats 3]

Needs ../shared/data and Chromium (Debian: apt-get install chromium) with the playwright package.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_long import DEFAULT_DATA, document  # noqa: E402


def running_text(sentence) -> str:
    spaces = sentence.space_after or [True] * len(sentence.words)
    return "".join(w + (" " if s else "") for w, s in zip(sentence.words, spaces)).strip()


def open_in_chromium(path: Path, repeats: int) -> dict:
    from playwright.sync_api import sync_playwright

    from headscope.reports.screenshot import find_chromium

    opened, clicked, switched, errors = [], [], [], []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=find_chromium(), args=["--no-sandbox"])
        for _ in range(repeats):
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            start = time.perf_counter()
            page.goto(path.as_uri())
            page.wait_for_selector(".hs-viewer[data-ready='1']", timeout=120_000)
            opened.append(time.perf_counter() - start)
            start = time.perf_counter()
            page.locator(".hs-unit[data-i='40']").click()
            page.wait_for_function("document.querySelector('.hs-viewer').dataset.selected === '40'")
            clicked.append(time.perf_counter() - start)
            start = time.perf_counter()
            page.select_option(".hs-head", "1")
            page.wait_for_function("document.querySelector('.hs-viewer').dataset.head === '1'")
            switched.append(time.perf_counter() - start)
            page.close()
        browser.close()
    return {"open": statistics.median(opened), "click": statistics.median(clicked),
            "switch": statistics.median(switched), "errors": errors}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", default="1024,8000")
    ap.add_argument("--model", default="smollm2")
    ap.add_argument("--data", default=str(DEFAULT_DATA))
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    if not Path(args.data).is_file():
        sys.exit(f"data not found: {args.data} (needs ../shared/data)")
    import headscope
    from headscope.models.loading import load_model

    loaded = load_model(args.model)
    print(f"{args.model}, one EWT train document per length; Chromium times are medians of {args.repeats} loads")
    print(f"{'tokens':>7} {'words':>6} {'levels':<11} {'explain':>8} {'html MiB':>9} {'open s':>7} {'click s':>8} "
          f"{'switch s':>9}  console errors")
    with tempfile.TemporaryDirectory() as tmp:
        for tokens in (int(t) for t in args.tokens.split(",")):
            doc, enc = document(args.data, tokens, loaded)
            start = time.perf_counter()
            result = headscope.explain(running_text(doc), 40, model=loaded)
            made = time.perf_counter() - start
            out = Path(tmp) / f"t{tokens}"
            result.save(out, figure=False)
            page = out / "explain.html"
            seen = open_in_chromium(page, args.repeats)
            print(f"{len(enc):>7} {len(result.words):>6} {'+'.join(result.links):<11} {made:>7.1f}s "
                  f"{page.stat().st_size / 2 ** 20:>9.2f} {seen['open']:>7.2f} {seen['click']:>8.3f} "
                  f"{seen['switch']:>9.3f}  {len(seen['errors'])}")
            for line in seen["errors"][:3]:
                print("   ", line)


if __name__ == "__main__":
    main()
