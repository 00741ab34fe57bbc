"""`cnr-fast power RESULT.json`: for a finished compare, how many seeds each open contrast would need.

Every pair among the retrained reference and the methods, on each measure: the mean paired difference over
the file's seeds, the paired t-test p Holm-adjusted over the pairs on that measure, and where the test
leaves the contrast open, the seeds a paired test would need to find the difference seen with the power
asked (default 80%) at the family's level (alpha / pairs: Holm's first step), taking the seen mean and
spread as the truth (experiments/stats.seeds_needed). A contrast that would need more than --practical
seeds (default 50), or shows no difference at all, reads as no practical difference at that effect; the same
non-zero difference on every seed is decided (the t statistic is undefined there; the difference decides).
"about N seeds in all" counts the seeds of the whole comparison, not more ones: add seeds with
`compare --seed S --seeds 1` per process, then `compare --merge`.
With 2-3 seeds the seen spread is itself uncertain: read the numbers as a rough guide for planning.
Reads compare.json (single scenario; multiclass.json: each class set); nothing is run or written
unless --json is given.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import UserError

EXAMPLES = """examples:
  cnr-fast power runs/compare/compare.json
  cnr-fast power runs/compare/compare.json --measures forget_acc,cka_neg.L4 --methods cnr,ssd,rl
  cnr-fast power runs/compare/compare.json --alpha 0.05 --power 0.9 --json power.json
"""


def add_parser(sub) -> None:
    p = sub.add_parser("power", help="seeds each contrast of a finished compare would need", description=__doc__,
                       epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("result", help="a compare.json (or multiclass.json)")
    p.add_argument("--measures", default=None,
                   help="comma list of flattened metric names (default: the compare report's decision metrics)")
    p.add_argument("--methods", default=None, help="comma list of methods (default: every method in the file)")
    p.add_argument("--alpha", type=float, default=0.05, help="family-wise level (default 0.05)")
    p.add_argument("--power", type=float, default=0.8, help="power asked of the paired test (default 0.8)")
    p.add_argument("--practical", type=int, default=50,
                   help="more seeds than this reads as no practical difference (default 50)")
    p.add_argument("--json", default=None, help="also write the table here (atomically)")
    p.set_defaults(func=run)


def _runs(d: dict, path: str) -> dict:
    if "runs" in d:
        return {f"forget {k}": v for k, v in d["runs"].items()}
    if "per_seed" in d and "per_seed_times" in d:
        return {"": d}
    raise UserError(f"{path}: not a compare.json or multiclass.json (no per-seed results); pass the file compare wrote")


def run(args) -> int:
    from ..experiments.compare import PAIRWISE_KEYS
    from ..experiments.stats import is_coordinate_bound, pairwise
    from ..runs import read_result_json

    path = Path(args.result)
    if not path.is_file():
        what = "is a directory" if path.is_dir() else "does not exist"
        raise UserError(f"{args.result!r} {what}; pass a compare.json file")
    try:
        d = read_result_json(path)
    except (OSError, ValueError) as e:
        raise UserError(f"{args.result!r} is not readable JSON ({type(e).__name__}); pass the compare.json compare wrote")
    for flag, value in (("--alpha", args.alpha), ("--power", args.power)):
        if not 0 < value < 1:
            raise UserError(f"{flag} {value}: it must lie strictly between 0 and 1")
    if args.practical < 2:
        raise UserError(f"--practical {args.practical}: it must be at least 2 seeds")
    out = {}
    for label, r in _runs(d, args.result).items():
        methods = list(r["per_seed_times"])
        if args.methods:
            asked = [m.strip() for m in args.methods.split(",") if m.strip()]
            unknown = [m for m in asked if m not in methods]
            if unknown:
                raise UserError(f"--methods {unknown} not in the file (it has {', '.join(methods)})")
            methods = asked
        keys = sorted(set().union(*[set(ps.get("retrained", {})) for ps in r["per_seed"]]))
        measures = ([m.strip() for m in args.measures.split(",") if m.strip()] if args.measures
                    else [k for k in PAIRWISE_KEYS if k in keys and not is_coordinate_bound(k)])
        bound = [m for m in measures if is_coordinate_bound(m)]
        if bound:
            raise UserError(f"--measures {bound}: coordinate-bound (they compare unit coordinates with the original's, "
                            "so a retrained model has none); choose measures every model has")
        missing = [m for m in measures if m not in keys]
        if missing:
            raise UserError(f"--measures {missing} not in the file (e.g. {', '.join(keys[:8])})")
        if len(r["per_seed"]) < 2:
            raise UserError(f"{args.result}{' ' + label if label else ''} has one seed: a paired test needs at least 2; "
                            "merge more seeds first (compare --seed S --seeds 1, then compare --merge)")
        table = pairwise(r["per_seed"], ["retrained", *methods], measures, alpha=args.alpha, power=args.power,
                         practical=args.practical)
        out[label or "compare"] = table
        n = len(r["per_seed"])
        print(f"{args.result}{' ' + label if label else ''}: {n} seed{'s' if n != 1 else ''}; paired t-test, Holm over "
              f"the pairs on each measure, {args.power:.0%} power at {args.alpha:g} / pairs")
        skipped = table.pop("_skipped", {})
        for k, rows in table.items():
            print(f"  {k}:" + (f" (not on every seed, left out: {', '.join(skipped[k])})" if k in skipped else ""))
            for row in rows:
                print(f"    {row['a']:>10s} - {row['b']:<10s} {row['difference']:+.3f}  p(Holm) "
                      f"{'n/a' if row['p_holm'] is None else format(row['p_holm'], '.2g'):>6s}  {row['reading']}")
    if args.json:
        from ..runs import atomic_write_json

        try:
            atomic_write_json(args.json, {"source": str(path), "alpha": args.alpha, "power": args.power,
                                          "practical": args.practical, "tables": out})
        except (OSError, UserError) as e:
            why = e.strerror if isinstance(e, OSError) and e.strerror else str(e).split(";")[0]
            raise UserError(f"--json {args.json!r}: cannot write it ({why}); pass a writable file path") from None
        print(f"wrote {args.json}")
    return 0
