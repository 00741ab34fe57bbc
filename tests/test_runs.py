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
