"""Scenarios of `cnr-fast compare --scenario NAME` (paper Tables 1, 7 and 12), one `Scenario` entry each:
how it runs, how runs over disjoint seeds merge, and which files it writes (its report and figures).

- single: `compare` with --forget as given.
- multiclass: `compare` once per forget set, every class of the set forgotten at once.
- continual: round r forgets the first r classes of an order, each method from ITS previous model.
- no-retain: `compare` with the methods given the forget-class images alone (a user whose retain data is
  gone); methods that need more are listed as not applicable, not run.

Adding a scenario: a `run(cfg, methods, seeds, *, device, cache, quiet, ds, state, **options) -> result`,
a `merge(results) -> result`, a `files(result) -> {name: content}` and one `register(Scenario(...))`.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Callable

from ..config import RunConfig
from ..errors import UserError
from ..progress import log
from ..registry import Registry
from . import methods as M
from . import reports
from .compare import compare, compare_tables
from .merge import check_mergeable, concat_seeds
from .runner import Arm, begin_provenance, machine_info, run_seed, seed_references, setup
from .stats import summarise, summarise_runs

MULTICLASS_SETS = ((2, 5), (2, 5, 7, 1, 9))  # 2 and 5 classes; the first is the paper's digit 2
CONTINUAL_ORDER = (2, 5, 7, 1, 9)  # one more class each round


def _check_own_classes(name: str, classes: list[int], ds) -> None:
    """A scenario that forgets its own class indices needs a dataset that has them (--forget cannot help)."""
    need = max(classes) + 1
    if ds.num_classes < need:
        raise UserError(f"--scenario {name} forgets the class indices {sorted(set(classes))}, so it needs at least "
                        f"{need} classes; {ds.name!r} has {ds.num_classes}: run it on a dataset with {need} or more "
                        "classes, or use --scenario single with your own --forget")


def multiclass(cfg: RunConfig, methods: list[str], seeds: int = 3, *, class_sets=MULTICLASS_SETS, device="cpu",
               cache: str | None = None, quiet: bool = False, ds=None, state=None) -> dict:
    """`compare` once per forget set (all its classes forgotten at once), same budget per method."""
    from ..data import check_forget, load_dataset

    ds = ds if ds is not None else load_dataset(cfg.data)
    out = {"scenario": "multiclass", "dataset": ds.name, "class_sets": [list(c) for c in class_sets], "runs": {}}
    t0 = time.perf_counter()
    started = begin_provenance()
    _check_own_classes("multiclass", [c for cs in class_sets for c in cs], ds)
    for classes in class_sets:
        check_forget(classes, ds)
        key = ",".join(str(c) for c in classes)
        log(f"multiclass: forget {key} ({', '.join(repr(ds.class_names[c]) for c in classes)})", quiet)
        out["runs"][key] = compare(cfg.replace(data={"forget": tuple(classes)}), methods, seeds, device=device,
                                   cache=cache, quiet=quiet, ds=ds, state=state, entry_prefix=f"f{key}-")
    out["total_time_s"] = time.perf_counter() - t0
    out["machine"] = machine_info(started)
    return out


def continual(cfg: RunConfig, methods: list[str], seeds: int = 3, *, order=CONTINUAL_ORDER, device="cpu",
              cache: str | None = None, quiet: bool = False, ds=None, state=None) -> dict:
    """Round r forgets the first r classes of `order`, each method starting from ITS model of round r-1
    (round 1 from the original), with the same per-round budget. Each round is audited against a model
    retrained without those r classes (and its null). Returns per round and method mean / CI over seeds."""
    from ..data import check_forget

    methods = list(methods)
    M.check_names(methods)
    device, ds = setup(cfg, seeds, device, ds)
    _check_own_classes("continual", list(order), ds)
    check_forget(list(order), ds)
    log(f"continual: order {', '.join(f'{c} ({ds.class_names[c]!r})' for c in order)}", quiet)
    t0 = time.perf_counter()
    started = begin_provenance()
    rounds: list[list[dict]] = [[] for _ in order]
    times: list[dict[str, list[float]]] = [{m: [] for m in methods} for _ in order]
    choices: list[dict[str, list]] = [{m: [] for m in methods} for _ in order]
    originals: list[dict] = []
    for s in range(seeds):
        scfg = cfg.replace(seed=cfg.seed + s)
        first = None
        reuse = {m: {} for m in methods}
        for r in range(len(order)):
            forget = tuple(order[: r + 1])
            rcfg = scfg.replace(data={"forget": forget})
            refs = seed_references(rcfg, ds, device, cache, quiet, original=first)  # one original, every round
            if first is None:
                first = refs
                originals.append(refs.record)
                current = {m: refs.original for m in methods}

            def make(m, rcfg=rcfg, current=current):
                base = M.resolve(m, cfg)[0].name
                model, info, t, _ = M.unlearn_model(m, current[m], ds, rcfg.replace(method=base), device=device,
                                                    quiet=quiet, reuse=reuse[m])
                return model, {"time": t["unlearn"], "choice": M.validation_choice(info)}

            arms = [Arm(m, current[m], lambda m=m: make(m), M.is_from_scratch(m)) for m in methods]
            res = run_seed(arms, refs, ds, list(forget), device=device, state=state, prefix=f"s{scfg.seed}-r{r + 1}-",
                           seed=scfg.seed, quiet=quiet, relearn=False,
                           log=lambda n, r=r, forget=forget: log(f"continual: seed {scfg.seed}, round {r + 1} "
                                                                 f"(forget {list(forget)}), method {n}", quiet))
            for m in methods:
                current[m] = res["models"][m]
                times[r][m].append(res["times"][m])
                choices[r][m].append(res["choices"][m])
            rounds[r].append(res["metrics"])
    result = {"scenario": "continual", "dataset": ds.name, "order": list(order), "methods": list(methods),
              "seeds": [cfg.seed + s for s in range(seeds)], "config": cfg.to_dict(),
              "rounds": [{"forget": list(order[: r + 1]), "per_seed": per_seed, "per_seed_times": times[r],
                          "per_seed_choices": choices[r]} for r, per_seed in enumerate(rounds)],
              "total_time_s": time.perf_counter() - t0, "machine": machine_info(started),
              "per_seed_originals": originals}
    return continual_tables(result)


def continual_tables(result: dict) -> dict:
    """(Re)compute each round's table and times from its per-seed values (p against CNR, or against the
    first method when CNR is not among them: the key says which)."""
    methods = result["methods"]
    names = ["original", "retrained", *methods]
    for rd in result["rounds"]:
        base = "cnr" if "cnr" in methods else names[2]
        rd["table"] = summarise_runs(rd["per_seed"], names, base, paired=methods, p_key=f"p_vs_{base}")
        rd["unlearn_time_s"] = {m: summarise(v, None) for m, v in rd["per_seed_times"].items()}
    return result


def merge_single(results: list[dict]) -> dict:
    check_mergeable(results, "compare", "methods", key=lambda r: list(r["per_seed_times"]))
    merged = concat_seeds(results, ("per_seed", "per_seed_cka_null"), ("per_seed_times", "per_seed_reference_times"),
                          optional=("per_seed_choices", "per_seed_ulira"))
    return compare_tables(merged)


def merge_multiclass(results: list[dict]) -> dict:
    keys = list(results[0]["runs"])
    if any(list(r["runs"]) != keys for r in results):
        raise UserError("multiclass results to merge must have the same class sets")
    return {**results[0], "runs": {k: merge_single([r["runs"][k] for r in results]) for k in keys},
            "seeds": [s for r in results for s in r["runs"][keys[0]]["seeds"]],
            "total_time_s": sum(r["total_time_s"] for r in results)}


def merge_continual(results: list[dict]) -> dict:
    check_mergeable(results, "continual", "methods")
    merged = concat_seeds(results, (), ())
    keys = ("per_seed_times",) + (("per_seed_choices",) if all("per_seed_choices" in rd for r in results
                                                                  for rd in r["rounds"]) else ())
    merged["rounds"] = [{"forget": rd["forget"],
                         "per_seed": [x for r in results for x in r["rounds"][i]["per_seed"]],
                         **{k: {m: [x for r in results for x in r["rounds"][i][k][m]] for m in rd[k]} for k in keys}}
                        for i, rd in enumerate(results[0]["rounds"])]
    return continual_tables(merged)


def _single_files(result: dict) -> tuple[dict, str]:
    md = reports.compare_report_md(result)
    return ({"report.md": md, "report.html": reports.markdown_html(md, f"compare: {result['dataset']}"),
             "compare.json": result}, reports.compare_report_md(result, short=True))


def _scenario_files(result: dict) -> tuple[dict, str]:
    name = result["scenario"]
    figures = reports.scenario_figure(result)
    md = reports.scenario_report_md(result, figures=figures)
    return {f"{name}.md": md, f"{name}.json": result, **figures}, md


@dataclasses.dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    run: Callable  # run(cfg, methods, seeds, *, device, cache, quiet, ds, state, **options) -> result
    merge: Callable  # merge(results over disjoint seeds) -> result
    files: Callable  # files(result) -> ({file name: content}, text to print)
    options: tuple[str, ...] = ()  # the keyword options of run it takes (the CLI passes only these)
    takes_recipe: bool = False  # runs `compare` on the user's recipe (--train-script, --originals, ...)
    train_data: str = "all"  # the training data its methods are given (a key of methods.TRAIN_DATA)
    # the class sets it forgets by index, whatever --forget says (empty: it forgets --forget)
    own_classes: tuple[tuple[int, ...], ...] = ()


SCENARIOS = Registry("scenario")


def register(scenario: Scenario, replace: bool = False) -> Scenario:
    """Add a scenario (a name already registered is refused unless replace=True)."""
    return SCENARIOS.register(scenario, replace=replace)


def unregister(name: str) -> None:
    """Remove a scenario you registered (a built-in is refused)."""
    SCENARIOS.unregister(name)


def get(name: str) -> Scenario:
    """The scenario `name`; an unknown name is a UserError naming the closest ones."""
    return SCENARIOS.find(name)


def merge_results(results: list[dict]) -> dict:
    """One result from results of one scenario over disjoint seeds (the scenario named in the files)."""
    if not results:
        raise UserError("--merge: no result files given")
    name = results[0].get("scenario", "single")
    if any(r.get("scenario", "single") != name for r in results):
        raise UserError("--merge: the results come from different scenarios; merge one scenario at a time")
    return get(name).merge(results)


register(Scenario("single", "--forget as given", compare, merge_single, _single_files,
                  options=("fixed_original", "figures", "attacks", "ulira_pairs"), takes_recipe=True))
def no_retain(cfg: RunConfig, methods: list[str], seeds: int = 3, **kw) -> dict:
    """`compare` with the forget-class training images alone given to the methods (methods.TRAIN_DATA)."""
    return {**compare(cfg, methods, seeds, train_data="forget", **kw), "scenario": "no-retain"}


register(Scenario("no-retain", "the methods get the forget-class images alone; those needing retain data are "
                  "listed, not run", no_retain, merge_single, _single_files,
                  options=("fixed_original", "figures", "attacks"), takes_recipe=True, train_data="forget"))
register(Scenario("multiclass", "2 and 5 classes forgotten at once (Table 7)", multiclass, merge_multiclass,
                  _scenario_files, own_classes=MULTICLASS_SETS))
register(Scenario("continual", "5 rounds, one more class each, every method from its previous model (Table 12)",
                  continual, merge_continual, _scenario_files, own_classes=(CONTINUAL_ORDER,)))
SCENARIOS.seal_builtins()
