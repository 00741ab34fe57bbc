"""Triton backends, one op a file (kernel + launcher + autograd.Function together).

This package's `__init__` never imports triton: `backend.py` asks `reasons()` whether the triton
backend can run a call, and only when it is chosen does the dispatch import the op module
(`class_sums.py`, `selectivity.py`, `tv_loss.py`, `selective_loss.py`), which imports triton.

Where the kernels run:
- CUDA tensors: compiled kernels; chosen automatically when triton imports.
- CPU tensors: only under the Triton interpreter (`TRITON_INTERPRET=1` set before the op modules
  are imported, since `triton.jit` reads it at decoration time), and only when asked for explicitly
  with `CNR_FAST_BACKEND=triton`: the interpreter is a numpy-speed test and debug tool, so automatic
  choice keeps the torch backend on CPU even when a test session has set `TRITON_INTERPRET=1`.
"""

from __future__ import annotations

import functools
import inspect
import numbers
import os
from collections.abc import Sequence

import torch

# The dtypes every triton op here loads natively (it computes in fp32 and stores in the input's dtype).
FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
INDEX_DTYPES = (torch.int32, torch.int64)
# Flattened element indices are int32 inside the kernels (pointer offsets are int64): a grid-stride
# block of BLOCK (<= MAX_BLOCK) indices starting below numel must stay below 2**31 too.
MAX_BLOCK = 2**16
MAX_ELEMENTS = 2**31 - MAX_BLOCK

_TRUE = ("1", "true", "yes", "on", "y")


def interpret() -> bool:
    """True when the Triton interpreter is on (same parsing as triton's `knobs.runtime.interpret`)."""
    return os.environ.get("TRITON_INTERPRET", "0").strip().lower() in _TRUE


def explicitly_requested() -> bool:
    return os.environ.get("CNR_FAST_BACKEND", "").strip().lower() == "triton"


@functools.cache
def _triton_import_error() -> str | None:
    try:
        import triton  # noqa: F401
    except Exception as e:  # noqa: BLE001  (ImportError, or a broken install raising anything else)
        return f"triton is not importable ({type(e).__name__}: {e})"
    return None


def env_reasons() -> list[str]:
    """Why the triton backend cannot run on this machine at all (the no-argument check, for `doctor`)."""
    why = []
    err = _triton_import_error()
    if err:
        why.append(err)
    if not torch.cuda.is_available():
        if not interpret():
            why.append("no CUDA device (torch.cuda.is_available() is False) and TRITON_INTERPRET != 1")
        elif not explicitly_requested():
            why.append(
                "no CUDA device; TRITON_INTERPRET=1 runs the kernels on CPU tensors only when asked for "
                "explicitly with CNR_FAST_BACKEND=triton"
            )
    return why


def _device_reasons(named: dict[str, torch.Tensor]) -> list[str]:
    devices = {t.device for t in named.values()}
    if len(devices) > 1:
        return ["tensors on different devices: " + ", ".join(f"{k} on {t.device}" for k, t in named.items())]
    dev = devices.pop()
    what = next(iter(named))
    if dev.type == "cuda":
        pass
    elif dev.type == "cpu":
        if not interpret():
            return [f"{what} is on cpu, not CUDA, and TRITON_INTERPRET != 1"]
        if not explicitly_requested():
            return [
                (
                    f"{what} is on cpu: the Triton interpreter (TRITON_INTERPRET=1) is used only when asked for "
                    "explicitly with CNR_FAST_BACKEND=triton"
                )
            ]
    else:
        return [f"{what} is on {dev}: triton runs on CUDA (or on cpu under TRITON_INTERPRET=1)"]
    err = _triton_import_error()
    return [err] if err else []


def _dtype_reasons(name: str, t: torch.Tensor, dtypes=FLOAT_DTYPES) -> list[str]:
    if t.dtype not in dtypes:
        allowed = ", ".join(str(d).replace("torch.", "") for d in dtypes)
        return [f"{name} dtype {str(t.dtype).replace('torch.', '')} unsupported (supported: {allowed})"]
    return []


def _size_reasons(name: str, t: torch.Tensor) -> list[str]:
    if t.numel() > MAX_ELEMENTS:
        return [f"{name} has {t.numel()} elements; the kernels index elements in int32 (at most 2**31 - 2**16)"]
    return []


def _bind(op: str, args, kwargs):
    from .. import spec

    return inspect.signature(getattr(spec, op)).bind(*args, **kwargs).arguments


def _is_index_seq(x) -> bool:
    if isinstance(x, torch.Tensor):
        return x.dtype in INDEX_DTYPES and x.dim() <= 1
    # lists/tuples/ranges of ints (numpy integers too), as the spec's indexing accepts
    return isinstance(x, Sequence) and not isinstance(x, str) and all(isinstance(i, numbers.Integral) for i in x)


# The Triton ops: op name -> (its kernel, "module:function", imported only when chosen; the check of
# what the kernel supports, on the call's arguments bound to spec.<op>'s signature). Adding a
# Triton op is its kernel file and one `@triton_op` entry here; backend.py registers every entry.
OPS: dict[str, tuple[str, object]] = {}


def triton_op(name: str, target: str):
    def register(check):
        OPS[name] = (target, check)
        return check

    return register


def reasons(op: str, *args, **kwargs) -> list[str]:
    """Why the triton backend of `op` cannot run these arguments ([] = it can).

    With no arguments, checks the environment only (triton importable, CUDA or the interpreter).
    Cheap checks come first and triton is imported only when the tensors could run on it.
    """
    if not args and not kwargs:
        return env_reasons()
    if op not in OPS:
        return [f"no triton kernel for op {op!r}"]
    try:
        a = _bind(op, args, kwargs)
    except TypeError as e:
        return [f"arguments do not match spec.{op}: {e}"]
    return OPS[op][1](a)


@triton_op("class_sums", "cnr_fast.ops._triton.class_sums:class_sums")
def _class_sums_reasons(a: dict) -> list[str]:
    why: list[str] = []
    feats, labels = a["feats"], a["labels"]
    if not isinstance(feats, torch.Tensor) or not isinstance(labels, torch.Tensor):
        return ["feats and labels must be tensors"]
    if feats.dim() < 1:
        why.append("feats must have a leading sample dimension (N, ...)")
    why += _dtype_reasons("feats", feats) + _size_reasons("feats", feats)
    why += _dtype_reasons("labels", labels, INDEX_DTYPES)
    if why:
        return why
    return _device_reasons({"feats": feats, "labels": labels})


@triton_op("class_sums_add", "cnr_fast.ops._triton.class_sums:class_sums_add")
def _class_sums_add_reasons(a: dict) -> list[str]:
    why: list[str] = []
    feats, labels, sums, counts = a["feats"], a["labels"], a["sums"], a.get("counts")
    if not all(isinstance(t, torch.Tensor) for t in (feats, labels, sums)):
        return ["feats, labels and sums must be tensors"]
    if feats.dim() < 1 or sums.dim() < 1:
        why.append("feats and sums must have a leading dimension (N, ...) / (C, ...)")
    elif feats.shape[0] and sums[0].numel() != feats[0].numel():
        why.append(f"sums {tuple(sums.shape)} does not have the {feats[0].numel()} units of feats")
    why += _dtype_reasons("feats", feats) + _size_reasons("feats", feats) + _size_reasons("sums", sums)
    why += _dtype_reasons("labels", labels, INDEX_DTYPES) + _dtype_reasons("sums", sums, (torch.float32,))
    named = {"feats": feats, "labels": labels, "sums": sums}
    if counts is not None:
        if not isinstance(counts, torch.Tensor):
            return ["counts must be a tensor or None"]
        why += _dtype_reasons("counts", counts, (torch.int64,))
        if counts.dim() != 1 or not counts.is_contiguous() or counts.shape[0] != sums.shape[0]:
            why.append(f"counts must be a contiguous ({sums.shape[0]},) tensor")
        named["counts"] = counts
    if why:
        return why
    return _device_reasons(named)


@triton_op("selectivity_topk", "cnr_fast.ops._triton.selectivity:selectivity_topk")
def _selectivity_topk_reasons(a: dict) -> list[str]:
    why: list[str] = []
    means = a["means"]
    if not isinstance(means, torch.Tensor):
        return ["means must be a tensor"]
    if means.dim() != 2:
        why.append(f"means must be 2-D (C, U), got shape {tuple(means.shape)}")
    why += _dtype_reasons("means", means) + _size_reasons("means", means)
    for name in ("forget", "retain"):
        if not _is_index_seq(a[name]):
            why.append(f"{name} must be a list of ints or a 1-D integer tensor")
    if why:
        return why
    return _device_reasons({"means": means})


@triton_op("tv_loss", "cnr_fast.ops._triton.tv_loss:tv_loss")
def _tv_loss_reasons(a: dict) -> list[str]:
    why: list[str] = []
    x = a["x"]
    if not isinstance(x, torch.Tensor):
        return ["x must be a tensor"]
    if x.dim() != 4:
        why.append(f"x must be 4-D (B, C, H, W), got shape {tuple(x.shape)}")
    why += _dtype_reasons("x", x) + _size_reasons("x", x)
    if why:
        return why
    return _device_reasons({"x": x})


@triton_op("selective_loss", "cnr_fast.ops._triton.selective_loss:selective_loss")
def _selective_loss_reasons(a: dict) -> list[str]:
    why: list[str] = []
    feats, f_idx, r_idx = a["feats"], a["f_idx"], a["r_idx"]
    if not isinstance(feats, (list, tuple)) or not feats or not all(isinstance(f, torch.Tensor) for f in feats):
        return ["feats must be a non-empty list of tensors"]
    if not isinstance(f_idx, (list, tuple)) or not isinstance(r_idx, (list, tuple)):
        return ["f_idx and r_idx must be lists (one index set per tap)"]
    if not (len(feats) == len(f_idx) == len(r_idx)):
        return [f"{len(feats)} taps but {len(f_idx)} f_idx and {len(r_idx)} r_idx"]
    named = {}
    for i, f in enumerate(feats):
        if f.dim() < 1:
            why.append(f"feats[{i}] must have a leading batch dimension")
        why += _dtype_reasons(f"feats[{i}]", f) + _size_reasons(f"feats[{i}]", f)
        named[f"feats[{i}]"] = f
    for name, idx in (("f_idx", f_idx), ("r_idx", r_idx)):
        for i, ix in enumerate(idx):
            if not _is_index_seq(ix):
                why.append(f"{name}[{i}] must be a 1-D integer tensor or a list of ints")
            elif feats[i].dim() >= 1 and feats[i].shape[0] * len(ix) > MAX_ELEMENTS:
                why.append(f"{name}[{i}]: batch x indices exceeds {MAX_ELEMENTS} (int32 gather index)")
    if why:
        return why
    return _device_reasons(named)


# ---- launcher helpers (no triton here either) ----


def view4d(t: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int, int, int], tuple[int, int, int, int]]:
    """See a (N, ...) tensor as (N, D1, D2, D3) without copying, so a kernel can read unit
    u = flat row-major index of t[n] (the index `t.reshape(N, -1)` would give it) through strides:
    u -> (u // (D2*D3), (u // D3) % D2, u % D3). Tensors of more than 4 dims are reshaped (may copy).
    """
    if t.dim() > 4:
        t = t.reshape(t.shape[0], -1)
    sizes = list(t.shape) + [1] * (4 - t.dim())
    strides = list(t.stride()) + [0] * (4 - t.dim())
    return t, tuple(sizes), tuple(strides)


def interp_safe(t: torch.Tensor) -> torch.Tensor:
    """Under the interpreter bf16 arithmetic and bf16 dots are silently wrong: hand it fp32."""
    if t.dtype == torch.bfloat16 and interpret():
        return t.float()
    return t


@functools.cache
def _sm_count(index: int) -> int:
    return torch.cuda.get_device_properties(index).multi_processor_count


def max_programs(device: torch.device, per_sm: int = 4, interpreter_cap: int = 8) -> int:
    """Grid cap for grid-stride kernels: a few programs per SM on CUDA, a handful in the interpreter."""
    if device.type == "cuda" and not interpret():
        return per_sm * _sm_count(device.index if device.index is not None else torch.cuda.current_device())
    return interpreter_cap


def next_pow2(n: int) -> int:
    return 1 << max(0, int(n) - 1).bit_length()


def cdiv(a: int, b: int) -> int:
    return -(-a // b)


def device_ctx(t: torch.Tensor):
    """Launch on the tensor's GPU (triton launches on the current device)."""
    import contextlib

    if t.device.type == "cuda":
        return torch.cuda.device(t.device)
    return contextlib.nullcontext()
