"""Data splits, forget validation, model taps and checkpoint checks."""

import numpy as np
import pytest
import torch

from cnr_fast.config import DataConfig
from cnr_fast.data import load_dataset, stratified_split, to_float
from cnr_fast.errors import UserError
from cnr_fast.models import TAP_NAMES, Taps, build_model, model_from_checkpoint, model_meta
from cnr_fast.runs import save_checkpoint


def test_stratified_split_deterministic_disjoint_stratified():
    y = np.repeat(np.arange(4), [10, 20, 1, 5])
    a = stratified_split(y, 0.2, seed=0)
    b = stratified_split(y, 0.2, seed=0)
    assert all((u == v).all() for u, v in zip(a, b))
    tr, te = a
    assert not set(tr) & set(te) and len(tr) + len(te) == len(y)
    assert [int((y[te] == c).sum()) for c in range(4)] == [2, 4, 0, 1]  # 1-sample class stays in train


@pytest.fixture(scope="module")
def mnist():
    return load_dataset(DataConfig())


def test_mnist5k_embedded(mnist):
    assert (len(mnist.train), len(mnist.val), len(mnist.test)) == (3600, 400, 1000)
    assert torch.bincount(mnist.val.y).tolist() == [40] * 10  # 10% of each class's training share
    assert mnist.train.x.dtype == torch.uint8 and mnist.train.x.shape[1:] == (1, 28, 28)
    assert torch.bincount(mnist.test.y).tolist() == [100] * 10  # 500 a class, 20% test
    assert len(set(mnist.train.y[:20].tolist())) > 3  # shuffled, not sorted by class
    x = to_float(mnist.train.x[:5])
    assert x.min() >= -1 and x.max() <= 1


def test_digits_resized():
    ds = load_dataset(DataConfig(dataset="digits", image_size=16))
    assert ds.train.x.shape[1:] == (1, 16, 16) and ds.num_classes == 10


@pytest.mark.parametrize("forget,msg", [((10,), "not in dataset"), ((-1,), "not in dataset"),
                                        (tuple(range(10)), "all 10 classes"), ((), "no forget class")])
def test_bad_forget(forget, msg):
    with pytest.raises(UserError, match=msg):
        load_dataset(DataConfig(forget=forget))


def test_bad_dataset_and_missing_root(tmp_path):
    with pytest.raises(UserError, match="unknown dataset"):
        load_dataset(DataConfig(dataset="imagenet"))
    with pytest.raises(UserError, match="--data-root"):
        load_dataset(DataConfig(dataset="cifar10"))
    with pytest.raises(UserError, match="does not exist"):
        load_dataset(DataConfig(dataset="cifar10", data_root=str(tmp_path / "nope")))
    with pytest.raises(UserError, match="not found under"):
        load_dataset(DataConfig(dataset="mnist", data_root=str(tmp_path)))


@pytest.mark.parametrize("arch,size", [("resnet18", 28), ("resnet50", 32), ("vit_tiny", 28), ("vit_b16", 32)])
def test_taps_all_archs(arch, size):
    m = build_model(arch, 7, 1, size, width=0.0625).eval()
    with Taps(m, TAP_NAMES) as t, torch.no_grad():
        out = m(torch.randn(2, 1, size, size))
    assert out.shape == (2, 7)
    assert sorted(t.out) == list(TAP_NAMES)
    assert all(v.shape[0] == 2 for v in t.out.values())
    if arch.startswith("resnet"):  # spatial size shrinks with depth
        assert t["L1"].shape[-1] > t["L4"].shape[-1]


def test_unknown_arch_and_vit_patch():
    with pytest.raises(UserError, match="unknown arch"):
        build_model("vgg", 10, 1, 28)
    with pytest.raises(UserError, match="divisible"):
        build_model("vit_b16", 10, 1, 28)


def test_checkpoint_mismatches(tmp_path, mnist):
    m = build_model("resnet18", 10, 1, 28, 0.125)
    path = tmp_path / "m.pt"
    save_checkpoint(path, m, model_meta("resnet18", 0.125, mnist))
    loaded, meta = model_from_checkpoint(path, mnist)
    assert meta["arch"] == "resnet18"
    for k, v in m.state_dict().items():
        assert torch.equal(v, loaded.state_dict()[k])
    with pytest.raises(UserError, match="not resnet34"):
        model_from_checkpoint(path, mnist, arch="resnet34")
    other = load_dataset(DataConfig(dataset="digits"))
    other.num_classes = 5
    with pytest.raises(UserError, match="classes"):
        model_from_checkpoint(path, other)
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="cannot be read"):
        model_from_checkpoint(bad, mnist)
    bare = tmp_path / "bare.pt"
    torch.save(build_model("resnet18", 10, 1, 28, 0.25).state_dict(), bare)
    with pytest.raises(UserError, match="does not fit"):
        model_from_checkpoint(bare, mnist, arch="resnet18", width=0.125)


def test_checkpoint_with_code_is_refused(tmp_path, mnist):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    p = tmp_path / "evil.pt"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "meta": {"x": Evil()}}, p)
    with pytest.raises(UserError, match="cannot be read safely"):
        model_from_checkpoint(p, mnist)
