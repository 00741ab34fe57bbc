"""The one place that loads the native library cnr_fast._C (built by setup.py from csrc/).

Nothing here runs at `import cnr_fast`: the first call to `lib()` / `available()` / `info()` tries
the import once and remembers the outcome. A library that is missing or unusable (not built, built
for another torch, CNR_FAST_DISABLE_NATIVE=1) gives None plus a reason, and one warning per process
(none when disabled on purpose); callers then use the pure-torch paths.
"""

from __future__ import annotations

import importlib
import os
import threading
import warnings
from dataclasses import dataclass, field

_MODULE = "cnr_fast._C"
# Runtime switch (the build-time one is CNR_FAST_SKIP_NATIVE in setup.py).
DISABLE_ENV = "CNR_FAST_DISABLE_NATIVE"


@dataclass
class NativeState:
    module: object | None = None
    error: str | None = None  # why it is not usable; None when loaded
    disabled: bool = False  # CNR_FAST_DISABLE_NATIVE=1
    meta: dict = field(default_factory=dict)


_lock = threading.Lock()
_state: NativeState | None = None
_warned = False


def _torch_release(v: str) -> tuple[int, ...]:
    return tuple(int(p) for p in v.split("+")[0].split(".")[:2] if p.isdigit())


def _load() -> NativeState:
    if os.environ.get(DISABLE_ENV, "").strip().lower() in ("1", "true", "yes"):
        return NativeState(error=f"disabled by {DISABLE_ENV}=1", disabled=True)
    try:
        mod = importlib.import_module(_MODULE)
    except Exception as e:  # noqa: BLE001 - ImportError, undefined symbols of another torch, OSError ...
        return NativeState(error=f"cannot import {_MODULE}: {type(e).__name__}: {e} "
                                 "(build it with `pip install --no-build-isolation -e .`; see setup.py)")
    import torch

    built_for = getattr(mod, "torch_version", "?")
    meta = {
        "path": getattr(mod, "__file__", None),
        "has_cuda": bool(getattr(mod, "has_cuda", False)),
        "openmp": bool(getattr(mod, "openmp", False)),
        "omp_max_threads": int(mod.omp_max_threads()) if hasattr(mod, "omp_max_threads") else 1,
        "torch_built": built_for,
        "torch_runtime": torch.__version__,
    }
    if _torch_release(built_for) != _torch_release(torch.__version__):
        # The C++ ABI of torch changes between releases: a stale build may load and then crash.
        return NativeState(error=f"{_MODULE} was built for torch {built_for}, this is torch {torch.__version__}: "
                                 "rebuild it (pip install --no-build-isolation -e .)", meta=meta)
    return NativeState(module=mod, meta=meta)


def state() -> NativeState:
    global _state
    if _state is None:
        with _lock:
            if _state is None:
                _state = _load()
    return _state


def lib(warn: bool = True):
    """The loaded cnr_fast._C module, or None (with one warning per process saying why)."""
    global _warned
    s = state()
    if s.module is None and warn and not s.disabled and not _warned:
        _warned = True
        warnings.warn(f"cnr-fast native library unavailable, using pure-torch fallbacks: {s.error}",
                      RuntimeWarning, stacklevel=2)
    return s.module


def available() -> bool:
    return state().module is not None


def load_error() -> str | None:
    return state().error


def has_cuda() -> bool:
    s = state()
    return s.module is not None and bool(s.meta.get("has_cuda"))


def info() -> dict:
    """Build metadata for `cnr-fast doctor` and bench JSON: available, error, has_cuda, openmp, threads, paths."""
    s = state()
    return {"available": s.module is not None, "error": s.error, **s.meta}


def reasons(device) -> list[str]:
    """Why the native library cannot run on `device` ([] = it can). Does not warn."""
    s = state()
    if s.module is None:
        return [f"native library: {s.error}"]
    dev_type = getattr(device, "type", str(device).split(":")[0])
    if dev_type == "cuda" and not s.meta.get("has_cuda"):
        return ["native library built without CUDA (rebuild with CNR_FAST_CUDA=1 on a machine with nvcc)"]
    if dev_type not in ("cpu", "cuda"):
        return [f"native library has no {dev_type} implementation"]
    return []


def require():
    """The module, or RuntimeError with the load error (for explicit CNR_FAST_BACKEND=native and CI)."""
    s = state()
    if s.module is None:
        raise RuntimeError(f"cnr-fast native library required but unavailable: {s.error}")
    return s.module


def _reset_for_tests() -> None:
    global _state, _warned
    with _lock:
        _state = None
        _warned = False


__all__ = ["DISABLE_ENV", "available", "has_cuda", "info", "lib", "load_error", "reasons", "require", "state"]
