"""The headline command, `cnr-fast unlearn --arch vit_b16 --amp`, end to end on the CPU (issue 30).

A tiny budget on a tiny image folder of the test's own making (3 classes of 16 RGB images at 32 px: a
bright square in a class-specific corner over noise), so the full ViT-B/16 (86M parameters, 12 blocks,
patch 16) runs through every stage: training the original, detection at its taps, the DCGAN and latent
optimisation, the reset, and the audit with the ViT attention-head table. Where the CPU has bf16
instructions --amp is bf16 autocast, elsewhere fp32 with a warning (`cnr-fast doctor` says which); the
run records it either way. About a minute at one thread. The GPU suite runs the same command at a GPU
budget (bench/gpu_suite.sh, step vit_b16).
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from cnr_fast.cli import main


@pytest.fixture
def folder(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    for c in range(3):
        d = tmp_path / "data" / f"k{c}"
        d.mkdir(parents=True)
        for i in range(16):
            im = rng.integers(0, 60, size=(32, 32, 3), dtype=np.uint8)
            y, x = (c // 2) * 16, (c % 2) * 16
            im[y:y + 16, x:x + 16, c] = 200
            Image.fromarray(im).save(d / f"{i}.png")
    return tmp_path / "data"


def test_unlearn_vit_b16_amp_end_to_end(folder, tmp_path, capsys):
    out = tmp_path / "out"
    rc = main(["unlearn", "--arch", "vit_b16", "--amp", "--dataset", f"imagefolder:{folder}", "--image-size", "32",
               "--forget", "k0", "--train-epochs", "1", "--gan-epochs", "1", "--synth-steps", "2", "--reset-epochs", "1",
               "--stabilize-epochs", "0", "--reset-lr", "1e-4", "--audit", "fast", "--retrained", "off",
               "--threads", "1", "--cache-dir", str(tmp_path / "cache"), "--out", str(out)])
    printed = capsys.readouterr()
    assert rc == 0, printed.err[-2000:]
    r = json.loads((out / "results.json").read_text())
    assert r["arch"] == "vit_b16" and r["width"] is None  # no width that means nothing for a ViT
    assert "/ vit_b16, forget" in printed.out and "(width" not in printed.out
    assert "(width" not in (out / "report.md").read_text()
    # every stage ran on the ViT: detection at its taps, synthesis, reset, the audit
    assert {"detect", "synthesize", "reset", "audit"} <= set(r["timings_s"])
    assert set(r["details"]["detect"]) == {"L1", "L2", "L3", "L4"}  # the ViT's taps (blocks 3, 6, 9, 12)
    assert set(r["metrics"]["unlearned"]) >= {"forget_acc", "retain_acc"}
    for name in ("original", "unlearned"):
        assert 0.0 <= r["metrics"][name]["forget_acc"] <= 1.0
    # the ViT attention-head audit (Table 6) on the original and the unlearned model, per head
    heads = r["audit"]["attention_heads"]
    assert heads["heads"] == 12 and heads["n_layers"] == 12
    assert {"original", "unlearned"} <= set(heads["models"])
    assert len(heads["models"]["original"]["per_head"]) == 12
    from cnr_fast.hardware import cpu_amp_allowed

    assert r["precision"] == ("bf16 autocast" if cpu_amp_allowed() else "fp32")
