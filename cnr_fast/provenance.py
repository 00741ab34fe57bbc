"""What every run and bench JSON records about where and from what it was measured.

    {"git_commit": "<sha>" | None, "git_dirty": bool | None, "cnr_fast": version, "torch": ..., "torchvision":
     ..., "python": ..., "numpy": ..., "torch_threads": n, "cpu_model": ..., "cpu_vector_flags": [...],
     "cpu_count": n, "gpu": name | None, "load_avg_before": [1, 5, 15] | None, "load_avg_after": [...]}

git_commit is the checkout's HEAD when the package runs from one (an editable install), None
otherwise; git_dirty says whether tracked files differed from it (the result may then not be
reproducible from the commit alone) and git_dirty_files which ones (a changed README does not matter,
a changed method does), all three read by `begin()` when the work started. Load averages are the
1/5/15-minute values of os.getloadavg() at `begin()` and when `provenance()` is called.
"""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path


def _git(*args, strip: bool = True) -> str | None:
    root = Path(__file__).resolve().parent.parent
    if not (root / ".git").exists():
        return None
    try:
        out = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    return out.stdout.strip() if strip else out.stdout


def code_version() -> dict:
    """{"git_commit", "git_dirty", "git_dirty_files"}: HEAD, whether tracked files differ from it, and which."""
    commit = _git("rev-parse", "HEAD")
    dirty, files = None, None
    if commit is not None:
        status = _git("status", "--porcelain", "--untracked-files=no", strip=False)  # "XY path": keep column 1
        if status is not None:
            files = [line[3:] for line in status.splitlines() if line.strip()]
            dirty = bool(files)
    return {"git_commit": commit, "git_dirty": dirty, "git_dirty_files": files}


def load_avg():
    return list(os.getloadavg()) if hasattr(os, "getloadavg") else None


def begin() -> dict:
    """Call when the work starts: the code version and load then (the checkout may change while a long
    run works; the result belongs to the code it started from)."""
    return {**code_version(), "load_avg_before": load_avg()}


def provenance(started: dict | None = None) -> dict:
    import numpy
    import torch

    from . import __version__, threads
    from .hardware import cpu_info

    try:
        import torchvision

        tv = torchvision.__version__
    except ImportError:
        tv = None
    cpu = cpu_info()
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else None
    started = started if started is not None else {**code_version(), "load_avg_before": None}
    return {**started, "cnr_fast": __version__, "torch": torch.__version__, "torchvision": tv,
            "numpy": numpy.__version__, "python": platform.python_version(),
            "torch_threads": torch.get_num_threads(), "threads_policy": threads.chosen().get("policy", "torch's default"),
            "cpu_model": cpu["model"],
            "cpu_vector_flags": cpu["vector_flags"], "cpu_count": os.cpu_count(), "gpu": gpu,
            "load_avg_after": load_avg()}
