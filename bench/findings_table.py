"""The README's findings tables from committed compare / ablate / multiclass / continual JSON.

scripts/readme_numbers.py puts these tables into README.md and docs/*.md (`{{table:NAME}}` in README.in.md and
docs/*.in.md); run alone, this prints one:

    python -m bench.findings_table compare bench/results/runs/compare_mnist5k/compare.json
    python -m bench.findings_table seed bench/results/runs/compare_mnist5k/compare.json    # seed 0's row
    python -m bench.findings_table attacks RUN/compare.json   # a compare run with --attacks --ulira-pairs K
    python -m bench.findings_table verdict RUN/compare.json   # per method, where it stands (a run with a verdict)
    python -m bench.findings_table ablate bench/results/runs/ablate_mnist5k/ablate.json
    python -m bench.findings_table multiclass bench/results/runs/multiclass_mnist5k/multiclass.json
    python -m bench.findings_table continual bench/results/runs/continual_mnist5k/continual.json
    python -m bench.findings_table glance bench/results/runs/compare_mnist5k/compare.json   # README's table
    python -m bench.findings_table prereg_full bench/results/prereg10_analysis.json         # every registered contrast
    python -m bench.findings_table run bench/results/runs/default_mnist5k/results.json      # what unlearn printed
    python -m bench.findings_table measures bench/results/runs/default_mnist5k/results.json # every audit measure

Stdlib only (no torch): the README check runs it.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from cnr_fast.experiments.stats import finite as _finite, within_unit  # noqa: E402

COMPARE_ROWS = ("forget_acc", "retain_acc", "val_forget_acc", "probe_acc.L4", "knn_acc.L4", "fewshot_probe_acc.5",
                "relearn_acc.5", "mia_acc", "nn_purity", "cka_neg.L4", "cka_neg.L2", "cka_pos.L4")
SEED_ROWS = (("forget_acc", "forget_acc"), ("retain_acc", "retain_acc"), ("probe[L4]", "probe_acc.L4"),
             ("mia_acc", "mia_acc"), ("nn_purity", "nn_purity"), ("cka_neg[L4]", "cka_neg.L4"))
ABLATE_KEYS = ("forget_acc", "retain_acc", "val_forget_acc", "cka_neg.L4", "fewshot_probe_acc.5")


def ci_cell(s, digits=2, always=True, key: str = "") -> str:
    """'mean [ci_low, ci_high]'; with always=False just 'mean' where the interval is empty at `digits`. key
    names the measure: one that lies in [0, 1] shows its interval within [0, 1] (stats.within_unit), as
    files written before that was recorded did not."""
    if not s or not _finite(s.get("mean", float("nan"))):
        return "-"
    s = within_unit(s, key)
    m, lo, hi = s["mean"], s.get("ci_low"), s.get("ci_high")
    if not (_finite(lo) and _finite(hi)):
        return f"{m:.{digits}f}"
    lo_s, hi_s = f"{lo:.{digits}f}", f"{hi:.{digits}f}"
    if not always and lo_s == hi_s:
        return f"{m:.{digits}f}"
    return f"{m:.{digits}f} [{lo_s}, {hi_s}]"


def p_cell(p) -> str:
    """A p-value: never printed as 0 (as experiments.format_p)."""
    if p is None or not _finite(p):
        return "n/a"
    return "<1e-4" if p < 1e-4 else f"{p:.2g}"


def choices_table(r: dict) -> str:
    """Per method and seed of a compare.json: the setting chosen on validation (val forget / retain)."""
    seeds = r["seeds"]
    out = ["| method | " + " | ".join(f"seed {s}" for s in seeds) + " |", "|" + "---|" * (len(seeds) + 1)]
    for m, per in r.get("per_seed_choices", {}).items():
        if not any(per):
            continue
        cells = []
        for c in per:
            if not c:
                cells.append("-")
                continue
            v = c["validation"][c["chosen"]]
            cells.append(f"{c['chosen']} ({v['val_forget_acc']:.2f} / {v['val_retain_acc']:.2f})")
        out.append(f"| {m} | " + " | ".join(cells) + " |")
    return "\n".join(out)


def compare_table(r: dict) -> str:
    """Every method and reference of a compare.json, the COMPARE_ROWS metrics, 'mean [interval]'."""
    methods = list(r["methods"])
    null = r["references"].get("cka_null", {})
    head = ["metric", "original", "retrained", "null", *methods]
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for k in COMPARE_ROWS:
        if k not in r["references"]["original"]:
            continue
        nul = "-"
        if k.startswith("cka_"):
            nul = ci_cell(null.get(k[4:7], {}).get(k.split(".")[1]), key="cka_null")
        row = [k, ci_cell(r["references"]["original"].get(k), key=k), ci_cell(r["references"]["retrained"].get(k), key=k),
               nul]
        row += [ci_cell(r["methods"][m].get(k), key=k) for m in methods]
        out.append("| " + " | ".join(row) + " |")
    fa = [r["methods"][m].get("forget_acc", {}) for m in methods]
    if any(x.get("p_vs_cnr_holm") is not None for x in fa):
        out.append("| forget_acc: p vs cnr (Holm) | - | - | - | " + " | ".join(
            "-" if x.get("p_vs_cnr") is None else f"{p_cell(x['p_vs_cnr'])} ({p_cell(x.get('p_vs_cnr_holm'))})"
            for x in fa) + " |")
    t = r["unlearn_time_s"]
    rt = r.get("reference_train_time_s", {}).get("retrained")
    out.append("| wall time (s) | " + (f"{r['reference_train_time_s']['original']['mean']:.0f}"
                                      if r.get("reference_train_time_s", {}).get("original") else "-")
               + " | " + (f"{rt['mean']:.0f}" if rt else "-") + " | - | "
               + " | ".join(f"{t[m]['mean']:.0f}" for m in methods) + " |")
    return "\n".join(out)


ATTACK_PREFIXES = ("mlp_probe_acc.", "conv_probe_acc.", "inversion_judge_rate", "mia_acc", "probe_acc.",
                   "fewshot_probe_acc.", "cka_neg.")


def _mean(values) -> float:
    vals = [v for v in values if isinstance(v, (int, float)) and _finite(v)]
    return sum(vals) / len(vals) if vals else float("nan")


def _ulira_tpr(u: dict, method: str, who: str) -> str:
    """Mean over the seeds of `per_seed_ulira[method][i][who]`'s TPR at 1% FPR; '-' where there is none."""
    vals = [run[who]["tpr_at_1pct_fpr"] for run in u.get(method, []) if run and run.get(who)]
    return f"{_mean(vals):.2f}" if vals else "-"


def attacks_table(r: dict) -> str:
    """Which attacks tell the retrained model from the original on a compare.json run with `--attacks` (and
    `--ulira-pairs`): per attack, the original, retrained and null (mean over seeds), each method, and the
    over-seeds test of original against retrained (`separation`: Holm-adjusted p, separates or not).
    U-LiRA rows: the AUC of telling a model from the retrained reference per example (0.5 = cannot tell):
    the original's (fitted on the shadow originals: the attack's reach), each method's, and the null's in
    each method's place; then the same for the TPR at 1% FPR, as means over the seeds of `per_seed_ulira`.
    `separates per seed`: on how many of the judged seeds the verdict's margin rule (audit/verdict.py:
    |original - retrained| > 2 x max(|retrained - null|, 1/sqrt(N_forget))) says the measure separates; '-'
    where the file has no verdict."""
    methods = list(r["methods"])
    sep = r.get("separation", {})
    keys = [k for pre in ATTACK_PREFIXES for k in sorted(sep) if k.startswith(pre)]
    head = ["measure", "original", "retrained", "null", *methods, "separates (Holm p)", "separates per seed"]
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    null = [ps.get("retrained_null", {}) for ps in r["per_seed"]]
    judged = r.get("verdict", {}).get("per_seed", [])
    for k in keys:
        s = sep[k]
        row = [k, ci_cell(r["references"]["original"].get(k), key=k), ci_cell(r["references"]["retrained"].get(k), key=k),
               f"{_mean(n.get(k) for n in null):.2f}" if any(k in n for n in null) else "-"]
        row += [ci_cell(r["methods"][m].get(k), key=k) for m in methods]
        row.append(f"{'yes' if s['separates'] else 'no'} ({p_cell(s.get('p_holm'))})")
        seen = [v["measures"][k]["separates"] for v in judged if k in v.get("measures", {})]
        row.append(f"{sum(seen)}/{len(seen)}" if seen else "-")
        out.append("| " + " | ".join(row) + " |")
    u = r.get("per_seed_ulira")
    if u:
        pairs = next(iter(u.values()))[0]["pairs"]
        reach = r["references"]["original"].get("ulira_auc")
        out.append(f"| U-LiRA AUC ({pairs} shadow pairs) | {ci_cell(reach, key='ulira_auc')} (reach) | 0.5 by definition | - | "
                   + " | ".join(ci_cell(r["methods"][m].get("ulira_auc"), key="ulira_auc") for m in methods) + " | - | - |")
        out.append("| U-LiRA AUC, the null in the method's place | - | - | - | "
                   + " | ".join(ci_cell(r["methods"][m].get("ulira_null_auc"), key="ulira_null_auc") for m in methods) + " | - | - |")
        reach_tpr = _ulira_tpr(u, next(iter(u)), "original")
        out.append(f"| U-LiRA TPR at 1% FPR (mean over seeds) | {reach_tpr} (reach) | 0.01 by definition | - | "
                   + " | ".join(_ulira_tpr(u, m, "audited") for m in methods) + " | - | - |")
        out.append("| U-LiRA TPR at 1% FPR, the null in the method's place | - | - | - | "
                   + " | ".join(_ulira_tpr(u, m, "null") for m in methods) + " | - | - |")
    return "\n".join(out)


VERDICT_ZONES = (("with_retrained", "with the retrained"), ("between", "between"),
                 ("with_original", "with the original"), ("beyond_retrained", "past the retrained"),
                 ("beyond_original", "past the original"))


def verdict_table(r: dict) -> str:
    """compare's verdict (`verdict.methods`): per method, the share of the separating measures (judged per
    seed by audit/verdict.py's margin rule) on which it stands with the retrained model, between the two
    references, with the original, or past either; mean [95% interval] over seeds."""
    v = r["verdict"]
    out = ["| method | damaged seeds | " + " | ".join(h for _, h in VERDICT_ZONES) + " |",
           "|" + "---|" * (len(VERDICT_ZONES) + 2)]
    for m, d in v["methods"].items():
        damaged = f"{d['damaged_seeds']} of {d['seeds']}" if "damaged_seeds" in d else "-"
        out.append(f"| {m} | {damaged} | " + " | ".join(ci_cell(d["shares"].get(z)) for z, _ in VERDICT_ZONES) + " |")
    return "\n".join(out)


def seed_table(r: dict, seed_index: int = 0, method: str = "cnr") -> str:
    """One seed of a compare.json (`values[seed_index]`): original, `method` (unlearned), retrained."""
    if method not in r["methods"]:
        raise KeyError(f"method {method!r} not in methods ({', '.join(r['methods'])})")
    out = ["| model | " + " | ".join(h for h, _ in SEED_ROWS) + " |", "|" + "---|" * (len(SEED_ROWS) + 1)]
    for label, src, bold in (("original", r["references"]["original"], False),
                             (f"{method.upper()} (unlearned)", r["methods"][method], True),
                             ("retrained", r["references"]["retrained"], False)):
        cells = []
        for i, (_, k) in enumerate(SEED_ROWS):
            v = f"{src[k]['values'][seed_index]:.3f}"
            cells.append(f"**{v}**" if bold and i == 0 else v)
        out.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(out)


def run_table(r: dict) -> str:
    """One `cnr-fast unlearn` results.json: original, unlearned and retrained on the SEED_ROWS metrics."""
    out = ["| model | " + " | ".join(h for h, _ in SEED_ROWS) + " |", "|" + "---|" * (len(SEED_ROWS) + 1)]
    for label in ("original", "unlearned", "retrained"):
        src = r["metrics"].get(label)
        if src is None:
            continue
        cells = []
        for i, (_, k) in enumerate(SEED_ROWS):
            name, _, tap = k.partition(".")
            v = src[name][tap] if tap else src[name]
            v = f"{v:.3f}"
            cells.append(f"**{v}**" if label == "unlearned" and i == 0 else v)
        shown = f"{r['method'].upper()} (unlearned)" if label == "unlearned" else label
        out.append(f"| {shown} | " + " | ".join(cells) + " |")
    return "\n".join(out)


def run_printout(r: dict, out: str = "runs/default") -> str:
    """What `cnr-fast unlearn --out OUT` prints at its end (experiments/unlearn.summary_lines), from its
    results.json, as a code block."""
    from cnr_fast.experiments.unlearn import summary_lines

    return "\n".join(["```", *summary_lines(r, out), "```"])


GLANCE_KEYS = (("forget_acc", "forget acc"), ("retain_acc", "retain acc"), ("cka_neg.L4", "CKA_neg L4"),
               ("fewshot_probe_acc.5", "5-shot probe"))


def glance_table(r: dict) -> str:
    """The main comparison at a glance, one row per model of a compare.json: forget accuracy as 'mean [95%
    interval]' over the seeds, retain accuracy, CKA_neg at L4 (1 = the original's features on the forget class)
    and the 5-shot probe as means, the wall time per seed (a reference's training time, a method's own time with
    its validation search); the null row is a second retrained model (its CKA_neg: CKA with the retrained one)."""
    out = ["| model | " + " | ".join(h for _, h in GLANCE_KEYS) + " | time per seed (s) |",
           "|" + "---|" * (len(GLANCE_KEYS) + 2)]
    refs, times = r["references"], r.get("reference_train_time_s", {})

    def cells(src):
        c = [ci_cell(src.get("forget_acc"), always=False, key="forget_acc")]
        c += [f"{src[k]['mean']:.2f}" if src.get(k) and _finite(src[k].get("mean")) else "-" for k, _ in GLANCE_KEYS[1:]]
        return c

    for name in ("original", "retrained"):
        t = times.get(name)
        out.append(f"| {name} | " + " | ".join(cells(refs[name])) + " | " + (f"{t['mean']:.0f}" if t else "-") + " |")
    null = refs.get("cka_null", {}).get("neg", {}).get("L4")
    if null:
        out.append("| null (a second retrained model) | - | - | " + f"{null['mean']:.2f}" + " | - | - |")
    for m, src in r["methods"].items():
        out.append(f"| {m} | " + " | ".join(cells(src)) + f" | {r['unlearn_time_s'][m]['mean']:.0f} |")
    return "\n".join(out)


def measures_table(r: dict) -> str:
    """Every audit measure a results.json defines (`audit.definitions`): its name and definition."""
    out = ["| measure | what it is |", "|---|---|"]
    for k, d in r["audit"]["definitions"].items():
        out.append(f"| `{k}` | " + " ".join(str(d).split()).replace("|", "\\|") + " |")
    return "\n".join(out)


def ablate_table(r: dict) -> str:
    """Every variant of an ablate.json: 'mean [95% interval]', forget accuracy with its paired p against full."""
    out = ["| variant | " + " | ".join(ABLATE_KEYS) + " | time (s) |", "|" + "---|" * (len(ABLATE_KEYS) + 2)]
    for n in ["original", "retrained", *r["variants"]]:
        tm = r["unlearn_time_s"].get(n)
        cells = []
        for k in ABLATE_KEYS:
            s = r["table"][n].get(k)
            c = ci_cell(s, key=k)
            if k == "forget_acc" and n in r["variants"] and s and s.get("p_vs_full") is not None:
                c += f" (p={p_cell(s['p_vs_full'])}, Holm {p_cell(s.get('p_vs_full_holm'))})"
            cells.append(c)
        out.append(f"| {n} | " + " | ".join(cells) + " | " + (f"{tm['mean']:.0f}" if tm else "-") + " |")
    return "\n".join(out)


def _forget_retain(s: dict) -> str:
    return f"{ci_cell(s.get('forget_acc'), always=False, key='forget_acc')} / {s['retain_acc']['mean']:.2f}"


def multiclass_table(r: dict) -> str:
    """Forget / retain accuracy of each class set of a multiclass.json: 'mean [interval] / mean'."""
    runs = list(r["runs"].values())
    methods = list(runs[0]["methods"])
    out = ["| forget | retrained | " + " | ".join(methods) + " |", "|" + "---|" * (len(methods) + 2)]
    for run in runs:
        label = "{" + ", ".join(str(c) for c in run["forget_classes"]) + "}"
        cells = [_forget_retain(run["references"]["retrained"])] + [_forget_retain(run["methods"][m]) for m in methods]
        out.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(out)


def continual_table(r: dict) -> str:
    """Forget / retain accuracy per round of a continual.json: 'mean [interval] / mean'."""
    methods = list(r["methods"])
    out = ["| round (forget) | retrained | " + " | ".join(methods) + " |", "|" + "---|" * (len(methods) + 2)]
    for i, rnd in enumerate(r["rounds"], 1):
        t = rnd["table"]
        cells = [_forget_retain(t["retrained"])] + [_forget_retain(t[m]) for m in methods]
        out.append(f"| {i} ({','.join(str(c) for c in rnd['forget'])}) | " + " | ".join(cells) + " |")
    return "\n".join(out)


PREREG_LABELS = {"forget_acc": "forget acc", "retain_acc": "retain acc", "cka_neg.L4": "CKA_neg L4",
                 "fewshot_probe_acc.1": "1-shot probe", "fewshot_probe_acc.5": "5-shot probe",
                 "gradcam_overlap": "Grad-CAM overlap", "ulira_excess": "U-LiRA AUC excess",
                 "klom_excess": "KLOM excess"}


def _reading(row: dict) -> str:
    """A registered contrast's reading, short: decided (a dagger where the sensitivity correction, Holm over
    every primary contrast, does not decide it), open with the seeds it would need, or no practical difference."""
    text = row["reading"]
    if text.startswith("decided"):
        return "decided" if row.get("decided_all", True) else "decided\u2020"
    if text.startswith("open: about "):
        return f"open ({text.split()[2]} seeds)"
    return text


def _diff_cell(row: dict, digits: int) -> str:
    ci = row.get("ci95")
    d = f"{row['difference']:+.{digits}f}"
    if ci is not None and _finite(ci[0]) and _finite(ci[1]) and ci[0] != ci[1]:
        d += f" [{ci[0]:+.{digits}f}, {ci[1]:+.{digits}f}]"
    return d


def _digits(key: str) -> int:
    return 1 if key.startswith("klom") else 3


def prereg_summary(a: dict) -> str:
    """The registered analysis (bench/prereg10.py analyse), per primary measure: the seeds it has, its family
    (contrasts tested, Holm per measure) and how many contrasts each reading got."""
    out = ["| measure | seeds | contrasts | decided | decided over all | open | no practical difference | dropped |",
           "|" + "---|" * 8]
    for key in a["primary"]:
        t = a["measures"][key]
        rows = t["rows"]
        if not rows:
            out.append(f"| {PREREG_LABELS.get(key, key)} | 0 | 0 | - | - | - | - | {t.get('note', '-')} |")
            continue
        dec = [r for r in rows if r["reading"].startswith("decided")]
        out.append(f"| {PREREG_LABELS.get(key, key)} | {len(t['seeds'])} | {t['family_size']} | {len(dec)} | "
                   f"{sum(1 for r in dec if r.get('decided_all', True))} | "
                   f"{sum(1 for r in rows if r['reading'].startswith('open'))} | "
                   f"{sum(1 for r in rows if r['reading'] == 'no practical difference')} | "
                   f"{', '.join(t.get('dropped', [])) or '-'} |")
    return "\n".join(out)


def _prereg_matrix(a: dict, versus_retrained: bool) -> str:
    keys = [k for k in a["primary"] if a["measures"][k]["rows"]]
    pick = (lambda r: r["a"] if r["b"] == "retrained" else None) if versus_retrained else \
        (lambda r: r["b"] if r["a"] == "cnr" and r["b"] != "retrained" else None)
    cells = {}
    for k in keys:
        for r in a["measures"][k]["rows"]:
            m = pick(r)
            if m is not None:
                cells[(m, k)] = f"{_diff_cell(r, _digits(k))} {_reading(r)}"
    methods = [m for m in a["methods"] if any((m, k) in cells for k in keys)]
    head = ["method - retrained" if versus_retrained else "cnr - method"] + [PREREG_LABELS.get(k, k) for k in keys]
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for m in methods:
        out.append(f"| {m} | " + " | ".join(cells.get((m, k), "-") for k in keys) + " |")
    return "\n".join(out)


def prereg_vs_retrained(a: dict) -> str:
    """Question 1 of the registration: each method minus the retrained model, per primary measure: mean
    difference over seeds [95% interval] and the reading under Holm per measure."""
    return _prereg_matrix(a, versus_retrained=True)


def prereg_vs_cnr(a: dict) -> str:
    """Question 2: CNR minus each other method, per primary measure, as prereg_vs_retrained."""
    return _prereg_matrix(a, versus_retrained=False)


def prereg_answers(a: dict) -> str:
    """The registration's two questions answered measure by measure, from the readings alone: which methods are
    decided to differ from the retrained model (question 1) and which CNR is decided to differ from (question 2),
    each with the sign of the mean difference; the rest listed beside them as not decided (open or no practical
    difference), since the registration reports those too."""
    out = ["| measure | differ from retrained | not shown to differ from retrained | CNR differs from | "
           "CNR not shown to differ from |", "|" + "---|" * 5]
    for key in a["primary"]:
        rows = a["measures"][key]["rows"]
        if not rows:
            continue
        cells = [[], [], [], []]
        for r in rows:
            if r["b"] == "retrained":
                col, name = 0, r["a"]
            elif r["a"] == "cnr":
                col, name = 2, r["b"]
            else:
                continue
            if r["reading"].startswith("decided"):
                cells[col].append(f"{name} ({'+' if r['difference'] > 0 else '-'})")
            else:
                cells[col + 1].append(name)
        out.append(f"| {PREREG_LABELS.get(key, key)} | " + " | ".join(", ".join(c) or "none" for c in cells) + " |")
    return "\n".join(out)


def prereg_full(a: dict) -> str:
    """Every registered contrast: mean difference, 95% interval, p, Holm p per measure and over all, reading."""
    out = ["| measure | contrast | difference | 95% interval | p | Holm p (measure) | Holm p (all) | reading |",
           "|" + "---|" * 8]
    for key in a["primary"]:
        dg = _digits(key)
        for r in a["measures"][key]["rows"]:
            ci = r.get("ci95")
            ci_s = f"[{ci[0]:+.{dg}f}, {ci[1]:+.{dg}f}]" if ci is not None else "-"
            out.append(f"| {PREREG_LABELS.get(key, key)} | {r['a']} - {r['b']} | {r['difference']:+.{dg}f} | {ci_s} | "
                       f"{p_cell(r['p'])} | {p_cell(r['p_holm'])} | {p_cell(r.get('p_holm_all'))} | {r['reading']} |")
    return "\n".join(out)


TABLES = {"compare": compare_table, "choices": choices_table, "seed": seed_table, "attacks": attacks_table,
          "verdict": verdict_table, "run": run_printout, "glance": glance_table, "measures": measures_table,
          "ablate": ablate_table, "multiclass": multiclass_table, "continual": continual_table,
          "prereg_summary": prereg_summary, "prereg_vs_retrained": prereg_vs_retrained, "prereg_vs_cnr": prereg_vs_cnr,
          "prereg_answers": prereg_answers, "prereg_full": prereg_full}


if __name__ == "__main__":
    kind, path = sys.argv[1], sys.argv[2]
    data = json.loads(Path(path).read_text())
    print(TABLES[kind](data))
