"""Markdown reports and figures of the drivers' results (compare, ablate, scenarios)."""

from __future__ import annotations

import math

from ..audit.klom import NULL_MIN_HALF
from .stats import PRACTICAL_SEEDS, SEPARATION_ALPHA, finite, format_p, is_coordinate_bound

# the validation accuracies the runner adds (not audit measures): after the test accuracies in every summary
VALIDATION = ("val_forget_acc", "val_retain_acc")


def summary_keys(available) -> list[str]:
    """The keys of `available` every summary table shows: the registry's headline measures (Metric.headline,
    audit/metrics.py), in its order, with the validation accuracies after the test ones."""
    from ..audit.metrics import headline_keys

    keys = headline_keys(available)
    at = keys.index("retain_acc") + 1 if "retain_acc" in keys else 0
    return keys[:at] + [k for k in VALIDATION if k in available] + keys[at:]


def _cell(s: dict | None) -> str:
    """'mean [low, high]' of a summary, in memory or read from a result file (whose missing values are null)."""
    if s is None or not finite(s.get("mean")):
        return "-"
    if not (finite(s.get("ci_low")) and finite(s.get("ci_high"))):
        return f"{s['mean']:.3f}"
    return f"{s['mean']:.3f} [{s['ci_low']:.3f}, {s['ci_high']:.3f}]"


def _num(v) -> float:
    """A value to plot: NaN where there is none (null in a result file)."""
    return v if finite(v) else float("nan")


def originals_md(result: dict) -> list[str]:
    """One line naming each seed's original by a digest of its weights: tables (and files) whose digests
    agree unlearned the same models."""
    recs = result.get("per_seed_originals")
    if not recs:
        return ["Originals: not recorded in this file (it predates per-seed original digests).", ""]
    return ["Originals (sha256 of the weights, first 12 hex digits; the same digest in another table means the "
            "same model): " + ", ".join(f"seed {r['seed']} {r['weights_sha256'][:12]} ({r['torch_threads']} thread"
                                         f"{'s' if r['torch_threads'] != 1 else ''})" for r in recs) + ".", ""]


def choices_md(choices: dict, seeds: list, title: str = "## Settings chosen on validation",
               where: str = "per seed on that seed's original") -> list[str]:
    """Markdown lines: each method's validation choice per seed, with every candidate's scores."""
    rows = [(m, seed, c) for m, per in choices.items() for seed, c in zip(seeds, per) if c]
    if not rows:
        return []
    out = ["", title, "",
           "Each candidate: validation forget / retain accuracy; the chosen one in bold (the rule, `tuning.choose`: the "
           "one that forgets most of those within the margin of the original's retain accuracy; (out) marks a "
           "candidate that lost more than the margin, and a row that says so where none kept within it). "
           f"Chosen {where} (`tuning.py`).", "",
           "| method | seed | candidates |", "|---|---|---|"]
    for m, seed, c in rows:
        cells, rule = [], c.get("rule")
        for name, v in c["validation"].items():
            txt = f"{name}: {v['val_forget_acc']:.2f} / {v['val_retain_acc']:.2f}"
            if "dampened_params" in v:
                txt += f" ({v['dampened_params']} dampened)"
            if rule and v["val_retain_acc"] < rule["original_val_retain_acc"] - rule["retain_margin"]:
                txt += " (out)"
            cells.append(f"**{txt}**" if name == c["chosen"] else txt)
        note = ""
        if rule:
            note = (f" (original {rule['original_val_retain_acc']:.2f}, margin {rule['retain_margin']:.3f}"
                    + ("; none within it: the one that keeps most, a damaged model" if not rule["within_margin"]
                       else "") + ")")
        out.append(f"| {m} | {seed} | " + "; ".join(cells) + note + " |")
    return out


def verdict_md(v: dict | None) -> list[str]:
    """The verdict over seeds (stats.verdict_over_seeds): one sentence per method, then the rule."""
    if not v:
        return ["Verdict: not in this file (it predates the audit of the null model).", ""]
    out = ["## Verdict", ""] + [f"- {m['sentence']}." for m in v["methods"].values()]
    first = v["per_seed"][0]
    out += ["", f"Per seed, audit/verdict.py: {first['rule']}; per-seed measures and positions in `verdict.per_seed` "
            "of the JSON."]
    if v.get("interval"):
        out += ["", f"Intervals: {v['interval']}; with few seeds a bootstrap interval is at most the seeds' range and "
                "understates the uncertainty (the seeds each contrast would need: below)."]
    out += [""]
    return out


def _rate(x) -> str:
    return "-" if x is None or not math.isfinite(x) else f"{x:.2f}"


def ulira_md(result: dict) -> list[str]:
    """Per method and seed, U-LiRA (`per_seed_ulira`): AUC and TPR at 1% FPR of the audited model against the
    retrained reference, of the null in its place, and of the original (the attack's reach), with the setting
    the shadows ran at and the attack's wall time. Nothing when the run had no U-LiRA."""
    u = result.get("per_seed_ulira")
    if not u:
        return []
    out = ["", "## U-LiRA (per forget example, Hayes et al.)", "",
           "AUC / TPR at 1% FPR of telling the model from the retrained reference, per forget training example "
           "(0.5 / 0.01: cannot tell). `null`: the independently retrained model in the audited model's place; "
           "`original (reach)`: the model before unlearning, fitted on the shadow originals. `time`: the attack's "
           "wall time in that process (small where the shadows came from a resumed state).", "",
           "| method | seed | pairs | shadows at | audited | null | original (reach) | time (s) |",
           "|---|---|---|---|---|---|---|---|"]
    for m, runs in u.items():
        for seed, run in zip(result["seeds"], runs):
            if not run:
                continue
            cells = [f"{_rate(run[w]['auc'])} / {_rate(run[w]['tpr_at_1pct_fpr'])}" if run.get(w) else "-"
                     for w in ("audited", "null", "original")]
            t = run.get("time_s")
            out.append(f"| {m} | {seed} | {run['pairs']} | {run.get('choice') or '-'} | " + " | ".join(cells)
                       + f" | {'-' if t is None else f'{t:.0f}'} |")
    return out + klom_md(result)


def klom_md(result: dict) -> list[str]:
    """Per method and seed, KLOM over the same shadow pairs (`per_seed_ulira[m][i]["klom"]`, audit/klom.py):
    P95 over examples of KL(unlearned || retrained) of the margin histograms, on the forget-class training
    examples, retain-class training examples and held-out examples, with the shadow originals in the method's
    place and the split-half null. Nothing when no run carries it."""
    u = result.get("per_seed_ulira") or {}
    runs = [(m, seed, run["klom"]) for m, per in u.items() for seed, run in zip(result["seeds"], per)
            if run and run.get("klom")]
    if not runs:
        return []
    h = runs[0][2].get("null", {}).get("k")
    out = ["", "## KLOM over the same shadow pairs (Easy Data Unlearning Bench)", "",
           "P95 over examples of the KL divergence (nats) between the histograms of an example's margin over the "
           "method's unlearned shadows and over the retrained shadows (20 bins, margins clipped to [-100, 100]; "
           "0 = same distributions, lower is better): forget = forget-class training examples, retain = retain-class "
           "training examples, held-out = every class (its forget-class examples are the P95's tail here). "
           "`original`: the shadow originals in the method's place (forget). With few shadows the floor is high: "
           + (f"`null`: {h} retrained shadows against the other {h}, beside the method's first {h} against the same "
              f"{h} (forget)." if h else f"**too few pairs for a split-half null: at {runs[0][2]['pairs']} pairs a side "
              "holds so few models that almost every example's P95 sits at the ceiling (log(1 / eps) = 11.5 for "
              "an empty bin), whatever the method: these values cannot tell a method from retraining; run "
              f"--ulira-pairs {2 * NULL_MIN_HALF} or more.**"), "",
           "| method | seed | pairs | forget | retain | held-out | original | method (K/2) | null (K/2) |",
           "|---|---|---|---|---|---|---|---|---|"]
    for m, seed, k in runs:
        a, o, n = k["audited"], k.get("original") or {}, k.get("null") or {}
        cells = [a.get("forget"), a.get("retain"), a.get("val"), o.get("forget"),
                 (n.get("audited") or {}).get("forget"), (n.get("null") or {}).get("forget")]
        out.append(f"| {m} | {seed} | {k['pairs']} | " + " | ".join(_rate(c) for c in cells) + " |")
    return out


def recipe_md(result: dict) -> list[str]:
    """Whose recipe made the originals, references, nulls and RFS, and what each seed's original reached."""
    if "recipe" not in result:  # files from before the recipe was recorded: cnr-fast's own
        return []
    checks = result.get("recipe_checks") or []
    accs = ", ".join(f"seed {c['seed']}: {c['accuracy']:.3f}" for c in checks)
    where = checks[0]["split"] if checks else "validation"
    expect = checks[0].get("expect_acc") if checks else None
    made = "originals, retrained references, nulls" + (" and RFS" if "rfs" in result.get("methods", {}) else "")
    return [f"Recipe: the {made} were made by {result['recipe']}. "
            f"The originals' accuracy on {where}: {accs or 'not recorded'}"
            + (f" (expected {expect:.3f})" if expect is not None else "") + ".", ""]


PAIRWISE_SHOWN = 3  # metrics of compare.json's "pairwise" the report shows (the first ones: forget, retain, CKA_neg L4)


def pairwise_md(result: dict, methods: list[str]) -> list[str]:
    """Every pair of methods on the first metrics of `pairwise`: mean difference, Holm-adjusted p and, where the
    test leaves the contrast open, the seeds it would need at 80% power."""
    pw = result.get("pairwise")
    if not pw or len(methods) < 2:
        return []
    n = len(result["seeds"])
    out = ["", "## Every pair of methods, and each against the retrained model", "",
           f"Paired t-test over the {n} seeds, Holm-adjusted over the pairs on each metric; an open contrast "
           "(adjusted p >= 0.05) gives the seeds a paired test would need to find the difference seen here with 80% "
           "power, at 0.05 / pairs (`stats.seeds_needed`; the seen mean and spread taken as the truth), and more "
           f"than {PRACTICAL_SEEDS} reads as no practical difference at that effect. All metrics in `pairwise` of the "
           "JSON; `cnr-fast power FILE` prints them for any compare.json.", "",
           "| metric | a - b | difference | p (Holm) | reading |", "|---|---|---|---|---|"]
    for k, rows in [(k, v) for k, v in pw.items() if not k.startswith("_")][:PAIRWISE_SHOWN]:
        for r in rows:
            reading = r.get("reading") or ("decided" if r["decided"] else f"open ({r.get('seeds_needed')} seeds)")
            out.append(f"| {k} | {r['a']} - {r['b']} | {r['difference']:+.3f} | {format_p(r['p'])} "
                       f"({format_p(r['p_holm'])}) | {reading} |")
    return out


def compare_report_md(result: dict, short: bool = False) -> str:
    methods = list(result["methods"])
    refs = result["references"]
    keys = summary_keys(refs["original"])
    if not short:
        keys += sorted(k for k in refs["original"] if k not in keys)
    from ..models import arch_label

    seeds_note = ("one original, retrained and null model (seed %d) for every seed" % result["seeds"][0]
                  if result.get("fixed_original") else "an original, retrained and null model of its own per seed")
    names = result.get("forget_names")
    named = f" ({', '.join(map(repr, names))})" if names and names != [str(c) for c in result["forget_classes"]] else ""
    lines = [f"# compare: {result['dataset']} / {arch_label(result['arch'], result['width'])}, forget "
             f"{result['forget_classes']}{named}, seeds {result['seeds']}", "",
             f"Splits: {result['splits']['train']} train / {result['splits']['val']} validation / "
             f"{result['splits']['test']} test; every cell is on test except `val_*`. References: {seeds_note}; "
             f"reference initialisation: {result['reference_init']}.", ""]
    lines += recipe_md(result)
    if result.get("data_needs"):
        lines += ["Training data each method reads: " + "; ".join(f"{m}: {n}" for m, n in result["data_needs"].items())
                  + ".", ""]
    if result.get("train_data", "all") != "all":
        lines += [f"The methods were given the {result['train_data']}-class training images alone "
                  "(scenario no-retain); the references, the validation split and the audit are as in compare. So a step "
                  "size or strength left open was still chosen on the validation split's retain-class images and "
                  "labels (`validation_choice`), which a user without retain data does not have: fix it from a run "
                  "like this one (the chosen values are in the choices table) rather than reading the choice as "
                  "one made without retain data.", ""]
    for m, why in (result.get("not_applicable") or {}).items():
        lines += [f"Not run: {m}, which {why}.", ""]
    lines += originals_md(result)
    lines += verdict_md(result.get("verdict"))
    head = ["metric", "original", "retrained", "null", *methods]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    null = refs.get("cka_null", {})
    for k in keys:
        nul = _cell(refs["null"].get(k)) if refs.get("null", {}).get(k) is not None else "-"
        if k.startswith("cka_pos.") or k.startswith("cka_neg."):
            part, tap = k[4:7], k.split(".")[1]
            nul = _cell(null.get(part, {}).get(tap))
        row = [k + (" (coord.)" if is_coordinate_bound(k) else ""), _cell(refs["original"].get(k)),
               _cell(refs["retrained"].get(k)), nul]
        for m in methods:
            s = result["methods"][m].get(k)
            cell = _cell(s)
            if s is not None and s.get("p_vs_cnr") is not None:
                cell += f" (p={format_p(s['p_vs_cnr'])}, Holm {format_p(s.get('p_vs_cnr_holm'))})"
            row.append(cell)
        lines.append("| " + " | ".join(row) + " |")
    against = ("(paired t-test p against CNR, raw and Holm-adjusted over the methods on that metric; n/a where the "
               "paired differences are constant)") if "cnr" in methods else "(no CNR in this run: no p in the cells)"
    lines += ["", f"Cells: mean [95% t-interval over seeds, within [0, 1] for a measure that lies there, `stats.in_unit_range`] {against}. Chance accuracy "
              f"{refs['chance_acc']:.3f}; MIA chance 0.5. `null` = unbiased CKA between the retrained model and a "
              "second, independently trained one: what an unrelated model scores at that tap; on every other row `null` is "
              "that second model's own value (the verdict's margin is |retrained - null|). (coord.) = compares "
              "unit coordinates with the original's, reported only for models derived from the original.", ""]
    t = result["unlearn_time_s"]
    rt = result.get("reference_train_time_s", {}).get("retrained")
    lines.append("Wall time per method (s, mean over seeds): " + ", ".join(
        f"{m} {t[m]['mean']:.1f}" for m in methods) + (f"; retraining from scratch (reference) {rt['mean']:.1f}"
                                                       if rt else "") + ".")
    lines += choices_md(result.get("per_seed_choices", {}), result["seeds"])
    lines += ulira_md(result)
    lines += pairwise_md(result, methods)
    if len(result["seeds"]) < 2:
        lines += ["", "## Details", "", "One seed: no test over seeds; the verdict above places each model on this "
                  "seed by its margin rule, and `separation` in the JSON holds the differences."]
        return "\n".join(lines) + "\n"
    lines += ["", "## Details: which metrics separate the retrained model from the original over seeds",
              "", "The verdict above places each model per seed by its margin rule; this is the other notion, a "
              "paired test over seeds, for reading beside it. "
              f"Separates = |original - retrained| >= {result['separation_threshold']} and the paired t-test "
              f"p, Holm-adjusted over the {len(result['separation'])} metrics judged, below {SEPARATION_ALPHA} "
              "(with one seed, or the same difference on every seed, there is no p and the 95% interval must "
              "exclude 0). Coordinate-bound metrics are not judged.", ""]
    for k in keys:
        v = result["separation"].get(k)
        if v is None:
            continue
        diff = f"difference {v['difference']:+.3f} [{v['ci_low']:+.3f}, {v['ci_high']:+.3f}]"
        if "p_holm" in v:  # files written before the Holm verdict have no p
            diff += f", p={format_p(v['p'])}, Holm {format_p(v['p_holm'])}"
        if not v["separates"]:
            lines.append(f"- {k}: does NOT separate them ({diff}); closeness to retrained on it says nothing.")
            continue
        dist = v["distance_to_retrained"]
        order = sorted(dist, key=lambda m: dist[m] if math.isfinite(dist[m]) else 9e9)
        lines.append(f"- {k}: separates them ({diff}). Distance to retrained, closest first: "
                     + ", ".join(f"{m} {dist[m]:.3f}" for m in order) + ".")
    return "\n".join(lines) + "\n"


def ablate_report_md(result: dict, figures: dict | None = None) -> str:
    from ..models import arch_label

    t = result["table"]
    variants = list(result["variants"])
    keys = summary_keys(t["full"])
    lines = [f"# ablate: {result['dataset']} / {arch_label(result['arch'], result['width'])}, forget "
             f"{result['forget_classes']}, seeds {result['seeds']}", "",
             "Every variant is CNR with one change (`variants` in ablate.json), on the same original per seed. "
             "Cells: mean [95% t-interval over seeds, within [0, 1] for a measure that lies there, `stats.in_unit_range`] (paired t-test p against full CNR, raw and Holm-adjusted over "
             "the variants on that metric); test split except `val_*`.", ""]
    lines += originals_md(result)
    head = ["variant", *keys, "time (s)"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for n in ["original", "retrained", *variants]:
        row = [n]
        for k in keys:
            s = t[n].get(k)
            cell = _cell(s)
            if s is not None and s.get("p_vs_full") is not None:
                cell += f" (p={format_p(s['p_vs_full'])}, Holm {format_p(s.get('p_vs_full_holm'))})"
            row.append(cell)
        tm = result["unlearn_time_s"].get(n)
        row.append(f"{tm['mean']:.0f}" if tm else "-")
        lines.append("| " + " | ".join(row) + " |")
    null = result.get("cka_null", {}).get("neg", {})
    if null:
        lines += ["", "CKA null (retrained vs an independently trained second retrained model), forget examples: "
                  + ", ".join(f"{tap} {_cell(s)}" for tap, s in null.items()) + "."]
    if result.get("per_seed_choices"):
        lines += choices_md(result["per_seed_choices"], result["seeds"])
        lines += ["", "Full CNR chooses its reset's step size on validation; every other variant runs at that choice "
                  "(its one candidate above), so it differs from full CNR in its one change alone."]
    for name in (figures or {}):
        lines += ["", f"![{name}]({name})"]
    return "\n".join(lines) + "\n"


def ablate_figures(result: dict) -> dict[str, bytes]:
    """One PNG per sweep: forget accuracy, retain accuracy and CKA_neg (L4) against the knob."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    out = {}
    t = result["table"]
    for knob, points in result["sweeps"].items():
        pts = sorted((x, v) for v, x in points.items() if v in t)
        if len(pts) < 2:
            continue
        fig, axes = plt.subplots(1, 3, figsize=(10, 2.8))
        for ax, key in zip(axes, ("forget_acc", "retain_acc", "cka_neg.L4")):
            xs = [x for x, _ in pts]
            ys = [_num(t[v].get(key, {}).get("mean")) for _, v in pts]
            lo = [_num(t[v].get(key, {}).get("ci_low")) for _, v in pts]
            hi = [_num(t[v].get(key, {}).get("ci_high")) for _, v in pts]
            ax.plot(xs, ys, marker="o", label="CNR")
            if all(math.isfinite(v) for v in lo + hi):
                ax.fill_between(xs, lo, hi, alpha=0.2)
            ref = t["retrained"].get(key, {}).get("mean")
            if ref is not None:
                ax.axhline(ref, color="k", ls="--", lw=1, label="retrained")
            ax.set_xscale("log", base=2)
            ax.set_xlabel(knob)
            ax.set_title(key)
        out[f"ablate_{knob}.png"] = _png(fig, axes)
    return out


def _png(fig, axes) -> bytes:
    """The figure as PNG bytes (legend on the first panel), closed after."""
    import io as _io

    import matplotlib.pyplot as plt

    axes[0].legend(fontsize=7)
    fig.tight_layout()
    buf = _io.BytesIO()
    fig.savefig(buf, format="png", dpi=80)
    plt.close(fig)
    return buf.getvalue()


def scenario_figure(result: dict, keys=("forget_acc", "retain_acc", "cka_neg.L4")) -> dict[str, bytes]:
    """One PNG for a scenario: each key against the continual round, or against the number of classes
    forgotten at once (multiclass); a line and 95% band per method, retrained and original dashed."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    if "rounds" in result:  # rounds of forgetting (continual)
        points = [(len(rd["forget"]), rd["table"]) for rd in result["rounds"]]
        xlabel = "round (classes forgotten so far)"
    else:
        points = [(len(k.split(",")), {"original": run["references"]["original"],
                                       "retrained": run["references"]["retrained"], **run["methods"]})
                  for k, run in result["runs"].items()]
        xlabel = "classes forgotten at once"
    if len(points) < 2:
        return {}
    names = [n for n in points[0][1] if n not in ("original", "retrained")]
    fig, axes = plt.subplots(1, len(keys), figsize=(3.6 * len(keys), 2.9))
    for ax, key in zip(axes, keys):
        xs = [x for x, _ in points]
        for n in ["retrained", "original", *names]:
            cells = [t.get(n, {}).get(key) or {} for _, t in points]
            ys = [_num(c.get("mean")) for c in cells]
            if n in ("retrained", "original"):
                ax.plot(xs, ys, ls="--", lw=1, color="k" if n == "retrained" else "0.6", label=n)
                continue
            (line,) = ax.plot(xs, ys, marker="o", label=n)
            lo = [_num(c.get("ci_low")) for c in cells]
            hi = [_num(c.get("ci_high")) for c in cells]
            if all(math.isfinite(v) for v in lo + hi):
                ax.fill_between(xs, lo, hi, alpha=0.15, color=line.get_color())
        ax.set_xticks(xs)
        ax.set_ylim(-0.05, 1.05)  # accuracies and CKA; a 3-seed t-band can reach far outside
        ax.set_xlabel(xlabel, fontsize=8)
        ax.set_title(key)
    return {f"{result['scenario']}.png": _png(fig, axes)}


def scenario_report_md(result: dict, figures: dict | None = None) -> str:
    lines = [f"# {result['scenario']}: {result['dataset']}", ""]
    lines += [f"![{name}]({name})\n" for name in figures or {}]
    if "runs" in result:  # several compare runs (multiclass: one per class set)
        for key, run in result["runs"].items():
            lines += [f"## forget {{{key}}}", "", compare_report_md(run, short=True), ""]
        return "\n".join(lines) + "\n"
    lines += [f"Round r forgets the first r classes of {result['order']}, each method from its own previous "
              f"model; seeds {result['seeds']}. Cells: mean [95% t-interval, within [0, 1] for a measure that lies there, `stats.in_unit_range`]; test split.", ""]
    lines += originals_md(result)
    first = result["rounds"][0]["table"]
    keys = summary_keys(set().union(*(first[n] for n in first)))
    for key in keys:
        methods = [n for n in result["rounds"][0]["table"] if n not in ("original",)]
        lines += [f"### {key}", "", "| round (forget) | " + " | ".join(methods) + " |",
                  "|" + "---|" * (len(methods) + 1)]
        for rd in result["rounds"]:
            lines.append(f"| {len(rd['forget'])} ({','.join(map(str, rd['forget']))}) | "
                         + " | ".join(_cell(rd["table"][m].get(key)) for m in methods) + " |")
        lines.append("")
    for rd in result["rounds"]:
        lines += choices_md(rd.get("per_seed_choices", {}), result["seeds"],
                            title=f"### Settings chosen on validation, round {len(rd['forget'])}",
                            where="per seed on the method's model of the previous round (round 1: the original)")
    return "\n".join(lines) + "\n"


def markdown_html(md: str, title: str) -> str:
    """A driver's report.md as a standalone report.html (headings, paragraphs, lists, tables, `code`, **bold**):
    the same text, for reading in a browser; nothing is fetched."""
    import html
    import re

    def inline(t: str) -> str:
        t = html.escape(t)
        t = re.sub(r"`([^`]+)`", r"<code>\1</code>", t)
        return re.sub(r"\*\*([^*]+)\*\*", r"<b>\1</b>", t)

    out, para, i = [], [], 0
    lines = md.splitlines()

    def flush():
        if para:
            out.append("<p>" + inline(" ".join(para)) + "</p>")
            para.clear()

    while i < len(lines):
        line = lines[i]
        if line.startswith("#"):
            flush()
            level = min(3, len(line) - len(line.lstrip("#")))
            out.append(f"<h{level}>{inline(line.lstrip('#').strip())}</h{level}>")
        elif line.startswith("|"):
            flush()
            rows = []
            while i < len(lines) and lines[i].startswith("|"):
                cells = [c.strip() for c in lines[i].strip().strip("|").split("|")]
                if not all(set(c) <= set("-: ") for c in cells):
                    rows.append(cells)
                i += 1
            i -= 1
            if rows:
                out.append("<table><tr>" + "".join(f"<th>{inline(c)}</th>" for c in rows[0]) + "</tr>"
                           + "".join("<tr>" + "".join(f"<td>{inline(c)}</td>" for c in r) + "</tr>" for r in rows[1:])
                           + "</table>")
        elif line.startswith("- "):
            flush()
            items = []
            while i < len(lines) and lines[i].startswith("- "):
                items.append(lines[i][2:])
                i += 1
            i -= 1
            out.append("<ul>" + "".join(f"<li>{inline(t)}</li>" for t in items) + "</ul>")
        elif not line.strip():
            flush()
        else:
            para.append(line)
        i += 1
    flush()
    style = ("body{font-family:sans-serif;max-width:75em;margin:2em auto;line-height:1.45}"
             "table{border-collapse:collapse;margin:1em 0;font-size:0.9em}"
             "td,th{border:1px solid #ccc;padding:0.25em 0.5em;text-align:left}code{background:#f3f3f3}")
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{style}</style></head><body>" + "\n".join(out) + "</body></html>\n")
