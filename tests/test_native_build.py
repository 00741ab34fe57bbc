"""Build checks of csrc/ that need no GPU: the torch-free core through CMake + ctest, and (slow) the
CUDA sources through nvcc, compile only. The Python extension itself is built by setup.py; its
behaviour is tested in tests/ops/test_cka_native.py."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(cmd, cwd=None, timeout=600, env=None):
    out = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env, check=False)
    assert out.returncode == 0, f"{' '.join(map(str, cmd))} failed ({out.returncode}):\n{out.stdout[-4000:]}\n{out.stderr[-4000:]}"
    return out


@pytest.mark.skipif(shutil.which("cmake") is None or shutil.which("ctest") is None, reason="cmake/ctest not on PATH")
def test_cmake_ctest_core(tmp_path):
    build = tmp_path / "build"
    _run(["cmake", "-S", str(ROOT), "-B", str(build), "-DCMAKE_BUILD_TYPE=Release", "-DCNR_FAST_WITH_CUDA=OFF"])
    _run(["cmake", "--build", str(build), "-j", "2"])
    out = _run(["ctest", "--test-dir", str(build), "--output-on-failure"], cwd=build)
    assert "100% tests passed" in out.stdout


def _cuda_home() -> str | None:
    """Same search as setup.py: the toolkit root that holds bin/nvcc and include/cuda_runtime.h."""
    for var in ("CUDA_HOME", "CUDA_PATH"):
        if os.environ.get(var):
            return os.environ[var]
    nvcc = shutil.which("nvcc")
    cands = [os.path.dirname(os.path.dirname(os.path.realpath(nvcc))), os.path.dirname(os.path.dirname(nvcc))] if nvcc else []
    for c in cands + ["/usr/local/cuda"]:
        if os.path.exists(os.path.join(c, "bin", "nvcc")) and os.path.exists(os.path.join(c, "include", "cuda_runtime.h")):
            return c
    return None


def _nvidia_wheel_includes() -> list[str]:
    """Same as setup.py: include dirs of the nvidia-* pip wheels (site-packages/nvidia/*/include)."""
    try:
        import nvidia
    except ImportError:
        return []
    return sorted(str(p) for root in nvidia.__path__ for p in Path(root).glob("*/include") if p.is_dir())


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc not on PATH")
def test_nvcc_compiles_cka_cuda(tmp_path):
    """nvcc -c csrc/cka/cuda/cka_cuda.cu with torch's headers and flags (sm_90), as setup.py's CUDA build
    would; the extension itself only gets built and run on a GPU machine (bench/gpu_suite.sh)."""
    import torch
    import torch.utils.cpp_extension as ce

    if torch.version.cuda is None:
        pytest.skip("torch is a CPU-only build: no CUDA headers to compile against")
    src = Path(ce.__file__).read_text()
    std = "-std=c++20" if "'-std=c++20'" in src else "-std=c++17"  # what torch's own extension builds use
    abi = int(torch._C._GLIBCXX_USE_CXX11_ABI)
    torch_inc = [os.path.join(os.path.dirname(torch.__file__), "include"),
                 os.path.join(os.path.dirname(torch.__file__), "include", "torch", "csrc", "api", "include")]
    home = _cuda_home()
    if home and not os.path.exists(os.path.join(home, "include", "cusparse.h")):
        torch_inc += _nvidia_wheel_includes()  # minimal toolkit: cuBLAS / cuSPARSE headers from the pip wheels
    arch = os.environ.get("CNR_FAST_TEST_CUDA_ARCH", "90")
    cmd = ["nvcc", "-c", str(ROOT / "csrc/cka/cuda/cka_cuda.cu"), "-o", str(tmp_path / "cka_cuda.o"),
           "-I", str(ROOT / "csrc"), *[f"-I{p}" for p in torch_inc],
           "-DTORCH_API_INCLUDE_EXTENSION_H", "-DTORCH_EXTENSION_NAME=_C", f"-D_GLIBCXX_USE_CXX11_ABI={abi}",
           "-DCNR_FAST_WITH_CUDA=1", *ce.COMMON_NVCC_FLAGS, "--compiler-options", "-fPIC", std, "-O3",
           f"-gencode=arch=compute_{arch},code=sm_{arch}"]
    t0 = time.perf_counter()
    _run(cmd)
    dt = time.perf_counter() - t0
    assert (tmp_path / "cka_cuda.o").stat().st_size > 0
    print(f"\nnvcc -c cka_cuda.cu: {dt:.1f} s", file=sys.stderr)


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("cmake") is None or shutil.which("nvcc") is None, reason="cmake or nvcc missing")
def test_cmake_cuda_kernels(tmp_path):
    """CMake with check_language(CUDA): builds the torch-free kernel test; ctest runs it on a GPU and
    reports it skipped (exit 77) without one."""
    build = tmp_path / "build"
    env = dict(os.environ)
    home = _cuda_home()
    if home:
        env.setdefault("CUDACXX", os.path.join(home, "bin", "nvcc"))
    _run(["cmake", "-S", str(ROOT), "-B", str(build), "-DCMAKE_BUILD_TYPE=Release", "-DCNR_FAST_WITH_CUDA=ON"], env=env)
    _run(["cmake", "--build", str(build), "-j", "2"], env=env)
    assert (build / "test_cka_cuda").exists(), "CUDA compiler not found by CMake"
    out = subprocess.run(["ctest", "--test-dir", str(build), "--output-on-failure"], cwd=build, capture_output=True,
                         text=True, timeout=600, check=False)
    assert out.returncode == 0, out.stdout + out.stderr
