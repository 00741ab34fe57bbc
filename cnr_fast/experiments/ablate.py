"""`ablate`: what each part of CNR buys (paper Table 3 and its robustness sweeps)."""

from __future__ import annotations

import time

from ..config import RunConfig
from ..errors import UserError
from ..progress import log
from ..tuning import applied_choice
from . import methods as M
from .merge import check_mergeable, concat_seeds
from .runner import Arm, begin_provenance, machine_info, run_seed, seed_references, setup
from .stats import null_table, summarise, summarise_runs
from .variants import VARIANTS

ABLATIONS = VARIANTS  # experiments/variants.py: the one definition of each change, the controls' too
# sweeps plotted against their knob; "full" is the default point of each
SWEEPS = {"k": {"k3": 3, "full": 12, "k48": 48}, "B": {"b32": 32, "full": 64, "b256": 256, "b1024": 1024}}



def ablate(cfg: RunConfig, variants: list[str] | None = None, seeds: int = 3, *, device="cpu",
           cache: str | None = None, relearn: bool = False, quiet: bool = False, ds=None, state=None) -> dict:
    """Every CNR variant on one original per seed; returns the ablate.json dict (state: as `compare`'s).

    Per seed: one original, retrained reference and null model, shared by every variant; a GAN, and the
    synthetic images of variants that do not change detection or synthesis, are made once and reused
    (their time charged to each run that uses them). One audit per seed measures every variant
    (relearn attack off by default: it is the slowest metric and not part of Table 3).

    Step size: full CNR chooses its reset's step size on the seed's validation split (tuning.py); every
    other variant runs at that choice (tuning.applied_choice), so a variant differs from full CNR in its
    one change alone. The choices go to "per_seed_choices".
    """
    variants = list(variants or ABLATIONS)
    bad = [v for v in variants if v not in ABLATIONS]
    if bad:
        raise UserError(f"unknown ablation(s) {bad}; choose from {', '.join(ABLATIONS)}")
    if len(set(variants)) != len(variants):
        raise UserError(f"--variants lists a variant twice: {variants}")
    if "full" not in variants:
        variants = ["full", *variants]
    device, ds = setup(cfg, seeds, device, ds)
    forget = list(cfg.data.forget)
    t_start = time.perf_counter()
    started = begin_provenance()
    per_seed, timings, cka_null, originals = [], {v: [] for v in variants}, [], []
    choices: dict[str, list] = {v: [] for v in variants}
    for s in range(seeds):
        scfg = cfg.replace(seed=cfg.seed + s, method="cnr")
        refs = seed_references(scfg, ds, device, cache, quiet)
        originals.append(refs.record)
        reuse: dict = {}
        done: dict = {}  # run_seed fills it arm by arm: full CNR (the first arm) gives the step size

        def make(v, original=refs.original, scfg=scfg, reuse=reuse, done=done):
            held = None if v == "full" else (done.get("full") or {}).get("chosen")
            with applied_choice(held):
                model, info, t, _ = M.unlearn_model("cnr", original, ds, scfg.replace(**ABLATIONS[v]), device=device,
                                                    quiet=quiet, reuse=reuse)
            return model, {"time": t["unlearn"], "choice": M.validation_choice(info)}

        arms = [Arm(v, refs.original, lambda v=v: make(v)) for v in variants]
        r = run_seed(arms, refs, ds, forget, device=device, state=state, prefix=f"s{scfg.seed}-", seed=scfg.seed,
                     quiet=quiet, relearn=relearn, choices=done,
                     log=lambda n, seed=scfg.seed: log(f"ablate: seed {seed}, variant {n}", quiet))
        for v in variants:
            timings[v].append(r["times"][v])
            choices[v].append(r["choices"][v])
        cka_null.append(r["cka_null"])
        per_seed.append(r["metrics"])
    result = {"dataset": ds.name, "arch": cfg.model.arch, "width": cfg.model.width, "forget_classes": forget,
              "seeds": [cfg.seed + s for s in range(seeds)], "variants": {v: ABLATIONS[v] for v in variants},
              "sweeps": {k: {v: x for v, x in sw.items() if v in variants} for k, sw in SWEEPS.items()},
              "chance_acc": 1.0 / ds.num_classes,
              "splits": {"train": len(ds.train), "val": len(ds.val) if ds.val is not None else 0,
                         "test": len(ds.test)},
              "config": cfg.to_dict(), "total_time_s": time.perf_counter() - t_start, "machine": machine_info(started),
              "per_seed": per_seed, "per_seed_cka_null": cka_null, "per_seed_times": timings,
              "per_seed_choices": choices, "per_seed_originals": originals}
    return ablate_tables(result)


def ablate_tables(result: dict) -> dict:
    """(Re)compute the summary tables of an ablate result from its per-seed values."""
    per_seed, cka_null = result["per_seed"], result["per_seed_cka_null"]
    names = ["original", "retrained", *result["variants"]]
    result["table"] = summarise_runs(per_seed, names, "full", paired=list(result["variants"]))
    result["cka_null"] = null_table(cka_null)
    result["unlearn_time_s"] = {v: summarise(t, None) for v, t in result["per_seed_times"].items()}
    return result


def merge_ablate(results: list[dict]) -> dict:
    """One ablate result from several runs over disjoint seeds with the same variants and config."""
    check_mergeable(results, "ablate", "variants")
    return ablate_tables(concat_seeds(results, ("per_seed", "per_seed_cka_null"), ("per_seed_times",),
                                      optional=("per_seed_choices",)))
