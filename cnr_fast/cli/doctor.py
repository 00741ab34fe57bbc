"""`cnr-fast doctor`: what this machine can run, and which backend each op gets and why."""

from __future__ import annotations

import importlib.util
import json
import platform


def add_parser(sub) -> None:
    p = sub.add_parser("doctor", help="print torch / CUDA / Triton / faiss / native status and per-op backends",
                       description=__doc__,
                       epilog="examples:\n  cnr-fast doctor\n  CNR_FAST_BACKEND=triton cnr-fast doctor --json")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=run)


def collect() -> dict:
    import torch

    from .. import _native, threads
    from ..hardware import cpu_amp_policy, cpu_info
    from ..ops import backend
    from ..train import COMPILE_TOLERANCE, COMPILED_LOOPS, EAGER_LOOPS

    info = {
        "python": platform.python_version(),
        "cpu": {**cpu_info(), "amp_bf16": cpu_amp_policy()},
        "threads": {"torch_threads": torch.get_num_threads(), "cores": threads.cores(),
                    "policy": threads.chosen().get("policy", "torch's default")},
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "cuda_available": torch.cuda.is_available(),
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "triton": _version("triton"),
        "faiss": _version("faiss"),
        "faiss_gpu": _faiss_gpu(),
        "native": {"available": _native.available(), "error": _native.load_error(), **_native.info()},
        "backend_requested": backend.requested(),
        "ops": backend.describe(),
        "compile": {"reaches": list(COMPILED_LOOPS), "eager": list(EAGER_LOOPS),
                    "gradient_check": "each compiled loop's first batch against float64 (train.compile_gradient_error); "
                                      f"a warning beyond {COMPILE_TOLERANCE} relative"},
    }
    return info


def _version(mod: str):
    if importlib.util.find_spec(mod) is None:
        return None
    try:
        return getattr(importlib.import_module(mod), "__version__", "installed")
    except Exception as e:  # noqa: BLE001 - report, do not crash the doctor
        return f"broken ({type(e).__name__}: {e})"


def _faiss_gpu() -> bool:
    if importlib.util.find_spec("faiss") is None:
        return False
    import faiss

    return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0


def run(args) -> int:
    info = collect()
    if args.json:
        print(json.dumps(info, indent=2, default=str))
        return 0
    print(f"python {info['python']}, torch {info['torch']} (CUDA build {info['torch_cuda']})")
    cpu = info["cpu"]
    print(f"CPU: {cpu['model']}; vector flags: {' '.join(cpu['vector_flags']) or 'unknown'}")
    th = info["threads"]
    how = "set by --threads" if th["policy"] == "--threads" else f"{th['policy']}; --threads N overrides"
    print(f"torch threads: {th['torch_threads']} of {th['cores']} core(s) ({how})")
    print(f"CPU --amp: {'bf16 autocast' if cpu['amp_bf16']['bf16'] else 'fp32'} ({cpu['amp_bf16']['reason']})")
    comp = info["compile"]
    print(f"--compile reaches: {'; '.join(comp['reaches'])}; eager whatever the flag: {'; '.join(comp['eager'])}; "
          f"checked: {comp['gradient_check']}")
    print(f"CUDA device: {info['gpu'] or 'none'}")
    print(f"triton: {info['triton'] or 'not installed'}; faiss: {info['faiss'] or 'not installed'}"
          f" (GPU index: {'yes' if info['faiss_gpu'] else 'no'})")
    nat = info["native"]
    print(f"native extension: {'loaded' if nat['available'] else 'not available: ' + str(nat['error'])}")
    print(f"CNR_FAST_BACKEND={info['backend_requested']}")
    for op, d in info["ops"].items():
        print(f"  {op:<18} -> {d['chosen']}")
        for name, why in d["reasons"].items():
            if why:
                print(f"      {name}: " + "; ".join(why))
    return 0
