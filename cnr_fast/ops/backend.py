"""One dispatch seam for every op: the torch spec (always), fast backends when they can run.

`CNR_FAST_BACKEND` unset or `auto`: the first backend that can run the call is used, quietly.
`CNR_FAST_BACKEND=<name>`: that backend or a loud error listing why it cannot run.
Fast backends register themselves lazily (their module is imported only when asked for), so
`import cnr_fast` imports neither triton nor faiss and never initialises CUDA.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from typing import Callable

from . import spec


@dataclass
class Backend:
    name: str
    # module path and attribute, imported on first use
    target: str
    # returns the reasons this backend cannot run these arguments ([] = it can)
    not_supported_reasons: Callable[..., list[str]]
    _fn: Callable | None = None

    @property
    def fn(self) -> Callable:
        if self._fn is None:
            mod, attr = self.target.rsplit(":", 1)
            self._fn = getattr(importlib.import_module(mod), attr)
        return self._fn


class BackendError(RuntimeError):
    pass


def always(*_a, **_k) -> list[str]:
    """The check of a backend that runs every call (the torch spec)."""
    return []


# op name -> backends in order of preference (fastest first, torch last)
REGISTRY: dict[str, list[Backend]] = {
    op: [Backend("torch", f"cnr_fast.ops.spec:{op}", always)] for op in spec.OPS
}


def register(op: str, backend: Backend) -> None:
    """Add a backend of `op` (other pipelines may plug in their own): one named "torch", the op's
    always-running spec, goes last; any other in front of it. A new op starts with its torch spec."""
    chain = [b for b in REGISTRY.get(op, []) if b.name != backend.name]
    if backend.name == "torch":
        chain.append(backend)
    else:
        chain.insert(len(chain) - 1 if chain and chain[-1].name == "torch" else len(chain), backend)
    REGISTRY[op] = chain


def requested() -> str:
    return os.environ.get("CNR_FAST_BACKEND", "auto").strip().lower() or "auto"


def choose(op: str, *args, **kwargs) -> tuple[Backend, dict[str, list[str]]]:
    """Pick the backend for this call; also return why each skipped backend was skipped."""
    want = requested()
    reasons: dict[str, list[str]] = {}
    backends = REGISTRY[op]
    if want != "auto":
        named = [b for b in backends if b.name == want]
        if not named:
            raise BackendError(
                f"CNR_FAST_BACKEND={want!r} has no implementation of op {op!r}; "
                f"available: {[b.name for b in backends]}; unset CNR_FAST_BACKEND for automatic choice"
            )
        why = named[0].not_supported_reasons(*args, **kwargs)
        if why:
            raise BackendError(f"CNR_FAST_BACKEND={want!r} cannot run {op!r}: {'; '.join(why)}")
        return named[0], reasons
    for b in backends:
        why = b.not_supported_reasons(*args, **kwargs)
        if not why:
            return b, reasons
        reasons[b.name] = why
    raise BackendError(f"no backend can run {op!r}: {reasons}")  # unreachable: the torch spec always runs


def call(op: str, *args, **kwargs):
    backend, _ = choose(op, *args, **kwargs)
    return backend.fn(*args, **kwargs)


def _triton_reasons(op: str) -> Callable[..., list[str]]:
    def not_supported_reasons(*args, **kwargs) -> list[str]:
        from ._triton import reasons  # triton-free; the op module (which imports triton) loads only if chosen

        return reasons(op, *args, **kwargs)

    not_supported_reasons.__name__ = f"triton_{op}_reasons"
    return not_supported_reasons


# Triton kernels, one op a file under _triton/, each declared there with its check (`_triton.OPS`):
# CUDA tensors automatically; CPU tensors only under TRITON_INTERPRET=1 *and* CNR_FAST_BACKEND=triton
# (the interpreter is a test tool, never an automatic choice). _triton's __init__ imports no triton.
from ._triton import OPS as _TRITON_OPS  # noqa: E402

for _op, (_target, _) in _TRITON_OPS.items():
    register(_op, Backend("triton", _target, _triton_reasons(_op)))
del _op, _target


# Backends declared beside their kernels register themselves when their module is imported
# (ops/__init__.py imports them): ops/cka.py adds the native batched CKA (cka_matrix) and the native
# single-pair linear_cka. This module imports none of them.


def describe() -> dict[str, dict]:
    """Per op: the backend a call would get on this machine and why each other one would not run.

    Checks the environment only (each backend's not_supported_reasons() with no arguments), so
    "chosen" is the choice for tensors on the best device here (CUDA if present); CPU tensors still
    get the torch spec unless CNR_FAST_BACKEND says otherwise. For `cnr-fast doctor`.
    Returns {op: {"chosen": name or None, "requested": CNR_FAST_BACKEND or "auto",
    "reasons": {backend: [reasons]}}}; "chosen" is None when the requested backend cannot run.
    """
    want = requested()
    out: dict[str, dict] = {}
    for op, backends in REGISTRY.items():
        reasons: dict[str, list[str]] = {}
        for b in backends:
            try:
                reasons[b.name] = list(b.not_supported_reasons())
            except Exception as e:  # noqa: BLE001  (a plug-in whose check needs arguments)
                reasons[b.name] = [f"cannot check without arguments ({type(e).__name__}: {e})"]
        if want == "auto":
            chosen = next((b.name for b in backends if not reasons[b.name]), None)
        else:
            chosen = want if want in reasons and not reasons[want] else None
        out[op] = {"chosen": chosen, "requested": want, "reasons": reasons}
    return out


__all__ = ["REGISTRY", "Backend", "BackendError", "always", "call", "choose", "describe", "register", "spec"]
