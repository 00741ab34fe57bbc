"""Taps of any classifier: where its hidden states are read, found automatically or given.

cnr-fast's own archs name their taps (`tap_modules()`). Any other nn.Module gets them here, as
module paths under the names L0..L4 that every stage and the audit use:

- a transformer (a container whose children all output (B, N, D) tokens, e.g. `blocks`,
  `encoder.layers`): L1..L4 = the blocks at depth 1/4, 1/2, 3/4 and the last; L0 = the patch
  embedding (the last module to finish before the first block);
- timm's `feature_info` where the model has it (hierarchical models: ConvNeXt, Swin, EfficientNet):
  L1..L4 = its last four entries;
- any other CNN: a forward pass on one example; the stages are where the spatial resolution changes
  (for each run of one resolution, the outermost module to finish last), the global pool and what
  follows it excluded; L1..L4 = the last four stages, L0 = the one before (or the first).

`--taps L1=module.path,...` overrides (`cnr-fast taps --model ...` lists the candidates with their
output shapes). A tap's output is taken as (B, C, H, W) maps, (B, N, D) tokens, or (B, H, W, C)
channels-last maps (layout "nhwc", permuted to (B, C, H, W) by the hook).
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from ..errors import UserError

TAP_NAMES = ("L0", "L1", "L2", "L3", "L4")
ATTR = "cnr_fast_taps"  # model attribute: {tap name: (module path, layout)}
_POOLS = (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, nn.AvgPool2d, nn.Flatten)


def tap_modules(model: nn.Module) -> dict[str, nn.Module]:
    """{tap name: module} of any model: its own `tap_modules()`, or the paths attached by `attach`."""
    own = getattr(model, "tap_modules", None)
    if callable(own):
        return own()
    paths = getattr(model, ATTR, None)
    if paths is None:
        raise UserError(f"{type(model).__name__} has no taps; build it through cnr_fast (--model) or call "
                        "cnr_fast.models.taps.attach(model, example) first")
    return {n: model.get_submodule(p) for n, (p, _layout) in paths.items()}


def tap_paths(model: nn.Module) -> dict[str, str]:
    """{tap name: the path of the tapped module in `model`}, however the taps were found or named."""
    where = {id(m): p for p, m in model.named_modules()}
    return {n: where.get(id(m), "?") for n, m in tap_modules(model).items()}


def tap_layouts(model: nn.Module) -> dict[str, str]:
    paths = getattr(model, ATTR, None) or {}
    return {n: layout for n, (_p, layout) in paths.items()}


def candidates(model: nn.Module, example: torch.Tensor) -> list[tuple[str, tuple[int, ...]]]:
    """(module path, output shape) of every named module whose output is a tensor, in the order the
    modules finished during one forward pass of `example` (first call of each module)."""
    seen: dict[str, tuple[int, ...]] = {}
    order: list[str] = []
    handles = []

    def hook(path):
        def fn(_m, _inp, out):
            if path not in seen and isinstance(out, torch.Tensor):
                seen[path] = tuple(out.shape)
                order.append(path)
        return fn

    for path, mod in model.named_modules():
        if path:
            handles.append(mod.register_forward_hook(hook(path)))
    eval_forward(model, example, handles)
    return [(p, seen[p]) for p in order]


def eval_forward(model: nn.Module, x: torch.Tensor, handles) -> None:
    """One forward pass in eval mode without gradients, for the hooks in `handles`, which are removed
    after; the model's train / eval mode is restored."""
    was = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
        model.train(was)


def _layout(shape, channels_hint: int | None = None) -> str:
    if len(shape) == 3:
        return "tokens"
    if len(shape) == 4 and channels_hint is not None and shape[-1] == channels_hint != shape[1]:
        return "nhwc"
    if len(shape) == 4 and shape[1] == shape[2] and shape[3] != shape[1] and channels_hint is None:
        return "nhwc"
    return "nchw" if len(shape) == 4 else "flat"


def find(model: nn.Module, example: torch.Tensor, cands=None) -> dict[str, tuple[str, str]]:
    """{L0..L4: (module path, layout)} for `model` (see the module docstring); `cands`: its
    `candidates(model, example)` when the caller has them already (one forward pass, not two)."""
    cands = candidates(model, example) if cands is None else cands
    shapes = dict(cands)
    found = _transformer_blocks(model, shapes) or _feature_info(model, cands) or _resolution_stages(model, cands)
    if not found:
        raise UserError(f"no taps found in {type(model).__name__}: no stage or block outputs a feature map or "
                        "tokens; pass --taps L1=module.path,... (`cnr-fast taps --model ...` lists candidates)")
    return found


def _quarters(items: list) -> list:
    n = len(items)
    return [items[max(1, math.ceil(n * q)) - 1] for q in (0.25, 0.5, 0.75, 1.0)]


def _transformer_blocks(model, shapes) -> dict | None:
    best = None
    for path, mod in model.named_modules():
        kids = [f"{path}.{n}" if path else n for n, _ in mod.named_children()]
        if len(kids) < 2 or not isinstance(mod, (nn.Sequential, nn.ModuleList)):
            continue
        outs = [shapes.get(k) for k in kids]
        if any(o is None or len(o) != 3 for o in outs) or len(set(outs)) != 1:
            continue
        if best is None or len(kids) > len(best):
            best = kids
    if best is None:
        return None
    order = list(shapes)
    first = order.index(best[0])
    before = [p for p in order[:first] if len(shapes[p]) in (3, 4) and not best[0].startswith(p + ".")
              and not any(b.startswith(p + ".") or p.startswith(b + ".") for b in best)]
    taps = {f"L{i + 1}": (p, "tokens") for i, p in enumerate(_quarters(best))}
    if before:
        taps = {"L0": (before[-1], _layout(shapes[before[-1]])), **taps}
    return taps


def _feature_info(model, cands) -> dict | None:
    info = getattr(model, "feature_info", None)
    try:
        entries = [(f["module"], f.get("num_chs")) for f in info] if info else []
    except (TypeError, KeyError):
        return None
    shapes = dict(cands)
    entries = [(m, c) for m, c in entries if m in shapes and len(shapes[m]) == 4]
    if len(entries) < 4:
        return None
    last4 = entries[-4:]
    taps = {f"L{i + 1}": (m, _layout(shapes[m], c)) for i, (m, c) in enumerate(last4)}
    if len(entries) > 4:
        m, c = entries[-5]
        taps = {"L0": (m, _layout(shapes[m], c)), **taps}
    else:
        order = [p for p, _ in cands]
        first = order.index(last4[0][0])
        stage = last4[0][0]
        early = [p for p in order[:first] if len(shapes[p]) in (3, 4) and not p.startswith(stage + ".")]
        if early:
            taps = {"L0": (early[-1], _layout(shapes[early[-1]])), **taps}
    return taps


def _resolution_stages(model, cands) -> dict | None:
    mods = dict(model.named_modules())
    stages: list[tuple[tuple[int, ...], str]] = []  # (spatial size, path of the last module to finish)
    shapes = dict(cands)
    for path, shape in cands:
        if len(shape) != 4 or _off_trunk(path, shape, shapes, mods):
            continue
        parts = path.split(".")
        in_block = any(not isinstance(mods[".".join(parts[:i])], (nn.Sequential, nn.ModuleList))
                       for i in range(1, len(parts)))
        if isinstance(mods[path], _POOLS) and shape[2:] == (1, 1) and not in_block:
            break  # the global pool (not a squeeze-excitation's): the head follows
        size = tuple(shape[2:])
        if stages and stages[-1][0] == size:
            stages[-1] = (size, path)
        else:
            stages.append((size, path))
    if len(stages) < 2:
        return None
    paths = [p for _, p in stages][-5:]
    names = TAP_NAMES if len(paths) == 5 else TAP_NAMES[1:1 + len(paths)]  # 4 or fewer stages: L1, L2, ...
    return {n: (p, _layout(shapes[p], shapes[p][1])) for n, p in zip(names, paths)}


def _off_trunk(path: str, shape, shapes, mods) -> bool:
    """A module inside a block (not a plain Sequential) whose output has another resolution (a
    squeeze-excitation gate, the inside of a downsampling block) is not on the trunk."""
    parts = path.split(".")
    ups = [".".join(parts[:i]) for i in range(1, len(parts))]
    return any(u in shapes and not isinstance(mods[u], (nn.Sequential, nn.ModuleList))
               and (len(shapes[u]) != 4 or shapes[u][2:] != shape[2:]) for u in ups)


def split_items(items) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """--taps items (a tap name, or NAME=module.path) -> (the NAME=module.path items, every item's tap name)."""
    return tuple(t for t in items if "=" in t), tuple(t.split("=", 1)[0] for t in items)


def parse_overrides(text_items) -> dict[str, str]:
    """("L1=layer1", "L4=layer4") -> {"L1": "layer1", "L4": "layer4"}."""
    out = {}
    for item in text_items:
        name, sep, path = item.partition("=")
        if not sep or name not in TAP_NAMES or not path:
            raise UserError(f"--taps {item!r}: give NAME=module.path with NAME one of {', '.join(TAP_NAMES)}")
        out[name] = path
    return out


def attach(model: nn.Module, example: torch.Tensor, overrides: dict[str, str] | None = None) -> dict[str, tuple[str, str]]:
    """Find the taps of `model` (overrides win) and attach them; returns {name: (path, layout)}."""
    overrides = dict(overrides or {})
    cands = candidates(model, example)
    if len(overrides) == len(TAP_NAMES):
        found = {}
    else:
        try:
            found = find(model, example, cands)
        except UserError:
            if not overrides:
                raise
            found = {}  # nothing found on its own: the taps named are the taps (a driver says if it needs more)
    if overrides:
        shapes = dict(cands)
        names = dict(model.named_modules())
        for name, path in overrides.items():
            if path not in names:
                raise UserError(f"--taps {name}={path}: the model has no module {path!r}; `cnr-fast taps --model ...` "
                                "lists them")
            if path not in shapes:
                raise UserError(f"--taps {name}={path}: its output is not a tensor (or it does not run in the "
                                "forward pass); choose another module")
            found[name] = (path, _layout(shapes[path]))
    found = {n: found[n] for n in TAP_NAMES if n in found}
    setattr(model, ATTR, found)
    return found
