"""What the CPU can do, and the precision a run gets from it.

bf16 autocast on a CPU is only fast where the CPU has bf16 instructions: Intel AMX (`amx_bf16`,
Sapphire Rapids and later) or AVX-512 BF16 (`avx512_bf16`: Cooper Lake, AMD Zen 4 and later).
Elsewhere PyTorch emulates bf16 with conversions around fp32 arithmetic. One training step of the
default model: ~2x faster than fp32 on an Intel AMX machine (session 1), 8.9x slower on an AVX2-only
AMD EPYC (`precision` in bench/results/cpu_stages_cpu.json). So `--amp` on a CPU without those instructions runs fp32 and
says why; `CNR_FAST_CPU_AMP=force` keeps bf16 anyway (to measure it).
"""

from __future__ import annotations

import os
import platform
import sys
from functools import lru_cache

# flags that decide the speed of the dense kernels, in the order we report them
VECTOR_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16")
BF16_FLAGS = ("amx_bf16", "avx512_bf16")


@lru_cache(maxsize=1)
def cpu_info(path: str = "/proc/cpuinfo") -> dict:
    """{"model", "vector_flags", "bf16_instructions"} from /proc/cpuinfo (Linux); model only elsewhere."""
    model, flags = None, set()
    try:
        with open(path) as fh:
            for line in fh:
                key, _, val = line.partition(":")
                key = key.strip()
                if key == "model name" and model is None:
                    model = val.strip()
                elif key == "flags" and not flags:
                    flags = set(val.split())
                if model and flags:
                    break
    except OSError:
        pass
    present = [f for f in VECTOR_FLAGS if f in flags]
    bf16 = next((f for f in BF16_FLAGS if f in flags), None)
    return {"model": model or platform.processor() or None, "vector_flags": present,
            "bf16_instructions": bf16, "flags_known": bool(flags)}


def cpu_amp_policy() -> dict:
    """{"bf16": bool, "reason": str}: whether bf16 autocast on this CPU is used, and why."""
    info = cpu_info()
    forced = os.environ.get("CNR_FAST_CPU_AMP", "").lower() == "force"
    if forced:
        return {"bf16": True, "reason": "CNR_FAST_CPU_AMP=force"}
    if info["bf16_instructions"]:
        return {"bf16": True, "reason": f"the CPU has {info['bf16_instructions']}"}
    if not info["flags_known"]:
        return {"bf16": False, "reason": "the CPU's flags are unknown (no /proc/cpuinfo); fp32 is the safe choice"}
    return {"bf16": False,
            "reason": f"this CPU ({info['model']}) has no bf16 instructions (neither amx_bf16 nor avx512_bf16): "
                      "bf16 autocast is emulated there and ran ~10x slower than fp32 on such a CPU"}


_warned = False


def cpu_amp_allowed(warn: bool = True) -> bool:
    """True when bf16 autocast should run on this CPU; otherwise warn once (to stderr) and return False."""
    global _warned
    policy = cpu_amp_policy()
    if not policy["bf16"] and warn and not _warned:
        _warned = True
        print(f"warning: --amp on CPU: {policy['reason']}; running fp32. Set CNR_FAST_CPU_AMP=force to use bf16 "
              "anyway.", file=sys.stderr, flush=True)
    return policy["bf16"]
