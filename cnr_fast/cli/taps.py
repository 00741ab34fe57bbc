"""`cnr-fast taps`: the taps cnr-fast finds in a model, and every candidate module with its output shape.

The model is built (randomly initialised, nothing downloaded) from `--model` with the data's class
count, channels and image size, and run once on a batch of zeros. The taps found are what `unlearn`,
`compare` and `audit` use unless `--taps L1=module.path,...` names others.
"""

from __future__ import annotations

from ..errors import UserError

from .args import add_data_args, add_model_args, config_from_args, one_line_errors


def add_parser(sub) -> None:
    p = sub.add_parser("taps", help="list a model's taps and candidate modules", description=__doc__,
                       epilog="examples:\n  cnr-fast taps --model torchvision:mobilenet_v3_small --image-size 32\n"
                              "  cnr-fast taps --model timm:vit_tiny_patch16_224 --model-arg patch_size=4",
                       formatter_class=__import__("argparse").RawDescriptionHelpFormatter)
    add_data_args(p)
    add_model_args(p)
    p.add_argument("--taps", type=lambda s: tuple(s.split(",")), help="NAME=module.path,... overrides to check")
    p.add_argument("--quiet", action="store_true", help="accepted for symmetry with the other verbs")
    p.add_argument("--all", action="store_true", help="every candidate module, not only those with 3-d / 4-d outputs")
    one_line_errors(p)
    p.set_defaults(func=run)


def run(args) -> int:
    import torch

    from ..data import load_dataset
    from ..models import build_model
    from ..models.taps import candidates
    from ..references import source_options

    cfg = config_from_args(args)  # checks the arch too (args.check_config)
    ds = load_dataset(cfg.data)
    try:
        model = build_model(cfg.model.arch, ds.num_classes, ds.in_channels, ds.image_size, cfg.model.width,
                            **source_options(cfg))
        found = getattr(model, "cnr_fast_taps", None)
    except UserError as e:
        if not str(e).startswith("no taps found"):
            raise
        # none found on its own: the model as built, without taps, so its candidates can be listed
        from ..models import sources

        model = sources.build(cfg.model.arch, ds.num_classes, ds.image_size,
                              sources.parse_model_args(cfg.model.model_args))
        sources.apply_input_contract(model, ds.in_channels, cfg.model.normalize, cfg.model.arch)
        sources.apply_logits_rule(model, torch.zeros(2, ds.in_channels, ds.image_size, ds.image_size),
                                  cfg.model.logits_from, cfg.model.arch, ds.num_classes)
        found = {}
        print(f"taps: none found on their own ({e}); name them from the candidates below")
    example = torch.zeros(2, ds.in_channels, ds.image_size, ds.image_size)
    cands = candidates(model, example)
    print(f"model {cfg.model.arch}: {sum(p.numel() for p in model.parameters()):,} parameters; input "
          f"{ds.in_channels}x{ds.image_size}x{ds.image_size} from {ds.name}")
    with torch.no_grad():
        logits = model.eval()(example)
    print("forward returns: " + (getattr(model, "cnr_fast_logits", None) or "a logits tensor")
          + f"; logits {list(logits.shape)} for a batch of 2")
    if found is None:
        print("taps: the model names its own (" + ", ".join(model.tap_modules()) + ")")
    elif not found:
        pass
    else:
        shapes = dict(cands)
        for name, (path, layout) in found.items():
            print(f"  {name} = {path:40s} {str(list(shapes.get(path, ()))):24s} {layout}")
    print("candidates (module, output shape, in the order they finish):")
    for path, shape in cands:
        if args.all or len(shape) in (3, 4):
            print(f"  {path:48s} {list(shape)}")
    return 0
