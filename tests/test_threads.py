"""--threads N|auto (cnr_fast/threads.py), --reset-lr / --baseline-lr, and the choice in provenance."""

import subprocess
import sys
import time

import pytest
import torch

from cnr_fast import threads
from cnr_fast.cli.args import config_from_args
from cnr_fast.cli import build_parser
from cnr_fast.errors import UserError


def test_parse_takes_a_count_or_auto_and_refuses_the_rest():
    assert threads.parse("3") == 3 and threads.parse(None) == "auto" and threads.parse("AUTO") == "auto"
    for bad in ("0", "-2", "two"):
        with pytest.raises(UserError, match="at least 1, or auto"):
            threads.parse(bad)


def test_explicit_count_is_set_and_recorded(monkeypatch):
    before = torch.get_num_threads()
    try:
        got = threads.apply("1")
        assert got == {"threads": 1, "policy": "--threads"} and torch.get_num_threads() == 1
        from cnr_fast.provenance import provenance

        prov = provenance()
        assert prov["torch_threads"] == 1 and prov["threads_policy"] == "--threads"
    finally:
        torch.set_num_threads(before)


def test_auto_sees_a_busy_neighbour():
    """auto, against /proc/stat read independently: with one spinning process beside it, the cores it
    leaves free are one fewer than with none (on a machine of at least 2 cores)."""
    if threads.busy_cores() is None or threads.cores() < 2:
        pytest.skip("needs /proc/stat and 2 cores")
    spin = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(1.0)
        busy = threads.busy_cores(0.5)
        n, why = threads.auto_threads()
    finally:
        spin.kill()
        spin.wait()
    assert busy >= 0.7, busy  # the spinner is seen
    assert n <= threads.cores() - 1 and "busy" in why


def test_omp_num_threads_wins_over_auto(monkeypatch):
    before = torch.get_num_threads()
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    try:
        assert threads.apply(None)["policy"] == "OMP_NUM_THREADS"
    finally:
        torch.set_num_threads(before)


def test_step_size_flags_set_a_value_or_the_search():
    p = build_parser()
    cfg = config_from_args(p.parse_args(["unlearn", "--reset-lr", "1e-3", "--baseline-lr", "3e-4"]))
    assert cfg.reset.lr == 1e-3 and cfg.baseline.lr == 3e-4
    cfg = config_from_args(p.parse_args(["unlearn", "--reset-lr", "search"]))
    assert cfg.reset.lr is None
    for verb in ("unlearn", "audit", "compare", "train", "doctor"):
        assert "--threads" in p._subparsers._group_actions[0].choices[verb].format_help()
