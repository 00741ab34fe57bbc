#!/usr/bin/env python3
"""Which committed comparisons the validation rule of issue 28 changes, read off their own records.

Every candidate of every validation search is run whatever the rule, and each run JSON keeps every
candidate's validation accuracies (per_seed_choices) and the original's (per_seed.*.original.val_*). So the
choice the new rule (tuning.choose) makes is computed here from those records, without rerunning
anything, and set beside the choice the old rule (retain - forget) made. Where the two agree the
committed models are the ones the new rule picks; where they differ the run must be rerun.

    python bench/validation_rule_impact.py        # writes bench/results/validation_rule_impact.json

The validation split's retain count (the margin's resolution) is recounted from each file's recorded
data config. Files without per-seed choices (continual.json) are listed as "unknown": rerun them. Files named
`*_before_*` record an earlier state beside its rerun and are left as they are.
"""

from __future__ import annotations

import glob
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def _n_val_retain(config: dict, forget) -> int:
    import torch

    from cnr_fast.config import RunConfig
    from cnr_fast.data import load_dataset

    cfg = RunConfig.from_dict(config)
    ds = load_dataset(cfg.data)
    return int((~torch.isin(ds.val.y, torch.as_tensor(list(forget)))).sum())


def _runs(path: str, d: dict):
    """(label, compare-like dict) for each comparison in a file; an unlearn run's results.json as one seed."""
    if "runs" in d:  # multiclass.json: one compare result per class set
        for k, v in d["runs"].items():
            yield f"{path}#{k}", v
    elif "per_seed_choices" in d:
        yield path, d
    elif d.get("validation_choice") and "original" in (d.get("metrics") or {}) and os.path.isfile(
            os.path.join(os.path.dirname(os.path.join(ROOT, path)), "config.json")):  # `cnr-fast unlearn`
        yield path, {"config": json.load(open(os.path.join(os.path.dirname(os.path.join(ROOT, path)), "config.json"))),
                     "seeds": [0],
            "forget_classes": d.get("forget_classes"),
            "per_seed_choices": {d["method"]: [d["validation_choice"]]},
            "per_seed": [{"original": d["metrics"]["original"]}]}


def main() -> int:
    from cnr_fast.provenance import begin, provenance
    from cnr_fast.runs import atomic_write_json
    from cnr_fast.tuning import choose, retain_margin

    started = begin()
    out, counts = {"rule": "tuning.choose: forgets most within max(0.02, 1/sqrt(N_val_retain)) of the original's "
                           "validation retain accuracy; old: the highest retain - forget", "files": {}}, {}
    for path in sorted(glob.glob(os.path.join(ROOT, "bench/results/runs/*/*.json"))):
        rel = os.path.relpath(path, ROOT)
        if "_before_" in rel:  # a record of an earlier state, kept beside its rerun: not rerun again
            out["files"][rel] = {"status": "historical record: not rerun"}
            continue
        d = json.load(open(path))
        found = list(_runs(rel, d))
        if not found:
            if "rounds" in d:
                out["files"][rel] = {"status": "unknown: no per-seed choices recorded; rerun"}
            elif d.get("validation_choice"):
                out["files"][rel] = {"status": "unlearn run without its config.json: the split size is unknown, "
                                               "not recomputed"}
            continue
        for label, r in found:
            forget = r.get("forget_classes") or r.get("config", {}).get("data", {}).get("forget")
            key = (json.dumps(r["config"]["data"], sort_keys=True), tuple(forget))
            if key not in counts:
                counts[key] = _n_val_retain(r["config"], forget)
            margin = retain_margin(counts[key])
            rows, changed = [], 0
            # pairs rerun since (bench/rerun_changed_choices.py): the file holds the new choice, the old one is here
            before = {(p["method"], p["seed"]): p["old_choice"] for p in r.get("patched", [])}
            for m, per in r["per_seed_choices"].items():
                for s, ch in enumerate(per):
                    if not ch:
                        continue
                    recorded = before.get((m, r["seeds"][s]), ch["chosen"])
                    orig = r["per_seed"][s]["original"].get("val_retain_acc")
                    table = ch["validation"]
                    old = max(table, key=lambda n: (table[n]["val_retain_acc"] - table[n]["val_forget_acc"],
                                                    -list(table).index(n)))
                    new, within = choose(table, orig, margin) if len(table) > 1 else (ch["chosen"], None)
                    if (m, r["seeds"][s]) in before:  # the rerun's table: the new rule ran, the old choice is recorded
                        old = recorded
                    if len(table) > 1 and old != recorded:
                        raise SystemExit(f"{label}: {m} seed {s}: the old rule recomputed gives {old}, the file "
                                         f"says {recorded}")
                    rows.append({"method": m, "seed_index": s, "old": recorded, "new": new,
                                 "within_margin": within, "original_val_retain_acc": orig, "n_val_retain": counts[key],
                                 "chosen_val": table[new]})
                    changed += new != recorded
            out["files"][label] = {"status": "changed: rerun" if changed else "unchanged", "changed": changed,
                                   "n_val_retain": counts[key], "margin": margin, "choices": rows}
    out["changed_pairs"] = sum(f.get("changed", 0) for f in out["files"].values())
    out["machine"] = provenance(started)
    atomic_write_json(os.path.join(ROOT, "bench/results/validation_rule_impact.json"), out)
    for label, f in out["files"].items():
        moved = [f"{c['method']}@{c['seed_index']}: {c['old']} -> {c['new']}" for c in f.get("choices", [])
                 if c["old"] != c["new"]]
        print(f"{label}: {f['status']}" + (f" ({'; '.join(moved)})" if moved else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
