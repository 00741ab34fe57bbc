"""`cnr-fast compare`: every method on the same original model and splits, over seeds (paper Table 1).

For each seed a fresh original, retrained-from-scratch reference and null model are trained (or
taken from the cache), every method unlearns that seed's original, and one audit measures them all
on the test split. compare.json holds, per method and metric, the mean, the 95% confidence interval
over seeds (Student t) and the paired t-test p-value against CNR (pairs = seeds; paper A.13).
The driver is `cnr_fast.experiments.compare`; this verb only parses flags and writes files.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import UserError
from ..experiments import methods as M
from ..experiments.scenarios import SCENARIOS, merge_results
from ..experiments.scenarios import get as get_scenario
from ..runs import check_out_dir, write_run_files
from .args import (add_data_args, add_method_args, add_model_args, add_resume_args, add_run_args, check_ulira_pairs,
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
                        "audit (single scenario)")
    p.add_argument("--ulira-pairs", type=int, default=0, metavar="K",
                   help="U-LiRA per method and seed over K >= 3 shadow pairs (single scenario; 0 = off, default): "
                        "K x (original + retrained + one run of each method at its chosen setting), less what the cache "
                        "and the state hold")
    add_data_args(p)
    add_model_args(p)
    add_run_args(p)
    add_method_args(p)
    add_resume_args(p)
    p.set_defaults(func=run, checkpoint=None)


def run(args) -> int:
    if args.merge:
        result = merge_files(args.merge, "compare.json, multiclass.json or continual.json", merge_results)
        _write(Path(args.out), result)
        return 0
    cfg = config_from_args(args)  # checks names, numbers (--seeds included) and the backend
    methods = ([m.strip() for m in args.methods.split(",") if m.strip()] if args.methods is not None
               else list(M.names(default_only=True)))
    M.check_names(methods)
    scenario = get_scenario(args.scenario)
    check_ulira_pairs(args.ulira_pairs)
    for name in ("attacks", "ulira_pairs"):
        if getattr(args, name) and name not in scenario.options:
            raise UserError(f"--{name.replace('_', '-')} is taken by the single scenario only, not "
                            f"--scenario {args.scenario}")
    out = Path(args.out)
    check_out_dir(out)
    cfg, ds, device = prepare_run(cfg, args.quiet, getattr(args, "forget_names", None))
    key = {"verb": "compare", "format": 1, "scenario": args.scenario, "config": cfg.to_dict(), "methods": methods,
           "seeds": args.seeds, "fixed_original": bool(args.fixed_original), "figures": bool(args.figures)}
    for name in ("attacks", "ulira_pairs"):  # in the key only when used: earlier runs keep theirs
        if getattr(args, name):
            key[name] = getattr(args, name)
    state, _ = driver_state(out, key, args.restart, args.quiet)
    options = {k: getattr(args, k) for k in scenario.options}

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
    written = [n for n in files if n.endswith((".json", ".md"))]
    print(f"wrote {' and '.join(str(out / n) for n in written[::-1])}")
