"""Statistics over seeds: flattening audit metrics, t-intervals, paired tests, Holm's adjustment and the
verdict of which metrics tell the retrained model from the original."""

from __future__ import annotations

import math

import numpy as np

from ..audit import metrics as _metrics

# Metrics that compare unit coordinates (a probe or unit set of the original applied to another
# model). Between independently trained networks units do not correspond, so they are reported only
# for models derived from the original and never used to judge separation (audit/metrics.py says which;
# is_coordinate_bound reads that registry at call time, so a registered metric counts too).
SEPARATION = 0.10
SEPARATION_ALPHA = 0.05  # on the Holm-adjusted p over the metrics judged in one run


def is_coordinate_bound(key: str) -> bool:
    """key: a flattened metric name such as "selectivity_delta.L4"."""
    return key.split(".")[0] in _metrics.coordinate_bound()


# Measures whose values lie in [0, 1] by their definition: accuracies and rates (*_acc, *_rate), AUCs, CKA,
# the Grad-CAM cosine of non-negative maps, neighbour purity, ZRF, JS divergence (at most ln 2), a mean
# softmax probability. Their interval over seeds is the t-interval intersected with [0, 1]: the mean lies
# in [0, 1], so the intersection covers it whenever the t-interval does (at 2-3 seeds the t-interval
# alone runs past both ends).
UNIT_RANGE = ("cka_neg", "cka_pos", "cka_null", "gradcam_overlap", "nn_purity", "nn_purity_by_layer", "ulira_auc",
              "ulira_null_auc", "zrf", "js_to_retrained", "inversion_audited_confidence")


def in_unit_range(key: str) -> bool:
    """Whether the measure named by key (a flattened metric name such as "fewshot_probe_acc.5", or a path
    to one in a result file such as "methods/cnr/forget_acc") lies in [0, 1] by definition."""
    import re

    return any(p in UNIT_RANGE or p.endswith(("_acc", "_rate")) for p in re.split(r"[/.]", key))


def finite(x) -> bool:
    """A number with a value: not NaN / inf, and not the null a strict JSON file holds in its place."""
    return isinstance(x, (int, float)) and math.isfinite(x)


def within_unit(s: dict, key: str) -> dict:
    """A {"mean", "ci_low", "ci_high", ...} summary with its interval intersected with [0, 1] where key's
    measure lies there (in_unit_range); otherwise s itself. Files written before the intersection was
    recorded are shown through this."""
    if not (isinstance(s, dict) and in_unit_range(key)):
        return s
    lo, hi = s.get("ci_low"), s.get("ci_high")
    if not (finite(lo) and finite(hi)):
        return s
    return {**s, "ci_low": min(max(lo, 0.0), 1.0), "ci_high": max(min(hi, 1.0), 0.0),
            "interval": "t, within [0, 1]"}


def t_interval(values) -> tuple[float, float, float]:
    """(mean, low, high) of a Student-t 95% interval; NaN bounds for fewer than 2 finite values."""
    from scipy import stats

    a = np.asarray([v for v in values if math.isfinite(v)], dtype=np.float64)
    if len(a) == 0:
        return float("nan"), float("nan"), float("nan")
    mean = float(a.mean())
    if len(a) < 2:
        return mean, float("nan"), float("nan")
    half = float(stats.t.ppf(0.975, len(a) - 1) * a.std(ddof=1) / math.sqrt(len(a)))
    return mean, mean - half, mean + half


def summarise(values: list[float], cnr_values: list[float] | None) -> dict:
    """Mean, 95% t-interval over seeds and the paired t-test p-value against CNR (pairs = seeds)."""
    from scipy import stats

    a = np.asarray(values, dtype=np.float64)
    mean, lo, hi = t_interval(values)
    if len(a) >= 2 and not np.isfinite(a).all():
        lo = hi = float("nan")
    p = None
    if cnr_values is not None and len(a) >= 2:
        b = np.asarray(cnr_values, dtype=np.float64)
        d = a - b
        if not np.isfinite(d).all():
            p = None
        elif np.allclose(d, d[0]):
            # constant paired differences: the t statistic is undefined, so there is no p (never 0);
            # identical values are no evidence of a difference (p 1)
            p = 1.0 if np.allclose(d, 0) else None
        else:
            p = float(stats.ttest_rel(b, a).pvalue)
    return {"mean": mean, "ci_low": lo, "ci_high": hi, "p_vs_cnr": p, "values": a.tolist()}


def holm(pvalues: dict) -> dict:
    """Holm-Bonferroni adjusted p-values of a family {name: p or None}; None stays None."""
    items = sorted(((p, k) for k, p in pvalues.items() if p is not None), key=lambda t: t[0])
    m, out, running = len(items), {k: None for k in pvalues}, 0.0
    for i, (p, k) in enumerate(items):
        running = max(running, min(1.0, (m - i) * p))
        out[k] = running
    return out


def format_p(p: float | None) -> str:
    """A p-value for a table: never printed as 0."""
    if p is None or not math.isfinite(p):
        return "n/a"
    if p < 1e-4:
        return "<1e-4"
    return f"{p:.2g}"


def separation(per_seed: list[dict], key: str) -> dict | None:
    """How `key` differs between the original and the retrained model, paired over seeds
    (original - retrained): mean, 95% interval and the paired t-test p (None with one seed or constant
    differences, where t is undefined). `judge` decides `separates` over the whole family."""
    from scipy import stats

    d = [ps["original"].get(key, float("nan")) - ps["retrained"].get(key, float("nan")) for ps in per_seed]
    if not all(math.isfinite(v) for v in d):
        return None
    mean, lo, hi = t_interval(d)
    a = np.asarray(d, dtype=np.float64)
    p = float(stats.ttest_1samp(a, 0.0).pvalue) if len(a) >= 2 and not np.allclose(a, a[0]) else None
    excludes_zero = (lo > 0 or hi < 0) if math.isfinite(lo) else abs(mean) > 0
    return {"difference": mean, "ci_low": lo, "ci_high": hi, "p": p, "excludes_zero": bool(excludes_zero)}


def judge(per_seed: list[dict], table: dict, methods: list[str], keys: list[str]) -> dict:
    """Per coordinate-free metric: does it separate retrained from original, and each method's distance
    to retrained (mean over seeds of |method - retrained|; computed for every metric, meaningful only
    where it separates).

    Separates = |difference| >= SEPARATION and the Holm-adjusted p (over every metric judged here, the
    family) below SEPARATION_ALPHA. Where t is undefined (one seed; the same difference on every seed)
    there is no p and the interval decides (it excludes 0 when the constant difference is not 0)."""
    seps = {}
    for k in keys:
        if is_coordinate_bound(k) or k.startswith("val_"):
            continue
        sep = separation(per_seed, k)
        if sep is not None:
            seps[k] = sep
    adjusted = holm({k: v["p"] for k, v in seps.items()})
    out = {}
    for k, sep in seps.items():
        ph = adjusted[k]
        evidence = ph < SEPARATION_ALPHA if ph is not None else sep["excludes_zero"]
        entry = {"original": table["original"][k]["mean"], "retrained": table["retrained"][k]["mean"], **sep,
                 "p_holm": ph, "separates": bool(abs(sep["difference"]) >= SEPARATION and evidence)}
        dist = {}
        for m in methods:
            vals = [abs(ps[m].get(k, float("nan")) - ps["retrained"][k]) for ps in per_seed]
            dist[m] = t_interval(vals)[0]
        entry["distance_to_retrained"] = dist
        finite = {m: v for m, v in dist.items() if math.isfinite(v)}
        entry["closest"] = min(finite, key=finite.get) if finite else None
        out[k] = entry
    return out



def null_table(cka_null: list[dict]) -> dict:
    """Per part (pos / neg) and tap: the summary over seeds of CKA(retrained, null)."""
    return {part: {t: within_unit(summarise([c.get(part, {}).get(t, float("nan")) for c in cka_null], None), "cka_null")
                   for t in sorted(set().union(*[set(c.get(part, {})) for c in cka_null]))}
            for part in ("pos", "neg")}



def summarise_runs(per_seed: list[dict], names: list[str], baseline: str | None, paired=None,
                    p_key: str = "p_vs_full") -> dict:
    """Per name and metric: mean, 95% interval over seeds and, for names in `paired` (default: all but
    the baseline), the paired test against `baseline`. Metrics with no finite value are left out."""
    keys = sorted(set().union(*[set(ps[n]) for ps in per_seed for n in names if n in ps]))
    paired = set(names if paired is None else paired) - {baseline}
    table: dict[str, dict] = {}
    for n in names:
        table[n] = {}
        for k in keys:
            vals = [ps.get(n, {}).get(k, float("nan")) for ps in per_seed]
            if not any(math.isfinite(v) for v in vals):
                continue  # e.g. a coordinate-bound metric of an independently trained model
            base = [ps.get(baseline, {}).get(k, float("nan")) for ps in per_seed] \
                if baseline is not None and n in paired else None
            s = within_unit(summarise(vals, base), k)
            s[p_key] = s.pop("p_vs_cnr")
            table[n][k] = s
    # Holm over each metric's family: every name tested against the baseline on that metric
    for k in keys:
        fam = {n: table[n][k][p_key] for n in names if k in table[n] and p_key in table[n][k] and n in paired}
        for n, adj in holm(fam).items():
            table[n][k][p_key + "_holm"] = adj
        for n in names:  # the baseline (and untested names) carry the key too, as null, like p_key
            if k in table[n]:
                table[n][k].setdefault(p_key + "_holm", None)
    return table



BOOTSTRAP_DRAWS = 4000


def bounded_interval(values) -> tuple[float, float, float]:
    """(mean, low, high) for a quantity in [0, 1] over seeds: the percentile bootstrap over seeds (BOOTSTRAP_DRAWS
    resamples, seeded), which never leaves [0, 1]; NaN bounds below 3 seeds, where any interval is a guess. With
    few seeds it is at most the seeds' range and understates the uncertainty: the reports say so."""
    a = np.asarray([v for v in values if math.isfinite(v)], dtype=np.float64)
    if len(a) == 0:
        return float("nan"), float("nan"), float("nan")
    if len(a) < 3:
        return float(a.mean()), float("nan"), float("nan")
    rng = np.random.default_rng(0)
    means = a[rng.integers(0, len(a), size=(BOOTSTRAP_DRAWS, len(a)))].mean(axis=1)
    return float(a.mean()), float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975))


def share_summary(values) -> dict:
    mean, lo, hi = bounded_interval(values)
    return {"mean": mean, "ci_low": lo, "ci_high": hi, "interval": "bootstrap", "values": [float(v) for v in values]}


def verdict_over_seeds(per_seed: list[dict], methods: list[str], n_forget: int, n_retain: int | None = None) -> dict | None:
    """audit/verdict.py's verdict on every seed that audited a null model ("retrained_null"), and per
    method over those seeds: on how many seeds it is damaged (retain accuracy more than the margin below both
    the original's and the retrained model's), and over the seeds where it is not, the share of the separating
    measures it stands with the retrained model (with the original, between, past either): mean and a
    bootstrap interval over seeds (`bounded_interval`), and one sentence. None when no seed has a null
    model (files written before the null was audited)."""
    from ..audit.verdict import NULL, ZONES, verdict

    runs = [(i, ps) for i, ps in enumerate(per_seed) if NULL in ps]
    if not runs:
        return None
    per = [verdict(ps, original="original", retrained="retrained", null=NULL,
                   audited=[m for m in methods if m in ps], n_forget=n_forget, n_retain=n_retain) for _, ps in runs]
    out = {"seeds_judged": [i for i, _ in runs], "per_seed": per, "methods": {},
           "interval": f"percentile bootstrap over seeds ({BOOTSTRAP_DRAWS} resamples), none below 3 seeds"}
    for m in methods:
        shares = {z: [] for z in ZONES}
        damaged, retain, seen = 0, [], 0
        for v in per:
            mv = v["models"].get(m)
            if mv is None:
                continue
            seen += 1
            if mv.get("utility"):
                retain.append(mv["utility"]["retain_acc"])
            if mv.get("damaged"):
                damaged += 1
                continue
            if not mv["judged"]:
                continue
            for z in ZONES:
                shares[z].append(mv["counts"][z] / mv["judged"])
        summary = {z: share_summary(vals) for z, vals in shares.items() if vals}
        seps = [len(v["separating"]) for v in per]
        parts = []
        if damaged:
            parts.append(f"damaged on {damaged} of {seen} seeds (retain accuracy {_pct(share_summary(retain), 3)} "
                         f"over the {len(retain)} seeds; more than the margin below the original and the retrained model)")
        if summary:
            w, o = summary["with_retrained"], summary["with_original"]
            where = f" on the other {len(shares['with_retrained'])}" if damaged else ""
            parts.append(f"{where.strip() + ': ' if where else ''}with the retrained model on {_pct(w)} of the "
                         f"separating measures, with the original on {_pct(o)}, between or past them on the rest "
                         f"(mean [bootstrap interval] over {len(shares['with_retrained'])} "
                         f"seed{'s' if len(shares['with_retrained']) != 1 else ''}; per seed "
                         f"{min(seps)} to {max(seps)} measures separate the retrained model from the original)")
        elif not damaged:
            parts.append("no measure separates the retrained model from the original on any seed")
        sentence = f"{m}: " + "; ".join(parts) if parts else f"{m}: not audited"
        out["methods"][m] = {"shares": summary, "damaged_seeds": damaged, "seeds": seen,
                             "retain_acc": share_summary(retain) if retain else None, "sentence": sentence}
    return out


def _pct(s: dict, digits: int = 0) -> str:
    """"mean [low, high]" as percentages (digits=0) or as a proportion (digits > 0); the mean alone without bounds."""
    f = (lambda v: f"{100 * v:.0f}%") if digits == 0 else (lambda v: f"{v:.{digits}f}")
    if not (finite(s.get("ci_low")) and finite(s.get("ci_high"))):
        return f(s["mean"])
    g = (lambda v: f"{100 * v:.0f}") if digits == 0 else f
    return f"{f(s['mean'])} [{g(max(0.0, s['ci_low']))}, {g(min(1.0, s['ci_high']))}]"


POWER = 0.8  # the power `seeds_needed` asks of the paired test
PRACTICAL_SEEDS = 50  # a contrast that needs more seeds than this is no practical difference at the effect seen


def seeds_needed(differences, alpha: float, power: float = POWER, most: int = 1000) -> int | None:
    """Seeds a paired t-test at level `alpha` (two-sided) needs to find the mean paired difference seen
    here with probability `power`, taking the seen mean and standard deviation as the truth (noncentral t).
    None where there is nothing to plan from (fewer than 2 finite differences, or a mean of 0); 2 where
    the differences do not vary (any seed count shows a constant difference); `most` + 1 beyond `most`."""
    from scipy import stats

    d = np.asarray([v for v in differences if math.isfinite(v)], dtype=np.float64)
    if len(d) < 2 or abs(d.mean()) < 1e-12:
        return None
    sd = d.std(ddof=1)
    if sd < 1e-12:
        return 2
    dz = abs(d.mean()) / sd
    for n in range(2, most + 1):
        crit = stats.t.ppf(1 - alpha / 2, n - 1)
        nc = dz * math.sqrt(n)
        if 1 - stats.nct.cdf(crit, n - 1, nc) + stats.nct.cdf(-crit, n - 1, nc) >= power:
            return n
    return most + 1


def pairwise(per_seed: list[dict], methods: list[str], keys: list[str], alpha: float = SEPARATION_ALPHA,
             power: float = POWER, practical: int = PRACTICAL_SEEDS, pairs: list[tuple[str, str]] | None = None) -> dict:
    """Every pair of `methods` (pass "retrained" among them for each method against the retrained reference) on
    each metric in `keys`: the mean paired difference (a - b) over seeds, the paired t-test p, Holm-adjusted
    over the pairs on that metric (the family), and for a contrast the test leaves open the seeds it would
    need (`seeds_needed` at alpha / family size, Bonferroni: Holm's first step) and the reading: "decided",
    "open: about N seeds", or "no practical difference" where N > `practical` at the effect seen (or none is
    seen). `pairs`: the contrasts (a, b) to test, each metric's family (default: every pair of `methods`)."""
    from itertools import combinations
    from scipy import stats

    out = {}
    for k in keys:
        rows, skipped = [], []
        for a, b in (pairs if pairs is not None else combinations(methods, 2)):
            d = [ps.get(a, {}).get(k, float("nan")) - ps.get(b, {}).get(k, float("nan")) for ps in per_seed]
            if not all(math.isfinite(v) for v in d):
                skipped.append(f"{a} - {b}")
                continue
            arr = np.asarray(d, dtype=np.float64)
            p = None
            if len(arr) >= 2:
                p = (1.0 if np.allclose(arr, 0) else None) if np.allclose(arr, arr[0]) else \
                    float(stats.ttest_1samp(arr, 0.0).pvalue)
            rows.append({"a": a, "b": b, "difference": float(arr.mean()), "p": p})
        adjusted = holm({i: r["p"] for i, r in enumerate(rows)})
        for i, r in enumerate(rows):
            r["p_holm"] = adjusted[i]
            d = np.asarray([ps[r["a"]][k] - ps[r["b"]][k] for ps in per_seed], dtype=np.float64)
            # the same non-zero difference on every seed of several: t is undefined, the difference decides
            # (as `judge` reads it); one seed: nothing to test or plan from
            constant = len(d) >= 2 and np.allclose(d, d[0]) and not np.allclose(d, 0)
            r["decided"] = bool(constant or (r["p_holm"] is not None and r["p_holm"] < alpha))
            r["seeds_needed"] = None if r["decided"] else seeds_needed(d, alpha / max(1, len(rows)), power)
            n = r["seeds_needed"]
            r["reading"] = ("one seed: nothing to test" if len(d) < 2 else
                            "decided (the same difference on every seed)" if constant else
                            "decided" if r["decided"] else
                            "no practical difference" if n is None or n > practical else
                            f"open: about {n} seeds in all")
        if rows:
            out[k] = rows
        if skipped:  # a value missing on some seed (e.g. a voided relearn reading): said, not silently dropped
            out.setdefault("_skipped", {})[k] = skipped
    return out
