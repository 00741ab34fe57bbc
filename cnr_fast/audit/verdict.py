"""The auditor's answer: where each audited model stands between the original and the retrained reference.

An auditor's first question is whether the forget class is gone, judged against a model that never saw
it. One number cannot say that: on a given data set some metrics do not tell the retrained model from
the original at all, and a metric that does must be read against how much two models that never saw
the class differ from each other. So, per *measure* (a judged metric at one tap or shot count, e.g.
`cka_neg.L4`; see `judged_keys`), with o, r, n and a the values of the original, the retrained
reference, a second independently retrained model (the null) and the audited model:

* margin = max(|r - n|, resolution): the spread between two models that never saw the class, but
  not below the test split's resolution 1 / sqrt(N_forget) (N_forget = forget-class test examples
  the measure is computed on; about two binomial standard errors of a proportion near 0.5, so one
  null pair that happens to agree closely does not make sampling noise look like evidence).
* the measure *separates* retrained from original on this run when |o - r| > 2 * margin: the two
  zones below do not overlap. Measures that do not separate carry no evidence here either way.
* the audited model stands `with_retrained` when |a - r| <= margin, `with_original` when
  |a - o| <= margin, otherwise `between` (0 < position < 1) or `beyond_retrained` (position < 0:
  farther from the original than the retrained model is; e.g. CKA below an unrelated model's), or
  `beyond_original`; position = (a - r) / (o - r): 0 at the retrained model, 1 at the original.

Utility first: a model that forgets by breaking is not "with the retrained model". Its retain accuracy
(test accuracy on the classes kept) is judged with the same margin rule, margin = max(|r - n|,
resolution) with the resolution of the retain examples 1 / sqrt(N_retain), floored at
tuning.RETAIN_MARGIN_FLOOR (the validation rule's floor): a model whose retain accuracy is more than one
margin below both the original's and the retrained model's is `damaged`. Its sentence says so first,
and its forget-class tallies are kept for reading but never reported as standing with the retrained model.

`verdict(metrics, ...)` returns the measures, the per-model tallies over the separating measures and
one sentence per model. With one null pair the margin is a single draw of the null spread: the
verdict describes this run; `compare` repeats it over seeds and gives intervals.
"""

from __future__ import annotations

import math

from ..tuning import RETAIN_MARGIN_FLOOR
from . import metrics as _metrics

ZONES = ("with_retrained", "between", "with_original", "beyond_retrained", "beyond_original")
NULL = "retrained_null"  # the null model's name among the audited models (and its reference kind)


def flatten(metrics: dict) -> dict[str, float]:
    """{"probe_acc": {"L4": 0.1}, "mia_acc": 0.5} -> {"probe_acc.L4": 0.1, "mia_acc": 0.5} (numbers only)."""
    out = {}
    for k, v in metrics.items():
        if isinstance(v, dict):
            for kk, vv in v.items():
                if isinstance(vv, (int, float)) and not isinstance(vv, bool):
                    out[f"{k}.{kk}"] = float(vv)
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            out[k] = float(v)
    return out


def judged_keys(flat: dict) -> list[str]:
    """The flattened keys the verdict judges: metrics registered with judged=True that are not
    coordinate-bound (those are absent for the retrained models anyway)."""
    judged = {n for n, m in _metrics.REGISTRY.items() if m.judged and not m.coordinate_bound}
    return [k for k in flat if k.split(".")[0] in judged]


def zone(a: float, o: float, r: float, margin: float) -> str:
    if abs(a - r) <= margin:
        return "with_retrained"
    if abs(a - o) <= margin:
        return "with_original"
    pos = (a - r) / (o - r)
    if pos < 0:
        return "beyond_retrained"
    if pos > 1:
        return "beyond_original"
    return "between"


def utility(flat: dict, name: str, original: str, retrained: str, null: str, n_retain: int) -> dict | None:
    """The utility judgement of model `name` (module doc): its retain accuracy against the original's and the
    retrained model's with the margin rule; None where a retain accuracy is missing."""
    a, o, r, n = (flat.get(m, {}).get("retain_acc", math.nan) for m in (name, original, retrained, null))
    if not all(math.isfinite(v) for v in (a, o, r, n)):
        return None
    margin = max(abs(r - n), 1.0 / math.sqrt(max(1, n_retain)), RETAIN_MARGIN_FLOOR)
    return {"retain_acc": a, "original": o, "retrained": r, "null": n, "margin": margin,
            "damaged": bool(a < min(o, r) - margin)}


def verdict(metrics: dict, *, original: str, retrained: str, null: str, audited: list[str],
            n_forget: int, n_retain: int | None = None) -> dict:
    """See the module doc. metrics: {model name: the audit's (nested) metrics}; audited: the models to
    place (neither the original nor the references); n_forget / n_retain: forget- and retain-class test
    examples (the resolutions; n_retain None, files from before it was recorded: the floor alone)."""
    if n_forget < 1:
        raise ValueError("n_forget must be at least 1")
    flat = {name: flatten(m) for name, m in metrics.items() if name in (original, retrained, null, *audited)}
    resolution = 1.0 / math.sqrt(n_forget)
    measures = {}
    for k in judged_keys(flat[original]):
        o, r, n = (flat[name].get(k, math.nan) for name in (original, retrained, null))
        if not all(math.isfinite(v) for v in (o, r, n)):
            continue
        margin = max(abs(r - n), resolution)
        entry = {"original": o, "retrained": r, "null": n, "null_spread": abs(r - n), "margin": margin,
                 "separates": bool(abs(o - r) > 2 * margin), "models": {}}
        for name in audited:
            a = flat.get(name, {}).get(k, math.nan)
            if not math.isfinite(a):
                continue
            entry["models"][name] = {"value": a,
                                     "position": (a - r) / (o - r) if o != r else math.nan,
                                     "zone": zone(a, o, r, margin) if entry["separates"] else None}
        measures[k] = entry
    separating = [k for k, e in measures.items() if e["separates"]]
    models = {}
    for name in audited:
        tally = {z: [] for z in ZONES}
        for k in separating:
            z = measures[k]["models"].get(name, {}).get("zone")
            if z is not None:
                tally[z].append(k)
        judged = sum(len(v) for v in tally.values())
        use = utility(flat, name, original, retrained, null, n_retain or 1)
        text = sentence(name, tally, judged, len(separating), len(measures), use)
        models[name] = {"counts": {z: len(v) for z, v in tally.items()}, "measures": tally, "judged": judged,
                        "utility": use, "damaged": bool(use and use["damaged"]), "sentence": text}
    return {"separating": separating, "measures": measures, "models": models, "resolution": resolution,
            "n_forget": int(n_forget), "references": {"original": original, "retrained": retrained, "null": null},
            "n_retain": None if n_retain is None else int(n_retain),
            "rule": ("margin = max(|retrained - null|, 1/sqrt(N_forget)); a measure separates when "
                     "|original - retrained| > 2 margin; a model is with the retrained (original) model on it "
                     "when within one margin of it; a model whose retain accuracy is more than "
                     f"max(|retrained - null|, 1/sqrt(N_retain), {RETAIN_MARGIN_FLOOR}) below both the original's "
                     "and the retrained model's is damaged, whatever its forget measures say")}


def damaged_sentence(name: str, use: dict) -> str:
    return (f"{name}: damaged: retain accuracy {use['retain_acc']:.3f} against the original's {use['original']:.3f} "
            f"and the retrained model's {use['retrained']:.3f}, more than the margin {use['margin']:.3f} below both")


def sentence(name: str, tally: dict, judged: int, n_separating: int, n_measures: int, use: dict | None = None) -> str:
    """One model's sentence; a damaged model (use["damaged"]) is named so first and its tallies follow as
    forget measures only, never as standing with the retrained model."""
    if use is not None and use["damaged"]:
        c = {z: len(v) for z, v in tally.items()}
        return (damaged_sentence(name, use) + f"; its forget measures are not read as erasure (near the retrained "
                f"model on {c['with_retrained']} of {judged} separating measures)")
    if n_separating == 0:
        return (f"{name}: no measure separates the retrained model from the original on this run "
                f"({n_measures} judged), so the audit cannot place it")
    c = {z: len(v) for z, v in tally.items()}
    parts = [f"with the retrained model on {c['with_retrained']} of {judged} separating measures",
             f"with the original on {c['with_original']}", f"between them on {c['between']}"]
    if c["beyond_retrained"]:
        parts.append(f"past the retrained model on {c['beyond_retrained']}")
    if c["beyond_original"]:
        parts.append(f"past the original on {c['beyond_original']}")
    return f"{name}: " + ", ".join(parts) + f" ({n_separating} of {n_measures} measures separate them here)"


__all__ = ["NULL", "ZONES", "damaged_sentence", "flatten", "judged_keys", "sentence", "utility", "verdict", "zone"]
