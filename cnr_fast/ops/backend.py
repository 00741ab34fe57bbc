"""One dispatch seam for every op: torch reference (always), fast backends when they can run.

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

from . import reference


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


def _always(*_a, **_k) -> list[str]:
    return []


# op name -> backends in order of preference (fastest first, reference last)
REGISTRY: dict[str, list[Backend]] = {
    op: [Backend("reference", f"cnr_fast.ops.reference:{op}", _always)]
    for op in ("class_sums", "selectivity_topk", "tv_loss", "selective_loss", "linear_cka")
}


def register(op: str, backend: Backend) -> None:
    """Add a backend in front of the reference (other pipelines may plug in their own)."""
    REGISTRY[op] = [b for b in REGISTRY[op] if b.name != backend.name]
    REGISTRY[op].insert(len(REGISTRY[op]) - 1, backend)


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
    raise BackendError(f"no backend can run {op!r}: {reasons}")  # unreachable: reference always runs


def call(op: str, *args, **kwargs):
    backend, _ = choose(op, *args, **kwargs)
    return backend.fn(*args, **kwargs)


__all__ = ["Backend", "BackendError", "REGISTRY", "register", "choose", "call", "reference"]
