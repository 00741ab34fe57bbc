"""scripts/install.sh: a second run on an installed, unchanged checkout takes seconds and says so."""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "install.sh"


def _env():
    return {**os.environ, "CNR_FAST_VENV": sys.prefix}


def test_second_install_is_a_quick_no_op():
    if not (Path(sys.prefix) / ".cnr-fast-install-stamp").is_file():
        pytest.skip("this venv was not made by scripts/install.sh")
    check = subprocess.run(["bash", str(SCRIPT), "--check"], capture_output=True, text=True, env=_env())
    if check.returncode != 0:
        pytest.skip("build inputs (csrc/, setup.py, ...) changed since the last install: " + check.stdout.strip())
    t0 = time.perf_counter()
    run = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, env=_env(), timeout=60)
    took = time.perf_counter() - t0
    assert run.returncode == 0, run.stderr
    assert "up to date" in run.stderr and took < 15


def test_check_sees_a_changed_build_input(tmp_path):
    # a venv whose stamp does not match the build inputs is reported as needing an install
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").symlink_to(sys.executable)
    (venv / ".cnr-fast-install-stamp").write_text("0" * 64 + "\n")
    run = subprocess.run(["bash", str(SCRIPT), "--check"], capture_output=True, text=True,
                         env={**os.environ, "CNR_FAST_VENV": str(venv)})
    assert run.returncode == 1 and "needs an install" in run.stdout
