"""`cnr-fast compare`: every method on the same original model and splits, over seeds (paper Table 1).

For each seed a fresh original, retrained-from-scratch reference and null model are trained (or
taken from the cache), every method unlearns that seed's original, and one audit measures them all
on the test split. compare.json holds, per method and metric, the mean, the 95% confidence interval
over seeds (Student t) and the paired t-test p-value against CNR (pairs = seeds; paper A.13).
The driver is `cnr_fast.experiments.compare`; this verb only parses flags and writes files.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..errors import UserError
from ..progress import log
from ..experiments import methods as M
from ..experiments.scenarios import SCENARIOS, merge_results
from ..experiments.scenarios import get as get_scenario
from ..runs import check_out_dir, write_run_files
from .args import (note_flags_not_taken, note_compile, note_klom_pairs, add_data_args, add_method_args, add_model_args, add_resume_args, add_run_args, check_ulira_pairs,
                   config_from_args)
from .running import driver_state, merge_files, prepare_run, run_with_state

EXAMPLES = """examples:
  cnr-fast compare --out runs/compare                          # every method and control, 3 seeds, mnist5k
  cnr-fast compare --methods cnr,rl,ssd --seeds 2 --out runs/c2
  cnr-fast compare --fixed-original --out runs/fixed           # one original for all seeds (unlearning noise only)
  cnr-fast compare --scenario multiclass --out runs/multi      # forget {2,5} and {2,5,7,1,9} at once (Table 7)
  cnr-fast compare --scenario continual --out runs/continual   # 5 rounds, one more class each (Table 12)
  cnr-fast compare --scenario continual --seed 1 --seeds 1 --out runs/c1   # seeds in separate processes, then
  cnr-fast compare --merge runs/c0/continual.json,runs/c1/continual.json --out runs/continual
  cnr-fast compare --scenario no-retain --methods jit,lm --out runs/nr          # methods get the forget images alone
  cnr-fast compare --dataset cifar10 --data-root ~/data --width 1 --device cuda --amp --out runs/c10

A metric "separates" the retrained model from the original when |original - retrained| >= 0.10
and the paired t-test over seeds, Holm-adjusted over every metric judged, gives p < 0.05 (with one
seed there is no test: the difference alone decides); only there can "closer to retrained" mean
erasure rather than noise. Coordinate-bound metrics (transfer probe, selectivity) are not judged.
"""

def add_parser(sub) -> None:
    p = sub.add_parser("compare", help="run several methods over seeds and compare them (Table 1)",
                       description=__doc__, epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--methods", default=None,
                   help=f"comma list of {', '.join(M.names())} (default: {', '.join(M.names(default_only=True))})")
    p.add_argument("--seeds", type=int, default=3, help="number of seeds (default 3)")
    p.add_argument("--fixed-original", action="store_true",
                   help="one original / retrained / null model (seed --seed) for every seed, as before: the "
                        "intervals then cover only the randomness of unlearning")
    p.add_argument("--scenario", choices=list(SCENARIOS), default="single",
                   help="; ".join(f"{n}: {s.description}" for n, s in SCENARIOS.items()) + " (default single)")
    p.add_argument("--merge", help="comma list of compare.json / multiclass.json / continual.json files of one "
                        "scenario over disjoint seeds (run with --seed S --seeds 1): write their union, run nothing")
    p.add_argument("--out", required=True, help="output directory (compare.json, report.md)")
    p.add_argument("--figures", action="store_true", help="also t-SNE / Grad-CAM figures per seed (slow)")
    p.add_argument("--attacks", action="store_true",
                   help="also the paper's Table 10 attacks (MLP and conv probes per tap, model inversion) in every "
                        "audit (single and no-retain scenarios)")
    p.add_argument("--ulira-pairs", type=int, default=0, metavar="K",
                   help="U-LiRA per method and seed over K >= 3 shadow pairs (single scenario; 0 = off, default): "
                        "K x (original + retrained + one run of each method at its chosen setting), less what the cache "
                        "and the state hold")
    g = p.add_argument_group("your own recipe (what makes the originals, retrained references, nulls and RFS)")
    g.add_argument("--train-script", metavar="FILE.py:FUNCTION",
                   help="your training function train(model, data, classes, seed) -> model: called on a fresh model from "
                        "--model (its --normalize in front) with data = {'train': (x, y), 'val': (x, y)}, float images "
                        "in [-1, 1] of shape (N, C, H, W), the class indices to train on and a data-order seed "
                        "(default: cnr-fast's own loop, --train-epochs / --lr)")
    g.add_argument("--originals", metavar="DIR",
                   help="your trained originals, one checkpoint per seed: DIR/seed<S>.pt (read like --checkpoint)")
    g.add_argument("--references", metavar="DIR",
                   help="your retrained references and nulls per seed: DIR/retrained-seed<S>.pt and DIR/null-seed<S>.pt")
    g.add_argument("--expect-acc", type=float, default=None, metavar="ACC",
                   help="the accuracy your originals reach in your pipeline: an original more than 0.05 below it on "
                        "validation stops compare before any method runs (the recipe check)")
    g.add_argument("--force", action="store_true", help="compare on originals that fail the recipe check (a warning)")
    add_data_args(p)
    add_model_args(p)
    add_run_args(p)
    add_method_args(p)
    add_resume_args(p)
    p.set_defaults(func=run, checkpoint=None)


def _check_folder(flag: str, folder: str, patterns: tuple[str, ...], seeds: list[int], can_train: bool) -> None:
    """A checkpoint folder holds exactly the files its naming asks for the seeds run (a misnamed file would
    silently be replaced by a trained model); what is missing needs --train-script."""
    expected = {p.format(s) for p in patterns for s in seeds}
    present = {f.name for f in Path(folder).iterdir() if f.suffix in (".pt", ".pth", ".safetensors")}
    stray = sorted(present - expected - {p.format(s) for p in patterns for s in range(1000)})
    names = ", ".join(sorted(expected))
    if stray:
        raise UserError(f"{flag} {folder!r} holds {', '.join(stray)}, which match no expected name; for seeds "
                        f"{', '.join(map(str, seeds))} it needs {names}")
    missing = sorted(expected - present)
    if missing and not can_train:
        raise UserError(f"{flag} {folder!r} lacks {', '.join(missing)} (seeds {', '.join(map(str, seeds))} run); add "
                        "them, run the seeds it has (--seed, --seeds), or pass --train-script to train what is missing")


def cli_recipe(args, cfg, ds, device, quiet):
    """The references.Recipe of --train-script / --originals / --references, None when none is given."""
    from ..models import build_model, model_from_checkpoint
    from ..models.sources import load_function
    from ..references import Recipe, own_loop, source_options

    if not (args.train_script or args.originals or args.references):
        return None
    for flag, d in (("--originals", args.originals), ("--references", args.references)):
        if d and not Path(d).is_dir():
            raise UserError(f"{flag} {d!r} is not a directory; pass the folder that holds the checkpoints")
    if args.train_script and ":" not in args.train_script:
        raise UserError(f"--train-script {args.train_script!r}: pass FILE.py:FUNCTION")
    if args.train_script and (args.train_epochs is not None or args.lr is not None):
        raise UserError("--train-epochs and --lr set cnr-fast's own training loop; with --train-script your function "
                        "trains every model: drop them (set epochs and lr in your function)")
    if not args.train_script and bool(args.originals) != bool(args.references):
        raise UserError("--originals and --references go together without --train-script (references trained by "
                        "another recipe than your originals would judge them by a different standard): give both, or "
                        "--train-script to train what is not given")
    seeds = [cfg.seed] if args.fixed_original else [cfg.seed + i for i in range(args.seeds)]
    if args.originals and ds.val_carved:  # printed even with --quiet
        from ..data import in_sample_validation

        print("cnr-fast: warning: " + in_sample_validation("with --originals, each method's setting will be"),
              file=sys.stderr, flush=True)
    if args.originals:
        _check_folder("--originals", args.originals, ("seed{}.pt",), seeds, bool(args.train_script))
    if args.references:
        _check_folder("--references", args.references, ("retrained-seed{}.pt", "null-seed{}.pt"), seeds,
                      bool(args.train_script))
    files = {"original": (args.originals, "seed{}.pt"), "retrained": (args.references, "retrained-seed{}.pt"),
             "retrained_null": (args.references, "null-seed{}.pt")}

    def given(kind, seed):
        folder, pattern = files.get(kind, (None, None))
        if not folder:
            return None
        path = Path(folder) / pattern.format(seed)
        if not path.is_file():
            return None
        model, meta = model_from_checkpoint(str(path), ds, cfg.model.arch, cfg.model.width, source_options(cfg))
        recorded = meta.get("forget_classes")
        if kind != "original" and recorded is not None and sorted(recorded) != sorted(cfg.data.forget):
            raise UserError(f"{path} was trained without classes {recorded}, not {list(cfg.data.forget)}; pass "
                            "references retrained without the --forget classes")
        return model

    def build():
        return build_model(cfg.model.arch, ds.num_classes, ds.in_channels, ds.image_size, cfg.model.width,
                           **source_options(cfg))

    if args.train_script:
        train = load_function(args.train_script, "--train-script")
        from ..data import to_float

        data = {name: (to_float(split.x), split.y) for name, split in (("train", ds.train), ("val", ds.val))
                if split is not None}
        name = f"your training function {args.train_script}"
    else:
        (train, name), data = own_loop(cfg, ds, device, quiet), None
    given_from = ", ".join(f"{f} {d}" for f, d in (("--originals", args.originals), ("--references", args.references))
                           if d)
    if given_from:
        name = f"your checkpoints ({given_from})" + (f", the rest by {name}" if args.train_script else "")
    return Recipe(name, given=given, build=build, train=train, data=data)


def default_methods(scenario) -> list[str]:
    """compare's methods when --methods is not given: the default set, or, where the scenario gives the
    methods less than all the training data, every registered method that can run on what it gives (the
    default set would be mostly methods that cannot)."""
    if scenario.train_data == "all":
        return list(M.names(default_only=True))
    return [m for m in M.names() if not M.not_applicable(m, scenario.train_data)]


def run(args) -> int:
    if args.merge:
        result = merge_files(args.merge, "compare.json, multiclass.json or continual.json", merge_results)
        _write(Path(args.out), result)
        return 0
    cfg = config_from_args(args)  # checks names, numbers (--seeds included) and the backend
    scenario = get_scenario(args.scenario)
    if getattr(args, "forget", None) is not None and scenario.own_classes:
        raise UserError(f"--scenario {scenario.name} forgets its own classes by index "
                        f"({' and '.join(','.join(map(str, c)) for c in scenario.own_classes)}), not --forget: drop --forget "
                        "(the log names the classes those indices are in your data)")
    if args.methods is not None:
        methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    else:
        methods = default_methods(scenario)
        if scenario.train_data != "all":
            log(f"compare: --scenario {scenario.name}: every method that can run on what it gives them: "
                f"{', '.join(methods)} (--methods to choose)", args.quiet)
    M.check_names(methods)
    check_ulira_pairs(args.ulira_pairs)
    if args.expect_acc is not None and not 0 < args.expect_acc <= 1:
        raise UserError(f"--expect-acc {args.expect_acc}: pass the originals' accuracy as a share in (0, 1], e.g. 0.95")
    for name in ("train_script", "originals", "references", "expect_acc", "force"):
        if getattr(args, name) and not scenario.takes_recipe:
            raise UserError(f"--{name.replace('_', '-')} is taken by the scenarios "
                            f"{', '.join(n for n, s in SCENARIOS.items() if s.takes_recipe)}, not --scenario "
                            f"{args.scenario}")
    for name in ("attacks", "ulira_pairs"):
        if getattr(args, name) and name not in scenario.options:
            raise UserError(f"--{name.replace('_', '-')} is taken by the scenarios "
                            f"{', '.join(n for n, s in SCENARIOS.items() if name in s.options)}, not "
                            f"--scenario {args.scenario}")
    out = Path(args.out)
    check_out_dir(out)
    cfg, ds, device = prepare_run(cfg, args.quiet, getattr(args, "forget_names", None))
    note_flags_not_taken(args, methods, args.quiet)
    note_compile(args, args.quiet)
    note_klom_pairs(args.ulira_pairs, args.quiet)
    key = {"verb": "compare", "format": 1, "scenario": args.scenario, "config": cfg.to_dict(), "methods": methods,
           "seeds": args.seeds, "fixed_original": bool(args.fixed_original), "figures": bool(args.figures)}
    for name in ("attacks", "ulira_pairs", "train_script", "originals", "references", "expect_acc", "force"):
        if getattr(args, name):  # in the key only when used: earlier runs keep theirs
            key[name] = getattr(args, name)
    state, _ = driver_state(out, key, args.restart, args.quiet)
    options = {k: getattr(args, k) for k in scenario.options}

    if scenario.takes_recipe:
        options.update(recipe=cli_recipe(args, cfg, ds, device, args.quiet), expect_acc=args.expect_acc,
                       force=args.force)

    def work():
        return scenario.run(cfg, methods, args.seeds, device=device, cache=args.cache_dir, quiet=args.quiet, ds=ds,
                            state=state, **options)

    result = run_with_state(state, work, "cnr-fast compare")
    _write(out, result)
    state.remove()  # the output is complete: its state is no longer needed
    return 0


def _write(out: Path, result: dict) -> None:
    files, text = get_scenario(result.get("scenario", "single")).files(result)
    write_run_files(out, files)
    print(text)
    written = [n for n in files if n.endswith((".json", ".md", ".html"))]
    print(f"wrote {' and '.join(str(out / n) for n in written[::-1])}")
