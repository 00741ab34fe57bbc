"""`cnr-fast compare`: every method on the same original model and splits, over seeds (paper Table 1).

For each seed, each method unlearns the same original model; one audit per seed measures all of
them next to the original and the retrained-from-scratch reference (same probe splits for all).
compare.json holds, per method and metric, the mean, the 95% confidence interval over seeds
(Student t) and the paired t-test p-value against CNR (pairs = seeds; paper A.13).
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import numpy as np

from ..baselines import METHODS
from ..errors import UserError
from ..runs import write_run_files
from ._common import (add_data_args, add_method_args, add_model_args, add_run_args, check_arch_known, config_from_args, load_original,
                      log, obtain_reference, prepare_run, run_audit)

EXAMPLES = """examples:
  cnr-fast compare --out runs/compare                          # all six methods, 3 seeds, mnist5k
  cnr-fast compare --methods cnr,roft,gau --seeds 2 --out runs/c2
  cnr-fast compare --dataset cifar10 --data-root ~/data --width 1 --device cuda --amp --out runs/c10

A metric "separates" the retrained model from the original when they differ by at least
SEPARATION (0.10) on it; only on such metrics can "closer to retrained" mean erasure rather than noise.
"""

SEPARATION = 0.10
# Lower is better for these (the retrained model is the target, chance is the floor).
HEADLINE = ("forget_acc", "retain_acc", "probe_acc.L4", "transfer_probe_acc.L4", "knn_acc.L4", "svm_acc.L4",
            "fewshot_probe_acc.5", "relearn_acc.5", "mia_acc", "nn_purity", "cka_pos.L4", "cka_neg.L4")


def add_parser(sub) -> None:
    p = sub.add_parser("compare", help="run several methods over seeds and compare them (Table 1)",
                       description=__doc__, epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--methods", default=",".join(METHODS), help=f"comma list (default {','.join(METHODS)})")
    p.add_argument("--seeds", type=int, default=3, help="number of seeds (default 3)")
    p.add_argument("--out", required=True, help="output directory (compare.json, report.md)")
    p.add_argument("--figures", action="store_true", help="also t-SNE / Grad-CAM figures per seed (slow)")
    add_data_args(p)
    add_model_args(p)
    add_run_args(p)
    add_method_args(p)
    p.set_defaults(func=run, checkpoint=None)


def flatten(metrics: dict) -> dict[str, float]:
    out = {}
    for k, v in metrics.items():
        if isinstance(v, dict):
            for kk, vv in v.items():
                if isinstance(vv, (int, float)):
                    out[f"{k}.{kk}"] = float(vv)
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            out[k] = float(v)
    return out


def summarise(values: list[float], cnr_values: list[float] | None) -> dict:
    from scipy import stats

    a = np.asarray(values, dtype=np.float64)
    n = len(a)
    mean = float(a.mean())
    if n >= 2:
        half = float(stats.t.ppf(0.975, n - 1) * a.std(ddof=1) / math.sqrt(n))
    else:
        half = float("nan")
    p = None
    if cnr_values is not None and n >= 2:
        b = np.asarray(cnr_values, dtype=np.float64)
        d = a - b
        if np.allclose(d, d[0]):  # constant differences: t undefined; identical -> no evidence either way
            p = 1.0 if np.allclose(d, 0) else 0.0
        else:
            p = float(stats.ttest_rel(b, a).pvalue)
    return {"mean": mean, "ci_low": mean - half, "ci_high": mean + half, "p_vs_cnr": p, "values": a.tolist()}


def run(args) -> int:
    cfg = config_from_args(args)
    check_arch_known(cfg)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    bad = [m for m in methods if m not in METHODS]
    if bad or not methods:
        raise UserError(f"unknown method(s) {bad}; choose from {', '.join(METHODS)}")
    if args.seeds < 1:
        raise UserError("--seeds must be at least 1")
    from .unlearn import unlearn_model

    t_start = time.perf_counter()
    cfg, ds, device = prepare_run(cfg, args.quiet)
    forget = list(cfg.data.forget)
    original, _, orig_path, _ = load_original(cfg, ds, device, args.cache_dir, args.quiet)
    retrained = obtain_reference("retrained", cfg, ds, device, args.cache_dir, args.quiet)[0]
    per_seed = []
    timings: dict[str, list[float]] = {m: [] for m in methods}
    for s in range(args.seeds):
        seed = cfg.seed + s
        models = {"original": original, "retrained": retrained}
        for m in methods:
            log(f"compare: seed {seed}, method {m}", args.quiet)
            model, _, t, _ = unlearn_model(m, original, ds, cfg.replace(seed=seed, method=m), device=device,
                                           quiet=args.quiet)
            models[m] = model
            timings[m].append(t["unlearn"])
        audit = run_audit(models, ds, forget, device=device, seed=cfg.seed, figures=args.figures, quiet=args.quiet)
        per_seed.append({name: flatten(v) for name, v in audit["metrics"].items()})
    names = ["original", "retrained", *methods]
    keys = sorted(set().union(*[set(per_seed[0][n]) for n in names]))
    table: dict[str, dict] = {}
    for n in names:
        table[n] = {}
        for k in keys:
            vals = [ps[n].get(k, float("nan")) for ps in per_seed]
            cnr_vals = [ps["cnr"].get(k, float("nan")) for ps in per_seed] if "cnr" in methods and n != "cnr" else None
            table[n][k] = summarise(vals, cnr_vals if n in methods else None)
    verdicts = judge(table, methods, keys)
    result = {"dataset": ds.name, "arch": cfg.model.arch, "width": cfg.model.width, "forget_classes": forget,
              "seeds": [cfg.seed + s for s in range(args.seeds)], "methods": {m: table[m] for m in methods},
              "references": {"original": table["original"], "retrained": table["retrained"],
                             "chance_acc": 1.0 / ds.num_classes},
              "separation_threshold": SEPARATION, "verdicts": verdicts,
              "unlearn_time_s": {m: summarise(v, None) for m, v in timings.items()},
              "original_checkpoint": str(orig_path), "config": cfg.to_dict(),
              "total_time_s": time.perf_counter() - t_start}
    out = Path(args.out)
    write_run_files(out, {"report.md": report_md(result, methods), "compare.json": result})
    print(report_md(result, methods, short=True))
    print(f"wrote {out / 'compare.json'} and {out / 'report.md'}")
    return 0


def judge(table: dict, methods: list[str], keys: list[str]) -> dict:
    """Which metrics separate retrained from original; on those, is CNR closer to retrained than each baseline."""
    out = {}
    for k in keys:
        o, r = table["original"][k]["mean"], table["retrained"][k]["mean"]
        if not (math.isfinite(o) and math.isfinite(r)):
            continue
        sep = abs(o - r) >= SEPARATION
        entry = {"original": o, "retrained": r, "separates": sep}
        if sep and "cnr" in methods:
            dc = abs(table["cnr"][k]["mean"] - r)
            entry["cnr_distance"] = dc
            entry["cnr_closer_than"] = {m: dc < abs(table[m][k]["mean"] - r) for m in methods if m != "cnr"}
        out[k] = entry
    return out


def _cell(s: dict) -> str:
    if not math.isfinite(s["ci_high"]):
        return f"{s['mean']:.3f}"
    return f"{s['mean']:.3f} [{s['ci_low']:.3f}, {s['ci_high']:.3f}]"


def report_md(result: dict, methods: list[str], short: bool = False) -> str:
    refs = result["references"]
    keys = [k for k in HEADLINE if k in refs["original"]]
    if not short:
        keys += sorted(k for k in refs["original"] if k not in keys)
    lines = [f"# compare: {result['dataset']} / {result['arch']} (width {result['width']}), forget "
             f"{result['forget_classes']}, seeds {result['seeds']}", ""]
    head = ["metric", "original", "retrained", *methods]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for k in keys:
        row = [k, f"{refs['original'][k]['mean']:.3f}", f"{refs['retrained'][k]['mean']:.3f}"]
        for m in methods:
            s = result["methods"][m][k]
            cell = _cell(s)
            if s.get("p_vs_cnr") is not None:
                cell += f" (p={s['p_vs_cnr']:.3g})"
            row.append(cell)
        lines.append("| " + " | ".join(row) + " |")
    lines += ["", "Cells: mean [95% CI over seeds] (paired t-test p-value against CNR). chance accuracy = "
              f"{refs['chance_acc']:.3f}. The original and retrained models are fixed across seeds.", ""]
    lines.append(f"## Which metrics tell the retrained model from the original (|difference| >= "
                 f"{result['separation_threshold']})")
    lines.append("")
    for k in keys:
        v = result["verdicts"].get(k)
        if v is None:
            continue
        if not v["separates"]:
            lines.append(f"- {k}: does NOT separate them (original {v['original']:.3f}, retrained "
                         f"{v['retrained']:.3f}); closeness to retrained on it says nothing.")
            continue
        text = f"- {k}: separates them (original {v['original']:.3f}, retrained {v['retrained']:.3f})."
        if "cnr_closer_than" in v:
            closer = [m for m, c in v["cnr_closer_than"].items() if c]
            farther = [m for m, c in v["cnr_closer_than"].items() if not c]
            text += (f" CNR (|distance| {v['cnr_distance']:.3f}) is closer to retrained than "
                     f"{', '.join(closer) or 'no baseline'}" + (f", and not closer than {', '.join(farther)}."
                                                                 if farther else "."))
        lines.append(text)
    return "\n".join(lines) + "\n"
