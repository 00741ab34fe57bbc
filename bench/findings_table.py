"""Print the README's findings tables from committed compare / ablate JSON (so the README quotes files).

    python -m bench.findings_table compare bench/results/runs/compare_mnist5k/compare.json
    python -m bench.findings_table ablate bench/results/runs/ablate_mnist5k/ablate.json
"""

from __future__ import annotations

import json
import math
import sys

COMPARE_ROWS = ("forget_acc", "retain_acc", "val_forget_acc", "probe_acc.L4", "knn_acc.L4", "fewshot_probe_acc.5",
                "relearn_acc.5", "mia_acc", "nn_purity", "cka_neg.L4", "cka_neg.L2", "cka_pos.L4")


def cell(s, digits=2) -> str:
    if not s or not math.isfinite(s.get("mean", float("nan"))):
        return "-"
    m = s["mean"]
    if math.isfinite(s.get("ci_high", float("nan"))):
        return f"{m:.{digits}f} ±{(s['ci_high'] - m):.{digits}f}"
    return f"{m:.{digits}f}"


def compare_table(r: dict) -> str:
    methods = list(r["methods"])
    null = r["references"].get("cka_null", {})
    head = ["metric", "original", "retrained", "null", *methods]
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for k in COMPARE_ROWS:
        if k not in r["references"]["original"]:
            continue
        nul = "-"
        if k.startswith("cka_"):
            nul = cell(null.get(k[4:7], {}).get(k.split(".")[1]))
        row = [k, cell(r["references"]["original"].get(k)), cell(r["references"]["retrained"].get(k)), nul]
        row += [cell(r["methods"][m].get(k)) for m in methods]
        out.append("| " + " | ".join(row) + " |")
    t = r["unlearn_time_s"]
    rt = r.get("reference_train_time_s", {}).get("retrained")
    out.append("| wall time (s) | " + (f"{r['reference_train_time_s']['original']['mean']:.0f}"
                                      if r.get("reference_train_time_s", {}).get("original") else "-")
               + " | " + (f"{rt['mean']:.0f}" if rt else "-") + " | - | "
               + " | ".join(f"{t[m]['mean']:.0f}" for m in methods) + " |")
    return "\n".join(out)


def ablate_table(r: dict) -> str:
    keys = ("forget_acc", "retain_acc", "val_forget_acc", "cka_neg.L4", "fewshot_probe_acc.5")
    out = ["| variant | " + " | ".join(keys) + " | time (s) |", "|" + "---|" * (len(keys) + 2)]
    for n in ["original", "retrained", *r["variants"]]:
        tm = r["unlearn_time_s"].get(n)
        out.append(f"| {n} | " + " | ".join(cell(r["table"][n].get(k)) for k in keys) + " | "
                   + (f"{tm['mean']:.0f}" if tm else "-") + " |")
    return "\n".join(out)


if __name__ == "__main__":
    kind, path = sys.argv[1], sys.argv[2]
    data = json.loads(open(path).read())
    print(compare_table(data) if kind == "compare" else ablate_table(data))
