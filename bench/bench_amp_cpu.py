"""The default run at fp32 and under --amp (bf16 autocast) on the CPU, side by side in one process (issue 30).

`cnr-fast unlearn` with the defaults (mnist5k, ResNet-18 width 0.125, CNR, the default audit), once
without and once with --amp, each with its own empty model cache so that every stage (the original's
training included) runs at the precision under test; `--reps` pairs, the order alternating within the
process. Recorded per run: the precision the run says it used (`results.json` "precision": bf16
autocast only where the CPU has bf16 instructions, else fp32 with a warning), the original's and the
unlearned model's forget and retain accuracy, the deepest tap's probe, nn purity and MIA, and the
stage times; the ratio of total times bf16 / fp32 per pair.

    OMP_NUM_THREADS=1 python -m bench.bench_amp_cpu --threads 1      # two default runs: ~6 min quiet on 2 cores
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from bench.harness import finish

HEADLINE = ("forget_acc", "retain_acc", "mia_acc", "nn_purity")


def one(amp: bool, threads: int, work: Path) -> dict:
    from cnr_fast.cli import main

    out = work / ("amp" if amp else "fp32")
    argv = ["unlearn", "--out", str(out), "--cache-dir", str(work / f"cache_{out.name}"), "--threads", str(threads),
            "--quiet"] + (["--amp"] if amp else [])
    rc = main(argv)
    if rc != 0:
        raise SystemExit(f"cnr-fast {' '.join(argv)} exited {rc}")
    r = json.loads((out / "results.json").read_text())
    deepest = max(r["metrics"]["unlearned"]["probe_acc"], key=lambda t: int(t[1:]))
    return {"amp_flag": amp, "precision": r.get("precision"), "timings_s": r["timings_s"],
            "metrics": {m: {**{k: r["metrics"][m][k] for k in HEADLINE},
                            f"probe_acc.{deepest}": r["metrics"][m]["probe_acc"][deepest]}
                        for m in ("original", "unlearned")},
            "verdict": (r.get("verdict") or {}).get("sentence")}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--reps", type=int, default=1, help="fp32 / bf16 pairs (order alternating)")
    p.add_argument("--out", default=None)
    a = p.parse_args(argv)
    runs = []
    for i in range(a.reps):
        for amp in ((False, True) if i % 2 == 0 else (True, False)):
            with tempfile.TemporaryDirectory() as work:
                runs.append(one(amp, a.threads, Path(work)))
                print(f"{'--amp' if amp else 'fp32 '}: {runs[-1]['precision']}, total {runs[-1]['timings_s']['total']:.0f} s,"
                      f" unlearned forget {runs[-1]['metrics']['unlearned']['forget_acc']:.3f} / retain "
                      f"{runs[-1]['metrics']['unlearned']['retain_acc']:.3f}")
    ratios = [b["timings_s"]["total"] / f["timings_s"]["total"]
              for f, b in zip([r for r in runs if not r["amp_flag"]], [r for r in runs if r["amp_flag"]])]
    finish("amp_cpu", a, {"runs": runs, "total_time_bf16_over_fp32": ratios}, "cpu")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
