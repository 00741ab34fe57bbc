"""The bad-input matrix (issue #10): every bad input is exit 2, one line naming the problem and the fix,
every input file byte-identical afterwards, and no partial output directory.

One table, CASES: (id, verb, extra args, expected substring of the message, options). Args may use
{in} (a folder of input files made for the case), {ckpt} (a checkpoint trained once for the module),
{cache} (the module's model cache), {out} (the --out of the case). Options:
  files: a setup function name (see SETUP) that writes the case's input files under {in}
  env: environment variables; patch: a name in PATCHES (monkeypatches for disk full / NaN losses)
  out_exists: --out is an existing folder holding a file (its content must not change)
  root_skip: needs file permissions (root ignores them)

Decision, mixed grey and RGB images in an image folder: CONVERTED (every image becomes RGB, see
cnr_fast.data._load_imagefolder), so that is not bad input: test_imagefolder_mixed_grey_rgb_is_converted.
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from cnr_fast.cli import main

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = ["--train-epochs", "1", "--gan-epochs", "1", "--synth-steps", "3", "--synth-batch", "8",
        "--reset-epochs", "1", "--stabilize-epochs", "0", "--quiet", "--audit", "off"]
DIGITS = ["--dataset", "digits", "--image-size", "16"]
ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


# ------------------------------------------------------------------------------------------------
# module fixtures: one cache, one trained checkpoint


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    base = tmp_path_factory.mktemp("shared")
    cache = base / "cache"
    models = base / "models"
    assert main(["train", "--out", str(models), "--cache-dir", str(cache), *DIGITS, "--train-epochs", "1",
                 "--quiet"]) == 0
    return {"cache": cache, "ckpt": models / "original.pt"}


# ------------------------------------------------------------------------------------------------
# input files of a case


def _png(path: Path, mode="L", size=8, seed=0):
    from PIL import Image

    rng = np.random.default_rng(seed)
    shape = (size, size) if mode == "L" else (size, size, 3)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 255, shape, dtype=np.uint8), mode).save(path)


def _two_classes(d: Path, per_class=3):
    for c in ("a", "b"):
        for i in range(per_class):
            _png(d / c / f"{i}.png", seed=i)


def setup_empty_dir(d, sh):
    (d / "empty").mkdir()


def setup_junk_root(d, sh):
    (d / "root").mkdir()
    (d / "root" / "readme.txt").write_text("not a dataset\n")
    (d / "root" / "cifar-10-batches-py").mkdir()
    (d / "root" / "cifar-10-batches-py" / "data_batch_1").write_bytes(b"junk")


def setup_flat_images(d, sh):
    for i in range(4):
        _png(d / "img" / f"{i}.png", seed=i)


def setup_class_empty(d, sh):
    _two_classes(d / "img")
    (d / "img" / "c").mkdir()
    (d / "img" / "c" / "notes.txt").write_text("no images here\n")


def setup_corrupt_image(d, sh):
    _two_classes(d / "img")
    (d / "img" / "b" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00garbage" * 8)


def setup_unreadable_image(d, sh):
    _two_classes(d / "img")
    os.chmod(d / "img" / "a" / "0.png", 0)


def setup_zero_bytes(d, sh):
    (d / "m.pt").write_bytes(b"")


def setup_truncated(d, sh):
    data = sh["ckpt"].read_bytes()
    (d / "m.pt").write_bytes(data[: len(data) // 2])


class _Payload:
    """Pickles to a call of os.system: loading it unsafely would create the marker file."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def setup_pickled_code(d, sh):
    marker = d / "PWNED"
    state = torch.load(sh["ckpt"], weights_only=True)
    state["meta"]["note"] = _Payload(marker)
    torch.save(state, d / "m.pt")


def setup_text(d, sh):
    (d / "m.pt").write_text("these are not the weights you are looking for\n")


def setup_safetensors(d, sh):
    header = json.dumps({"fc.bias": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}).encode()
    (d / "m.safetensors").write_bytes(struct.pack("<Q", len(header)) + header + b"\x00" * 4)  # truncated


def setup_five_classes(d, sh):
    from cnr_fast.models import build_model
    from cnr_fast.runs import save_checkpoint

    model = build_model("resnet18", 5, 1, 16, 0.125)
    save_checkpoint(d / "m.pt", model, {"arch": "resnet18", "width": 0.125, "num_classes": 5, "in_channels": 1,
                                        "image_size": 16})


def setup_missing_keys(d, sh):
    state = torch.load(sh["ckpt"], weights_only=True)["state_dict"]
    del state["fc.bias"]
    torch.save(state, d / "m.pt")


def setup_unexpected_keys(d, sh):
    state = torch.load(sh["ckpt"], weights_only=True)["state_dict"]
    state["extra.weight"] = torch.zeros(3)
    torch.save(state, d / "m.pt")


def setup_a_file(d, sh):
    (d / "file.txt").write_text("I am a file\n")


def setup_parent_555(d, sh):
    (d / "locked").mkdir()
    os.chmod(d / "locked", 0o555)


def _config(obj_or_text):
    def setup(d, sh):
        text = obj_or_text if isinstance(obj_or_text, str) else json.dumps(obj_or_text)
        (d / "c.json").write_text(text)

    return setup


SETUP = {name[len("setup_"):]: fn for name, fn in globals().items() if name.startswith("setup_")}
SETUP.update({
    "cfg_invalid_json": _config('{"train": {"epochs": 1,}'),
    "cfg_unknown_key": _config({"train": {"epochz": 1}}),
    "cfg_wrong_type": _config({"train": {"epochs": "five"}}),
    "cfg_section_not_object": _config({"train": 5}),
    "cfg_bad_choice": _config({"reset": {"relabel": "never"}}),
    "cfg_negative_lr": _config({"reset": {"lr": -1e-4}}),
})


# ------------------------------------------------------------------------------------------------
# monkeypatches


def patch_disk_full(mp):
    """The second fsync reports a full disk (the first output file was written, the second cannot be)."""
    real, calls = os.fsync, []

    def fsync(fd):
        calls.append(fd)
        if len(calls) >= 2:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(fd)

    mp.setattr(os, "fsync", fsync)


def patch_nan_original(mp):
    import cnr_fast.train as T

    mp.setattr(T, "ce_loss", lambda model, batch: model(batch[0]).sum() * float("nan"))


def patch_nan_reset(mp):
    import cnr_fast.cnr.reset as R

    mp.setattr(R, "l2_pull", lambda model, theta0: torch.tensor(float("nan")))


def patch_nan_gan(mp):
    import cnr_fast.cnr.synthesize as S

    forward = S.Discriminator.forward
    mp.setattr(S.Discriminator, "forward", lambda self, x: forward(self, x) * float("nan"))


def patch_nan_latents(mp):
    import cnr_fast.cnr.synthesize as S

    real = S.unit_activations

    def nan_activations(model, x, taps):
        feats, logits = real(model, x, taps)
        return [f * float("nan") for f in feats], logits

    mp.setattr(S, "unit_activations", nan_activations)


PATCHES = {"disk_full": patch_disk_full, "nan_original": patch_nan_original, "nan_reset": patch_nan_reset,
           "nan_gan": patch_nan_gan, "nan_latents": patch_nan_latents}


# ------------------------------------------------------------------------------------------------
# the table

U = "unlearn"
CASES = [
    # unknown names
    ("method", U, ["--method", "magic"], "unknown method 'magic'; choose one of", {}),
    ("arch", U, ["--arch", "vgg16"], "unknown model 'vgg16'; choose one of", {}),
    ("dataset", U, ["--dataset", "imagenet"], "unknown dataset 'imagenet'; choose one of", {}),
    ("selection", U, ["--selection", "best"], "unknown selection 'best'; choose one of activation", {}),
    ("sign", U, ["--sign", "up"], "unknown sign 'up'; choose one of excite, paper", {}),
    ("taps", U, ["--taps", "L1,L9"], "['L9'] do not exist", {}),
    ("backend", U, [], "unknown backend 'bogus' in CNR_FAST_BACKEND", {"env": {"CNR_FAST_BACKEND": "bogus"}}),
    ("compare_methods", "compare", ["--methods", "cnr,magic", "--seeds", "1"], "unknown method(s) ['magic']", {}),
    # numbers
    ("train_epochs_0", U, ["--train-epochs", "0"], "train.epochs is 0, it must be at least 1", {}),
    ("train_epochs_neg", U, ["--train-epochs", "-3"], "train.epochs is -3, it must be at least 1", {}),
    ("train_epochs_text", U, ["--train-epochs", "three"], "--train-epochs: invalid int value: 'three'", {}),
    ("reset_epochs_neg", U, ["--reset-epochs", "-1"], "reset.epochs is -1", {}),
    ("gan_epochs_0", U, ["--gan-epochs", "0"], "synth.gan_epochs is 0", {}),
    ("k_0", U, ["--k", "0"], "detect.k is 0, it must be at least 1; pass a valid value with --k", {}),
    ("alpha_nan", U, ["--alpha", "nan"], "synth.alpha is nan; pass a finite number with --alpha", {}),
    ("gamma_neg", U, ["--gamma", "-1"], "reset.gamma is -1.0", {}),
    ("lr_0", U, ["--lr", "0"], "train.lr is 0.0, it must be above 0.0; pass a valid value with --lr", {}),
    ("lr_neg", U, ["--lr", "-0.1"], "train.lr is -0.1", {}),
    ("width_0", U, ["--width", "0"], "model.width is 0.0, it must be above 0.0; pass a valid value with --width", {}),
    ("width_neg", U, ["--width", "-0.5"], "model.width is -0.5", {}),
    ("width_vit", U, ["--arch", "vit_tiny", "--width", "0.5"], "--width scales cnr-fast's own ResNets; vit_tiny", {}),
    ("forget_multiclass", "compare", ["--scenario", "multiclass", "--forget", "3"],
     "--scenario multiclass forgets its own classes by index (2,5 and 2,5,7,1,9), not --forget", {}),
    ("forget_continual", "compare", ["--scenario", "continual", "--forget", "3"],
     "--scenario continual forgets its own classes by index (2,5,7,1,9), not --forget", {}),
    ("width_builder", "compare", ["--model", "torchvision:mobilenet_v2", "--width", "0.5"],
     "--width scales cnr-fast's own ResNets; torchvision:mobilenet_v2", {}),
    ("image_size_0", U, ["--image-size", "0"], "data.image_size is 0, it must be at least 1", {}),
    ("image_size_neg", U, ["--image-size", "-16"], "data.image_size is -16", {}),
    ("seed_neg", U, ["--seed", "-1"], "seed is -1, it must be at least 0; pass a valid value with --seed", {}),
    ("synth_batch_0", U, ["--synth-batch", "0"], "synth.batch is 0", {}),
    ("val_fraction", U, ["--val-fraction", "0.7"], "val_fraction 0.7 is outside [0, 0.5)", {}),
    ("compare_seeds_0", "compare", ["--methods", "lm", "--seeds", "0"], "--seeds 0: the number of seeds must be at least 1", {}),
    ("ablate_seeds_neg", "ablate", ["--seeds", "-1"], "--seeds -1: the number of seeds must be at least 1", {}),
    # forget lists
    ("forget_empty", U, ["--forget", ""], "no forget class given; pass --forget C", {}),
    ("forget_duplicate", U, ["--forget", "2,5,2"], "[2] listed more than once; list each class once, e.g. --forget 2,5", {}),
    ("forget_out_of_range", U, ["--forget", "12"], "forget class(es) [12] not in dataset 'digits' (classes 0..9)", {}),
    ("forget_negative", U, ["--forget", "-1"], "forget class(es) [-1] not in dataset", {}),
    ("forget_unknown_name", U, ["--forget", "two"], "forget class 'two' is not a class of 'digits'; its classes are 0, 1", {}),
    ("forget_every_class", U, ["--forget", "0,1,2,3,4,5,6,7,8,9"], "all 10 classes of 'digits' would be forgotten", {}),
    # data roots
    ("root_missing", U, ["--dataset", "mnist", "--data-root", "{in}/nope"], "data root", {}),
    ("root_empty", U, ["--dataset", "mnist", "--data-root", "{in}/empty"], "not found under", {"files": "empty_dir"}),
    ("root_wrong_layout", U, ["--dataset", "cifar10", "--data-root", "{in}/root"], "not found under",
     {"files": "junk_root"}),
    ("folder_missing", U, ["--dataset", "imagefolder:{in}/nope"], "does not exist; pass imagefolder:DIR", {}),
    ("folder_empty", U, ["--dataset", "imagefolder:{in}/empty"], "has no class sub-folders", {"files": "empty_dir"}),
    ("folder_flat", U, ["--dataset", "imagefolder:{in}/img"], "has no class sub-folders", {"files": "flat_images"}),
    ("folder_class_empty", U, ["--dataset", "imagefolder:{in}/img"], "class folder(s) ['c'] of image folder",
     {"files": "class_empty"}),
    ("folder_corrupt_image", U, ["--dataset", "imagefolder:{in}/img"], "broken.png' is corrupt or not an image",
     {"files": "corrupt_image"}),
    ("folder_unreadable_image", U, ["--dataset", "imagefolder:{in}/img"], "0.png' cannot be read",
     {"files": "unreadable_image", "root_skip": True}),
    # checkpoints
    ("ckpt_missing", U, ["--checkpoint", "{in}/none.pt"], "does not exist; pass the path of a saved model", {}),
    ("ckpt_zero_bytes", U, ["--checkpoint", "{in}/m.pt"], "it is empty (0 bytes)", {"files": "zero_bytes"}),
    ("ckpt_truncated", U, ["--checkpoint", "{in}/m.pt"], "it is truncated or corrupt", {"files": "truncated"}),
    ("ckpt_pickled_code", U, ["--checkpoint", "{in}/m.pt"], "holds pickled Python objects, not just tensors",
     {"files": "pickled_code"}),
    ("ckpt_text", U, ["--checkpoint", "{in}/m.pt"], "it is a text file, not a torch checkpoint", {"files": "text"}),
    ("ckpt_safetensors", U, ["--checkpoint", "{in}/m.safetensors"], "is a safetensors file that cannot be read",
     {"files": "safetensors"}),
    ("ckpt_wrong_arch", U, ["--checkpoint", "{ckpt}", "--arch", "resnet34"], "not resnet34; pass --arch resnet18",
     {}),
    ("ckpt_wrong_classes", U, ["--checkpoint", "{in}/m.pt"], "has 5 classes but dataset 'digits' has 10",
     {"files": "five_classes"}),
    ("ckpt_missing_keys", U, ["--checkpoint", "{in}/m.pt"], "missing 1 key(s): fc.bias", {"files": "missing_keys"}),
    ("ckpt_unexpected_keys", U, ["--checkpoint", "{in}/m.pt"], "1 unexpected key(s): extra.weight",
     {"files": "unexpected_keys"}),
    # output directory
    ("out_is_file", U, ["--out", "{in}/file.txt"], "is a file; pass a directory path", {"files": "a_file"}),
    ("out_under_file", U, ["--out", "{in}/file.txt/run"], "file.txt' is a file, not a folder", {"files": "a_file"}),
    ("train_out_is_file", "train", ["--out", "{in}/file.txt"], "is a file; pass a directory path", {"files": "a_file"}),
    ("out_not_writable", U, ["--out", "{in}/locked/run"], "is not writable (no write permission on",
     {"files": "parent_555", "root_skip": True}),
    ("out_disk_full", U, ["--method", "lm"], "disk full: cannot write '{out}/", {"patch": "disk_full"}),
    ("out_disk_full_existing", U, ["--method", "lm"], "disk full: cannot write '{out}/",
     {"patch": "disk_full", "out_exists": True}),
    ("audit_out_is_file", "audit", ["--checkpoint", "{ckpt}", "--original", "{ckpt}", "--out", "{in}/file.txt"],
     "--out '{in}/file.txt' is a file; pass a directory path", {"files": "a_file"}),
    ("audit_zero_bytes", "audit", ["--checkpoint", "{in}/m.pt", "--original", "{ckpt}"], "it is empty (0 bytes)",
     {"files": "zero_bytes"}),
    ("audit_image_size_text", "audit", ["--checkpoint", "{ckpt}", "--original", "{ckpt}", "--image-size", "big"],
     "--image-size: invalid int value: 'big'", {}),
    # config files
    ("cfg_missing", U, ["--config", "{in}/none.json"], "does not exist; pass an existing JSON file", {}),
    ("cfg_invalid_json", U, ["--config", "{in}/c.json"], "is not valid JSON", {"files": "cfg_invalid_json"}),
    ("cfg_unknown_key", U, ["--config", "{in}/c.json"], "config.train: unknown key(s) ['epochz']",
     {"files": "cfg_unknown_key"}),
    ("cfg_wrong_type", U, ["--config", "{in}/c.json"], 'config.train.epochs must be an integer, not "five"',
     {"files": "cfg_wrong_type"}),
    ("cfg_section_not_object", U, ["--config", "{in}/c.json"], "config.train: expected a JSON object, got int",
     {"files": "cfg_section_not_object"}),
    ("cfg_bad_choice", U, ["--config", "{in}/c.json"], "unknown relabel 'never'; choose one of once, step",
     {"files": "cfg_bad_choice"}),
    ("cfg_negative_lr", U, ["--config", "{in}/c.json"], "reset.lr is -0.0001", {"files": "cfg_negative_lr"}),
    # a training stage diverges
    ("nan_original", U, ["--cache-dir", "{tmp}/fresh_cache"], "training stage 'original' diverged: its loss is nan",
     {"patch": "nan_original"}),
    ("nan_reset", U, [], "training stage 'reset' diverged: its loss is nan", {"patch": "nan_reset"}),
    ("nan_gan", U, [], "training stage 'synthesize: GAN class 2' diverged: its loss is nan at epoch 1, step 1",
     {"patch": "nan_gan"}),
    ("nan_latents", U, [], "training stage 'synthesize class 2: latent optimisation' diverged: its loss is nan",
     {"patch": "nan_latents"}),
]


def _digest_tree(root: Path) -> dict[str, str]:
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file() and os.access(p, os.R_OK) or (p.is_file() and ROOT):
            out[str(p.relative_to(root))] = hashlib.sha256(p.read_bytes()).hexdigest()
        elif p.is_file():  # unreadable on purpose: size and mode stand in for the content
            st = p.stat()
            out[str(p.relative_to(root))] = f"unreadable:{st.st_size}:{st.st_mode}"
    return out


def _call(argv) -> int:
    try:
        return main(argv)
    except SystemExit as e:  # argparse's own errors (a bad int): exit 2, one line (see _common.one_line_errors)
        return e.code


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input(case, shared, tmp_path, monkeypatch, capsys):
    name, verb, extra, msg, opt = case
    if opt.get("root_skip") and ROOT:
        pytest.skip("root ignores file permissions")
    inp = tmp_path / "in"
    inp.mkdir()
    if opt.get("files"):
        SETUP[opt["files"]](inp, shared)
    out = tmp_path / "out"
    if opt.get("out_exists"):
        out.mkdir()
        (out / "results.json").write_text('{"from": "an earlier run"}\n')
    fmt = {"in": str(inp), "tmp": str(tmp_path), "ckpt": str(shared["ckpt"]), "cache": str(shared["cache"]), "out": str(out)}
    extra = [a.format(**fmt) for a in extra]
    msg = msg.format(**fmt)
    if verb == "audit":
        argv = [verb, "--out", str(out), *DIGITS, "--quiet", "--no-figures", *extra]
    else:
        argv = [verb, "--out", str(out), "--cache-dir", str(shared["cache"]), *DIGITS]
        argv += TINY if verb != "train" else ["--train-epochs", "1", "--quiet"]
        if verb in ("compare", "ablate"):
            argv.remove("--audit"), argv.remove("off")
        argv += extra

    inputs_before = _digest_tree(inp)
    ckpt_before = hashlib.sha256(shared["ckpt"].read_bytes()).hexdigest()
    out_before = _digest_tree(out) if out.exists() else None
    for k, v in opt.get("env", {}).items():
        monkeypatch.setenv(k, v)
    if opt.get("patch"):
        PATCHES[opt["patch"]](monkeypatch)
    capsys.readouterr()

    code = _call(argv)

    monkeypatch.undo()
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2, (name, err)
    assert len(err) == 1, err
    assert err[0].startswith(f"cnr-fast {verb}: error: "), err[0]
    assert msg in err[0], (msg, err[0])
    # every input file byte-identical; the module's checkpoint too
    assert _digest_tree(inp) == inputs_before
    assert hashlib.sha256(shared["ckpt"].read_bytes()).hexdigest() == ckpt_before
    # no partial output: --out absent, or (existing) unchanged; no staging folder left beside or inside it
    if out_before is None:
        assert not out.exists(), sorted(p.name for p in out.rglob("*"))
    else:
        assert _digest_tree(out) == out_before and not [p for p in out.iterdir() if p.name.startswith(".")]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    if name == "ckpt_pickled_code":
        assert not (inp / "PWNED").exists()  # refused by weights_only=True loading, never executed
        torch.load(inp / "m.pt", weights_only=False)  # the payload is real: an unsafe load runs it
        assert (inp / "PWNED").exists()


def test_table_is_large_enough():
    assert len(CASES) >= 40 and len({c[0] for c in CASES}) == len(CASES)


# ------------------------------------------------------------------------------------------------
# not bad input: documented conversions and recoveries


def test_imagefolder_mixed_grey_rgb_is_converted(tmp_path):
    """Decision: a folder mixing grey and RGB images is converted to RGB (3 channels), not refused."""
    from cnr_fast.config import DataConfig
    from cnr_fast.data import load_dataset

    for i in range(4):
        _png(tmp_path / "a" / f"{i}.png", mode="L", seed=i)
        _png(tmp_path / "b" / f"{i}.png", mode="RGB", seed=10 + i)
    before = _digest_tree(tmp_path)
    ds = load_dataset(DataConfig(dataset=f"imagefolder:{tmp_path}", image_size=8, forget=(0,), val_fraction=0.0))
    assert ds.in_channels == 3 and ds.num_classes == 2 and ds.class_names == ["a", "b"]
    grey = torch.cat([ds.train.x[ds.train.y == 0], ds.test.x[ds.test.y == 0]])
    assert len(grey) == 4 and (grey[:, 0] == grey[:, 1]).all() and (grey[:, 1] == grey[:, 2]).all()
    assert _digest_tree(tmp_path) == before


def _entry(cache: Path) -> Path:
    (entry,) = [p for p in (cache / "models").iterdir() if p.suffix == ".pt"]
    return entry


def test_corrupt_cache_entry_is_detected_rebuilt_and_warned(shared, tmp_path, capsys):
    import shutil

    cache = tmp_path / "cache"
    shutil.copytree(shared["cache"], cache)
    entry = _entry(cache)
    good = entry.read_bytes()
    entry.write_bytes(good[: len(good) // 3])  # truncated, as by a crash of an older version
    args = ["train", "--out", str(tmp_path / "m"), "--cache-dir", str(cache), *DIGITS, "--train-epochs", "1", "--quiet"]
    capsys.readouterr()
    assert main(args) == 0
    err = capsys.readouterr().err
    assert "warning: cached original model" in err and "rebuilding it" in err
    obj = torch.load(entry, weights_only=True)  # rebuilt, loads, same architecture
    assert set(obj["state_dict"]) == set(torch.load(io.BytesIO(good), weights_only=True)["state_dict"])
    assert not [p for p in entry.parent.iterdir() if p.name.endswith(".tmp")]
    assert main(args[:2] + [str(tmp_path / "m2")] + args[3:]) == 0  # and is now a plain cache hit
    assert "warning" not in capsys.readouterr().err


def test_two_processes_share_one_cache_entry(tmp_path):
    """Both runs succeed; the lock makes one build the entry while the other waits and then reuses it."""
    cache = tmp_path / "cache"
    code = "import sys\nfrom cnr_fast.cli import main\nsys.exit(main(sys.argv[1:]))\n"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, "-c", code, "train", "--out", str(tmp_path / f"m{i}"), "--cache-dir",
                               str(cache), *DIGITS, "--train-epochs", "1"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
             for i in range(2)]
    results = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [r[1][-2000:] for r in results]
    built = sum("original: trained in" in err for _, err in results)
    reused = sum("original: cached model" in err for _, err in results)
    assert (built, reused) == (1, 1), [r[1] for r in results]
    entry = _entry(cache)
    obj = torch.load(entry, weights_only=True)
    assert obj["meta"]["kind"] == "original"
    assert sorted(p.name for p in entry.parent.iterdir()) == sorted([entry.name, entry.name + ".lock"])
    for i in range(2):  # each run's copy is the cache entry, byte for byte
        assert (tmp_path / f"m{i}" / "original.pt").read_bytes() == entry.read_bytes()
