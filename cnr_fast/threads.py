"""How many CPU threads torch uses: `--threads N|auto` on every verb (default auto).

auto: the cores not busy with other processes when the run starts. On a 2-core machine beside one
busy process, torch's default (one thread per core) waits on the descheduled thread at every
parallel region and ran 2-3x slower than one thread; quiet, two threads are faster. The load is read
from /proc/stat over a short window (other processes' CPU time; this process sleeps meanwhile), so a
neighbour that starts later is not seen. `OMP_NUM_THREADS` in the environment wins over auto, as it
does for torch itself. The measurement behind the default: bench/results/threads_cpu.json
(bench/bench_threads.py).

The choice is recorded (provenance: torch_threads, threads_policy) and printed by `cnr-fast doctor`.
The thread count is part of every reference model's cache key (references.reference_key): 1 and 2
threads sum in other orders, so a run under auto on a busy machine may train (and cache) its own
references; pass `--threads N` where numbers must repeat bit for bit whatever the load.
"""

from __future__ import annotations

import os
import time

from .errors import UserError

_CHOSEN: dict = {}


def cores() -> int:
    """CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _cpu_times():
    try:
        with open("/proc/stat") as fh:
            vals = [int(v) for v in fh.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = vals[3] + (vals[4] if len(vals) > 4 else 0)  # idle + iowait
    return sum(vals[:8]), idle


def busy_cores(window_s: float = 0.3) -> float | None:
    """How many cores other processes kept busy over `window_s` (None where /proc/stat is absent)."""
    a = _cpu_times()
    if a is None:
        return None
    time.sleep(window_s)
    b = _cpu_times()
    if b is None or b[0] <= a[0]:
        return None
    busy_share = 1.0 - (b[1] - a[1]) / (b[0] - a[0])
    return max(0.0, busy_share) * (os.cpu_count() or 1)


def auto_threads() -> tuple[int, str]:
    """(threads, why) for the auto policy."""
    n = cores()
    busy = busy_cores()
    if busy is None:
        return n, f"auto: {n} core(s); load unknown"
    free = max(1, min(n, int(n - busy + 0.5)))
    return free, f"auto: {n} core(s), {busy:.1f} busy with other processes at start"


def parse(text) -> int | str:
    """--threads value: a count >= 1 or "auto"."""
    if text is None or str(text).strip().lower() == "auto":
        return "auto"
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise UserError(f"--threads {text!r}: pass a thread count of at least 1, or auto")
    return n


def apply(requested=None) -> dict:
    """Set torch's thread count by the policy; returns (and keeps, for provenance) what was chosen."""
    import torch

    want = parse(requested)
    if want != "auto":
        n, why = want, "--threads"
    elif os.environ.get("OMP_NUM_THREADS", "").strip():
        n, why = torch.get_num_threads(), "OMP_NUM_THREADS"
    else:
        n, why = auto_threads()
    torch.set_num_threads(int(n))
    _CHOSEN.clear()
    _CHOSEN.update({"threads": int(n), "policy": why})
    return dict(_CHOSEN)


def chosen() -> dict:
    """What apply() chose in this process ({} if it did not run: torch's own default then)."""
    return dict(_CHOSEN)
