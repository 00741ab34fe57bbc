"""Where `--model` builds a classifier from, and the input contract it is fed through.

A model source is one string:

- an architecture of cnr-fast's own (`resnet18`, `vit_tiny`, ...; see models.ARCHS);
- `torchvision:NAME`: any torchvision classification builder (`torchvision.models.get_model`), no
  weights, `num_classes` from the data, other keyword arguments from `--model-arg key=value`;
- `timm:NAME`: `timm.create_model(NAME, pretrained=False, num_classes=..., in_chans=...)`, nothing
  downloaded; `img_size` is passed the data's image size where the model takes it;
- `path/to/file.py:FUNCTION` or `package.module:FUNCTION`: the user's own builder, called with the
  `--model-arg` keywords (plus `num_classes` where its signature takes it), returning an nn.Module.

The input contract (recorded in config.json and in every checkpoint's meta): cnr-fast keeps images
in [-1, 1] with the data's channels; a model that takes 3 channels gets grey data repeated to RGB,
and `normalize` maps [-1, 1] to what the model was trained on ("pm1": as is; "imagenet": ImageNet's
mean and std on [0, 1]; or "m1,m2,m3/s1,s2,s3" on [0, 1]). Both are a forward pre-hook on the model
(`InputContract`), so every stage, the GAN and the audit feed the model as its own pipeline did, and
the model's state_dict stays the user's.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.util
import inspect
import json
import os

import torch
import torch.nn as nn

from ..errors import UserError

IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
NORMALIZE_HELP = "pm1 (images in [-1, 1], default), imagenet, or MEAN/STD per channel on [0, 1] like 0.5,0.5,0.5/0.2,0.2,0.2"


def kind(spec: str) -> str:
    """"own", "torchvision", "timm", "file" or "module"."""
    if ":" not in spec:
        return "own"
    head, _ = spec.rsplit(":", 1)
    if head in ("torchvision", "timm"):
        return head
    return "file" if head.endswith(".py") or os.sep in head else "module"


def parse_model_args(items) -> dict:
    """("depth=4", "drop_path_rate=0.1", "act=gelu") -> {"depth": 4, "drop_path_rate": 0.1, "act": "gelu"}."""
    out = {}
    for item in items or ():
        key, sep, val = str(item).partition("=")
        if not sep or not key.strip().isidentifier():
            raise UserError(f"--model-arg {item!r} is not KEY=VALUE; pass e.g. --model-arg depth=4")
        try:
            out[key.strip()] = json.loads(val)
        except ValueError:
            out[key.strip()] = val
    return out


def _closest(name: str, names) -> str:
    close = difflib.get_close_matches(name, list(names), n=3, cutoff=0.5)
    return f" (did you mean {', '.join(close)}?)" if close else ""


def build(spec: str, num_classes: int, image_size: int, model_args: dict | None = None) -> nn.Module:
    """A fresh, randomly initialised classifier from a non-own source (see the module docstring)."""
    kw = dict(model_args or {})
    k = kind(spec)
    name = spec.rsplit(":", 1)[1]
    if k == "torchvision":
        import torchvision.models as tvm

        known = tvm.list_models(module=tvm)
        if name not in known:
            raise UserError(f"unknown torchvision classification model {name!r}{_closest(name, known)}; "
                            "`python -c 'import torchvision; print(torchvision.models.list_models())'` lists them")
        if name.startswith("vit_") and "image_size" not in kw:
            kw["image_size"] = image_size
        return _call(spec, lambda: tvm.get_model(name, weights=None, num_classes=num_classes, **kw))
    if k == "timm":
        try:
            import timm
        except ImportError:
            raise UserError("--model timm:... needs timm; pip install timm") from None
        if not timm.is_model(name):
            raise UserError(f"unknown timm model {name!r}{_closest(name, timm.list_models())}; "
                            "`python -c 'import timm; print(timm.list_models())'` lists them")
        base = dict(pretrained=False, num_classes=num_classes, **kw)

        def make():
            if "img_size" not in kw:
                try:  # transformers take the image size; convnets refuse the keyword
                    return timm.create_model(name, img_size=image_size, **base)
                except TypeError:
                    pass
            return timm.create_model(name, **base)

        return _call(spec, make)
    fn = _user_builder(spec)
    params = inspect.signature(fn).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    if "num_classes" in params or takes_any:
        kw.setdefault("num_classes", num_classes)
    return _call(spec, lambda: fn(**kw))


def _call(spec: str, make) -> nn.Module:
    try:
        model = make()
    except UserError:
        raise
    except Exception as e:  # a builder's own error: one line, with the fix
        detail = (str(e).splitlines() or [type(e).__name__])[0][:200]
        raise UserError(f"building --model {spec} failed ({type(e).__name__}: {detail}); "
                        "check its --model-arg keywords") from None
    if not isinstance(model, nn.Module):
        raise UserError(f"--model {spec} returned {type(model).__name__}, not a torch nn.Module; "
                        "make the builder return the classifier")
    return model


def _user_builder(spec: str):
    return load_function(spec, "--model")


def load_function(spec: str, flag: str):
    """The function FUNCTION of FILE.py:FUNCTION or package.module:FUNCTION (a user's builder or training
    function); problems are one line naming `flag`."""
    where, func = spec.rsplit(":", 1)
    if kind(spec) == "file":
        if not os.path.isfile(where):
            raise UserError(f"{flag} {spec}: no file {where!r}; pass FILE.py:FUNCTION with an existing file")
        mod_name = "cnr_fast_user_model_" + os.path.splitext(os.path.basename(where))[0]
        loader = importlib.util.spec_from_file_location(mod_name, where)
        module = importlib.util.module_from_spec(loader)
        try:
            loader.loader.exec_module(module)
        except Exception as e:
            raise UserError(f"{flag} {spec}: importing {where!r} failed ({type(e).__name__}: "
                            f"{(str(e).splitlines() or [''])[0][:200]}); fix the file") from None
    else:
        try:
            module = importlib.import_module(where)
        except Exception as e:
            raise UserError(f"{flag} {spec}: cannot import module {where!r} ({type(e).__name__}: "
                            f"{(str(e).splitlines() or [''])[0][:200]}); check the name and sys.path") from None
    fn = getattr(module, func, None)
    if not callable(fn):
        found = [n for n, v in vars(module).items() if callable(v) and not n.startswith("_")]
        raise UserError(f"{flag} {spec}: {where!r} has no function {func!r}{_closest(func, found)}")
    return fn


def builder_digest(spec: str) -> str | None:
    """sha256 of the source file of a user's builder (FILE.py:FUNCTION, package.module:FUNCTION), None for
    other sources: part of every cached model's key and checkpoint meta, so an edited builder (ReLU to
    Tanh, same parameter shapes) never meets the old builder's weights."""
    import hashlib

    k = kind(spec)
    if k not in ("file", "module"):
        return None
    where = spec.rsplit(":", 1)[0]
    if k == "module":
        try:
            found = importlib.util.find_spec(where)
        except (ImportError, ValueError):
            found = None
        where = getattr(found, "origin", None)
        if not where or not os.path.isfile(where):
            return None
    try:
        with open(where, "rb") as fh:
            return hashlib.sha256(fh.read()).hexdigest()
    except OSError:
        return None


def parse_normalize(text: str) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
    """None for "pm1" (as is), else (mean, std) on [0, 1]."""
    if text == "pm1":
        return None
    if text == "imagenet":
        return IMAGENET
    mean, sep, std = text.partition("/")
    try:
        m, s = tuple(float(v) for v in mean.split(",")), tuple(float(v) for v in std.split(","))
    except ValueError:
        m = s = ()
    if not sep or not m or len(m) != len(s) or min(s) <= 0:
        raise UserError(f"--normalize {text!r}: choose {NORMALIZE_HELP}")
    return m, s


def first_input_channels(model: nn.Module) -> int | None:
    """Input channels of the first convolution (in module order), None if the model has none."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            return m.in_channels
    return None


class InputContract:
    """Forward pre-hook: [-1, 1] data with `data_channels` -> the model's channels and normalisation."""

    def __init__(self, data_channels: int, model_channels: int, normalize: str = "pm1"):
        self.data_channels, self.model_channels, self.normalize = data_channels, model_channels, normalize
        ms = parse_normalize(normalize)
        self.mean = self.std = None
        if ms is not None:
            if len(ms[0]) not in (1, model_channels):
                raise UserError(f"--normalize {normalize!r} gives a mean and std for {len(ms[0])} channel(s), but the "
                                f"model takes {model_channels}; give one mean/std for all channels or {model_channels} "
                                "(MEAN/STD, comma-separated per channel), the ones your pipeline normalised with")
            self.mean = torch.tensor(ms[0]).view(1, -1, 1, 1)
            self.std = torch.tensor(ms[1]).view(1, -1, 1, 1)

    def __call__(self, _module, args):
        x = args[0]
        if self.model_channels != self.data_channels:
            x = x.expand(-1, self.model_channels, -1, -1)
        if self.mean is not None:
            x = ((x + 1) * 0.5 - self.mean.to(x)) / self.std.to(x)
        return (x, *args[1:])


def apply_input_contract(model: nn.Module, data_channels: int, normalize: str = "pm1", spec: str = "") -> None:
    """Fit `model` to cnr-fast's images (see the module docstring)."""
    want = first_input_channels(model) or data_channels
    if want != data_channels and not (data_channels == 1 and want == 3):
        raise UserError(f"--model {spec} takes {want} input channel(s), the data has {data_channels}; "
                        "only grey data is repeated to RGB: build the model for the data's channels")
    contract = InputContract(data_channels, want, normalize)
    if want != data_channels or contract.mean is not None:
        model.register_forward_pre_hook(contract)


LOGITS_HELP = ("where the logits are in what the model's forward returns: an index (0 = the first element of a tuple) "
               "or a key (logits); default: the tensor itself, else a tuple's first tensor, else the 'logits' key "
               "or attribute")


def describe_output(out) -> str:
    """What a forward returned, in a few words (`cnr-fast taps`, error messages)."""
    if isinstance(out, torch.Tensor):
        return f"a tensor {list(out.shape)}"
    if isinstance(out, (tuple, list)):
        return f"a {type(out).__name__} of {len(out)}: " + ", ".join(describe_output(o) for o in out[:4])
    if isinstance(out, dict) or hasattr(out, "keys"):
        return f"a {type(out).__name__} with keys " + ", ".join(str(k) for k in list(out.keys())[:6])
    return f"a {type(out).__name__}"


def pick_logits(out, where: str | None = None, num_classes: int | None = None):
    """The logits tensor in a forward's output by the stated rule (see LOGITS_HELP); None where none is.
    A tuple's tensors: the first with num_classes columns where that is known, else the first."""
    if where is not None:
        try:
            if isinstance(out, (tuple, list)):
                got = out[int(where)]
            elif isinstance(out, dict) or hasattr(out, "keys"):
                got = out[where]
            else:
                got = getattr(out, where)
        except (IndexError, KeyError, ValueError, AttributeError, TypeError):
            return None
        return got if isinstance(got, torch.Tensor) else None
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, (tuple, list)):
        tensors = [o for o in out if isinstance(o, torch.Tensor)]
        fits = [o for o in tensors if num_classes is not None and o.ndim == 2 and o.shape[1] == num_classes]
        return (fits or tensors or [None])[0]
    if isinstance(out, dict) or hasattr(out, "keys"):
        got = out.get("logits") if hasattr(out, "get") else None
        return got if isinstance(got, torch.Tensor) else None
    got = getattr(out, "logits", None)
    return got if isinstance(got, torch.Tensor) else None


class LogitsOf:
    """Forward hook: the model's output replaced by the logits in it (pick_logits)."""

    def __init__(self, where: str | None = None, num_classes: int | None = None):
        self.where, self.num_classes = where, num_classes

    def __call__(self, _module, _args, out):
        return pick_logits(out, self.where, self.num_classes)


def apply_logits_rule(model: nn.Module, example: torch.Tensor, where: str | None = None, spec: str = "",
                      num_classes: int | None = None) -> str | None:
    """Run the model once on `example`; where its forward returns something other than a logits tensor,
    attach LogitsOf so every stage sees the logits. Returns what was decided (None: a plain tensor).
    A forward whose output holds no tensor there: one line naming what it returns and --logits-from."""
    with torch.no_grad():
        out = model.eval()(example)
    if isinstance(out, torch.Tensor) and where is None:
        return None
    if where is None and num_classes is not None and isinstance(out, (tuple, list)):
        fits = [i for i, o in enumerate(out) if isinstance(o, torch.Tensor) and o.ndim == 2 and o.shape[1] == num_classes]
        if len(fits) > 1:  # an embedding as wide as the classes would be taken for the logits, silently
            raise UserError(f"the model {spec + ' ' if spec else ''}returns {describe_output(out)}: the tensors at "
                            f"{', '.join(map(str, fits))} all have one column per class ({num_classes}), so which are "
                            "the logits is not known; pass --logits-from INDEX (logits_from= in Python)")
    got = pick_logits(out, where, num_classes)
    where_text = f"at {where!r}" if where is not None else "by the default rule"
    if got is None:
        raise UserError(f"the model {spec + ' ' if spec else ''}returns {describe_output(out)}, with no logits tensor "
                        f"{where_text}; pass --logits-from INDEX|KEY (logits_from= in Python) saying where its logits "
                        "are")
    if num_classes is not None and (got.ndim != 2 or got.shape[1] != num_classes):
        raise UserError(f"the model {spec + ' ' if spec else ''}returns {describe_output(out)}; the tensor taken as "
                        f"logits {where_text} is {list(got.shape)}, not (batch, {num_classes}) for the data's "
                        f"{num_classes} classes; pass --logits-from INDEX|KEY (logits_from= in Python)")
    model.register_forward_hook(LogitsOf(where, num_classes))
    return f"logits taken from {describe_output(out)}" + (f" at {where!r}" if where is not None else
                                                            " (first tensor / 'logits'; --logits-from overrides)")
