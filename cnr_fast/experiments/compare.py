"""`compare`: every method on the same original per seed, one audit per seed (paper Table 1)."""

from __future__ import annotations

import dataclasses
import time

from ..config import RunConfig
from ..errors import UserError
from ..progress import log
from . import methods as M
from .runner import Arm, begin_provenance, machine_info, run_seed, seed_references, setup
from ..audit.metrics import coordinate_bound
from ..audit.verdict import NULL
from .stats import (SEPARATION, is_coordinate_bound, judge, null_table, pairwise, summarise, summarise_runs,
                    verdict_over_seeds)

# the metrics every pair of methods is contrasted on (compare.json "pairwise"; the report shows the first ones)
PAIRWISE_KEYS = ("forget_acc", "retain_acc", "cka_neg.L4", "probe_acc.L4", "fewshot_probe_acc.5", "knn_acc.L4",
                 "mia_acc", "nn_purity", "cka_neg.L2", "relearn_acc.5", "ulira_auc")


def compare(cfg: RunConfig, methods: list[str], seeds: int = 3, *, device="cpu", cache: str | None = None,
            fixed_original: bool = False, figures: bool = False, quiet: bool = False, ds=None, state=None,
            entry_prefix: str = "", attacks: bool = False, ulira_pairs: int = 0, recipe=None,
            expect_acc: float | None = None, force: bool = False, train_data: str = "all") -> dict:
    """Every method on the same original per seed, one audit per seed; returns the compare.json dict.

    state: a resume.RunState (the CLI's `OUT.state/`): each (seed, method) and each seed's audit is
    kept there as it completes, and a rerun continues after the last one (see `runner.kept_model`).

    By default each seed trains (or takes from the cache) its own original, retrained reference and
    null model, so the intervals cover the randomness of training as well as of unlearning.
    fixed_original=True keeps one original / reference / null (seed cfg.seed) for every seed.
    attacks: the audit's Table 10 attacks (MLP / conv probes, model inversion). ulira_pairs > 0: U-LiRA per method and seed
    (experiments/shadows.py) over that many shadow pairs; its AUCs join each method's metrics
    ("ulira_auc": audited vs retrained, "ulira_null_auc": the null in its place; the original's
    "ulira_auc" is the attack's reach, fitted on the shadow originals) and the full results
    go to "per_seed_ulira". Each method's shadows run at the choice the method made on that seed
    (tuning.applied_choice); they are state entries shared by the seeds that chose alike.
    recipe: a references.Recipe (the user's training function or checkpoints) that makes every original,
    reference, null and RFS model instead of cnr-fast's own; the result's "recipe" names whose it was.
    Each seed's original is checked before any method runs (preflight.check_recipe: near chance, or
    below expect_acc, stops unless force).
    train_data: the training data the methods are given, a key of methods.TRAIN_DATA: "all", or "forget"
    (the forget-class images alone, as for a user whose retain data is gone). A method that needs more
    (Method.needs) is not run and is listed under "not_applicable" with why; the references, the audit
    and the validation split are the same in both.
    """
    from ..references import user_recipe

    with user_recipe(recipe):
        return _compare(cfg, methods, seeds, device=device, cache=cache, fixed_original=fixed_original,
                        figures=figures, quiet=quiet, ds=ds, state=state, entry_prefix=entry_prefix, attacks=attacks,
                        ulira_pairs=ulira_pairs, expect_acc=expect_acc, force=force, train_data=train_data)


def _compare(cfg, methods, seeds, *, device, cache, fixed_original, figures, quiet, ds, state, entry_prefix, attacks,
             ulira_pairs, expect_acc, force, train_data) -> dict:
    from ..preflight import check_recipe, check_reference
    from ..references import recipe_name

    methods = list(methods)
    M.check_names(methods)
    if train_data not in M.TRAIN_DATA:
        raise UserError(f"train_data {train_data!r}: choose one of {', '.join(M.TRAIN_DATA)}")
    not_applicable = {m: why for m in methods if (why := M.not_applicable(m, train_data))}
    for m, why in not_applicable.items():
        log(f"compare: {m} is not run: it {why}", quiet)
    methods = [m for m in methods if m not in not_applicable]
    prepared = {m: M.prepare(m) for m in methods}  # each resolved once (methods.prepare)
    if not methods:
        raise UserError(f"none of the methods can run on {train_data} training data alone: "
                        f"{'; '.join(f'{m} {w}' for m, w in not_applicable.items())}; "
                        f"choose among {', '.join(m for m in M.names() if not M.not_applicable(m, train_data))}")
    if ulira_pairs and train_data != "all":
        raise UserError("U-LiRA's shadow runs give each method the whole training split; run it without "
                        "--ulira-pairs when the methods get the forget images alone")
    if cfg.model.checkpoint and not fixed_original:
        raise UserError("compare with --checkpoint keeps that one original for every seed; add --fixed-original")
    device, ds = setup(cfg, seeds, device, ds)
    check_taps_first(cfg, methods, ds)
    forget = list(cfg.data.forget)
    # what the methods train on: every split as loaded, or (train_data "forget") the forget-class images alone
    method_ds = ds if train_data == "all" else dataclasses.replace(ds, train=ds.train.of_classes(forget))
    t_start = time.perf_counter()
    started = begin_provenance()
    per_seed, cka_null, originals, audit_settings = [], [], [], None
    ulira: dict[str, list] = {m: [] for m in methods}
    timings: dict[str, list[float]] = {m: [] for m in methods}
    choices: dict[str, list] = {m: [] for m in methods}  # per seed: the validation choice, or None
    ref_times: dict[str, list[float]] = {"original": [], "retrained": []}
    recipe_checks = []
    for s in range(seeds):
        seed = cfg.seed + s
        ref_cfg = cfg.replace(seed=cfg.seed if fixed_original else seed)
        def check(kind, model, seed=ref_cfg.seed):
            if kind == "original":
                recipe_checks.append(check_recipe(model, ds, device, recipe=recipe_name(), seed=seed,
                                                  expect_acc=expect_acc, force=force, quiet=quiet))
            else:
                check_reference(model, ds, forget, device, kind=kind, recipe=recipe_name(), seed=seed, force=force,
                                quiet=quiet)

        refs = seed_references(ref_cfg, ds, device, cache, quiet, check=check)
        originals.append(refs.record)
        for name, t in refs.train_times.items():
            ref_times[name].append(t)
        reuse: dict = {}

        def make(m, original=refs.original, seed=seed, reuse=reuse):
            p = prepared[m]
            model, minfo, t, _ = M.unlearn_model(p, original, method_ds,
                                                 ref_cfg.replace(seed=seed, method=p.entry.name), device=device,
                                                 quiet=quiet, reuse=reuse)
            return model, {"time": t["unlearn"], "choice": M.validation_choice(minfo)}

        arms = [Arm(m, refs.original, lambda m=m: make(m), prepared[m].from_scratch) for m in methods]
        r = run_seed(arms, refs, ds, forget, device=device, state=state, prefix=f"{entry_prefix}s{seed}-", seed=seed,
                     quiet=quiet, figures=figures, log=lambda n, seed=seed: log(f"compare: seed {seed}, method {n}",
                                                                               quiet), attacks=attacks)
        if ulira_pairs:
            from .shadows import ulira_attack

            for m in methods:
                log(f"compare: seed {seed}, U-LiRA of {m} ({ulira_pairs} shadow pairs)", quiet)
                chosen = (r["choices"][m] or {}).get("chosen")
                u = ulira_attack(prepared[m], ref_cfg.replace(seed=seed), ds, {"unlearned": r["models"][m],
                                 "retrained": refs.retrained, NULL: refs.null, "original": refs.original},
                                 choice=chosen, pairs=ulira_pairs, device=device, cache=cache, quiet=quiet,
                                 state=state)
                ulira[m].append(u)
                r["metrics"][m]["ulira_auc"] = u["audited"]["auc"]
                r["metrics"][m]["ulira_null_auc"] = u["null"]["auc"]
                k = u.get("klom") or {}
                if k:  # KLOM's forget P95 over the same pairs; its split-half null: half the method's shadows
                    r["metrics"][m]["klom_forget"] = k["audited"]["forget"]  # and half the retrained ones
                    if "null" in k:
                        r["metrics"][m]["klom_half_forget"] = k["null"]["audited"]["forget"]
                        r["metrics"][m]["klom_null_forget"] = k["null"]["null"]["forget"]
                r["metrics"]["original"]["ulira_auc"] = u["original"]["auc"]  # the same shadow originals for every method
        for m in methods:
            timings[m].append(r["times"][m])
            choices[m].append(r["choices"][m])
        audit_settings = r["settings"]
        cka_null.append(r["cka_null"])
        per_seed.append(r["metrics"])
    result = {
        "dataset": ds.name, "arch": cfg.model.arch, "width": cfg.model.width, "forget_classes": forget,
        "forget_names": [ds.class_names[c] for c in forget] if ds.class_names else None,
        "seeds": [cfg.seed + s for s in range(seeds)], "fixed_original": bool(fixed_original),
        "reference_init": cfg.train.reference_init, "recipe": recipe_name(), "recipe_checks": recipe_checks,
        "data_needs": {m: prepared[m].data_needs for m in methods}, "train_data": train_data,
        "not_applicable": not_applicable,
        "splits": {"train": len(ds.train), "val": len(ds.val) if ds.val is not None else 0, "test": len(ds.test)},
        "coordinate_bound_metrics": list(coordinate_bound()), "separation_threshold": SEPARATION,
        "chance_acc": 1.0 / ds.num_classes,
        "audit_settings": audit_settings, "config": cfg.to_dict(), "total_time_s": time.perf_counter() - t_start,
        "machine": machine_info(started),
        "per_seed": per_seed, "per_seed_cka_null": cka_null, "per_seed_times": timings,
        "per_seed_reference_times": ref_times, "per_seed_choices": choices, "per_seed_originals": originals,
    }
    if ulira_pairs:
        result["per_seed_ulira"] = ulira
    return compare_tables(result)


def check_taps_first(cfg: RunConfig, methods: list[str], ds) -> None:
    """Before any training: the taps CNR's detection reads (detect.taps) exist in the model, built fresh and
    untrained from its source (or the user's recipe). A model with fewer stages would otherwise stop
    compare only once every reference was trained."""
    from ..models import build_model, tap_modules
    from ..references import current_recipe, source_options

    if not any("detect" in M.resolve(m, None)[0].config_sections for m in methods):
        return
    recipe = current_recipe()
    if recipe is not None and recipe.build is not None:
        model = recipe.prepare(recipe.build())
    elif not cfg.model.checkpoint and not cfg.model.weights:
        model = build_model(cfg.model.arch, ds.num_classes, ds.in_channels, ds.image_size, cfg.model.width,
                            **source_options(cfg))
    else:
        return
    have = tap_modules(model)
    missing = [t for t in cfg.detect.taps if t not in have]
    if missing:
        raise UserError(f"CNR reads taps {', '.join(cfg.detect.taps)}, but the model has only {', '.join(have)} "
                        f"(no {', '.join(missing)}); pass --taps {','.join(t for t in cfg.detect.taps if t in have)} "
                        "or name modules with --taps L1=module.path,... (`cnr-fast taps` lists candidates)")


def compare_tables(result: dict) -> dict:
    """(Re)compute a compare result's tables, separation judgements and verdict from its per-seed values."""
    per_seed, methods = result["per_seed"], list(result["per_seed_times"])
    names = ["original", "retrained", *methods]
    keys = sorted(set().union(*[set(ps[n]) for ps in per_seed for n in names]))
    has_null = any(NULL in ps for ps in per_seed)
    table = summarise_runs(per_seed, names + ([NULL] if has_null else []), "cnr" if "cnr" in methods else None,
                           paired=methods, p_key="p_vs_cnr")
    result.update({
        "methods": {m: table[m] for m in methods},
        "references": {"original": table["original"], "retrained": table["retrained"],
                       "chance_acc": result["chance_acc"], "cka_null": null_table(result["per_seed_cka_null"]),
                       **({"null": table[NULL]} if has_null else {})},
        "separation": judge(per_seed, table, methods, keys),
        "pairwise": pairwise(per_seed, ["retrained", *methods],
                             [k for k in PAIRWISE_KEYS if k in keys and not is_coordinate_bound(k)]),
        "verdict": verdict_over_seeds(per_seed, methods, _forget_test_size(result), _retain_test_size(result)),
        "unlearn_time_s": {m: summarise(v, None) for m, v in result["per_seed_times"].items()},
        "reference_train_time_s": {k: summarise(v, None) for k, v in result["per_seed_reference_times"].items()
                                   if v},
    })
    return result


def _retain_test_size(result: dict) -> int | None:
    """Retain-class test examples (the utility judgement's resolution); None where the file lacks them."""
    s = result.get("audit_settings") or {}
    if s.get("test_size") and s.get("forget_test_size"):
        return int(s["test_size"]) - int(s["forget_test_size"])
    return None


def _forget_test_size(result: dict) -> int:
    """Forget-class test examples (the verdict's resolution); files from before it was recorded: CKA's N."""
    s = result.get("audit_settings") or {}
    return int(s.get("forget_test_size") or (s.get("cka_examples") or {}).get("forget") or 1)
