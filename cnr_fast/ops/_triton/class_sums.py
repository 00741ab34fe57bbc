"""Triton `class_sums` / `class_sums_add`: per-class sums (C, U) fp32 and counts (C,) in one pass over feats.

Spec: `spec.class_sums` (one batch, fresh sums) and `spec.class_sums_add` (streaming: add one
batch into a persistent fp32 accumulator, no host sync). `class_sums` is `class_sums_add` into a
zeroed buffer.

Layout. The kernel reads every row of feats as one dense run of U elements in the row's own memory
order ("physical" unit order): a channels_last (N, Ch, H, W) map is read as (N, H*W*Ch) contiguous
rows, an NCHW map as (N, Ch*H*W), whatever H and W, so the loads are 16-byte vectors and no flattening
copy is made. The accumulator has the same per-row layout (`spec.class_sums_buffer` allocates it
like that, e.g. (C, Ch, H, W) channels_last), so the kernel adds into it contiguously too; reading it
as `sums.reshape(C, -1)` gives the usual (C, H, W) unit order. Feats whose rows are not dense, or
whose layout differs from the accumulator's, are copied once into the accumulator's layout.

Kernel. Each program owns a (BLOCK_C classes x BLOCK_U units) tile and a range of rows. Per chunk of
BLOCK_N rows it builds the one-hot (BLOCK_C, BLOCK_N) matrix of the labels and computes onehot @ x with
`tl.dot` (tensor cores); SUB consecutive chunks are summed on the tensor cores into a partial that
starts from zero, and the partial is added to the program's fp32 tile with an ordinary
(round-to-nearest) fp32 add. A one-hot product is exact and the tensor core's own (truncating)
accumulation only ever spans SUB * BLOCK_N rows (a few rows per class), so the rounding is that of an
fp32 sum over chunks, not a one-sided drift over the whole pass.

Variant per (dtype, C) (`config`; issue bound over the H200's HBM from bench/bench_roofline.py):
- 16-bit feats: one-hot in the feats' dtype, one dot per chunk. C <= 16: SUB 1 (5.4x). C=100
  (BLOCK_C 128): SUB 2 (2.10x; 1.90x with an fp32 add per chunk).
- fp32 feats, `_TF32X2` (default on GPU): x = hi + lo exactly, hi = x with its 13 low mantissa bits
  cleared (exact in tf32), lo = x - hi (exact in fp32); two tf32 one-hot dots. hi is exact; the MMA
  keeps the top 11 of lo's <= 13 significant bits, so each element is off by < 2^-21 |x| (truncation):
  on ReLU data (N=50k) this is 0.3x (C=10) and 0.9x (C=100) of index_add_'s own fp32 error, emulated
  on CPU with the tensor core's accumulation truncated (tests/ops/test_triton_ops.py; the GPU check is
  tests/ops/test_triton_gpu.py). C=10: SUB 1 (2.72x); C=100: SUB 4 (2.04x; SUB 2: 1.95x). The exact 3-way bf16
  split `_SPLIT3` (x = x1 + x2 + x3, three exact dots) is kept as an option: 1.58x / 1.04x, it stores
  three 16-bit parts per element to shared memory. A plain fp32 FMA accumulation would spend >= BLOCK_C
  (16 for C=10) select-adds per element, over the ~12 instructions per 4-byte element that 2x allows.
After its rows, the program adds its tile into the accumulator: load + add + store when it is the
only program on that tile, relaxed `atomic_add` when the rows were split across programs to fill the
GPU (fp32 addition order then varies run to run, as `index_add_` on CUDA).

Non-finite rows. A one-hot dot multiplies 0 * inf = NaN into every class of the tile. So after its
rows each program checks its tile once (one reduction); if any entry is inf/NaN it recomputes the
tile row by row with selects (no multiplication by 0), exactly as the spec's sequential adds:
only the classes of the non-finite rows get inf/NaN. The check costs nothing inside the loop.

Counts. The class counts are accumulated in an int32 (BLOCK_C, BLOCK_N) tile by one program per
(class block, row range) only (pid_u == 0), in a separate pass over the labels after the main loop,
reduced across threads once, and added into the int64 counts; the other programs never count.

Differences from the spec, on invalid input only: labels outside [0, num_classes) are dropped
(neither summed nor counted) where the spec raises (CPU) or asserts (CUDA); checking would cost
a device sync per batch.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from triton.runtime.errors import OutOfResources

from .. import spec
from . import cdiv, device_ctx, interp_safe, interpret, max_programs, next_pow2

BLOCK_C_MAX = 128

# FP32_MODE values (how fp32 feats enter tl.dot)
_NATIVE = 0  # 16-bit feats: one-hot in the same dtype, fp32 accumulation
_IEEE = 1  # fp32 dot as is (the interpreter computes it in numpy fp32)
_SPLIT3 = 2  # x = x1 + x2 + x3 exactly with x_i in SPLIT_DT (bf16: 3 x 8 bits >= fp32's 24), 3 exact dots
_TF32X2 = 3  # x = hi + lo, hi = x with its low 13 mantissa bits cleared (exact tf32), lo = x - hi; 2 tf32 dots


@triton.jit
def _chunk_dot(
    x_ptr, lab_ptr, n0, n_end, sx0, u, u_ok, c, part,
    BLOCK_N: tl.constexpr, FP32_MODE: tl.constexpr, SPLIT_DT: tl.constexpr,
):  # fmt: skip
    """part + onehot(labels[n0 : n0 + BLOCK_N]) @ x[n0 : n0 + BLOCK_N, u] on the tensor cores."""
    n = n0 + tl.arange(0, BLOCK_N)
    n_ok = n < n_end
    lab = tl.load(lab_ptr + n, mask=n_ok, other=-1)  # -1 matches no class
    hit = lab[None, :] == c[:, None]  # (BLOCK_C, BLOCK_N)
    x = tl.load(x_ptr + n.to(tl.int64)[:, None] * sx0 + u[None, :], mask=n_ok[:, None] & u_ok[None, :], other=0.0)
    if FP32_MODE == 0:
        part = tl.dot(hit.to(x.dtype), x, acc=part)
    elif FP32_MODE == 1:
        part = tl.dot(hit.to(tl.float32), x.to(tl.float32), acc=part, input_precision="ieee")
    elif FP32_MODE == 3:
        # x = hi + lo exactly: hi is x with the 13 low mantissa bits cleared (exact in tf32), lo = x - hi
        # (exact in fp32) has <= 13 significant bits, of which the tf32 MMA keeps the top 11 (truncation
        # error < 2^-21 |x|, far below fp32 summation's own; see config() and the tests)
        xf = x.to(tl.float32)
        hi = (xf.to(tl.uint32, bitcast=True) & 0xFFFFE000).to(tl.float32, bitcast=True)
        lo = xf - hi
        oh = tl.where(hit, 1.0, 0.0)
        part = tl.dot(oh, lo, acc=part, input_precision="tf32")
        part = tl.dot(oh, hi, acc=part, input_precision="tf32")
    else:
        # Exact 3-way split: each residual is exact in fp32 and each part has SPLIT_DT's mantissa,
        # so x1 + x2 + x3 == x and the three one-hot dots on tensor cores lose nothing.
        xf = x.to(tl.float32)
        x1 = xf.to(SPLIT_DT)
        r1 = xf - x1.to(tl.float32)
        x2 = r1.to(SPLIT_DT)
        x3 = (r1 - x2.to(tl.float32)).to(SPLIT_DT)
        oh = hit.to(SPLIT_DT)
        part = tl.dot(oh, x3, acc=part)  # smallest first
        part = tl.dot(oh, x2, acc=part)
        part = tl.dot(oh, x1, acc=part)
    return part


@triton.jit
def _class_sums_kernel(
    x_ptr, lab_ptr, sums_ptr, counts_ptr,
    N, U, C, sx0, ss0,
    rows_per_split,
    BLOCK_C: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_U: tl.constexpr,
    FP32_MODE: tl.constexpr, SPLIT_DT: tl.constexpr, SUB: tl.constexpr, ATOMIC: tl.constexpr, COUNT: tl.constexpr,
):  # fmt: skip
    pid_u = tl.program_id(0)
    pid_c = tl.program_id(1)
    pid_s = tl.program_id(2)
    u = pid_u * BLOCK_U + tl.arange(0, BLOCK_U)  # physical unit index: rows are dense runs of U elements
    c = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
    u_ok = u < U
    n_start = pid_s * rows_per_split
    n_end = tl.minimum(N, n_start + rows_per_split)

    acc = tl.zeros((BLOCK_C, BLOCK_U), dtype=tl.float32)
    for n0 in range(n_start, n_end, BLOCK_N * SUB):
        part = tl.zeros((BLOCK_C, BLOCK_U), dtype=tl.float32)
        for k in tl.static_range(SUB):  # SUB row chunks summed on the tensor cores before one fp32 add
            part = _chunk_dot(
                x_ptr, lab_ptr, n0 + k * BLOCK_N, n_end, sx0, u, u_ok, c, part,
                BLOCK_N=BLOCK_N, FP32_MODE=FP32_MODE, SPLIT_DT=SPLIT_DT,
            )  # fmt: skip
        # round-to-nearest fp32 add of the partial (an fma, so the compiler does not fold the add back
        # into the dot's tensor-core accumulator; LLVM lowers fma(p, 1, a) to add.f32)
        acc = tl.fma(part, 1.0, acc)

    # inf/NaN anywhere in the tile (x - x is NaN exactly for inf and NaN): recompute it without the
    # one-hot products, so a non-finite row reaches only its own class (the spec's semantics)
    bad = tl.max(tl.max(((acc - acc) != 0).to(tl.int32), axis=1), axis=0)
    if bad != 0:
        acc = tl.zeros((BLOCK_C, BLOCK_U), dtype=tl.float32)
        x_row = x_ptr + n_start.to(tl.int64) * sx0 + u
        lab_row = lab_ptr + n_start
        for _ in range(n_start, n_end):
            xr = tl.load(x_row, mask=u_ok, other=0.0).to(tl.float32)
            acc += tl.where(c[:, None] == tl.load(lab_row), xr[None, :], 0.0)
            x_row += sx0
            lab_row += 1

    c_ok = c < C
    out = sums_ptr + c.to(tl.int64)[:, None] * ss0 + u[None, :]
    m = c_ok[:, None] & u_ok[None, :]
    if ATOMIC:
        tl.atomic_add(out, acc, mask=m, sem="relaxed")  # only the final sums are read, after the launch
    else:
        tl.store(out, tl.load(out, mask=m, other=0.0) + acc, mask=m)

    if COUNT:  # noqa: SIM102  (a constexpr: the counting pass is compiled only when asked for)
        if pid_u == 0:  # one unit block counts the labels of its row range
            cnt = tl.zeros((BLOCK_C, BLOCK_N), dtype=tl.int32)
            for n0 in range(n_start, n_end, BLOCK_N):
                n = n0 + tl.arange(0, BLOCK_N)
                lab = tl.load(lab_ptr + n, mask=n < n_end, other=-1)
                cnt += (lab[None, :] == c[:, None]).to(tl.int32)
            total = tl.sum(cnt, axis=1).to(tl.int64)  # one cross-thread reduction, after the loop
            if ATOMIC:
                tl.atomic_add(counts_ptr + c, total, mask=c_ok, sem="relaxed")
            else:
                tl.store(counts_ptr + c, tl.load(counts_ptr + c, mask=c_ok, other=0) + total, mask=c_ok)


def config(dtype: torch.dtype, C: int, fp32_mode: int) -> dict:
    """Tile sizes, warps, pipeline stages and SUB (row chunks per fp32 add) of a launch (also compiled by
    bench/bench_roofline.py).

    Chosen per (dtype, C) from sm_90 PTX (bench/bench_roofline.py, issue bound / H200 HBM in brackets)
    and ptxas register counts (no spill): the largest tiles that fit, one fp32 add per SUB chunks.
    - 16-bit, C <= 16: 16 x 64 x 256, SUB 1 (5.4x). 16-bit, C <= 64: 64 rows x 128 units, SUB 1.
    - 16-bit, C > 64 (C=100): 128 x 128 x 128, SUB 2 (2.10x; SUB 1 was 1.90x: the per-chunk fp32 adds
      cost one instruction per tile element, the one-hot build ~3 per one-hot element).
    - fp32, _TF32X2 (default): C <= 16: 16 x 64 x 128, SUB 1 (2.72x; the 3-way bf16 split was 1.58x);
      C > 16: 128 x 64 x 128, SUB 4 (2.04x; SUB 2 / 3 were 1.95x / 2.01x, the split 1.04x). What is left
      at C=100 is the one-hot build (an fp32 tile, converted through shared memory) and the fp32 adds.
    - fp32, _SPLIT3 (kept as an option): the earlier configurations.
    A plain fp32 FMA accumulation (no tensor cores) needs >= BLOCK_C (16 for C=10) select-adds per
    element, above the ~12 instructions per 4-byte element that 2x H200 allows: not used."""
    BLOCK_C = min(max(next_pow2(C), 16), BLOCK_C_MAX)
    if fp32_mode == _TF32X2:
        if BLOCK_C <= 16:
            return {"BLOCK_C": BLOCK_C, "BLOCK_N": 64, "BLOCK_U": 128, "num_warps": 4, "num_stages": 2, "SUB": 1}
        return {"BLOCK_C": BLOCK_C, "BLOCK_N": 64, "BLOCK_U": 128, "num_warps": 8, "num_stages": 2, "SUB": 4}
    if fp32_mode == _SPLIT3:  # the exact split costs ~3 stores to shared memory per element: fewer rows
        if BLOCK_C <= 16:
            return {"BLOCK_C": BLOCK_C, "BLOCK_N": 64, "BLOCK_U": 128, "num_warps": 4, "num_stages": 2, "SUB": 1}
        return {
            "BLOCK_C": BLOCK_C,
            "BLOCK_N": 64,
            "BLOCK_U": 64,
            "num_warps": 8 if BLOCK_C > 32 else 4,
            "num_stages": 2,
            "SUB": 1,
        }
    if BLOCK_C <= 16:
        return {"BLOCK_C": BLOCK_C, "BLOCK_N": 64, "BLOCK_U": 256, "num_warps": 4, "num_stages": 3, "SUB": 1}
    if BLOCK_C <= 32:
        return {"BLOCK_C": BLOCK_C, "BLOCK_N": 64, "BLOCK_U": 128, "num_warps": 4, "num_stages": 3, "SUB": 1}
    if BLOCK_C <= 64:
        return {"BLOCK_C": BLOCK_C, "BLOCK_N": 64, "BLOCK_U": 128, "num_warps": 8, "num_stages": 3, "SUB": 1}
    return {"BLOCK_C": BLOCK_C, "BLOCK_N": 128, "BLOCK_U": 128, "num_warps": 8, "num_stages": 2, "SUB": 2}


def _phys_order(t: torch.Tensor) -> list[int] | None:
    """Dims 1.. of t in memory order (outermost first) if each t[n] is one dense run, else None."""
    dims = sorted(range(1, t.dim()), key=lambda d: (-t.stride(d), d))
    expect = 1
    for d in reversed(dims):
        if t.shape[d] != 1 and t.stride(d) != expect:
            return None
        expect *= t.shape[d]
    return dims


def _same_row_layout(a: torch.Tensor, b: torch.Tensor) -> bool:
    """a[i] and b[j] have the same shape and the same strides on every dim of size > 1."""
    return a.shape[1:] == b.shape[1:] and all(
        s == 1 or sa == sb for s, sa, sb in zip(a.shape[1:], a.stride()[1:], b.stride()[1:])
    )


def _pick_fp32_mode(dtype: torch.dtype, override: int | None) -> int:
    if dtype != torch.float32:
        return _NATIVE
    if override is not None:
        return override
    return _IEEE if interpret() else _TF32X2


def class_sums_add(
    feats: torch.Tensor, labels: torch.Tensor, sums: torch.Tensor, counts: torch.Tensor | None = None, *,
    _split: int | None = None, _fp32_mode: int | None = None, _split_dtype=None,
) -> None:  # fmt: skip
    """Same contract as `spec.class_sums_add`: sums += per-class sums of feats, counts += class
    counts (when given), in place, without a host sync. `_split`, `_fp32_mode`, `_split_dtype` are
    test hooks (row split count, fp32 dot mode, split dtype)."""
    C = sums.shape[0]
    N = feats.shape[0]
    labels = labels.reshape(-1)
    if labels.shape[0] != N:
        raise ValueError(f"class_sums: {N} feature rows but {labels.shape[0]} labels")
    U = feats[0].numel() if N else sums[0].numel()
    if sums.dtype != torch.float32 or sums[0].numel() != U:
        raise ValueError(f"class_sums_add: sums must be float32 (C, {U} units), got {sums.dtype} {tuple(sums.shape)}")
    if N == 0 or U == 0 or C == 0:
        return
    x = interp_safe(feats)
    if x.dim() == 1:
        x = x.reshape(N, 1)
    # the accumulator seen with feats' row shape (a (C, U) buffer for a (N, Ch, H, W) map: NCHW order)
    try:
        s = sums if sums.shape[1:] == x.shape[1:] else sums.view(C, *x.shape[1:])
    except RuntimeError:
        s = None
    if s is None or _phys_order(s) is None:  # rows not dense (a user's slice): accumulate into a dense one
        tmp = spec.class_sums_buffer(x, C)
        class_sums_add(x, labels, tmp, counts, _split=_split, _fp32_mode=_fp32_mode, _split_dtype=_split_dtype)
        sums.add_(tmp.reshape(sums.shape))
        return
    if _phys_order(x) is None or not _same_row_layout(x, s):
        xc = torch.empty_strided((N, *s.shape[1:]), (U, *s.stride()[1:]), dtype=x.dtype, device=x.device)
        xc.copy_(x)  # once into the accumulator's layout (feats with gaps, or a different memory format)
        x = xc
    labels = labels.contiguous()

    fp32_mode = _pick_fp32_mode(x.dtype, _fp32_mode)
    split_dt = _split_dtype if _split_dtype is not None else tl.bfloat16
    cfg = config(x.dtype, C, fp32_mode)
    BLOCK_C, BLOCK_N, BLOCK_U, SUB = cfg["BLOCK_C"], cfg["BLOCK_N"], cfg["BLOCK_U"], cfg["SUB"]
    grid_u, grid_c = cdiv(U, BLOCK_U), cdiv(C, BLOCK_C)
    if _split is not None:
        split = max(1, int(_split))
    elif interpret():
        split = 1
    else:  # enough programs to fill the GPU, at least a few row chunks each
        want = cdiv(max_programs(x.device, per_sm=2), grid_u * grid_c)
        split = max(1, min(want, cdiv(N, 4 * BLOCK_N * SUB)))
    rows = cdiv(cdiv(N, split), BLOCK_N * SUB) * BLOCK_N * SUB
    split = cdiv(N, rows)
    cnt = counts if counts is not None else sums  # any pointer: COUNT=False never touches it
    configs = _smaller_configs(cfg)
    for i, c in enumerate(configs):
        try:
            with device_ctx(x):
                _class_sums_kernel[(grid_u, grid_c, split)](
                    x, labels, s, cnt,
                    N, U, C, x.stride(0), s.stride(0),
                    rows,
                    BLOCK_C=BLOCK_C, BLOCK_N=BLOCK_N, BLOCK_U=BLOCK_U,
                    FP32_MODE=fp32_mode, SPLIT_DT=split_dt, SUB=c["SUB"], ATOMIC=split > 1,
                    COUNT=counts is not None, num_warps=c["num_warps"], num_stages=c["num_stages"],
                )  # fmt: skip
            return
        except OutOfResources:
            # the configurations are sized for an H100/H200's 227 KB of shared memory; a GPU with less
            # (A100: 163 KB, consumer cards ~100 KB) gets fewer pipeline stages, then fewer chunks per add
            if i == len(configs) - 1:
                raise


def _smaller_configs(cfg: dict) -> list[dict]:
    """cfg, then the same tile with less shared memory: fewer pipeline stages, then SUB halved to 1
    (`rows` stays a multiple of BLOCK_N * SUB, so any SUB dividing the configured one is valid)."""
    out = [cfg, {**cfg, "num_stages": 1}]
    sub = cfg["SUB"]
    while sub > 1:
        sub //= 2
        out.append({**cfg, "num_stages": 1, "SUB": sub})
    return out


def class_sums(
    feats: torch.Tensor, labels: torch.Tensor, num_classes: int, *, _split: int | None = None,
    _fp32_mode: int | None = None, _split_dtype=None,
) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """Same contract as `spec.class_sums`: (C, U) sums in the usual unit order, int64 counts."""
    num_classes = int(num_classes)
    if feats.dim() < 1 or feats.shape[0] == 0 or feats[0].numel() == 0 or num_classes <= 0:
        return spec.class_sums(feats, labels, num_classes)  # degenerate shapes: the spec's own answer
    sums = spec.class_sums_buffer(feats, num_classes)
    counts = torch.zeros(num_classes, dtype=torch.int64, device=feats.device)
    class_sums_add(feats, labels, sums, counts, _split=_split, _fp32_mode=_fp32_mode, _split_dtype=_split_dtype)
    return sums.reshape(num_classes, -1), counts
