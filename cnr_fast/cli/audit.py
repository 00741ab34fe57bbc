"""`cnr-fast audit`: judge any checkpoint for output suppression and representation erasure."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from ..errors import UserError
from ..experiments.methods import is_from_scratch

EPILOG = """\
examples:
  # audit an unlearned model against its original, with the retrained-from-scratch reference
  cnr-fast audit --checkpoint runs/cnr/model.pt --original runs/original.pt \\
      --retrained runs/rfs/model.pt --out audit/cnr --dataset mnist5k --forget 2

  # quick: two taps, no figures, on CPU; one torch thread (far faster on a shared, loaded machine)
  cnr-fast audit --checkpoint runs/cnr/model.pt --original runs/original.pt --out audit/quick \\
      --taps L3,L4 --no-figures --device cpu --threads 1

  # a bare state_dict saved by another tool: say which architecture it is
  cnr-fast audit --checkpoint other.pth --original runs/original.pt --out audit/other \\
      --arch resnet18 --width 0.125 --forget 2

outputs (in --out): results.json {"metrics": {model: {...}}, "references", "definitions", "settings"},
report.md, report.html (figures embedded), figures/*.png. Models are named "original",
"unlearned" (the --checkpoint) and "retrained".

what each number means (forget = the forgotten class(es); probe-train = a class-stratified subset of
the training split, <= 2000 examples; test = the test split; decoders are fitted on probe-train
features and scored on test; "forget accuracy" = share of forget-class test examples given their true
label; per-tap numbers for each of L0..L4):
{metric_lines}
  {coordinate_bound} compare unit coordinates: left out for independently trained models
  (the retrained reference, and a checkpoint whose metadata says it was retrained from scratch)
references.cka_null (with --null) = the CKA of the retrained model with a second, independently trained
one: "unrelated" at each tap. Lower is better for every forget-side number; retain_acc and cka_pos
should stay high.
verdict (with --retrained and --null; first in results.json and the reports): per forget-class
measure, whether it separates the retrained model from the original on this run (by more than twice
the spread between the two retrained models, and at least 2/sqrt(forget test examples)), and whether
the audited model stands with the retrained model, with the original or between them on it.
"""


def _epilog() -> str:
    """EPILOG with one line per registered audit metric (audit/metrics.py)."""
    from ..audit import metrics as MM

    suffix = {"per_tap": "[L]", "per_n": "[n]", "scalar": ""}
    lines = [f"  {(n + suffix[m.kind]):<24} {m.help}" for n, m in MM.REGISTRY.items()]
    return EPILOG.replace("{metric_lines}", "\n".join(lines)).replace("{coordinate_bound}",
                                                                     ", ".join(MM.coordinate_bound()))


def add_parser(sub) -> None:
    p = sub.add_parser(
        "audit",
        help="audit a checkpoint: outputs, linear/k-NN/SVM probes, MIA, relearning, CKA, selectivity, Grad-CAM, t-SNE",
        description="Measure whether a model still carries the forgotten class(es), in its outputs and in its "
        "hidden states, next to the original model (and the retrained-from-scratch reference if given).",
        epilog=_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--checkpoint", required=True, help="the model to audit (cnr-fast checkpoint or bare state_dict)")
    p.add_argument("--original", required=True, help="the model before unlearning")
    p.add_argument("--retrained", default=None, help="optional reference retrained without the forget classes")
    p.add_argument("--null", default=None,
                   help="optional second retrained model, trained independently of --retrained: gives the CKA null "
                        "reference (what an unrelated model scores at each tap) and the verdict (where the audited "
                        "model stands between the original and the retrained model, judged against their spread)")
    p.add_argument("--force", action="store_true",
                   help="audit even when the input checks say a model is not fed as it was trained (accuracy near "
                        "chance, the forget class unrecognised by the original; see README, 'Data as you keep it')")
    p.add_argument("--attacks", action="store_true",
                   help="also the paper's Table 10 attacks: MLP and ResNet-based (conv) probes per tap, model "
                        "inversion judged by an independent classifier (seconds per tap and model on a CPU)")
    p.add_argument("--out", required=True, help="output folder (results.json, report.md, report.html, figures/)")
    p.add_argument("--dataset", default="mnist5k", help="mnist5k, digits, mnist, fashion_mnist, cifar10, cifar100 "
                   "or imagefolder:PATH (default mnist5k)")
    p.add_argument("--data-root", default=None, help="folder holding a torchvision dataset (nothing is downloaded)")
    p.add_argument("--image-size", type=int, default=None, help="resize images to this side (as at training)")
    p.add_argument("--forget", default=None,
                   help="forget class(es) by index (2, or 2,5) or by name (an image folder's class folder); default: "
                        "the forget_classes the checkpoint records")
    p.add_argument("--model", "--arch", dest="arch", default=None,
                   help="model source of bare state_dicts: an own arch, torchvision:NAME, timm:NAME, FILE.py:FUNCTION "
                        "(cnr-fast checkpoints record it)")
    p.add_argument("--model-arg", dest="model_args", action="append", default=None, metavar="KEY=VALUE",
                   help="a keyword argument of the --model builder (repeatable)")
    p.add_argument("--normalize", default="pm1", help="the model's input normalisation (see `cnr-fast unlearn --help`)")
    p.add_argument("--width", type=float, default=None, help="ResNet width of bare state_dicts (default 1.0)")
    p.add_argument("--taps", "--layers", dest="taps", default=None,
                   help="taps to audit, comma-separated names (L3,L4) or NAME=module.path as unlearn takes them "
                        "(L1=block1,L4=head.norm), the same paths in every model; default: every tap the original "
                        "has, at the module paths the --checkpoint records (--layers is the old name)")
    p.add_argument("--no-figures", action="store_true", help="skip t-SNE and Grad-CAM (faster)")
    p.add_argument("--no-relearn", action="store_true", help="skip the relearn attack")
    p.add_argument("--probe-train-size", type=int, default=2000, help="probe-train examples, at most (default 2000)")
    p.add_argument("--mia-shadows", type=int, default=0, metavar="N",
                   help="also run the shadow-model membership attack with N shadow models trained here (slow)")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default)")
    p.add_argument("--seed", type=int, default=0, help="seed of every subsample (default 0)")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.set_defaults(func=run)
    from .args import one_line_errors

    one_line_errors(p)


FINGERPRINT_KEYS = ("dataset", "n_train", "n_test", "train_label_sum", "num_classes", "image_size", "in_channels")


def check_same_splits(meta: dict, ds, forget: list[int], path: str, role: str) -> None:
    """A reference or audited checkpoint must come from the same data and forget classes."""
    fp = ds.fingerprint()
    diff = [k for k in FINGERPRINT_KEYS if meta.get(k) is not None and k in fp and meta[k] != fp[k]]
    if diff:
        k = diff[0]
        raise UserError(
            f"{role} checkpoint {path!r} was trained on other splits ({k}={meta[k]!r}, this data has {fp[k]!r}); "
            "pass the --dataset / --image-size it was trained with, or a checkpoint trained on this data"
        )
    recorded = meta.get("forget_classes")
    if recorded is not None and sorted(int(c) for c in recorded) != sorted(forget):
        raise UserError(
            f"{role} checkpoint {path!r} was trained on other splits (forget classes {sorted(recorded)}, "
            f"auditing {sorted(forget)}); pass --forget {','.join(str(c) for c in sorted(recorded))} or the "
            "matching checkpoint"
        )


def run(args) -> int:
    from ..config import DataConfig
    from ..data import load_dataset_forgetting
    from .args import parse_forget
    from ..preflight import check_model
    from ..models import TAP_NAMES, check_taps, model_from_checkpoint
    from ..models.taps import split_items
    from ..runs import atomic_write_json, check_out_dir, load_checkpoint, staged_dir
    from ..train import resolve_device

    given = args.taps is not None
    items = [s.strip() for s in (args.taps if given else ",".join(TAP_NAMES)).split(",") if s.strip()]
    if not items:
        raise UserError(f"--taps is empty; pass some of {','.join(TAP_NAMES)}")
    tap_paths, tap_names = split_items(items)  # NAME=module.path: where each model's tap is
    taps = list(tap_names)
    check_taps(taps)
    if args.mia_shadows < 0:
        raise UserError("--mia-shadows must be >= 0")
    if args.probe_train_size < 20:
        raise UserError("--probe-train-size must be at least 20")
    if args.image_size is not None and args.image_size < 1:
        raise UserError(f"--image-size {args.image_size}: must be at least 1; pass the size the models were trained at")
    check_out_dir(args.out)  # before any work
    device = resolve_device(args.device)
    for flag, path in (("--checkpoint", args.checkpoint), ("--original", args.original),
                       ("--retrained", args.retrained), ("--null", args.null)):
        if path is not None and not Path(path).is_file():
            raise UserError(f"{flag} {path!r} does not exist; pass the path of a saved model")
    _, ck_meta = load_checkpoint(args.checkpoint)
    names = None
    if args.forget is not None:
        forget = list(parse_forget(args.forget))
        if not forget:
            raise UserError("--forget is empty; pass e.g. --forget 2 (or a class name)")
        if any(isinstance(c, str) for c in forget):
            names, forget = forget, []  # resolved against the data's class names once it is loaded
    else:
        recorded = ck_meta.get("forget_classes")
        if recorded is None and args.retrained:
            recorded = load_checkpoint(args.retrained)[1].get("forget_classes")
        if recorded is None:
            raise UserError("the checkpoint does not record its forget classes; pass --forget C (e.g. --forget 2)")
        forget = [int(c) for c in recorded]
    ds, forget = load_dataset_forgetting(DataConfig(dataset=args.dataset, data_root=args.data_root,
                                                    image_size=args.image_size, forget=tuple(forget)), names,
                                           typed=args.forget is not None)
    forget = list(forget)
    models, metas = {}, {}
    # every model taps the same layers: the --taps paths, else those the --checkpoint records (a cnr-fast
    # checkpoint of a model whose taps were found or named; bare state_dicts are built the same way)
    source = {"model_args": tuple(args.model_args or ()), "normalize": args.normalize,
              "tap_paths": tap_paths or tuple(ck_meta.get("tap_paths", ()))}
    for name, path in (("original", args.original), ("unlearned", args.checkpoint), ("retrained", args.retrained)):
        if path is None:
            continue
        model, meta = model_from_checkpoint(path, ds, arch=args.arch, width=args.width, source=source)
        if name != "original":
            check_same_splits(meta, ds, forget, path, name)
        models[name], metas[name] = model, meta

    from ..audit import audit_models, json_view, write_report
    from ..models.taps import tap_modules

    if not given:  # all the taps the model has (one found automatically may have no L0)
        taps = [t for t in taps if t in tap_modules(models["original"])]

    null = None
    if args.null:
        if "retrained" not in models:
            raise UserError("--null needs --retrained: the null reference is CKA(retrained, null)")
        null, null_meta = model_from_checkpoint(args.null, ds, arch=args.arch, width=args.width, source=source)
        check_same_splits(null_meta, ds, forget, args.null, "null")
        metas["null"] = null_meta
    # the input contract checked before any work (a cnr-fast checkpoint records how it was made: a weak one
    # is a progress-line warning there, a plain state_dict of the user's is checked in full)
    retain = ds.retain_classes(forget)
    for name, model in (("original", models["original"]), ("retrained", models.get("retrained")), ("null", null)):
        if model is not None:
            check_model(model, ds, device, role=name, classes=None if name == "original" else retain,
                        forget=forget if name == "original" else None,
                        absent=None if name == "original" else forget, force=args.force, quiet=args.quiet,
                        own=bool(metas[name].get("kind")))
    independent = [n for n in ("retrained",) if n in models]
    if is_from_scratch(metas["unlearned"].get("method")) or metas["unlearned"].get("kind") in ("retrained",
                                                                                                "retrained_null"):
        independent.append("unlearned")
    t0 = time.perf_counter()
    result = audit_models(models, ds, forget, device=device, original="original",
                          retrained="retrained" if "retrained" in models else None, taps=taps, seed=args.seed,
                          figures=not args.no_figures, quiet=args.quiet, probe_train_size=args.probe_train_size,
                          relearn=not args.no_relearn, mia_shadows=args.mia_shadows,
                          independent=independent, null_model=null, attacks=args.attacks)
    out = Path(args.out)
    extra = {
        "checkpoint": str(args.checkpoint), "original": str(args.original),
        "retrained": str(args.retrained) if args.retrained else None,
        "methods": {n: m.get("method") for n, m in metas.items() if m.get("method")},
        "audit_seconds": round(time.perf_counter() - t0, 1),
    }
    view = json_view(result)
    view["run"] = extra
    with staged_dir(out) as stage:  # all outputs or none (see runs.staged_dir)
        atomic_write_json(stage / "results.json", view)
        write_report(stage, result, extra)
    if not args.quiet:
        a = result["metrics"]["unlearned"]
        deep = result["settings"]["deepest_tap"]
        print(f"unlearned (audited): forget_acc {a['forget_acc']:.4f}  retain_acc {a['retain_acc']:.4f}  "
              f"probe_acc[{deep}] {a['probe_acc'][deep]:.4f}  mia_acc {a['mia_acc']:.4f}  "
              f"nn_purity {a['nn_purity']:.4f}", file=sys.stderr)
        v = (result.get("verdict") or {}).get("models", {}).get("unlearned")
        if v:
            print(f"verdict: {v['sentence']}", file=sys.stderr)
        print(f"wrote {out / 'results.json'}, {out / 'report.md'}, {out / 'report.html'}", file=sys.stderr)
    return 0
