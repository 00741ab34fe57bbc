"""Roofline of every Triton kernel at the paper's shapes, from PTX compiled for sm_90 (no GPU needed).

For each kernel and shape the kernel is compiled for an H100/H200 (sm_90) with
`../shared/tools/sm90_ptx.py` (a stand-in driver; `kernel.warmup` compiles without launching) with
the launch configuration the op's launcher would use, and its PTX hot loop is counted.

Hot loop (the counting method). A PTX loop is a basic-block label `$L__BB<f>_<k>:` and the last
branch back to it (`bra $L__BB<f>_<k>` after the label). Its body is every instruction line from the
label to that back-branch, both included (lines ending in ';' that are not directives or comments);
this is what each thread issues per iteration (predicated-off instructions still issue). When a
kernel has several loops, the hot loop is the one with the most global-memory instructions
(ld.global / st.global / cp.async / red / atom; for selective_loss's backward, whose traffic is its
row stores, the most stores), ties going to the longer body. One iteration of the
hot loop moves `bytes_per_thread_iter` bytes of HBM traffic per thread (the tile the launcher's
configuration loads and stores per iteration, divided by the program's threads).

Issue bound (sm90_ptx's docstring): an H100 issues about 4 warp-instructions per SM per cycle, so at
1.8 GHz and 132 SMs a loop of I instructions per thread moving B bytes per thread cannot beat
4 * 32 * 1.8e9 * 132 * B / I bytes/s. `issue_bound_over_hbm_h100` / `_h200` divide it by 3.35 and
4.8 TB/s: above 1 the loop can keep up with HBM, the target is >= 2 for the memory-bound kernels.

`bound`: arithmetic intensity (FLOPs the kernel executes / bytes it must move) against the H100 SXM's
ridge point, HBM 3.35 TB/s and: for kernels on tensor cores (class_sums: the one-hot matmul, C padded
to BLOCK_C, two tf32 dots for fp32, counted as four bf16 ones: tf32's peak is half) the dense bf16 tensor-core peak, 989.4 TFLOP/s (ridge 295
FLOP/B); for the others the fp32 CUDA-core peak, 66.9 TFLOP/s (ridge 20 FLOP/B).
`bytes` is what the whole kernel must move at that shape (each input read once, each output written
once, class_sums' accumulator read and written once).

Where the memory-bound kernels stand against the >= 2x target (issue #9), min over the paper shapes:
- selective_loss_fwd: bf16 2.07, fp32 5.0. Indices become offsets once a program; a (BLOCK_B rows x
  BLOCK_K indices) tile per iteration costs one 64-bit address add, load, convert and add per element.
  (Its real bound is latency/sectors: every gathered element is its own 32-byte sector.)
- tv_loss: a thread owns groups of 8 columns, loaded as vectors and split in registers, so the right
  (backward: and left) neighbour is a register, not a scalar load one element over. fwd fp32 3.0,
  bwd fp32 3.1 (were 2.05 / 1.68); bf16 fwd 1.3, bwd 1.4 (were 0.92 / 0.77), i.e. 1.8 / 2.0 of an
  H100's HBM. bf16 cannot reach 2x an H200 with the loss in fp32: every 2-byte pixel needs at least
  convert, 2 sub, 2 fma, sqrt and an add (forward; the backward more), 7 issue slots, so the issue
  bound is at most 30.4e12 / 7 * 2 B = 8.7 TB/s = 1.8x H200 before any address or loop instruction.
  Packed bf16x2 subtraction (the reference's own rounding) saves nothing: its results still need a
  convert each.
- class_sums: bf16 C=10 5.4, C=100 2.10 (was 1.90: two row chunks per fp32 add); fp32 C=10 2.72,
  C=100 2.04 with SUB 4, 1.95 with SUB 2 (were 1.58 / 1.04 with the exact 3-way bf16 split; now a 2-way tf32 split, see the
  kernel's docstring). fp32 C=100 is held by the fp32 one-hot build (through shared memory) and adds.
Triton emits a `mov` before every load (the masked-off value) and loop-carried register copies; PTX
counts them, ptxas removes most, so these bounds are conservative.

    python -m bench.bench_roofline                 # writes bench/results/roofline_sm90.json
    python -m bench.bench_roofline --quick --out /tmp/x   # one shape per kernel (the test)
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path

import torch

from bench.harness import finish

TOOLS = Path(os.environ.get("SM90_PTX_TOOLS", Path(__file__).resolve().parents[2] / "shared" / "tools"))


def _sm90():
    """The sm90_ptx tool, imported only when compiling: importing it unsets TRITON_INTERPRET and installs
    a stand-in driver, which must not happen in a process that runs kernels (e.g. the test session)."""
    if str(TOOLS) not in sys.path:
        sys.path.insert(0, str(TOOLS))
    try:
        import sm90_ptx
    except ImportError as e:
        raise SystemExit(f"bench_roofline needs {TOOLS}/sm90_ptx.py (set SM90_PTX_TOOLS): {e}") from None
    return sm90_ptx


def compile_for_sm90(*args, **kwargs):
    return _sm90().compile_for_sm90(*args, **kwargs)


def summarize(*args, **kwargs):
    return _sm90().summarize(*args, **kwargs)

ISSUE_RATE = 4 * 32 * 1.8e9 * 132  # thread-instructions per second (H100: 4 warp-instr/SM/cycle, 1.8 GHz, 132 SMs)
HBM_H100 = 3.35e12
HBM_H200 = 4.8e12
PEAK_TC_BF16 = 989.4e12  # H100 SXM dense bf16 tensor-core FLOP/s
PEAK_FP32 = 66.9e12  # H100 SXM fp32 CUDA-core FLOP/s
SMS = 132  # H100 / H200 SXM: launch configurations that depend on the GPU size are the ones for 132 SMs

_LABEL = re.compile(r"^(\$L__BB\d+_\d+):")
_BRANCH = re.compile(r"\bbra(?:\.uni)?\s+(\$L__BB\d+_\d+)\s*;")
_PRED = r"^(?:@!?%p\d+\s+)?"
_MEM = re.compile(_PRED + r"(?:ld\.global|st\.global|cp\.async\.(?:ca|cg)|cp\.async\.bulk|red\.|atom\.)")
_STORE = re.compile(_PRED + r"(?:st\.global|red\.|atom\.)")


def _instructions(lines: list[str]) -> list[str]:
    body = (x.strip() for x in lines)
    return [x for x in body if x.endswith(";") and not x.startswith((".", "//", "{", "}"))]


def ptx_loops(ptx: str) -> list[dict]:
    """Every loop of the PTX: label, instruction count of its body, global-memory instruction count."""
    lines = ptx.splitlines()
    labels = {}
    for i, line in enumerate(lines):
        m = _LABEL.match(line.strip())
        if m:
            labels[m.group(1)] = i
    last_back = {}
    for i, line in enumerate(lines):
        m = _BRANCH.search(line)
        if m and m.group(1) in labels and labels[m.group(1)] < i:
            last_back[m.group(1)] = i
    loops = []
    for label, end in last_back.items():
        ins = _instructions(lines[labels[label] : end + 1])
        loops.append(
            {
                "label": label,
                "instructions": len(ins),
                "mem": sum(1 for x in ins if _MEM.match(x)),
                "stores": sum(1 for x in ins if _STORE.match(x)),
            }
        )
    return loops


def hot_loop(ptx: str, stores: bool = False) -> dict:
    """The loop with the most global-memory instructions (stores: the most stores, for a kernel whose
    data movement is its writes), ties to the longer body."""
    loops = ptx_loops(ptx)
    if not loops:
        raise ValueError("no loop in the PTX")
    return max(loops, key=lambda lp: (lp["stores"] if stores else lp["mem"], lp["instructions"]))


def _t(dtype, *shape):
    return torch.empty(*shape or (2,), dtype=dtype)


DT = {"bf16": torch.bfloat16, "fp32": torch.float32}
ES = {"bf16": 2, "fp32": 4}
# ResNet-18 (CIFAR stem, full width) taps at 32x32 input, and the ViT-B/16 token tap
TAPS = {
    "resnet18_L1": (64, 32, 32),
    "resnet18_L2": (128, 16, 16),
    "resnet18_L3": (256, 8, 8),
    "resnet18_L4": (512, 4, 4),
    "resnet18_pool": (512,),
    "vit_b16_tokens": (197, 768),
}
N_DETECT = 50_000
BATCH = 256  # training batch for the loss kernels


def _numel(shape):
    n = 1
    for s in shape:
        n *= s
    return n


def _row(kernel, shape, dtype, total_bytes, flops, peak, k, bytes_iter, threads, config, stores=False):
    hl = hot_loop(k.asm["ptx"], stores)
    ib = ISSUE_RATE * bytes_iter / hl["instructions"]
    ai = flops / total_bytes
    ridge = peak / HBM_H100
    s = summarize(k)
    return {
        "kernel": kernel,
        "shape": shape,
        "dtype": dtype,
        "bytes": int(total_bytes),
        "loop_instructions": hl["instructions"],
        "loop_mem_instructions": hl["mem"],
        "bytes_per_thread_iter": bytes_iter,
        "threads": threads,
        "issue_bound_tb_s": round(ib / 1e12, 3),
        "issue_bound_over_hbm_h100": round(ib / HBM_H100, 3),
        "issue_bound_over_hbm_h200": round(ib / HBM_H200, 3),
        "flops": int(flops),
        "arithmetic_intensity": round(ai, 2),
        "ridge_flop_per_byte": round(ridge, 1),
        "bound": "memory" if ai < ridge else "compute",
        "config": config,
        "loads": s["ld.global"],
        "cp_async": s["cp.async"],
        "mma": s["mma"],
        "atomics": s["atomics"],
    }


def class_sums_rows(quick=False):
    from cnr_fast.ops._triton import class_sums as cs

    rows = []
    taps = ["resnet18_L3"] if quick else list(TAPS)
    for tap in taps:
        fshape = TAPS[tap]
        U = _numel(fshape)
        for C in [10] if quick else [10, 100]:
            for dt in ["bf16"] if quick else ["bf16", "fp32"]:
                mode = cs._NATIVE if dt == "bf16" else cs._TF32X2  # the launcher's choice on a GPU
                cfg = cs.config(DT[dt], C, mode)
                meta = {k: v for k, v in cfg.items() if k not in ("num_warps", "num_stages")}  # incl. SUB
                k = compile_for_sm90(
                    cs._class_sums_kernel, _t(DT[dt]), _t(torch.int64), _t(torch.float32), _t(torch.int64),
                    N_DETECT, U, C, U, U, 4 * 64 * cfg["BLOCK_N"],
                    grid=(1,), FP32_MODE=mode, SPLIT_DT=cs.tl.bfloat16, ATOMIC=True, COUNT=True,
                    num_warps=cfg["num_warps"], num_stages=cfg["num_stages"], **meta,
                )  # fmt: skip
                threads = 32 * cfg["num_warps"]
                # one loop iteration: SUB chunks of BLOCK_N rows (x tile + int64 labels)
                bytes_iter = cfg["SUB"] * cfg["BLOCK_N"] * (cfg["BLOCK_U"] * ES[dt] + 8) / threads
                total = N_DETECT * (U * ES[dt] + 8) + 2 * C * U * 4
                c_pad = cfg["BLOCK_C"] * -(-C // cfg["BLOCK_C"])
                flops = 2 * c_pad * N_DETECT * U * (4 if dt == "fp32" else 1)  # fp32: 2 tf32 dots = 4 bf16-equiv.
                rows.append(
                    _row(
                        "class_sums",
                        f"N={N_DETECT} {tap} {fshape} C={C}",
                        dt,
                        total,
                        flops,
                        PEAK_TC_BF16,
                        k,
                        bytes_iter,
                        threads,
                        cfg,
                    )
                )
    return rows


TV_SHAPES = {"cifar": (BATCH, 3, 32, 32), "imagenet224": (64, 3, 224, 224)}


def tv_rows(quick=False):
    from cnr_fast.ops._triton import tv_loss as tv

    rows = []
    for name in ["cifar"] if quick else list(TV_SHAPES):
        B, C, H, W = TV_SHAPES[name]
        for dt in ["bf16"] if quick else ["bf16", "fp32"]:
            x = _t(DT[dt])
            warps = 4
            threads = 32 * warps
            n = B * C * H * W
            # the launcher's tile on a GPU of 132 SMs; one loop iteration = one row of the tile
            for kind, Wx, Hx in (("fwd", W, H - 1), ("bwd", W, H)):
                cfg = tv._config(Wx, B * C, Hx, 8 * SMS)
                meta = {"BLOCK_P": cfg["BLOCK_P"], "BLOCK_Q": cfg["BLOCK_Q"], "num_warps": warps}
                common = (B * C, C, H, W, B, C * H * W, H * W, W, 1)
                grid_args = (cfg["NS"], cfg["NCH"], cfg["rows"])
                if kind == "fwd":
                    k = compile_for_sm90(
                        tv._tv_fwd_kernel, x, _t(torch.float32), *common, *grid_args, grid=(1,), EPS=tv.TV_EPS, **meta
                    )
                    total, flops, rw = n * ES[dt], 8 * B * C * (H - 1) * (W - 1), 2  # two rows an iteration
                else:
                    k = compile_for_sm90(
                        tv._tv_bwd_kernel, x, x, _t(torch.float32), *common, C * H * W, H * W, W, 1, *grid_args,
                        grid=(1,), EPS=tv.TV_EPS, **meta,
                    )  # fmt: skip
                    total, flops, rw = 2 * n * ES[dt], 30 * n, 2
                # useful bytes only: padded columns of the last strip do not count
                useful = (Wx if kind == "bwd" else W - 1) / (cfg["NS"] * cfg["BLOCK_W"])
                bytes_iter = rw * cfg["BLOCK_P"] * cfg["BLOCK_W"] * ES[dt] * useful / threads
                rows.append(
                    _row(
                        f"tv_loss_{kind}", f"{name} {(B, C, H, W)}", dt, total, flops, PEAK_FP32, k, bytes_iter,
                        threads, {**meta, "rows_per_program": cfg["rows"]},
                    )  # fmt: skip
                )
    return rows


def selective_rows(quick=False):
    from cnr_fast.ops._triton import selective_loss as sl

    rows = []
    for tap in ["resnet18_L3"] if quick else [t for t in TAPS if t != "resnet18_pool"]:
        fshape = TAPS[tap]
        U = _numel(fshape)
        K = max(1, U // 100)
        for dt in ["bf16"] if quick else ["bf16", "fp32"]:
            x, idx = _t(DT[dt]), _t(torch.int64)
            warps = 4
            c = sl.fwd_config(BATCH, K, K, 4 * SMS)
            k = compile_for_sm90(
                sl._sel_fwd_kernel, x, idx, idx, _t(torch.float32),
                BATCH, U, K, K, 1, 1, U, 1, 0, 0, 1e-3, -1e-3, c["rows"], c["nkf"],
                grid=(1,), BLOCK_B=c["BLOCK_B"], BLOCK_K=c["BLOCK_K"], num_warps=warps,
            )  # fmt: skip
            # a gather: each element is its own 32-byte sector; the index block is read once a program.
            # One loop iteration: BLOCK_B rows x BLOCK_K indices, of which the useful (unpadded) ones count
            useful = 2 * K / (c["grid"][0] * c["BLOCK_K"])
            rows.append(
                _row(
                    "selective_loss_fwd",
                    f"B={BATCH} {tap} {fshape} K={K}",
                    dt,
                    2 * BATCH * K * ES[dt],
                    4 * BATCH * K,
                    PEAK_FP32,
                    k,
                    c["BLOCK_B"] * c["BLOCK_K"] * useful * ES[dt] / (32 * warps),
                    32 * warps,
                    {**{x: c[x] for x in ("BLOCK_B", "BLOCK_K", "rows")}, "grid": list(c["grid"]), "num_warps": warps},
                )
            )
            BLOCK_U = 256
            k = compile_for_sm90(
                sl._sel_bwd_kernel,
                x,
                _t(torch.float32),
                idx,
                idx,
                BATCH,
                U,
                K,
                K,
                1,
                1,
                U,
                1,
                0,
                0,
                1e-3,
                -1e-3,
                BATCH // 4,
                grid=(1,),
                BLOCK_U=BLOCK_U,
                BLOCK_K=32,
                num_warps=warps,
            )
            rows.append(
                _row(
                    "selective_loss_bwd",
                    f"B={BATCH} {tap} {fshape} K={K}",
                    dt,
                    BATCH * U * ES[dt],
                    2 * U * K * 2,
                    PEAK_FP32,
                    k,
                    BLOCK_U * ES[dt] / (32 * warps),
                    32 * warps,
                    {"BLOCK_U": BLOCK_U, "BLOCK_K": 32, "num_warps": warps},
                    stores=True,
                )
            )
    return rows


def selectivity_rows(quick=False):
    from cnr_fast.ops._triton import selectivity as se

    rows = []
    for tap in ["resnet18_L3"] if quick else list(TAPS):
        U = _numel(TAPS[tap])
        for C in [10] if quick else [10, 100]:
            F, R = 1, C - 1
            for dt in ["fp32"]:  # means are fp32 (class_sums' output)
                BLOCK_U, warps = 256, 4
                k = compile_for_sm90(
                    se._selectivity_kernel,
                    _t(DT[dt]),
                    _t(torch.int64),
                    _t(torch.int64),
                    _t(torch.float32),
                    _t(torch.float32),
                    U,
                    F,
                    R,
                    U,
                    1,
                    grid=(1,),
                    BLOCK_U=BLOCK_U,
                    num_warps=warps,
                )
                rows.append(
                    _row(
                        "selectivity",
                        f"{tap} U={U} C={C} F={F}",
                        dt,
                        (F + R) * U * ES[dt] + 2 * F * U * 4,
                        (R + 2 * F) * U,
                        PEAK_FP32,
                        k,
                        BLOCK_U * (ES[dt] + 8) / (32 * warps),
                        32 * warps,
                        {"BLOCK_U": BLOCK_U, "num_warps": warps},
                    )
                )
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=None, help="output folder (default bench/results or $CNR_FAST_BENCH_OUT)")
    p.add_argument("--quick", action="store_true", help="one shape and dtype per kernel")
    args = p.parse_args(argv)
    rows = class_sums_rows(args.quick) + tv_rows(args.quick) + selective_rows(args.quick) + selectivity_rows(args.quick)
    for r in rows:
        print(
            f"{r['kernel']:20s} {r['dtype']:5s} {r['shape']:52s} I={r['loop_instructions']:5d} "
            f"B={r['bytes_per_thread_iter']:6.1f} issue {r['issue_bound_tb_s']:6.2f} TB/s "
            f"x{r['issue_bound_over_hbm_h200']:.2f} H200  {r['bound']}"
        )
    method = (
        "PTX for sm_90 via sm90_ptx (triton " + __import__("triton").__version__ + "); hot loop = the loop "
        "(label to its last back-branch) with the most global-memory instructions; see the module docstring"
    )
    finish(
        "roofline_sm90",
        args,
        {
            "method": method,
            "issue_rate_thread_instr_per_s": ISSUE_RATE,
            "hbm_h100": HBM_H100,
            "hbm_h200": HBM_H200,
            "peak_flops": {"tensor_core_bf16_dense_h100": PEAK_TC_BF16, "fp32_cuda_core_h100": PEAK_FP32},
            "rows": rows,
        },
        "cpu",
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
