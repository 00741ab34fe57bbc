"""`cnr-fast ablate`: what each part of CNR buys (paper Table 3 and its K / B sweeps), over seeds.

Each variant is CNR with one change, on the same original per seed (one original, retrained
reference and null model per seed, shared by every variant); the GAN, and the synthetic images of
variants that change neither detection nor synthesis, are made once per seed and reused, their time
charged to every run that uses them. Full CNR chooses its reset's step size on validation (unless
--config sets reset.lr); every other variant runs at that choice. Writes ablate.json, ablate.md and ablate_k.png / ablate_B.png
(forget accuracy, retain accuracy and CKA_neg against the knob). The driver is
`cnr_fast.experiments.ablate`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import UserError
from ..experiments import ABLATIONS, ablate, ablate_figures, ablate_report_md, merge_ablate
from ..runs import check_out_dir, write_run_files
from .args import add_data_args, add_method_args, note_flags_not_taken, note_compile, add_model_args, add_resume_args, add_run_args, config_from_args
from .running import driver_state, merge_files, prepare_run, run_with_state

EXAMPLES = """examples:
  cnr-fast ablate --seeds 3 --out runs/ablate                       # every variant below
  cnr-fast ablate --variants no-synthesis,sign-paper --seeds 2 --out runs/a2
  cnr-fast ablate --seed 1 --seeds 1 --out runs/s1              # seeds in separate processes / machines, then
  cnr-fast ablate --merge runs/s0/ablate.json,runs/s1/ablate.json --out runs/ablate

variants: """ + ", ".join(f"{k} {v or '(the default CNR)'}" for k, v in ABLATIONS.items())


def add_parser(sub) -> None:
    p = sub.add_parser("ablate", help="CNR ablations and sweeps over seeds (Table 3)", description=__doc__,
                       epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--variants", default=",".join(ABLATIONS), help="comma list (default: all)")
    p.add_argument("--seeds", type=int, default=3, help="number of seeds (default 3)")
    p.add_argument("--relearn", action="store_true", help="also run the relearn attack in the audit (slow)")
    p.add_argument("--merge", help="comma list of ablate.json files over disjoint seeds: write their union, run nothing")
    p.add_argument("--out", required=True, help="output directory")
    add_data_args(p)
    add_model_args(p)
    add_run_args(p)
    add_method_args(p)
    add_resume_args(p)
    p.set_defaults(func=run, checkpoint=None)


def run(args) -> int:
    if args.merge:
        _write(Path(args.out), merge_files(args.merge, "ablate.json", merge_ablate))
        return 0
    cfg = config_from_args(args)  # checks names, numbers (--seeds included) and the backend
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    bad = [v for v in variants if v not in ABLATIONS]
    if bad or not variants:
        raise UserError(f"unknown variant(s) {bad}; choose from {', '.join(ABLATIONS)}")
    out = Path(args.out)
    check_out_dir(out)
    cfg, ds, device = prepare_run(cfg, args.quiet, getattr(args, "forget_names", None))
    note_flags_not_taken(args, ["cnr"], args.quiet)  # every variant is CNR: a baseline's flag reaches nothing
    note_compile(args, args.quiet)
    key = {"verb": "ablate", "format": 1, "config": cfg.to_dict(), "variants": variants, "seeds": args.seeds,
           "relearn": bool(args.relearn)}
    state, _ = driver_state(out, key, args.restart, args.quiet)
    result = run_with_state(state, lambda: ablate(cfg, variants, args.seeds, device=device,
                                                       cache=args.cache_dir, relearn=args.relearn,
                                                       quiet=args.quiet, ds=ds, state=state),
                            "cnr-fast ablate")
    _write(out, result)
    state.remove()  # the output is complete: its state is no longer needed
    return 0


def _write(out: Path, result: dict) -> None:
    figs = ablate_figures(result)
    md = ablate_report_md(result, figs)
    write_run_files(out, {**figs, "ablate.md": md, "ablate.json": result})
    print(md)
    print(f"wrote {out / 'ablate.json'} and {out / 'ablate.md'}")
