"""Benchmark harness: time workloads, write JSON you can diff.

Each workload = setup() -> state, run(state) (timed), verify(state) (checked once, untimed).
Results: median and quartiles in seconds, plus ratios against a baseline measured in the same run.
On CUDA, timing uses device events around the timed call only; on CPU, perf_counter.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import time
from pathlib import Path


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def _timed(fn, device: str) -> float:
    if device.startswith("cuda"):
        import torch

        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        torch.cuda.synchronize()
        return a.elapsed_time(b) / 1e3
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def _stats(times: list[float]) -> dict:
    q = statistics.quantiles(times, n=4) if len(times) >= 2 else [times[0]] * 3
    return {"median_s": statistics.median(times), "q1_s": q[0], "q3_s": q[2], "reps": len(times)}


def measure_all(fns: dict, *, device: str = "cpu", warmup: int = 2, reps: int = 7) -> dict[str, dict]:
    """Time several implementations in one process, interleaved: each round runs every fn once, in
    turn, so a change of load during the measurement hits all of them alike and the ratios of their
    medians compare like with like. Returns {name: measure()-style stats, "interleaved": True}."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    _sync(device)
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(reps):
        for k, fn in fns.items():
            times[k].append(_timed(fn, device))
    return {k: {**_stats(v), "interleaved": True} for k, v in times.items()}


def measure(fn, *, device: str = "cpu", warmup: int = 2, reps: int = 7, min_time: float = 0.0) -> dict:
    """Run fn() `warmup` times untimed, then at least `reps` times (more until min_time seconds)."""
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    t_start = time.perf_counter()
    while len(times) < reps or (time.perf_counter() - t_start) < min_time:
        times.append(_timed(fn, device))
        if len(times) >= 1000:
            break
    return _stats(times)


def cpu_model() -> str | None:
    """The CPU's model name (numbers differ several-fold between the project's machines)."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def _vector_flags() -> list[str] | None:
    try:
        from cnr_fast.hardware import cpu_info
    except ImportError:
        return None
    return cpu_info()["vector_flags"]


# load when this process started benchmarking (the harness is imported before any work)
LOAD_AT_START = list(os.getloadavg()) if hasattr(os, "getloadavg") else None


def machine_info(device: str = "cpu") -> dict:
    info = {"platform": platform.platform(), "python": platform.python_version(), "cpu_count": os.cpu_count(),
            "cpu_model": cpu_model(), "cpu_vector_flags": _vector_flags(),
            # CPU timings on a shared machine: say how busy it was
            "load_avg_1_5_15": list(os.getloadavg()) if hasattr(os, "getloadavg") else None}
    try:
        import torch

        info["torch"] = torch.__version__
        info["cuda"] = torch.version.cuda
        info["threads"] = torch.get_num_threads()
        if device.startswith("cuda") and torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name()
    except ImportError:
        pass
    try:
        info["git_sha"] = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True, cwd=Path(__file__).parent
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        info["git_sha"] = None
    try:
        from cnr_fast.provenance import code_version

        version = code_version()
        info["git_dirty"], info["git_dirty_files"] = version["git_dirty"], version["git_dirty_files"]
    except ImportError:
        info["git_dirty"] = None
    info["load_avg_before"] = LOAD_AT_START
    info["load_avg_after"] = info["load_avg_1_5_15"]
    return info


def write_results(name: str, results: dict, out_dir: str | os.PathLike | None = None, device: str = "cpu") -> Path:
    out = Path(out_dir or os.environ.get("CNR_FAST_BENCH_OUT", Path(__file__).parent / "results"))
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}.json"
    payload = {"bench": name, "machine": machine_info(device), "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
               **results}
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(payload, indent=2) + "\n")
    os.replace(tmp, path)
    return path


def speedups(results: dict[str, dict], base: str) -> dict[str, float]:
    """base median / each method's median (> 1 = faster than the baseline), same run."""
    ref = results[base]["median_s"]
    return {k: ref / v["median_s"] for k, v in results.items()}


def summary_line(name: str, results: dict[str, dict], ratios: dict[str, float]) -> str:
    return f"{name}: " + "  ".join(f"{k} {v['median_s'] * 1e3:.2f} ms (x{ratios[k]:.2f})" for k, v in results.items())


def finish(name: str, args, payload: dict, device: str) -> Path:
    """Write the JSON (the run's arguments included) and say where."""
    config = {k: v for k, v in vars(args).items() if k != "out"}
    path = write_results(name, {"config": config, **payload}, out_dir=args.out, device=device)
    print(f"wrote {path}")
    return path


def add_common_args(p, default_reps: int = 7) -> None:
    """--device, --out, --dtypes, --reps, --threads: the flags every op benchmark takes."""
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", default=None, help="output folder (default bench/results or $CNR_FAST_BENCH_OUT)")
    p.add_argument("--dtypes", nargs="+", default=None, help="default float32; cuda: float32 bfloat16")
    p.add_argument("--reps", type=int, default=default_reps)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")


def apply_common_args(args) -> list[str]:
    """Set the thread count; return the dtypes to run."""
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    return args.dtypes or (["float32", "bfloat16"] if args.device.startswith("cuda") else ["float32"])
