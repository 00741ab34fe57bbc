"""The Python API for any nn.Module classifier: `cnr_fast.unlearn(...)` and `cnr_fast.audit_model(...)`.

Nothing is asked of the model but being an `nn.Module` that maps (B, C, H, W) images to (B, classes)
logits; its taps are found as for `--model` (models/taps.py) unless `taps={"L1": "module.path", ...}`
names them (`taps=["L1", "L2", "L3"]`: those found taps only, as for a model with three stages). Data
may be a `cnr_fast.data.Dataset`, a dict {"train": (x, y), "test": (x, y)} of tensors, or {"train": torch
Dataset, "test": torch Dataset} yielding (image, label) (and "val" where a validation split of your own
exists; else it is carved from train, which a choice made on it warns of). uint8 images are taken as
[0, 255]; float images as [-1, 1] (cnr-fast's convention), or as [0, 1] with `value_range="01"`
(what `ToTensor()` gives). The images go in before any normalisation: the model's own goes in
`normalize=` ("imagenet", or "MEAN/STD"), applied in front of the model. Float images that look
like another range than the one stated (already normalised, or [0, 1] taken as [-1, 1]) are refused
with the fix. A forward that returns a tuple, dict or output object is read by the rule of
`logits_from` (models/sources.pick_logits).

The model `unlearn` returns is your model's own class with the unlearned weights: it takes your
pipeline's (normalised) inputs exactly as the original did.

    model2, info = cnr_fast.unlearn(model, {"train": (x, y), "test": (xt, yt)}, forget=[2], method="cnr")
    report = cnr_fast.audit_model(model2, original=model, retrained=None, data=..., forget=[2])
    result = cnr_fast.compare(build, data, forget=[2], methods=["cnr", "rl", "ssd"], seeds=3, train=my_train)

`compare` runs methods over seeds on originals, retrained references and nulls made by *your* recipe:
`train(model, data, classes, seed) -> model` (your loop; `data` is what you passed, `classes` the class
indices to train on) called on a fresh `build()`, or models you trained (`originals`, `references`).
"""

from __future__ import annotations

import copy
import io
import re
import warnings

import torch
import torch.nn as nn

from .config import RunConfig
from .data import Dataset, Split, carve_validation, check_test_classes, class_difference
from .errors import UserError
from .models import sources, taps as T


VALUE_RANGES = ("auto", "pm1", "01")


# error lines written for the command line, as a Python caller reads them (most specific first)
PYTHON_TERMS = (
    (" (logits_from= in Python)", ""), (" (force=True from Python)", ""), (" (taps= in Python)", ""),
    ("--image-size: the size you trained at", "the images' size: the size you trained at"),
    ("--logits-from INDEX|KEY", "logits_from=INDEX or KEY"), ("--logits-from", "logits_from="),
    ("--normalize", "normalize="), ("--force", "force=True"), ("--expect-acc", "expect_acc"),
    ("--taps L1=module.path,...", "taps={'L1': 'module.path', ...}"), ("--taps", "taps="),
    ("--forget", "forget="),
)


def in_python_terms(e: UserError) -> UserError:
    """`e` with the CLI flags it names as the keyword arguments of cnr_fast.unlearn / audit_model / compare."""
    text = re.sub(r"--taps ((?:L\d,)*L\d)(?![\w=])", lambda m: f"taps={m.group(1).split(',')}", str(e))  # tap names
    for flag, arg in PYTHON_TERMS:
        text = text.replace(flag, arg)
    return UserError(text)


def as_dataset(data, name: str = "user", val_fraction: float = 0.1, seed: int = 1, value_range: str = "auto") -> Dataset:
    """A cnr_fast Dataset from a Dataset, a dict of (x, y) tensors or a dict of torch Datasets.
    value_range: how float images are scaled: "auto" ([-1, 1], checked), "pm1" ([-1, 1], unchecked)
    or "01" ([0, 1], as ToTensor() gives)."""
    if isinstance(data, Dataset):
        return data
    if value_range not in VALUE_RANGES:
        raise UserError(f"value_range={value_range!r}: choose one of {', '.join(VALUE_RANGES)}")
    if not isinstance(data, dict) or "train" not in data or "test" not in data:
        missing = [k for k in ("train", "test") if k not in data] if isinstance(data, dict) else []
        raise UserError((f"data has no {' and no '.join(repr(k) for k in missing)}; " if missing else "")
                        + "data must be a cnr_fast Dataset or a dict with 'train' and 'test' (and 'val' where you "
                        "have one), each (x, y) tensors or a torch Dataset of (image, label)")
    unknown = sorted(set(data) - {"train", "val", "test"})
    if unknown:
        raise UserError(f"data has key(s) {unknown}; it takes 'train', 'test' and optionally 'val'")
    parts = {k: _split(data[k], k, value_range) for k in ("train", "val", "test") if k in data}
    train, test = parts["train"], parts["test"]
    num_classes = int(max(p.y.max() for p in parts.values())) + 1
    ds = Dataset(name, train, test, num_classes, _class_names(data, num_classes), val=parts.get("val"))
    check_test_classes(ds)
    if ds.val is None and val_fraction > 0:
        ds.train, ds.val = carve_validation(ds.train, val_fraction, seed)
        ds.val_carved = True
    return ds


def _class_names(data: dict, num_classes: int) -> list[str]:
    """The torch Datasets' own class names (ImageFolder's .classes), the same in every split; else indices."""
    named = {k: list(map(str, v.classes)) for k, v in data.items() if isinstance(getattr(v, "classes", None),
                                                                                 (list, tuple))}
    if not named:
        return [str(c) for c in range(num_classes)]
    first = next(iter(named.values()))
    for k, names in named.items():
        if names != first:
            raise UserError(f"data[{k!r}] has other classes than data[{next(iter(named))!r}]"
                            f"{class_difference(first, names)}; its labels number the classes otherwise: give every "
                            "split the same class folders")
    return first + [str(c) for c in range(len(first), num_classes)]


def _split(part, where: str, value_range: str = "auto") -> Split:
    if isinstance(part, (tuple, list)) and len(part) == 2:
        x, y = part
    elif isinstance(part, torch.utils.data.Dataset):
        items = [part[i] for i in range(len(part))]
        if items and not (isinstance(items[0], (tuple, list)) and len(items[0]) == 2):
            raise UserError(f"data[{where!r}]: the Dataset's items must be (image, label) pairs; its first item is "
                            f"{_describe_item(items[0])}: wrap it so __getitem__ returns (image, label)")
        x = torch.stack([torch.as_tensor(a) for a, _ in items])
        y = torch.as_tensor([int(b) for _, b in items])
    else:
        raise UserError(f"data[{where!r}] must be (x, y) tensors or a torch Dataset of (image, label)")
    x, y = torch.as_tensor(x), torch.as_tensor(y)
    if y.ndim != 1:
        raise UserError(f"data[{where!r}]: labels must be one class index per image, shape (N,); got shape "
                        f"{tuple(y.shape)}" + ("" if y.ndim != 2 else ": give y.flatten()" if y.shape[1] == 1
                                               else " (one-hot? give y.argmax(1))"))
    if y.is_floating_point() and len(y) and not bool((y == y.round()).all()):
        raise UserError(f"data[{where!r}]: labels must be class indices (integers 0..C-1); got fractional values "
                        f"such as {float(y[y != y.round()][0])}")
    y = y.long()
    if len(y) and int(y.min()) < 0:
        raise UserError(f"data[{where!r}]: labels must be class indices 0..C-1; got {int(y.min())}")
    if x.ndim == 3:
        x = x.unsqueeze(1)
    if x.ndim != 4 or len(x) != len(y):
        raise UserError(f"data[{where!r}]: images must be (N, C, H, W) (or (N, H, W)) with one label each; got "
                        f"{tuple(x.shape)} images and {len(y)} labels")
    if x.shape[-1] != x.shape[-2]:
        if x.shape[-1] in (1, 3, 4) and x.shape[1] == x.shape[2]:
            raise UserError(f"data[{where!r}]: images must be (N, C, H, W); got {tuple(x.shape)}, which looks like "
                            "channels last (N, H, W, C): give x.permute(0, 3, 1, 2)")
        raise UserError(f"data[{where!r}]: images must be square (H = W); got {tuple(x.shape[-2:])}: resize them")
    if x.dtype != torch.uint8:  # floats -> the uint8 cnr-fast keeps (it feeds models x / 127.5 - 1)
        x = x.float()
        if value_range == "auto":
            _check_range(x, where)
        lo, hi = float(x.min()), float(x.max())
        if value_range == "01":
            if lo < -0.01 or hi > 1.01:
                raise UserError(f"data[{where!r}] holds floats in [{lo:.2f}, {hi:.2f}], not [0, 1] as value_range='01' "
                                "says; give the images before normalisation, the model's in normalize=")
            x = x * 2 - 1
        elif lo < -1.01 or hi > 1.01:  # "pm1": unchecked for the look of [0, 1], never silently clipped
            raise UserError(f"data[{where!r}] holds floats in [{lo:.2f}, {hi:.2f}], not [-1, 1] as value_range='pm1' "
                            "says; give the images before normalisation, the model's in normalize=")
        q = ((x.clamp(-1, 1) + 1) * 127.5).round()
        off = float((q / 127.5 - 1 - x.clamp(-1, 1)).abs().max()) if len(x) else 0.0
        if off > 1e-4:
            _say_quantised(where, off * (0.5 if value_range == "01" else 1.0))
        x = q.to(torch.uint8)
    return Split(x.contiguous(), y)


def _describe_item(item) -> str:
    if isinstance(item, dict):
        return f"a dict with keys {sorted(map(str, item))}"
    if isinstance(item, (tuple, list)):
        return f"a {type(item).__name__} of {len(item)}"
    return f"a {type(item).__name__}"


def _say_quantised(where: str, off: float) -> None:
    """Float images finer than 8 bits: said once per split (cnr-fast keeps every dataset as uint8)."""
    warnings.warn(f"data[{where!r}]: float images are kept at 8 bits (256 levels per channel, as cnr-fast keeps every "
                  f"dataset); yours are finer (rounded by up to {off:.4f} in their own units), so a prediction within that "
                  "of a tie can differ from your pipeline's; give uint8 images to compare on exactly yours",
                  UserWarning, stacklevel=4)


def _check_range(x: torch.Tensor, where: str) -> None:
    """Float images must be [-1, 1] (value_range="auto"): a normalised or a [0, 1] range is named with the fix."""
    lo, hi = float(x.min()), float(x.max())
    if lo < -1.01 or hi > 1.01:
        raise UserError(f"data[{where!r}] holds floats in [{lo:.2f}, {hi:.2f}]: normalised already (by your "
                        "pipeline's Normalize?); give the images before normalisation (uint8, or ToTensor()'s [0, 1] "
                        "with value_range='01') and the normalisation as normalize='imagenet' or 'MEAN/STD'")
    if lo >= 0.0:
        raise UserError(f"data[{where!r}] holds floats in [{lo:.2f}, {hi:.2f}], which reads as [0, 1] (ToTensor()'s), "
                        "not cnr-fast's [-1, 1]; pass value_range='01' (or x * 2 - 1), or value_range='pm1' if they "
                        "are [-1, 1] images with no pixel below mid-grey")


def _tap_arg(taps) -> tuple[dict[str, str], tuple[str, ...] | None]:
    """taps= read as the CLI reads --taps: {"L1": "module.path", ...}, or tap names (["L1", "L2", "L3"], for a model
    with fewer stages than L1..L4) and NAME=module.path strings. Returns (where the named taps are, which taps the
    run uses: None leaves the method's default)."""
    if taps is None:
        return {}, None
    if isinstance(taps, dict):
        items = [f"{k}={v}" for k, v in taps.items()]
    elif isinstance(taps, str):
        items = [t.strip() for t in taps.split(",") if t.strip()]
    elif isinstance(taps, (list, tuple)) and all(isinstance(t, str) for t in taps):
        items = [t.strip() for t in taps]
    else:
        raise UserError(f"taps={taps!r}: give {{'L1': 'module.path', ...}} or tap names such as ['L1', 'L2', 'L3']")
    if not items:
        raise UserError("taps= is empty; give tap names such as ['L1', 'L2', 'L3'] or {'L1': 'module.path', ...}")
    from .models import check_taps

    paths, names = T.split_items(items)
    check_taps(names)
    return T.parse_overrides(paths), names


def _prepare(model: nn.Module, ds: Dataset, taps: dict | None, normalize: str, logits_from=None) -> nn.Module:
    """A copy of the user's model with its input contract, logits rule and taps (the user's object is not touched)."""
    if not isinstance(model, nn.Module):
        raise UserError(f"model must be a torch nn.Module, not {type(model).__name__}")
    from .models import LogitMask

    if isinstance(model, LogitMask):  # the wrapper `unlearn` returns for logit masking: prepare what it wraps
        inner = _prepare(model.model, ds, taps, normalize, logits_from)
        return LogitMask(inner, model.forget_classes()).eval()
    model = copy.deepcopy(model).cpu()
    example = torch.zeros(2, ds.in_channels, ds.image_size, ds.image_size)
    own = callable(getattr(model, "tap_modules", None))
    if not own and getattr(model, T.ATTR, None) is None:  # a model cnr_fast has not prepared before
        sources.apply_input_contract(model, ds.in_channels, normalize, type(model).__name__)
        sources.apply_logits_rule(model, example, logits_from, type(model).__name__, ds.num_classes)
        T.attach(model, example, dict(taps or {}))
    elif not own and taps:
        T.attach(model, example, dict(taps))
    with torch.no_grad():
        out = model.eval()(example)
    if out.ndim != 2 or out.shape[1] != ds.num_classes:
        raise UserError(f"the model returns {tuple(out.shape)} for a batch of 2 images; it must return (2, "
                        f"{ds.num_classes}) logits, one per class of the data" + _empty_classes_hint(ds))
    return model


def _empty_classes_hint(ds: Dataset) -> str:
    """Where the data's labels leave classes without any example (labels 1..C make class 0 empty), the width it
    asks of the model comes from its largest label: say so, since the model is often not what is wrong."""
    seen = torch.cat([p.y for p in (ds.train, ds.val, ds.test) if p is not None]).unique().tolist()
    empty = sorted(set(range(ds.num_classes)) - set(seen))
    if not empty:
        return ""
    start = " (the labels start at 1: cnr-fast numbers classes from 0; give y - 1)" if empty[0] == 0 and min(seen) == 1 \
        else ""
    return (f"; the data counts {ds.num_classes} classes from its largest label {ds.num_classes - 1}, but class(es) "
            f"{empty[:8]}{' ...' if len(empty) > 8 else ''} have no example in any split{start}")


def unlearn(model: nn.Module, data, forget, method: str = "cnr", taps: dict | list | None = None,
            config: RunConfig | None = None, device: str = "cpu", normalize: str = "pm1", quiet: bool = True,
            value_range: str = "auto", logits_from=None, expect_acc: float | None = None, force: bool = False):
    """Remove the classes `forget` from `model` with `method` (any registered: `cnr-fast ls`).

    Returns (unlearned model, info). The unlearned model is a copy of `model` (its own class, no hook
    of cnr-fast's on it) holding the unlearned weights: feed it as you fed the original. info holds the
    method's log, "test" (forget and retain accuracy on data["test"] of the original and the returned model),
    "timings_s", "preflight" (the input checks, preflight.py) and, for CNR and its
    controls, "synthetic_images" (what the reset was fed, in [-1, 1]). `config` gives every other
    setting (defaults: the paper's, as the CLI's). `model` is never modified.

    Before any work the original is checked against the data (its first BatchNorm's statistics, its
    test accuracy against chance and `expect_acc`): a model fed otherwise than it was trained raises
    UserError naming the likely cause, unless force=True.
    """
    from .config import validate
    from .experiments.methods import check_options, get, unlearn_model

    cfg = (config or RunConfig()).replace(method=method)
    get(method)  # an unknown name: one line with the closest ones
    check_options(validate(cfg))
    from .experiments.methods import is_from_scratch

    if is_from_scratch(method):
        raise UserError(f"{method} trains a new model from scratch, which needs a way to build one: run it on the CLI "
                        "with --model SOURCE (torchvision:NAME, timm:NAME, FILE.py:FUNCTION), or train it yourself")
    paths, names = _tap_arg(taps)
    if names:  # as --taps does on the CLI: the taps named are the ones the method uses
        cfg = cfg.replace(detect={"taps": names})
    ds = as_dataset(data, val_fraction=cfg.data.val_fraction, value_range=value_range)
    cfg = cfg.replace(data={"forget": forget_classes(forget, ds)})
    original = _prepare(model, ds, paths, normalize, logits_from).to(device)
    from .preflight import check_model

    checks = {"original": check_model(original, ds, device, forget=list(cfg.data.forget), expect_acc=expect_acc,
                                      force=force, quiet=quiet)}
    out, info, timings, files = unlearn_model(method, original, ds, cfg, device=device, quiet=quiet)
    from .train import forget_retain_accuracy

    test = {"unlearned": forget_retain_accuracy(out, ds.test, cfg.data.forget, device=device),
            "original": forget_retain_accuracy(original, ds.test, cfg.data.forget, device=device)}
    from .experiments.unlearn import carved_validation_warning

    carved = carved_validation_warning(ds, method, info, own_original=False)
    if carved:
        warnings.warn(carved, UserWarning, stacklevel=3)
    extra = {}
    if "synthetic.pt" in files:  # CNR's counterfactual images, in [-1, 1] with the data's channels
        extra["synthetic_images"] = torch.load(io.BytesIO(files["synthetic.pt"]), weights_only=True)
    return _bare(model, out, device, logits_from), {**info, "test": test, "timings_s": timings, "preflight": checks,
                                                    **extra}


def _bare(user_model: nn.Module, unlearned: nn.Module, device, logits_from=None) -> nn.Module:
    """The user's own model object, copied, holding the unlearned weights: no input-contract or logits
    hook of cnr-fast's, so it takes the user's inputs as the original did. Logit masking stays a wrapper."""
    from .models import LogitMask

    inner = unlearned.model if isinstance(unlearned, LogitMask) else unlearned
    bare = copy.deepcopy(user_model)
    bare.load_state_dict(inner.state_dict())
    bare = bare.to(device).eval()
    return LogitMask(bare, unlearned.forget_classes(), logits_from) if isinstance(unlearned, LogitMask) else bare


def audit_model(model: nn.Module, *, original: nn.Module, data, forget, retrained: nn.Module | None = None,
                null: nn.Module | None = None, taps: dict | list | None = None, device: str = "cpu", normalize: str = "pm1",
                quiet: bool = True, value_range: str = "auto", logits_from=None, force: bool = False, **kw) -> dict:
    """The audit of `model` against `original` (and a model retrained without `forget`, when given):
    the JSON view of audit.audit_models (metrics per model, definitions). Taps are found on the
    original and read at the same module paths of every model. null: a second model retrained without
    `forget`, independently of `retrained`: with it the result carries the "verdict" (audit/verdict.py)."""
    import difflib
    import inspect

    from .audit import audit_models, json_view

    from .preflight import check_model

    known = [n for n, p in inspect.signature(audit_models).parameters.items() if p.kind is p.KEYWORD_ONLY]
    for k in kw:  # before any work: a misspelt keyword would else pass silently until the audit runs
        if k not in known:
            close = difflib.get_close_matches(k, known + list(inspect.signature(audit_model).parameters), n=1)
            raise TypeError(f"audit_model() got an unexpected keyword argument {k!r}"
                            + (f" (did you mean {close[0]}?)" if close else ""))
    taps, tap_names = _tap_arg(taps)
    ds = as_dataset(data, value_range=value_range)
    forget = list(forget_classes(forget, ds))
    orig = _prepare(original, ds, taps, normalize, logits_from).to(device)
    check_model(orig, ds, device, forget=forget, force=force, quiet=quiet)  # fed as trained
    paths = {n: p for n, (p, _l) in getattr(orig, T.ATTR, {}).items()}

    def prepared(m):
        return _prepare(m, ds, paths or taps, normalize, logits_from).to(device)

    models = {"original": orig, "unlearned": prepared(model)}
    retain = ds.retain_classes(forget)
    if retrained is not None:
        models["retrained"] = prepared(retrained)
        check_model(models["retrained"], ds, device, role="retrained", classes=retain, absent=forget,
                    force=force, quiet=quiet)
    names = list(tap_names or T.tap_modules(orig))
    if null is not None:
        if retrained is None:
            raise ValueError("null needs retrained: the verdict judges against the spread between the two")
        kw["null_model"] = prepared(null)
        check_model(kw["null_model"], ds, device, role="null", classes=retain, absent=forget,
                    force=force, quiet=quiet)
    result = audit_models(models, ds, forget, device=device,
                          retrained="retrained" if retrained is not None else None, taps=names, figures=False,
                          quiet=quiet, **kw)
    return json_view(result)


def forget_classes(forget, ds: Dataset) -> tuple[int, ...]:
    """The classes to forget, by index or by name (the data's class names), checked against the data."""
    from .data import resolve_forget

    if isinstance(forget, (int, str)):
        forget = [forget]
    tokens = [t if isinstance(t, str) else int(t) for t in forget]
    if not tokens:
        raise UserError("forget is empty; name at least one class (index or name)")
    out = resolve_forget(tokens, ds)
    bad = [c for c in out if not 0 <= c < ds.num_classes]
    if bad:
        raise UserError(f"forget class(es) {bad} out of range: the data has classes 0..{ds.num_classes - 1}")
    if len(out) >= ds.num_classes:
        raise UserError("forget names every class; at least one must be kept")
    return out


def _per_seed(given, what: str) -> dict:
    """{seed: value} from a dict {seed: value} or a list (index i is seed `first + i`, filled by the caller)."""
    if given is None:
        return {}
    if isinstance(given, dict):
        return {int(k): v for k, v in given.items()}
    if isinstance(given, (list, tuple)):
        return dict(enumerate(given))
    raise UserError(f"{what} must be a dict {{seed: ...}} or a list with one entry per seed, not {type(given).__name__}")


def compare(build, data, forget, methods=None, seeds: int = 3, *, train=None, originals=None, references=None,
            config: RunConfig | None = None, device: str = "cpu", normalize: str = "pm1", taps: dict | list | None = None,
            value_range: str = "auto", logits_from=None, expect_acc: float | None = None, force: bool = False,
            quiet: bool = True, out: str | None = None) -> dict:
    """Every method in `methods` (default: compare's) over `seeds` seeds on your model, data and recipe.

    build() -> a fresh, untrained nn.Module of yours. train(model, data, classes, seed) -> the trained
    model: your training loop, called for each seed's original (all classes), retrained reference and null
    (the retain classes) and for RFS, with `data` exactly as you passed it; torch is seeded before build().
    A train function needs a "val" split in `data` (it trains on data["train"]; a split cnr-fast carved
    out of it would be inside what it trained on). originals / references: models you trained already,
    {seed: model} or a list (entry i for seed config.seed + i); references as (retrained, null) pairs.
    What is not given is trained by `train`; without `train`, by cnr-fast's own loop (the CLI's recipe,
    config.train) on your build(). Each seed's original is checked before any method runs: near chance, or more than 0.05 below
    `expect_acc`, raises UserError naming the recipe (force=True: a warning). Returns the compare.json
    dict (its "recipe" names whose recipe made the models); `out` also writes compare.json and report.md.
    """
    from .config import validate
    from .experiments import methods as M
    from .experiments.compare import compare as run_compare
    from .references import Recipe, own_loop

    cfg = validate(config or RunConfig())
    taps, tap_names = _tap_arg(taps)
    if tap_names:  # as --taps does on the CLI
        cfg = cfg.replace(detect={"taps": tap_names})
    methods = list(methods) if methods is not None else list(M.names(default_only=True))
    M.check_names(methods)
    if train is not None and not callable(train):
        raise UserError(f"train must be a function train(model, data, classes, seed) -> model, not {type(train).__name__}")
    if not callable(build):
        raise UserError("build must be a function that returns a fresh, untrained nn.Module")
    if train is not None and not (isinstance(data, dict) and "val" in data):
        raise UserError("with a train function, data needs a 'val' split of your own ({'train': ..., 'val': ..., "
                        "'test': ...}): your function trains on data['train'], so a split cnr-fast carved out of it "
                        "would be inside what it trained on")
    ds = as_dataset(data, val_fraction=cfg.data.val_fraction, value_range=value_range)
    cfg = cfg.replace(data={"forget": forget_classes(forget, ds)})
    orig = {cfg.seed + i if isinstance(originals, (list, tuple)) else i: m
            for i, m in _per_seed(originals, "originals").items()}
    if orig and ds.val_carved:  # the given originals were most likely trained on every image of data["train"]
        from .data import in_sample_validation

        warnings.warn(in_sample_validation("originals given and data has no 'val': each method's setting will be"),
                      UserWarning, stacklevel=3)
    refs = {cfg.seed + i if isinstance(references, (list, tuple)) else i: pair
            for i, pair in _per_seed(references, "references").items()}
    for seed, pair in refs.items():
        if not (isinstance(pair, (list, tuple)) and len(pair) == 2):
            raise UserError(f"references[{seed}] must be a (retrained, null) pair of models")
    run_seeds = [cfg.seed + i for i in range(seeds)]
    for what, given_for in (("originals", orig), ("references", refs)):
        stray = sorted(set(given_for) - set(run_seeds))
        if stray:
            raise UserError(f"{what} has seed(s) {stray}, which this compare does not run (seeds {run_seeds}: "
                            "config.seed + 0..seeds-1); key them by the seeds run, or set seeds / config.seed")
        missing = sorted(set(run_seeds) - set(given_for))
        if given_for and missing and train is None:
            raise UserError(f"{what} has no model for seed(s) {missing} of the seeds run {run_seeds}; give them, run "
                            "fewer seeds, or pass train= to train what is missing")

    def given(kind, seed):
        if kind == "original":
            return orig.get(seed)
        if kind in ("retrained", "retrained_null") and seed in refs:
            return refs[seed][0 if kind == "retrained" else 1]
        return None

    def prepared(m):
        return _prepare(m, ds, taps, normalize, logits_from)

    if train is None and bool(orig) != bool(refs):
        raise UserError("originals and references go together without train=: give both, or pass train= to train "
                        "what is not given")
    if train is None and (orig or refs):  # every model given (checked above): nothing to train
        recipe = Recipe("your given models", given=given, build=build, train=None, data=None, prepare=prepared)
    elif train is None:  # cnr-fast's own loop on your build() (prepared first: the loop feeds [-1, 1] images)
        own, name = own_loop(cfg, ds, device, quiet)
        recipe = Recipe(name + " on your build()", given=given, build=lambda: prepared(build()), train=own, data=None,
                        prepare=prepared)
    else:
        where = getattr(train, "__module__", None) or "your code"
        name = f"your training function {getattr(train, '__qualname__', 'train')} (from {where})"
        recipe = Recipe(name + (", with your given models where given" if orig or refs else ""), given=given,
                        build=build, train=train, data=data, prepare=prepared)
    result = run_compare(cfg, methods, seeds, device=device, ds=ds, quiet=quiet, recipe=recipe,
                         expect_acc=expect_acc, force=force)
    # the model and data are the caller's: name them so, not by the config's defaults (cnr-fast's own
    # ResNet and dataset, which built and loaded nothing here)
    label = f"your build() ({getattr(build, '__qualname__', type(build).__name__)})"
    result["arch"], result["width"] = label, None
    result["config"]["model"].update(arch=label, width=None)
    result["config"]["data"]["dataset"] = ds.name
    if out is not None:
        from .experiments.scenarios import get as get_scenario
        from .runs import check_out_dir, write_run_files

        from pathlib import Path

        check_out_dir(Path(out))
        write_run_files(Path(out), get_scenario("single").files(result)[0])
    return result
