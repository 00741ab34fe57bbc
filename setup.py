"""Native extension build only; metadata lives in pyproject.toml.

Builds cnr_fast._C from csrc/ (batched linear CKA) with torch.utils.cpp_extension:

* by default a C++ CPU extension (OpenMP);
* with CUDA (csrc/cka/cuda/*.cu, -DCNR_FAST_WITH_CUDA) when nvcc and a CUDA build of torch are present
  and either CNR_FAST_CUDA=1 or (CNR_FAST_CUDA unset and torch.cuda.is_available()). So a GPU box
  builds CUDA by itself, a CPU box does not spend ~3 min in nvcc on every `pip install -e .`;
  CNR_FAST_CUDA=0 forces the CPU build. Without a visible GPU TORCH_CUDA_ARCH_LIST defaults to 9.0
  (H100 / H200) and CUDA_HOME to the toolkit that holds nvcc;
* CNR_FAST_SKIP_NATIVE=1: pure-Python install.

A build that fails degrades instead of failing the install: CUDA -> CPU with OpenMP -> CPU without
OpenMP -> pure Python, each step with a warning (cnr_fast._native warns again at run time).
CNR_FAST_STRICT_BUILD=1 makes any failure fatal (CI uses it to catch a broken build).
"""

from __future__ import annotations

import os
import shutil
import sys
import warnings

from setuptools import setup

ROOT = os.path.dirname(os.path.abspath(__file__))
CSRC = "csrc"
CPU_SOURCES = [os.path.join(CSRC, "bindings.cpp"), os.path.join(CSRC, "cka", "cpu", "cka_cpu.cpp")]
CUDA_SOURCES = [os.path.join(CSRC, "cka", "cuda", "cka_cuda.cu")]


def _env_flag(name: str) -> str | None:
    v = os.environ.get(name)
    return None if v is None or v.strip() == "" else v.strip().lower()


STRICT = _env_flag("CNR_FAST_STRICT_BUILD") in ("1", "true", "yes")


def _say(msg: str) -> None:
    # pip shows build output only with -v; the warning goes to stderr either way.
    print(f"cnr-fast setup.py: {msg}", file=sys.stderr)


def _warn(msg: str) -> None:
    _say("WARNING: " + msg)
    warnings.warn(msg, stacklevel=2)


def _find_cuda_home() -> str | None:
    """CUDA toolkit root (the folder above nvcc's bin/) that has the runtime headers.

    /usr/local/bin/nvcc may be a wrapper script, which makes torch's own guess (dirname of dirname of
    `which nvcc`) /usr/local and the link fail with "cannot find -lcudart"; check each candidate.
    """
    for var in ("CUDA_HOME", "CUDA_PATH"):
        if os.environ.get(var):
            return os.environ[var]
    cands = []
    nvcc = shutil.which("nvcc")
    if nvcc:
        cands += [os.path.dirname(os.path.dirname(os.path.realpath(nvcc))), os.path.dirname(os.path.dirname(nvcc))]
    cands += ["/usr/local/cuda"]
    for c in cands:
        if os.path.exists(os.path.join(c, "bin", "nvcc")) and os.path.exists(os.path.join(c, "include", "cuda_runtime.h")):
            return c
    return None


def _nvidia_wheel_includes(cuda_home: str | None) -> list[str]:
    """Header dirs of the nvidia-* pip wheels (site-packages/nvidia/*/include), for a minimal toolkit.

    torch's CUDA headers include cuBLAS / cuSPARSE headers; a toolkit with only nvcc and cudart (as on
    the dev machines) lacks them, while the wheels torch depends on ship them. Not used when the
    toolkit has its own (no mixing of header versions on a full install).
    """
    if cuda_home and os.path.exists(os.path.join(cuda_home, "include", "cusparse.h")):
        return []
    try:
        import nvidia
    except ImportError:
        return []
    import glob

    return sorted(p for root in nvidia.__path__ for p in glob.glob(os.path.join(root, "*", "include")) if os.path.isdir(p))


def _native_setup() -> dict:
    """ext_modules and cmdclass for setup(), or {} for a pure-Python install."""
    if _env_flag("CNR_FAST_SKIP_NATIVE") in ("1", "true", "yes"):
        _say("CNR_FAST_SKIP_NATIVE=1: pure-Python install, no cnr_fast._C")
        return {}
    want_cuda = _env_flag("CNR_FAST_CUDA")
    cuda_home = _find_cuda_home()
    if cuda_home and want_cuda != "0":
        os.environ.setdefault("CUDA_HOME", cuda_home)  # read by torch.utils.cpp_extension at import
    try:
        import torch
        from torch.utils.cpp_extension import BuildExtension, CppExtension, CUDAExtension
    except Exception as e:  # e.g. an isolated build env without torch: use --no-build-isolation
        if STRICT:
            raise
        _warn(f"cannot import torch / torch.utils.cpp_extension ({e}); installing pure Python without cnr_fast._C "
              "(install with `pip install --no-build-isolation` to build it)")
        return {}

    build_cuda = False
    if want_cuda == "0":
        _say("CNR_FAST_CUDA=0: CPU-only extension")
    elif torch.version.cuda is None or cuda_home is None:
        if want_cuda == "1":
            _warn(f"CNR_FAST_CUDA=1 but torch.version.cuda={torch.version.cuda!r}, CUDA_HOME={cuda_home!r}: "
                  "building the CPU-only extension")
    elif want_cuda == "1":
        build_cuda = True
    else:
        build_cuda = torch.cuda.is_available()
        if not build_cuda:
            _say("no GPU visible: CPU-only extension (CNR_FAST_CUDA=1 builds the CUDA part anyway)")
    if build_cuda and not os.environ.get("TORCH_CUDA_ARCH_LIST") and not torch.cuda.is_available():
        # torch derives the arch list from the visible GPUs; with none it fails with IndexError.
        os.environ["TORCH_CUDA_ARCH_LIST"] = "9.0"
        _say("TORCH_CUDA_ARCH_LIST unset and no GPU visible: using 9.0 (H100 / H200)")

    include_dirs = [os.path.join(ROOT, CSRC)]
    cxx_flags = ["-O3"]  # torch adds -std=c++17 / c++20 as its headers need
    variants: list[tuple[str, object]] = []
    if build_cuda:
        try:
            variants.append((
                "CUDA",
                CUDAExtension(
                    "cnr_fast._C",
                    CPU_SOURCES + CUDA_SOURCES,
                    include_dirs=include_dirs + _nvidia_wheel_includes(cuda_home),
                    define_macros=[("CNR_FAST_WITH_CUDA", "1")],
                    extra_compile_args={"cxx": cxx_flags + ["-fopenmp"], "nvcc": ["-O3", "-lineinfo"]},
                    extra_link_args=["-fopenmp"],
                ),
            ))
        except Exception as e:  # e.g. torch cannot find the CUDA libraries
            if STRICT:
                raise
            _warn(f"cannot set up the CUDA extension ({type(e).__name__}: {e}); building the CPU one")
    variants.append((
        "CPU+OpenMP",
        CppExtension("cnr_fast._C", CPU_SOURCES, include_dirs=include_dirs,
                     extra_compile_args={"cxx": cxx_flags + ["-fopenmp"]}, extra_link_args=["-fopenmp"]),
    ))
    variants.append((
        "CPU",
        CppExtension("cnr_fast._C", CPU_SOURCES, include_dirs=include_dirs,
                     extra_compile_args={"cxx": cxx_flags + ["-Wno-unknown-pragmas"]}),
    ))

    class Build(BuildExtension):
        """BuildExtension that walks down the variants when a build fails, then gives up quietly."""

        def build_extensions(self):
            last = None
            finalized = self.extensions[0]
            for i, (label, variant) in enumerate(variants):
                # setuptools' finalize_options saw only the first variant: copy what it set on it.
                for attr in ("_full_name", "_links_to_dynamic", "_needs_stub", "_file_name"):
                    if hasattr(finalized, attr):
                        setattr(variant, attr, getattr(finalized, attr))
                # One variant at a time through the whole of BuildExtension.build_extensions, which
                # adds torch's own flags (extension name, C++ ABI, -std) to the variant it builds.
                self.extensions = [variant]
                try:
                    _say(f"building cnr_fast._C ({label})")
                    super().build_extensions()
                    _say(f"built cnr_fast._C ({label})")
                    return
                except Exception as e:
                    last = e
                    if STRICT:
                        raise
                    nxt = variants[i + 1][0] if i + 1 < len(variants) else "pure Python"
                    _warn(f"building cnr_fast._C ({label}) failed: {type(e).__name__}: {e}; trying {nxt}")
            # Nothing built: drop the extension so editable installs do not look for its file, and
            # remove an in-tree library left by an earlier build: it would load and run stale code.
            self.extensions = []
            import sysconfig

            stale = os.path.join(ROOT, "cnr_fast", "_C" + (sysconfig.get_config_var("EXT_SUFFIX") or ".so"))
            if os.path.exists(stale):
                os.remove(stale)
                _warn(f"removed the stale {stale} of an earlier build")
            _warn(f"cnr_fast._C not built ({last}); cnr_fast runs on its pure-torch fallbacks")

    # The ninja wheel puts its binary next to the venv's python, which is not on PATH when pip is run
    # as .venv/bin/pip without activating the venv; without ninja torch builds serially.
    bindir = os.path.dirname(sys.executable)
    if os.path.exists(os.path.join(bindir, "ninja")) and bindir not in os.environ.get("PATH", "").split(os.pathsep):
        os.environ["PATH"] = bindir + os.pathsep + os.environ.get("PATH", "")
    return {"ext_modules": [variants[0][1]], "cmdclass": {"build_ext": Build}}


setup(**_native_setup())
