"""The per-seed runner every driver shares (compare, ablate, the multiclass and continual scenarios):
one seed's references, each arm (a method or a variant, from its start model) as a resumable state entry with
its time, validation choice and validation accuracy, and one audit of every model, flattened.
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Callable

from ..provenance import begin as begin_provenance  # noqa: F401  (the drivers' provenance, re-exported)
from ..provenance import provenance as machine_info  # noqa: F401
from ..references import load_original, obtain_reference, original_record
from ..audit.verdict import flatten


def val_accuracy(model, ds, forget, device, amp: bool = False) -> dict:
    """{"val_forget_acc", "val_retain_acc"} on the validation split; {} when there is none."""
    from ..train import forget_retain_accuracy

    if ds.val is None or len(ds.val) == 0:
        return {}
    acc = forget_retain_accuracy(model, ds.val, forget, device=device, amp=amp)
    return {"val_forget_acc": acc["forget_acc"], "val_retain_acc": acc["retain_acc"]}


def kept_model(state, name: str, start, make):
    """One resumable state entry of a driver (compare, multiclass, continual, ablate): a model.

    make() -> (model, info) with `info` plain values. With a resume.RunState, an entry that an earlier
    invocation completed is loaded instead: its weights into a copy of `start` (the model the method
    started from), its info, and the torch RNG state it left, so the rest of the run draws what an
    uninterrupted run draws. A model of another class than `start` (LM's logit mask: no training,
    cheap) is not kept and is made again.
    """
    from ..resume import kill_point, rng_state, set_rng_state

    saved = state.load(name) if state is not None else None
    if saved is not None:
        model = copy.deepcopy(start)
        model.load_state_dict(saved["model"])
        set_rng_state(saved["rng"])
        return model.eval(), saved["info"]
    model, info = make()
    if state is not None and type(model) is type(start):
        state.save(name, {"model": model.state_dict(), "info": info, "rng": rng_state()})
        kill_point(f"entry:{name}")
    return model, info


def kept_audit(state, name: str, make) -> dict:
    """make() -> a JSON-able audit summary; kept in `state` like `kept_model` (with the RNG state)."""
    from ..resume import kill_point, rng_state, set_rng_state

    saved = state.load(name) if state is not None else None
    if saved is not None:
        set_rng_state(saved["rng"])
        return saved["result"]
    result = make()
    if state is not None:
        state.save(name, {"result": result, "rng": rng_state()})
        kill_point(f"entry:{name}")
    return result



def setup(cfg, seeds: int, device, ds):
    """What every driver does first: check the seed count, resolve the device, load the data (unless
    given). Returns (device, ds)."""
    from ..data import load_dataset
    from ..errors import UserError
    from ..train import resolve_device

    if seeds < 1:
        raise UserError("--seeds must be at least 1")
    device = resolve_device(device) if isinstance(device, str) else device
    return device, (ds if ds is not None else load_dataset(cfg.data))


@dataclasses.dataclass
class SeedReferences:
    """One seed's original, retrained reference and CKA null (and what the drivers record of them)."""

    seed: int
    original: object
    retrained: object
    null: object
    record: dict  # references.original_record of the original
    train_times: dict  # {"original" / "retrained": seconds} where they were trained, not cached


def seed_references(cfg, ds, device, cache, quiet, original: SeedReferences | None = None,
                    check=None) -> SeedReferences:
    """The original of cfg.seed (or `original`'s, loaded once for every round of a scenario), and the
    retrained reference and null for cfg's forget classes. check(kind, model): called on each model as it
    is made, before the next is (compare's recipe checks: a bad recipe stops before training the rest)."""
    check = check or (lambda kind, model: None)
    if original is None:
        model, ometa, _, _ = load_original(cfg, ds, device, cache, quiet)
        check("original", model)
        record = original_record(model, cfg.seed)
        times = {"original": float(ometa["train_time_s"])} if ometa.get("train_time_s") is not None else {}
    else:
        model, record, times = original.original, original.record, {}
    retrained, rmeta, _, _ = obtain_reference("retrained", cfg, ds, device, cache, quiet)
    check("retrained", retrained)
    null = obtain_reference("retrained_null", cfg, ds, device, cache, quiet)[0]
    check("retrained_null", null)
    if rmeta.get("train_time_s") is not None:
        times["retrained"] = float(rmeta["train_time_s"])
    return SeedReferences(cfg.seed, model, retrained, null, record, times)


@dataclasses.dataclass
class Arm:
    """One row of a driver's table on one seed: make() -> (model, {"time": s, "choice": ... or None})
    starting from `start`; `from_scratch` arms are audited as independent models."""

    name: str
    start: object
    make: Callable
    from_scratch: bool = False


def run_seed(arms: list[Arm], refs: SeedReferences, ds, forget, *, device, state, prefix: str, seed: int,
             quiet=False, figures=False, relearn=True, log=None, attacks=False, choices: dict | None = None) -> dict:
    """Every arm as a state entry `<prefix><name>`, then one audit (`<prefix>audit`) of the original, the
    retrained reference and every arm. Returns {"metrics": {name: flat metrics + val_*}, "times",
    "choices" (per arm), "cka_null", "settings" (the audit's), "models" (name -> model)}.
    choices: the caller's dict to fill, arm by arm, as each finishes (or is taken from the state), so a later
    arm's make() can read an earlier arm's validation choice."""
    from ..audit import audit_models, json_view

    models = {"original": refs.original, "retrained": refs.retrained}
    val = {n: val_accuracy(models[n], ds, forget, device) for n in models}
    times, independent = {}, ["retrained"]
    choices = {} if choices is None else choices
    for arm in arms:
        if log is not None:
            log(arm.name)

        def make(arm=arm):
            model, info = arm.make()
            return model, {**info, "val": val_accuracy(model, ds, forget, device)}

        model, info = kept_model(state, f"{prefix}{arm.name}", arm.start, make)
        models[arm.name] = model
        times[arm.name] = info["time"]
        choices[arm.name] = info.get("choice")
        val[arm.name] = info["val"] if "val" in info else val_accuracy(model, ds, forget, device)
        if arm.from_scratch:
            independent.append(arm.name)

    def audit():
        view = json_view(audit_models(models, ds, list(forget), device=device, original="original",
                                      retrained="retrained", seed=seed, figures=figures, quiet=quiet,
                                      independent=independent, null_model=refs.null, relearn=relearn,
                                      attacks=attacks))
        return {"settings": view.get("settings"), "cka_null": view.get("references", {}).get("cka_null", {}),
                "metrics": view["metrics"]}

    view = kept_audit(state, f"{prefix}audit", audit)
    return {"metrics": {n: {**flatten(m), **val.get(n, {})} for n, m in view["metrics"].items()},
            "times": times, "choices": choices, "cka_null": view.get("cka_null", {}),
            "settings": view.get("settings"), "models": models}
