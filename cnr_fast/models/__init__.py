"""Architecture factory with named taps L0..L4, the same API for every model.

cnr-fast's own archs (ARCHS) name their taps:
ResNet: L0 = stem (after bn1/relu, before maxpool), L1..L4 = layer1..layer4 outputs.
ViT:    L0 = patch embedding (conv_proj output), L1..L4 = encoder blocks at depth 1/4, 1/2, 3/4, end.
Any other source (`torchvision:NAME`, `timm:NAME`, the user's builder; models/sources.py) gets its
taps found automatically or from `--taps L1=path,...` (models/taps.py) and its input contract.

`Taps(model, names)` records those activations through forward hooks (with their autograd graph,
so losses on them can be back-propagated).
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
from torchvision.models.resnet import BasicBlock, Bottleneck
from torchvision.models.vision_transformer import VisionTransformer

from ..errors import UserError
from . import sources
from .taps import TAP_NAMES, tap_layouts, tap_modules
from .fresh import fresh_copy, not_reset  # noqa: F401  (re-exported)

_RESNETS = {
    "resnet18": (BasicBlock, [2, 2, 2, 2]),
    "resnet34": (BasicBlock, [3, 4, 6, 3]),
    "resnet50": (Bottleneck, [3, 4, 6, 3]),
    "resnet101": (Bottleneck, [3, 4, 23, 3]),
}
# name: (patch, layers, heads, hidden, mlp)
_VITS = {
    "vit_b16": (16, 12, 12, 768, 3072),
    "vit_tiny": (4, 6, 3, 96, 192),  # CPU preset for 28-32 px inputs
}
ARCHS = tuple(_RESNETS) + tuple(_VITS)


def takes_width(arch: str) -> bool:
    """Whether --width (model.width) scales the arch: cnr-fast's own ResNets only."""
    return arch in _RESNETS


def arch_label(arch: str, width: float) -> str:
    """The arch as headers print it: with its width where the width means something (cnr-fast's ResNets)."""
    return f"{arch} (width {width:g})" if takes_width(arch) else arch


class ResNet(nn.Module):
    """torchvision's ResNet with a channel multiplier and an optional small-image stem.

    Module names match torchvision's, so at width 1 with the ImageNet stem a torchvision
    state_dict loads as is.
    """

    def __init__(self, block, layers, num_classes, in_channels=3, width=1.0, small_stem=True):
        super().__init__()
        self.stem = "small" if small_stem else "imagenet"  # recorded in checkpoints (model_meta)
        widths = [max(4, int(round(w * width))) for w in (64, 128, 256, 512)]
        self.inplanes = widths[0]
        if small_stem:  # 28-32 px inputs: 3x3 stride-1 stem, no max-pool (the usual CIFAR ResNet)
            self.conv1 = nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False)
            self.maxpool = nn.Identity()
        else:
            self.conv1 = nn.Conv2d(in_channels, widths[0], 7, 2, 3, bias=False)
            self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        self.stem_out = nn.Identity()  # tap point L0
        self.layer1 = self._make_layer(block, widths[0], layers[0])
        self.layer2 = self._make_layer(block, widths[1], layers[1], stride=2)
        self.layer3 = self._make_layer(block, widths[2], layers[2], stride=2)
        self.layer4 = self._make_layer(block, widths[3], layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(widths[3] * block.expansion, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def _make_layer(self, block, planes, blocks, stride=1):
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes * block.expansion, 1, stride, bias=False),
                nn.BatchNorm2d(planes * block.expansion),
            )
        mods = [block(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * block.expansion
        mods += [block(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*mods)

    def tap_modules(self) -> dict[str, nn.Module]:
        return {"L0": self.stem_out, "L1": self.layer1, "L2": self.layer2, "L3": self.layer3, "L4": self.layer4}

    def forward(self, x):
        x = self.stem_out(self.relu(self.bn1(self.conv1(x))))
        x = self.maxpool(x)
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


class ViT(VisionTransformer):
    """torchvision's VisionTransformer with a channel adapter for grey images and named taps."""

    def __init__(self, image_size, patch, layers, heads, hidden, mlp, num_classes, in_channels=3):
        super().__init__(image_size, patch, layers, heads, hidden, mlp, num_classes=num_classes)
        if in_channels != 3:
            self.conv_proj = nn.Conv2d(in_channels, hidden, patch, patch)
        n = len(self.encoder.layers)
        depth = [max(1, math.ceil(n * q)) - 1 for q in (0.25, 0.5, 0.75, 1.0)]
        self._taps = {"L0": self.conv_proj, **{f"L{i + 1}": self.encoder.layers[d] for i, d in enumerate(depth)}}

    def tap_modules(self) -> dict[str, nn.Module]:
        return dict(self._taps)


def vit_patch(arch: str) -> int | None:
    """Patch size of a ViT arch, None for other archs."""
    return _VITS[arch][0] if arch in _VITS else None


def build_model(arch: str, num_classes: int, in_channels: int, image_size: int, width: float = 1.0,
                stem: str | None = None, model_args=(), normalize: str = "pm1", tap_paths=(),
                logits_from: str | None = None) -> nn.Module:
    """stem (ResNet): "small" (3x3 stride 1, no max-pool), "imagenet" (torchvision's), None: small up to 64 px.

    `arch` is a model source (models/sources.py); for one not of cnr-fast's own, model_args
    ("key=value" strings) go to its builder, `normalize` is its input normalisation, tap_paths
    ("L1=module.path" strings) override the taps found automatically.
    """
    if sources.kind(arch) != "own":
        from . import taps

        model = sources.build(arch, num_classes, image_size, sources.parse_model_args(model_args))
        sources.apply_input_contract(model, in_channels, normalize, arch)
        example = torch.zeros(2, in_channels, image_size, image_size)
        model.cnr_fast_logits = sources.apply_logits_rule(model, example, logits_from, arch, num_classes)
        taps.attach(model, example, taps.parse_overrides(tap_paths))
        return model
    if arch in _RESNETS:
        block, layers = _RESNETS[arch]
        small = image_size <= 64 if stem is None else stem == "small"
        return ResNet(block, layers, num_classes, in_channels, width, small_stem=small)
    if arch in _VITS:
        patch, layers, heads, hidden, mlp = _VITS[arch]
        if image_size % patch:
            fix = (image_size // patch + 1) * patch
            raise UserError(f"{arch} needs an image size divisible by its patch size {patch}; pass --image-size {fix}")
        return ViT(image_size, patch, layers, heads, hidden, mlp, num_classes, in_channels)
    raise UserError(f"unknown arch {arch!r}; choose one of {', '.join(ARCHS)}")


def check_taps(names) -> None:
    bad = [n for n in names if n not in TAP_NAMES]
    if bad:
        raise UserError(f"layer(s) {bad} do not exist; taps are {', '.join(TAP_NAMES)}")


class Taps:
    """Context manager recording tap outputs: `with Taps(model, ["L1"]) as t: model(x); t["L1"]`."""

    def __init__(self, model: nn.Module, names=TAP_NAMES, detach: bool = False):
        check_taps(names)
        self.model, self.names, self.detach = model, list(names), detach
        self.out: dict[str, torch.Tensor] = {}
        self._handles = []

    def __enter__(self):
        mods = tap_modules(self.model)
        layouts = tap_layouts(getattr(self.model, "model", self.model))
        missing = [n for n in self.names if n not in mods]
        if missing:
            raise UserError(f"the model has no tap(s) {missing} (it has {', '.join(mods)}); pass --taps "
                            f"{','.join(n for n in self.names if n in mods) or ','.join(mods)} to use those, "
                            "or name modules with --taps L1=module.path,...")
        for name in self.names:
            self._handles.append(mods[name].register_forward_hook(self._hook(name, layouts.get(name))))
        return self

    def _hook(self, name, layout=None):
        def fn(_mod, _inp, out):
            if not isinstance(out, torch.Tensor):
                raise UserError(f"tap {name}'s module returns {type(out).__name__}, not a tensor; choose another "
                                f"module with --taps {name}=module.path")
            if layout == "nhwc":
                out = out.permute(0, 3, 1, 2)
            self.out[name] = out.detach() if self.detach else out

        return fn

    def __exit__(self, *exc):
        for h in self._handles:
            h.remove()
        self._handles.clear()

    def __getitem__(self, name) -> torch.Tensor:
        return self.out[name]


def load_model_state(model: nn.Module, state: dict, meta: dict, arch: str, num_classes: int, path: str) -> None:
    """Load a state_dict, turning mismatches into one clear UserError."""
    if meta.get("arch") and meta["arch"] != arch:
        raise UserError(f"checkpoint {path!r} is a {meta['arch']} model, not {arch}; pass --arch {meta['arch']}")
    if meta.get("num_classes") and int(meta["num_classes"]) != num_classes:
        raise UserError(
            f"checkpoint {path!r} has {meta['num_classes']} classes but the dataset has {num_classes}; "
            "pass the dataset the checkpoint was trained on"
        )
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [k for k in own if k in state and hasattr(state[k], "shape") and tuple(state[k].shape) != tuple(own[k].shape)]
    parts = []
    if missing:
        parts.append(f"missing {len(missing)} key(s): {', '.join(missing[:3])}{', ...' if len(missing) > 3 else ''}")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected key(s): {', '.join(unexpected[:3])}"
                     f"{', ...' if len(unexpected) > 3 else ''}")
    if shapes:
        k = shapes[0]
        parts.append(f"{k} has shape {tuple(state[k].shape)}, the model needs {tuple(own[k].shape)}")
    if parts and state and all(k.startswith("module.") for k in state) \
            and {k[len("module."):] for k in state} == set(own):
        raise UserError(
            f"checkpoint {path!r} has every key prefixed 'module.' (saved from a DataParallel / DDP wrapper); "
            "re-save the inner model's weights (torch.save(model.module.state_dict(), path)) and pass that file"
        )
    if parts:
        raise UserError(
            f"checkpoint {path!r} does not fit {arch} with {num_classes} classes ({'; '.join(parts)}); "
            "pass the --model (or --arch and --width), --model-arg and dataset it was trained with"
        )
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        detail = str(e).splitlines()[0][:200]
        raise UserError(
            f"checkpoint {path!r} does not fit {arch} with {num_classes} classes ({detail}); "
            "pass the --model (or --arch and --width), --model-arg and dataset it was trained with"
        ) from None


class LogitMask(nn.Module):
    """Logit masking (LM baseline): forget-class logits set to -inf at inference.

    Hidden states are the wrapped model's, untouched on purpose; taps delegate to it.
    """

    def __init__(self, model: nn.Module, forget, logits_from=None):
        super().__init__()
        self.model, self.logits_from = model, logits_from  # where a tuple / dict output holds the logits
        head = [m for m in model.modules() if isinstance(m, nn.Linear)][-1]  # the classifier's last layer
        self.register_buffer("forget_mask", torch.zeros(head.out_features, dtype=torch.bool))
        self.forget_mask[list(forget)] = True

    def tap_modules(self):
        return tap_modules(self.model)

    def forget_classes(self) -> list[int]:
        return self.forget_mask.nonzero().flatten().tolist()

    def forward(self, x):
        out = self.model(x)
        if not isinstance(out, torch.Tensor):  # a user's model returning a tuple / dict: its logits by the rule
            out = sources.pick_logits(out, self.logits_from, self.forget_mask.numel())
        return out.masked_fill(self.forget_mask, float("-inf"))


def model_meta(arch: str, width: float, ds, model: nn.Module | None = None, model_args=(), normalize="pm1",
               tap_paths=(), logits_from=None) -> dict:
    """What a checkpoint records about its model and data (ds: cnr_fast.data.Dataset); for a model
    source other than cnr-fast's own, how it was built and its taps (path and layout)."""
    inner = getattr(model, "model", model)  # LogitMask wraps
    stem = {"stem": inner.stem} if isinstance(getattr(inner, "stem", None), str) else {}  # own ResNets only
    source = {}
    if sources.kind(arch) != "own":
        found = getattr(inner, "cnr_fast_taps", None) or {}
        source = {"model_args": list(model_args), "normalize": normalize,
                  "tap_paths": [f"{n}={p}" for n, (p, _layout) in found.items()] or list(tap_paths)}
        if logits_from is not None:
            source["logits_from"] = logits_from
        builder = sources.builder_digest(arch)
        if builder:
            source["builder_sha256"] = builder
    return {"arch": arch, "width": width, **stem, **source, **ds.fingerprint()}


def model_from_checkpoint(path, ds, arch: str | None = None, width: float | None = None, source: dict | None = None):
    """Build the model a checkpoint holds and check it against the dataset `ds`.

    Returns (model in eval mode, meta). cnr-fast checkpoints carry arch / width / class count in
    their meta; a bare state_dict from another tool needs `arch` and `width` from the caller, and for
    a source other than cnr-fast's own, `source` (references.source_options: model_args, normalize,
    tap_paths). Taps: those the checkpoint records, each tap that `source["tap_paths"]` names moved there.
    A `logit_mask` entry in meta (LM baseline) wraps the model in LogitMask.
    """
    from ..runs import load_checkpoint

    state, meta = load_checkpoint(path)
    arch = arch or meta.get("arch")
    if arch is None:
        raise UserError(f"checkpoint {str(path)!r} does not record its arch; pass --arch")
    if meta.get("arch") and arch != meta["arch"]:
        raise UserError(f"checkpoint {str(path)!r} is a {meta['arch']} model, not {arch}; pass --arch {meta['arch']}")
    width = float(meta.get("width", width if width is not None else 1.0))
    if meta.get("num_classes") is not None and int(meta["num_classes"]) != ds.num_classes:
        raise UserError(
            f"checkpoint {str(path)!r} has {meta['num_classes']} classes but dataset {ds.name!r} has "
            f"{ds.num_classes}; pass the dataset the checkpoint was trained on"
        )
    for key in ("in_channels", "image_size"):
        if meta.get(key) is not None and int(meta[key]) != getattr(ds, key):
            raise UserError(
                f"checkpoint {str(path)!r} expects {key}={meta[key]} but dataset {ds.name!r} gives "
                f"{getattr(ds, key)}; pass the dataset (and --image-size) it was trained with"
            )
    given = source or {}
    # the taps the checkpoint records, each one the caller names (--taps NAME=path) put where the caller says
    taps = {**dict(t.partition("=")[::2] for t in meta.get("tap_paths", ())),
            **dict(t.partition("=")[::2] for t in given.get("tap_paths", ()))}
    model = build_model(arch, ds.num_classes, ds.in_channels, ds.image_size, width, stem=meta.get("stem"),
                        model_args=meta.get("model_args", given.get("model_args", ())),
                        normalize=meta.get("normalize", given.get("normalize", "pm1")),
                        tap_paths=tuple(f"{n}={p}" for n, p in taps.items()),
                        logits_from=meta.get("logits_from", given.get("logits_from")))
    load_model_state(model, state, meta, arch, ds.num_classes, str(path))
    if meta.get("logit_mask"):
        model = LogitMask(model, meta["logit_mask"])
    return model.eval(), meta
