"""Resumable `cnr-fast unlearn` (issue #10): SIGKILL inside the GAN, the reset and the audit, rerun the
same command, and get the uninterrupted run's results.json metrics; a finished run is a no-op,
--restart redoes it, Ctrl-C exits 130 with no half-written file and resumes.

The CLI runs as a subprocess; CNR_FAST_TEST_KILL_AT (a test hook, see cnr_fast.resume) makes it kill
itself right after the named unit of work is saved. One model cache for the module (the original is
trained once). Measured: resumed and uninterrupted metrics are bit-identical on CPU, so they are
compared with ==.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

TINY = ["--dataset", "digits", "--image-size", "16", "--train-epochs", "1", "--gan-epochs", "2", "--synth-steps", "3",
        "--synth-batch", "8", "--reset-epochs", "2", "--stabilize-epochs", "1", "--quiet"]
AUDIT = ["--audit", "fast", "--retrained", "off"]
RESET = "lr=0.0001-"  # the state-unit prefix of the reset's first candidate step size (tuning.ADAM_LR_GRID)
NO_AUDIT = ["--audit", "off"]


def _cli(cache, out, extra, kill=None, restart=False):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("CNR_FAST_TEST_KILL_AT", None)
    if kill:
        env["CNR_FAST_TEST_KILL_AT"] = kill
    argv = [sys.executable, "-m", "cnr_fast.cli", "unlearn", "--cache-dir", cache, "--out", str(out), *TINY, *extra]
    if restart:
        argv.append("--restart")
    # SIGINT back to its default in the child: a pytest-xdist worker ignores it, and an ignored SIGINT is
    # inherited (Python then installs no KeyboardInterrupt handler, as for a shell's background job)
    return subprocess.run(argv, check=False, env=env, capture_output=True, text=True, timeout=300,
                          preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def _metrics(out):
    return json.loads((out / "results.json").read_text())["metrics"]


def _state(out):
    return out.parent / f"{out.name}.state"


def _no_temporaries(*folders):
    for d in folders:
        if d.exists():
            assert not [p.name for p in d.rglob("*") if p.name.endswith(".tmp") or ".staging-" in p.name], d


@pytest.fixture(scope="module")
def reference(cache, tmp_path_factory):
    """Uninterrupted runs, with and without the audit."""
    base = tmp_path_factory.mktemp("ref")
    out = {}
    for name, extra in (("audit", AUDIT), ("plain", NO_AUDIT)):
        r = _cli(cache, base / name, extra)
        assert r.returncode == 0, r.stderr
        assert not _state(base / name).exists()  # removed once the run directory is complete
        out[name] = base / name
    return out


def test_killed_in_gan_reset_and_audit_resumes_to_the_same_numbers(cache, reference, tmp_path):
    out = tmp_path / "run"
    for point in ("gan:1", "reset:1", "audit:original"):
        r = _cli(cache, out, AUDIT, kill=point)
        assert r.returncode == -9, (point, r.returncode, r.stderr[-2000:])
        assert not out.exists() and _state(out).is_dir(), point
    units = sorted(p.name for p in _state(out).iterdir())
    # the reset's step size is chosen on validation: each candidate keeps its own units (RESET = the first)
    assert {"run.json", "detect.pt", "gan-2.pt", "latents-2.pt", f"{RESET}reset.pt", f"{RESET}stabilise.pt",
            "audit-original.pt"} <= set(units), units
    r = _cli(cache, out, AUDIT)
    assert r.returncode == 0, r.stderr
    resumed = json.loads((out / "results.json").read_text())
    assert "audit-original" in resumed["resumed_entries"] and f"{RESET}stabilise" in resumed["resumed_entries"]
    assert resumed["metrics"] == _metrics(reference["audit"])  # bit-identical (CPU, one thread, fixed seed)
    assert not _state(out).exists()
    _no_temporaries(out, tmp_path)
    assert (out / "report.md").is_file() and (out / "model.pt").is_file()


def test_finished_run_is_a_noop_and_restart_redoes_it(cache, reference):
    out = reference["plain"]
    before = (out / "results.json").read_bytes()
    r = _cli(cache, out, NO_AUDIT)
    assert r.returncode == 0 and "nothing to do" in r.stderr, r.stderr
    assert (out / "results.json").read_bytes() == before
    r = _cli(cache, out, NO_AUDIT, restart=True)
    assert r.returncode == 0, r.stderr
    after = json.loads((out / "results.json").read_text())
    assert (out / "results.json").read_bytes() != before  # written again (timings differ) ...
    assert after["metrics"] == json.loads(before)["metrics"] and after["resumed_entries"] == []  # ... same numbers
    assert not _state(out).exists()


def test_ctrl_c_exits_130_leaves_no_half_written_file_and_resumes(cache, reference, tmp_path):
    out = tmp_path / "run"
    r = _cli(cache, out, NO_AUDIT, kill="reset:1:int")
    assert r.returncode == 130, r.stderr
    assert "run the same command again to resume" in r.stderr
    assert not out.exists() and (_state(out) / f"{RESET}reset.pt").is_file()
    _no_temporaries(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.state"]
    # another command on the same --out is refused; the interrupted run's state is not discarded
    r = _cli(cache, out, [*NO_AUDIT, "--synth-steps", "4"])
    assert r.returncode == 2 and "holds the state of another run (differs in: config)" in r.stderr, r.stderr
    assert (_state(out) / f"{RESET}reset.pt").is_file()
    r = _cli(cache, out, NO_AUDIT)
    assert r.returncode == 0, r.stderr
    assert _metrics(out) == _metrics(reference["plain"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]

