#!/usr/bin/env python3
"""Rerun the (method, seed) pairs of committed comparisons whose validation choice the rule of issue 28 changes,
and put the new rows in place of the old ones.

bench/validation_rule_impact.py lists the pairs (from each file's own records). For each pair this runs
`cnr-fast compare --methods M --seed S --seeds 1` with the file's recorded config, threads and attack
settings, then checks that the rerun trained the same models the file holds beside it: the original's
weight digest must match, and every metric of the original, the retrained model and the null that both
runs report must be equal (metrics the current code no longer reports, e.g. relearn readings it voids,
are listed). Only then are the method's per-seed row, choice, time and U-LiRA result replaced and the
tables recomputed; the file's `patched` list says what moved (old and new choice, the commit, the machine).

    python bench/rerun_changed_choices.py            # every changed pair (outputs kept under bench/.patch/)
    python bench/rerun_changed_choices.py --dry-run  # list the commands only
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
WORK = os.path.join(ROOT, "bench", ".patch")


def _target(d: dict, label: str) -> dict:
    return d["runs"][label.split("#", 1)[1]] if "#" in label else d


def _same(a: dict, b: dict) -> tuple[bool, list[str], list[str]]:
    """(equal where both report, keys that differ, keys only the committed row has)."""
    differ, gone = [], []
    for k, v in a.items():
        w = b.get(k)
        if w is None:
            gone.append(k)
        elif v is not None and not (isinstance(v, float) and math.isnan(v)) and abs(v - w) > 1e-9:
            differ.append(k)
    return not differ, differ, gone


def _rule(r: dict, idx: int, c: dict) -> dict:
    """The new rule's reference values on this seed (tuning.choose's inputs, as validation_rule_impact.py read them)."""
    from cnr_fast.tuning import retain_margin

    return {"original_val_retain_acc": c["original_val_retain_acc"], "retain_margin": retain_margin(c["n_val_retain"]),
            "n_val_retain": c["n_val_retain"], "within_margin": c["within_margin"]}


def _command(r: dict, method: str, idx: int, out: str) -> list[str]:
    cfg = {k: v for k, v in r["config"].items() if k != "classes"}
    os.makedirs(out, exist_ok=True)
    path = os.path.join(out, "config.json")
    with open(path, "w") as f:
        json.dump(cfg, f)
    cmd = [sys.executable, "-m", "cnr_fast.cli", "compare", "--config", path, "--methods", method,
           "--seed", str(r["seeds"][idx]), "--seeds", "1", "--threads", str(r["per_seed_originals"][idx]["torch_threads"]),
           "--cache-dir", os.path.join(WORK, "cache"), "--out", os.path.join(out, "run"), "--quiet"]
    if (r.get("audit_settings") or {}).get("attacks"):
        cmd.append("--attacks")
    if "per_seed_ulira" in r:
        cmd += ["--ulira-pairs", str(r["per_seed_ulira"][method][idx]["pairs"])]
    return cmd


def main() -> int:
    from cnr_fast.experiments.compare import compare_tables
    from cnr_fast.provenance import begin, provenance
    from cnr_fast.runs import atomic_write_json

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dry-run", action="store_true")
    args = ap.parse_args()
    impact = json.load(open(os.path.join(ROOT, "bench/results/validation_rule_impact.json")))
    by_file: dict[str, list] = {}
    for label, f in impact["files"].items():
        for c in f.get("choices", []):
            if c["old"] != c["new"]:
                by_file.setdefault(label.split("#")[0], []).append((label, c))
    for rel, pairs in by_file.items():
        path = os.path.join(ROOT, rel)
        d = json.load(open(path))
        for label, c in pairs:
            r = _target(d, label)
            m, idx = c["method"], c["seed_index"]
            out = os.path.join(WORK, label.replace("/", "_").replace("#", "_").replace(",", "-"), f"{m}_s{idx}")
            cmd = _command(r, m, idx, out)
            print(" ".join(cmd), flush=True)
            if args.dry_run:
                continue
            result_path = os.path.join(out, "run", "compare.json")
            started = begin()
            if not os.path.exists(result_path):
                subprocess.run(cmd, check=True, cwd=ROOT)
            new = json.load(open(result_path))
            if new["per_seed_originals"][0]["weights_sha256"] != r["per_seed_originals"][idx]["weights_sha256"]:
                raise SystemExit(f"{label}: {m} seed index {idx}: the rerun trained another original; not patched")
            gone = {}
            for ref in ("original", "retrained", "retrained_null"):
                if ref not in r["per_seed"][idx]:
                    continue
                ok, differ, g = _same(r["per_seed"][idx][ref], new["per_seed"][0][ref])
                if not ok:
                    raise SystemExit(f"{label}: {m} seed index {idx}: {ref} differs on {differ[:5]}; not patched")
                gone[ref] = g
            if new["per_seed_choices"][m][0]["chosen"] != c["new"]:
                raise SystemExit(f"{label}: {m}: the rerun chose {new['per_seed_choices'][m][0]['chosen']}, "
                                 f"the impact file says {c['new']}")
            old_row, old_time = r["per_seed"][idx][m], r["per_seed_times"][m][idx]
            r["per_seed"][idx][m] = new["per_seed"][0][m]
            r["per_seed_choices"][m][idx] = new["per_seed_choices"][m][0]
            r["per_seed_times"][m][idx] = new["per_seed_times"][m][0]
            if "per_seed_ulira" in r:
                r["per_seed_ulira"][m][idx] = new["per_seed_ulira"][m][0]
            r.setdefault("patched", []).append({
                "method": m, "seed": r["seeds"][idx], "old_choice": c["old"], "new_choice": c["new"],
                "why": "issue 28: the validation rule (tuning.choose) picks another candidate",
                "references_identical": True, "not_reported_by_current_code": gone,
                "old_row": old_row, "old_time_s": old_time, "validation_rule": _rule(r, idx, c),
                "machine": provenance(started)})
            compare_tables(r)
        if not args.dry_run:
            atomic_write_json(path, d)
            print(f"patched {rel}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
