"""The Python API for any nn.Module classifier: `cnr_fast.unlearn(...)` and `cnr_fast.audit_model(...)`.

Nothing is asked of the model but being an `nn.Module` that maps (B, C, H, W) images to (B, classes)
logits; its taps are found as for `--model` (models/taps.py) unless `taps={"L1": "module.path", ...}`
names them. Data may be a `cnr_fast.data.Dataset`, a dict {"train": (x, y), "test": (x, y)} of
tensors, or {"train": torch Dataset, "test": torch Dataset} yielding (image, label). Float images are
taken as [-1, 1] (cnr-fast's convention; pass `normalize="imagenet"` etc. when the model was trained
on another scaling of [0, 1] images) and uint8 images as [0, 255].

    model2, info = cnr_fast.unlearn(model, {"train": (x, y), "test": (xt, yt)}, forget=[2], method="cnr")
    report = cnr_fast.audit_model(model2, original=model, retrained=None, data=..., forget=[2])
"""

from __future__ import annotations

import copy
import io

import torch
import torch.nn as nn

from .config import RunConfig
from .data import Dataset, Split, carve_validation
from .errors import UserError
from .models import sources, taps as T


def as_dataset(data, name: str = "user", val_fraction: float = 0.1, seed: int = 1) -> Dataset:
    """A cnr_fast Dataset from a Dataset, a dict of (x, y) tensors or a dict of torch Datasets."""
    if isinstance(data, Dataset):
        return data
    if not isinstance(data, dict) or "train" not in data or "test" not in data:
        raise UserError("data must be a cnr_fast Dataset or a dict with 'train' and 'test', each (x, y) tensors "
                        "or a torch Dataset of (image, label)")
    train, test = _split(data["train"], "train"), _split(data["test"], "test")
    num_classes = int(max(train.y.max(), test.y.max())) + 1
    ds = Dataset(name, train, test, num_classes, [str(c) for c in range(num_classes)])
    if val_fraction > 0:
        ds.train, ds.val = carve_validation(ds.train, val_fraction, seed)
    return ds


def _split(part, where: str) -> Split:
    if isinstance(part, (tuple, list)) and len(part) == 2:
        x, y = part
    elif isinstance(part, torch.utils.data.Dataset):
        items = [part[i] for i in range(len(part))]
        x = torch.stack([torch.as_tensor(a) for a, _ in items])
        y = torch.as_tensor([int(b) for _, b in items])
    else:
        raise UserError(f"data[{where!r}] must be (x, y) tensors or a torch Dataset of (image, label)")
    x, y = torch.as_tensor(x), torch.as_tensor(y).long()
    if x.ndim == 3:
        x = x.unsqueeze(1)
    if x.ndim != 4 or len(x) != len(y):
        raise UserError(f"data[{where!r}]: images must be (N, C, H, W) (or (N, H, W)) with one label each; got "
                        f"{tuple(x.shape)} images and {len(y)} labels")
    if x.shape[-1] != x.shape[-2]:
        raise UserError(f"data[{where!r}]: images must be square (H = W); got {tuple(x.shape[-2:])}: resize them")
    if x.dtype != torch.uint8:  # [-1, 1] floats -> the uint8 cnr-fast keeps (it feeds models x / 127.5 - 1)
        x = ((x.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return Split(x.contiguous(), y)


def _prepare(model: nn.Module, ds: Dataset, taps: dict | None, normalize: str) -> nn.Module:
    """A copy of the user's model with its input contract and taps (the user's object is not touched)."""
    if not isinstance(model, nn.Module):
        raise UserError(f"model must be a torch nn.Module, not {type(model).__name__}")
    model = copy.deepcopy(model).cpu()
    example = torch.zeros(2, ds.in_channels, ds.image_size, ds.image_size)
    own = callable(getattr(model, "tap_modules", None))
    if not own and getattr(model, T.ATTR, None) is None:  # a model cnr_fast has not prepared before
        sources.apply_input_contract(model, ds.in_channels, normalize, type(model).__name__)
        T.attach(model, example, dict(taps or {}))
    elif not own and taps:
        T.attach(model, example, dict(taps))
    with torch.no_grad():
        out = model.eval()(example)
    if out.ndim != 2 or out.shape[1] != ds.num_classes:
        raise UserError(f"the model returns {tuple(out.shape)} for a batch of 2 images; it must return (2, "
                        f"{ds.num_classes}) logits, one per class of the data")
    return model


def unlearn(model: nn.Module, data, forget, method: str = "cnr", taps: dict | None = None,
            config: RunConfig | None = None, device: str = "cpu", normalize: str = "pm1", quiet: bool = True):
    """Remove the classes `forget` from `model` with `method` (any registered: `cnr-fast ls`).

    Returns (unlearned model, info); info holds the method's log, "timings_s" and, for CNR and its
    controls, "synthetic_images" (what the reset was fed). `config` gives every
    other setting (defaults: the paper's, as the CLI's). The model is copied, never modified.
    """
    from .config import validate
    from .experiments.methods import check_options, get, unlearn_model

    cfg = (config or RunConfig()).replace(method=method, data={"forget": tuple(int(c) for c in forget)})
    get(method)  # an unknown name: one line with the closest ones
    check_options(validate(cfg))
    from .experiments.methods import is_from_scratch

    if is_from_scratch(method):
        raise UserError(f"{method} trains a new model from scratch, which needs a way to build one: run it on the CLI "
                        "with --model SOURCE (torchvision:NAME, timm:NAME, FILE.py:FUNCTION), or train it yourself")
    ds = as_dataset(data, val_fraction=cfg.data.val_fraction)
    original = _prepare(model, ds, taps, normalize).to(device)
    out, info, timings, files = unlearn_model(method, original, ds, cfg, device=device, quiet=quiet)
    extra = {}
    if "synthetic.pt" in files:  # CNR's counterfactual images, in [-1, 1] with the data's channels
        extra["synthetic_images"] = torch.load(io.BytesIO(files["synthetic.pt"]), weights_only=True)
    return out, {**info, "timings_s": timings, **extra}


def audit_model(model: nn.Module, *, original: nn.Module, data, forget, retrained: nn.Module | None = None,
                null: nn.Module | None = None, taps: dict | None = None, device: str = "cpu", normalize: str = "pm1",
                quiet: bool = True, **kw) -> dict:
    """The audit of `model` against `original` (and a model retrained without `forget`, when given):
    the JSON view of audit.audit_models (metrics per model, definitions). Taps are found on the
    original and read at the same module paths of every model. null: a second model retrained without
    `forget`, independently of `retrained`: with it the result carries the "verdict" (audit/verdict.py)."""
    from .audit import audit_models, json_view

    ds = as_dataset(data)
    orig = _prepare(original, ds, taps, normalize).to(device)
    paths = {n: p for n, (p, _l) in getattr(orig, T.ATTR, {}).items()}
    models = {"original": orig, "unlearned": _prepare(model, ds, paths or taps, normalize).to(device)}
    if retrained is not None:
        models["retrained"] = _prepare(retrained, ds, paths or taps, normalize).to(device)
    names = list(T.tap_modules(orig))
    if null is not None:
        if retrained is None:
            raise ValueError("null needs retrained: the verdict judges against the spread between the two")
        kw["null_model"] = _prepare(null, ds, paths or taps, normalize).to(device)
    result = audit_models(models, ds, [int(c) for c in forget], device=device,
                          retrained="retrained" if retrained is not None else None, taps=names, figures=False,
                          quiet=quiet, **kw)
    return json_view(result)
