"""An ordinary user's pipeline, written without cnr-fast: PNG folders on disk (train/ and test/, one
sub-folder per class), torchvision's ImageFolder with Grayscale(3), ToTensor() and ImageNet
Normalize, torchvision's resnet18 trained by a plain loop, state_dicts saved; two more models
retrained without one class by the same loop. Its own evaluation is the ground truth the tests hold
cnr-fast's numbers against (tests/test_user_path.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

SIZE = 16
NAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def write_folders(root: Path, names=NAMES, size: int = SIZE) -> Path:
    """sklearn's digits as grey PNGs, upscaled to `size`, 75 / 25 split per class into train/ and test/."""
    from PIL import Image
    from sklearn.datasets import load_digits

    d = load_digits()
    rng = np.random.default_rng(0)
    for c in range(10):
        idx = rng.permutation(np.flatnonzero(d.target == c))
        n_test = len(idx) // 4
        for split, part in (("test", idx[:n_test]), ("train", idx[n_test:])):
            folder = root / split / names[c]
            folder.mkdir(parents=True, exist_ok=True)
            for i in part:
                img = Image.fromarray(np.round(d.images[i] * 255 / 16).astype(np.uint8), mode="L")
                img.resize((size, size), Image.BILINEAR).save(folder / f"{i}.png")
    return root


def transform():
    import torchvision.transforms as T

    return T.Compose([T.Grayscale(3), T.ToTensor(), T.Normalize(MEAN, STD)])


def folder(path: Path):
    from torchvision.datasets import ImageFolder

    return ImageFolder(str(path), transform=transform())


def build(num_classes: int = 10) -> nn.Module:
    import torchvision

    return torchvision.models.resnet18(num_classes=num_classes)


def train(train_dir: Path, exclude=(), epochs: int = 6, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    ds = folder(train_dir)
    keep = [i for i, (_, y) in enumerate(ds.samples) if y not in set(exclude)]
    loader = torch.utils.data.DataLoader(torch.utils.data.Subset(ds, keep), batch_size=64, shuffle=True)
    model = build(len(ds.classes))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    for _ in range(epochs):
        model.train()
        for x, y in loader:
            opt.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
    return model.eval()


def evaluate(model: nn.Module, test_dir: Path, forget: int) -> dict:
    """The user's own numbers: accuracy on the forget class and on the others."""
    ds = folder(test_dir)
    correct = {True: 0, False: 0}
    count = {True: 0, False: 0}
    with torch.no_grad():
        for x, y in torch.utils.data.DataLoader(ds, batch_size=256):
            pred = model(x).argmax(1)
            for f in (True, False):
                m = (y == forget) if f else (y != forget)
                correct[f] += int((pred[m] == y[m]).sum())
                count[f] += int(m.sum())
    return {"forget_acc": correct[True] / count[True], "retain_acc": correct[False] / count[False]}


def make(root: Path, forget: int = 3, epochs: int = 6) -> dict:
    """Folders, the original and two models retrained without `forget` (independent seeds), saved."""
    write_folders(root / "data")
    paths = {}
    for name, exclude, seed in (("original", (), 0), ("retrained", (forget,), 1), ("null", (forget,), 2)):
        model = train(root / "data" / "train", exclude, epochs, seed)
        paths[name] = root / f"{name}.pt"
        torch.save(model.state_dict(), paths[name])
    return paths
