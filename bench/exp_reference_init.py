"""What the reference's initialisation changes: the retrained model with the original's initial weights
("shared") next to one with its own ("independent"), both audited against the original.

Coordinate-bound metrics (transfer probe, selectivity) are computed for both on purpose here: with a
shared initialisation they read the original's coordinates in a model that never saw the class.

    python -m bench.exp_reference_init --out bench/results/runs
"""

from __future__ import annotations

import argparse

from bench.harness import finish


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cache-dir", default=None)
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)

    from cnr_fast import experiments as E
    from cnr_fast.audit import audit_models, json_view
    from cnr_fast.config import RunConfig
    from cnr_fast.data import load_dataset

    cfg = RunConfig(seed=args.seed)
    ds = load_dataset(cfg.data)
    original = E.obtain_reference("original", cfg, ds, "cpu", args.cache_dir)[0]
    models = {"original": original}
    for mode in ("shared", "independent"):
        c = cfg.replace(train={"reference_init": mode})
        models[f"retrained_{mode}"] = E.obtain_reference("retrained", c, ds, "cpu", args.cache_dir)[0]
    null = E.obtain_reference("retrained_null", cfg, ds, "cpu", args.cache_dir)[0]
    audit = json_view(audit_models(models, ds, list(cfg.data.forget), device="cpu", retrained="retrained_independent",
                                   independent=[], null_model=null, figures=False, relearn=False, quiet=True))
    keys = ("forget_acc", "retain_acc", "transfer_probe_acc", "cka_pos", "cka_neg", "probe_acc", "fewshot_probe_acc",
            "selectivity_delta")
    rows = {n: {k: m[k] for k in keys if k in m} for n, m in audit["metrics"].items()}
    finish("reference_init_mnist5k", args, {"metrics": rows, "cka_null": audit["references"].get("cka_null"),
                                            "machine_note": "CPU run; see machine.cpu_model"}, "cpu")
    for n, r in rows.items():
        print(n, {k: (round(v, 3) if isinstance(v, float) else {t: round(x, 3) for t, x in v.items()})
                  for k, v in r.items() if k in ("forget_acc", "transfer_probe_acc", "cka_neg")})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
