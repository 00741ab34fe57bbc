"""Atomic outputs: a failure while writing leaves neither a partial file nor a temporary one."""

import os

import pytest

from cnr_fast import runs


def test_atomic_write_failure_leaves_nothing(tmp_path, monkeypatch):
    target = tmp_path / "results.json"
    target.write_text("old")

    def boom(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(runs.os, "replace", boom)
    with pytest.raises(OSError):
        runs.atomic_write_json(target, {"a": 1})
    assert target.read_text() == "old"  # the previous file is intact
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.json"]


def test_atomic_write_mode_and_content(tmp_path):
    p = tmp_path / "sub" / "x.json"
    runs.atomic_write_json(p, {"b": [1, 2]})
    assert p.read_text().strip().startswith("{") and '"b"' in p.read_text()
    assert (os.stat(p).st_mode & 0o777) == runs._FILE_MODE


def test_cache_dir_respects_xdg(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert runs.cache_dir() == tmp_path / "cnr-fast"
    assert runs.cache_dir("/x/y") == runs.Path("/x/y")


def test_json_outputs_are_strict_and_per_seed_nulls_read_back_as_nan(tmp_path):
    """A result's non-finite numbers (NaN, infinities; numpy and torch ones too) are written as null, so a strict
    parser (RFC 8259: no NaN) reads the file; read_result_json gives the per-seed values back as NaN and leaves
    every other null as it is; a file written with NaN literals (before) reads the same."""
    import json
    import math

    import numpy as np
    import torch

    def strict(text):
        return json.loads(text, parse_constant=lambda c: pytest.fail(f"non-strict JSON constant {c}"))

    obj = {"ci_low": float("nan"), "inf": [float("inf"), -float("inf"), 1.5], "np": np.array([np.nan, 2.0]),
           "f32": np.float32("nan"), "i64": np.int64(3), "t": torch.tensor([1.0, float("nan")]), "none": None,
           "path": runs.Path("/a/b"), "per_seed": [{"cnr": {"mia_acc": float("nan"), "forget_acc": 0.25}}],
           "rounds": [{"per_seed": [{"cnr": {"mia_acc": np.float64("nan")}}], "p": float("nan")}]}
    p = tmp_path / "r.json"
    runs.atomic_write_json(p, obj)
    got = strict(p.read_text())
    assert got == {"ci_low": None, "inf": [None, None, 1.5], "np": [None, 2.0], "f32": None, "i64": 3,
                   "t": [1.0, None], "none": None, "path": "/a/b",
                   "per_seed": [{"cnr": {"mia_acc": None, "forget_acc": 0.25}}],
                   "rounds": [{"per_seed": [{"cnr": {"mia_acc": None}}], "p": None}]}
    back = runs.read_result_json(p)
    assert math.isnan(back["per_seed"][0]["cnr"]["mia_acc"]) and back["per_seed"][0]["cnr"]["forget_acc"] == 0.25
    assert math.isnan(back["rounds"][0]["per_seed"][0]["cnr"]["mia_acc"])
    assert back["ci_low"] is None and back["rounds"][0]["p"] is None and back["none"] is None
    old = tmp_path / "old.json"
    old.write_text(json.dumps({"per_seed": [{"cnr": {"mia_acc": float("nan")}}], "x": 1}))  # NaN literal
    assert "NaN" in old.read_text() and math.isnan(runs.read_result_json(old)["per_seed"][0]["cnr"]["mia_acc"])
    with pytest.raises(TypeError, match="not JSON serialisable: object"):
        runs.atomic_write_json(tmp_path / "bad.json", {"x": object()})
    assert not (tmp_path / "bad.json").exists()


def test_a_checkpoint_cut_anywhere_is_named_truncated(tmp_path):
    """torch.save's zip archive cut short at any length: one line saying it is truncated (torch's own error at
    most lengths is '[Errno 22] Invalid argument'); the complete file loads."""
    import torch

    path = tmp_path / "full.pt"
    torch.save(torch.nn.Sequential(torch.nn.Conv2d(1, 8, 3), torch.nn.Linear(8, 4)).state_dict(), path)
    data = path.read_bytes()
    state, meta = runs.load_checkpoint(path)
    assert set(state) == {"0.weight", "0.bias", "1.weight", "1.bias"} and meta == {}
    for n in (100, len(data) // 2, len(data) * 9 // 10, len(data) - 10):
        cut = tmp_path / f"cut{n}.pt"
        cut.write_bytes(data[:n])
        with pytest.raises(runs.UserError, match="it is truncated or corrupt"):
            runs.load_checkpoint(cut)
