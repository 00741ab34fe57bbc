"""Look at a run's report.html as a person does: a headless Chromium screenshot.

    python -m bench.report_view RUN_DIR [--out PNG] [--width 1300] [--height 3000]

Writes RUN_DIR/report_view.png (or --out) and report_view.json beside it (the browser's version, the
window size, the machine). Chromium comes from the distribution (`apt-get install chromium`); nothing
is fetched. The report is opened from disk (file://), so what the screenshot shows is what the file
holds: the verdict, the depth curves and the tables of that run.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

from bench.harness import machine_info

BROWSERS = ("chromium", "chromium-browser", "google-chrome")


def browser() -> str:
    for name in BROWSERS:
        path = shutil.which(name)
        if path:
            return path
    raise SystemExit("report_view: no Chromium on the PATH; install it with `apt-get install chromium`")


def screenshot(html: Path, png: Path, width: int = 1300, height: int = 3000) -> dict:
    exe = browser()
    version = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=60).stdout.strip()
    tmp = png.with_name(f".{png.name}.tmp.png")
    cmd = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
           f"--window-size={width},{height}", f"--screenshot={tmp}", html.resolve().as_uri()]
    subprocess.run(cmd, check=True, capture_output=True, timeout=300)
    if not tmp.is_file() or tmp.stat().st_size == 0:
        raise SystemExit(f"report_view: {exe} wrote no screenshot of {html}")
    tmp.replace(png)  # atomic: a failed run leaves the old screenshot, never half of one
    return {"browser": version, "window": [width, height], "report": str(html), "screenshot": str(png)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run_dir", help="a run directory holding report.html")
    p.add_argument("--out", default=None, help="PNG path (default RUN_DIR/report_view.png)")
    p.add_argument("--width", type=int, default=1300)
    p.add_argument("--height", type=int, default=3000)
    a = p.parse_args(argv)
    run = Path(a.run_dir)
    html = run / "report.html"
    if not html.is_file():
        print(f"report_view: {html} does not exist; pass a run directory written by `cnr-fast unlearn` or "
              "`cnr-fast audit`", file=sys.stderr)
        return 2
    png = Path(a.out) if a.out else run / "report_view.png"
    info = screenshot(html, png, a.width, a.height)
    info["machine"] = machine_info("cpu")
    meta = png.with_suffix(".json")
    tmp = meta.with_name(f".{meta.name}.tmp")
    tmp.write_text(json.dumps(info, indent=2) + "\n")
    tmp.replace(meta)
    print(f"report_view: wrote {png} and {meta}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
