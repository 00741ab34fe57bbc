"""The `unlearn` driver: one method on one original, its audit (with U-LiRA shadows when asked), and the
results dict `results.json` holds. The CLI parses, loads the original and writes the run directory;
everything between is here, beside compare's and ablate's drivers.

    from cnr_fast.experiments import methods as M
    from cnr_fast.experiments.unlearn import AuditPlan, unlearn_run
    run = unlearn_run(M.prepare("cnr", cfg), original, ds, device="cpu", state=state, plan=AuditPlan())
    run.results["verdict"], run.model
"""

from __future__ import annotations

import dataclasses
import platform
import sys
import time

import torch

from ..audit.verdict import NULL
from ..data import Dataset, class_table, in_sample_validation
from ..errors import UserError
from ..models import LogitMask, model_from_checkpoint, model_meta, takes_width
from ..preflight import check_model
from ..progress import log
from ..references import obtain_reference, source_options
from ..resume import kill_point
from ..train import compile_checks, forget_retain_accuracy, precision
from . import methods as M
from .runner import machine_info, val_accuracy

AUDIT_LEVELS = ("thorough", "full", "fast", "off")


@dataclasses.dataclass(frozen=True)
class AuditPlan:
    """What the audit of one unlearn run measures (the CLI's --audit, --retrained, --null, --ulira-pairs)."""

    level: str = "fast"  # one of AUDIT_LEVELS: fast (no figures), full (figures), thorough (+ Table 10 attacks)
    retrained: str | None = "auto"  # "auto" (trained and cached, with its null), "off", or a checkpoint path
    null: str | None = None  # with a retrained path: a second retrained model's path (the verdict needs one)
    ulira_pairs: int = 0  # U-LiRA shadow pairs (0 = off)
    cache: str | None = None  # the reference cache (None: the default)


@dataclasses.dataclass
class UnlearnRun:
    model: torch.nn.Module  # the unlearned model (a LogitMask for logit masking)
    meta: dict  # its checkpoint metadata
    results: dict  # what results.json holds (run_key and resumed entries added by the caller)
    files: dict  # the method's extra run files (synthetic images)
    audit: dict | None  # the audit's full result (figures included), None with the audit off


def carved_validation_warning(ds: Dataset, method: str, info: dict, own_original: bool) -> str | None:
    """A model trained outside cnr-fast was most likely trained on every image given as train, so a validation
    split carved from them is in-sample for it: a setting chosen there can damage the model on test. The
    warning to give where that happened (a method chose on validation); None otherwise."""
    if own_original or not ds.val_carved or M.validation_choice(info) is None:
        return None
    return in_sample_validation(f"{method}'s setting was")


def weak_reference_warning(metrics: dict, ds: Dataset, forget) -> str | None:
    """The retrained reference is the standard every measure is judged against: one whose retain accuracy is
    well below the original's (more than max(0.05, 2/sqrt(N)) on the N retain test examples) was not trained
    as the original was, and the verdict then judges against a weak model. The warning; None otherwise."""
    ret, orig = metrics.get("retrained", {}).get("retain_acc"), metrics.get("original", {}).get("retain_acc")
    if ret is None or orig is None:
        return None
    n = int((~torch.isin(ds.test.y, torch.as_tensor(list(forget)))).sum())
    if orig - ret <= max(0.05, 2 / max(n, 1) ** 0.5):
        return None
    return (f"the retrained reference reaches retain accuracy {ret:.3f} against the original's {orig:.3f}: it was not "
            "trained as well as the original, so the verdict judges against a weak model; pass --retrained / --null "
            "trained by your own recipe, or more --train-epochs for the automatic ones")


def unlearn_run(method: M.Prepared, original, ds: Dataset, *, device, state, plan: AuditPlan = AuditPlan(),
                orig_path="", cache_hit=False, own_original=True, expect_acc=None, force=False, quiet=False,
                t_start=None, started=None) -> UnlearnRun:
    """Run `method` (methods.prepare: its config is the run's) on `original` and audit it as `plan` says.
    state: a resume.RunState; the method's stages and each audited model are entries of it."""
    t_start = time.perf_counter() if t_start is None else t_start
    cfg = method.cfg  # a control's changes applied (config.json records them)
    forget = list(cfg.data.forget)
    # the input contract checked before any work: a model fed otherwise than it was trained stops here
    checks = {"original": check_model(original, ds, device, role="original", forget=forget, expect_acc=expect_acc,
                                      force=force, quiet=quiet, own=own_original)}
    refs = {}
    if plan.level != "off" and plan.retrained not in (None, "auto", "off"):
        retain = ds.retain_classes(forget)
        for name, flag, path in (("retrained", "--retrained", plan.retrained), (NULL, "--null", plan.null)):
            if path is not None:
                refs[name] = load_retrained(path, cfg, ds, device, plan.cache, quiet, flag=flag)
                checks[name] = check_model(refs[name], ds, device, role=flag[2:], classes=retain, absent=forget,
                                           force=force, quiet=quiet)
    acc_orig = forget_retain_accuracy(original, ds.test, forget, device=device, amp=cfg.amp)
    log(f"original: forget acc {acc_orig['forget_acc']:.3f}, retain acc {acc_orig['retain_acc']:.3f}", quiet)

    model, info, timings, files = M.unlearn_model(method, original, ds, device=device, quiet=quiet, state=state)
    acc_new = forget_retain_accuracy(model, ds.test, forget, device=device, amp=cfg.amp)
    acc_orig.update(val_accuracy(original, ds, forget, device, amp=cfg.amp))
    acc_new.update(val_accuracy(model, ds, forget, device, amp=cfg.amp))
    log(f"unlearned ({method.name}): forget acc {acc_new['forget_acc']:.3f}, retain acc {acc_new['retain_acc']:.3f}",
        quiet)
    warnings = [w for w in (carved_validation_warning(ds, method.name, info, own_original),) if w]
    for w in warnings:  # printed even with --quiet
        print(f"cnr-fast: warning: {w}", file=sys.stderr, flush=True)

    meta = {**model_meta(cfg.model.arch, cfg.model.width, ds, model, **source_options(cfg)), "kind": "unlearned",
            "method": method.name, "forget_classes": forget, "seed": cfg.seed, "original_checkpoint": str(orig_path),
            "test_accuracy": acc_new}
    if isinstance(model, LogitMask):
        meta["logit_mask"] = forget
    metrics = {"original": dict(acc_orig), "unlearned": dict(acc_new)}
    audit_result = None
    if plan.level != "off":
        t0 = time.perf_counter()
        audit_result = _audit(method, cfg, ds, device, state, plan, original, model, refs, info, quiet)
        timings["audit"] = time.perf_counter() - t0
        from ..audit import json_view

        for name, m in json_view(audit_result)["metrics"].items():
            metrics[name] = {**m, **metrics.get(name, {})}
        weak = weak_reference_warning(metrics, ds, forget)
        if weak:
            print(f"cnr-fast: warning: {weak}", file=sys.stderr, flush=True)
            warnings.append(weak)
    timings["total"] = time.perf_counter() - t_start

    results = {
        "method": method.name, "data_needs": method.data_needs, "dataset": ds.name, "arch": cfg.model.arch,
        "width": cfg.model.width if takes_width(cfg.model.arch) else None,  # a ViT's or your model's: none
        "precision": precision(device, cfg.amp),  # --amp: bf16 / fp16 autocast where the device has it, else fp32
        # --compile: each compiled loop's first-batch gradients against float64 (train.check_compiled_gradients)
        **({"compile_checks": compile_checks()} if cfg.compile else {}),
        "forget_classes": forget, "seed": cfg.seed,
        "metrics": metrics,
        "timings_s": timings,
        "original_checkpoint": str(orig_path), "original_cache_hit": bool(cache_hit),
        "device": str(device), "versions": {"torch": torch.__version__, "python": platform.python_version()},
        "provenance": machine_info(started),
        # the setting chosen on validation (step size, SSD's alpha, SCRUB's preset) and every candidate's scores
        "validation_choice": M.validation_choice(info),
        "details": _jsonable(info),
        "classes": class_table(ds), "preflight": checks,
        **({"warnings": warnings} if warnings else {}),
    }
    if audit_result is not None:
        from ..audit import json_view

        view = json_view(audit_result)
        # the auditor's answer first: where the unlearned model stands between original and retrained
        results["verdict"] = view.get("verdict")
        results["audit"] = {k: v for k, v in view.items() if k not in ("metrics", "verdict")}
    return UnlearnRun(model, meta, results, files, audit_result)


def _audit(method, cfg, ds, device, state, plan: AuditPlan, original, model, refs, info, quiet) -> dict:
    forget = list(cfg.data.forget)
    models = {"original": original, "unlearned": model}
    null = None
    if plan.retrained not in (None, "off"):
        models["retrained"] = refs.get("retrained") or load_retrained(plan.retrained, cfg, ds, device, plan.cache,
                                                                      quiet)
        if plan.retrained == "auto":  # the CKA null reference: a second, independent retrained model
            null = obtain_reference("retrained_null", cfg, ds, device, plan.cache, quiet)[0]
        elif NULL in refs:
            null = refs[NULL]
        else:
            log("audit: no --null given: the verdict needs a second retrained model (--null PATH) to say how far "
                "apart two models that never saw the class are; the report has none", quiet)
    independent = [n for n in ("retrained",) if n in models]
    if method.from_scratch:
        independent.append("unlearned")
    done = {n: part for n in [*models, NULL] if (part := state.load(f"audit-{n}")) is not None}

    def on_model(name, part):
        state.save(f"audit-{name}", part)
        kill_point(f"audit:{name}")

    result = run_audit(models, ds, forget, device=device, seed=cfg.seed, figures=plan.level in ("full", "thorough"),
                       attacks=plan.level == "thorough", quiet=quiet, null_model=null, independent=independent,
                       done=done, on_model=on_model)
    if plan.ulira_pairs:
        from .shadows import ulira_attack

        log(f"U-LiRA: {plan.ulira_pairs} shadow pairs, each unlearned with {method.name}", quiet)
        targets = {"unlearned": model, "retrained": models["retrained"], "original": original}
        if null is not None:
            targets[NULL] = null
        chosen = (M.validation_choice(info) or {}).get("chosen")
        result["ulira"] = ulira_attack(method, cfg, ds, targets, choice=chosen, pairs=plan.ulira_pairs, device=device,
                                       cache=plan.cache, quiet=quiet, state=state)
    return result


def summary_lines(results: dict, out) -> list[str]:
    """What `cnr-fast unlearn` prints at its end, from its results dict: the header, forget / retain accuracy
    (and the deepest probe, MIA and purity when audited) of the original, unlearned and retrained models, the
    verdict's sentence, the stage times and the run directory."""
    from ..models import arch_label

    def f(v) -> str:
        return "-" if v is None else f"{v:.4f}"

    m = results["metrics"]
    deep = (results.get("audit") or {}).get("settings", {}).get("deepest_tap")
    rows = [("model", "forget_acc", "retain_acc") + ((f"probe[{deep}]", "mia_acc", "nn_purity") if deep else ())]
    for name in ("original", "unlearned", "retrained"):
        if name in m:
            row = (name, f(m[name].get("forget_acc")), f(m[name].get("retain_acc")))
            if deep:
                row += (f(m[name].get("probe_acc", {}).get(deep)), f(m[name].get("mia_acc")), f(m[name].get("nn_purity")))
            rows.append(row)
    lines = [f"{results['method']} on {results['dataset']} / {arch_label(results['arch'], results['width'])}, "
             f"forget {results['forget_classes']}, seed {results['seed']}, {results['precision']}"]
    lines += [f"  {r[0]:<10}" + "".join(f" {c:>10}" for c in r[1:]) for r in rows]
    v = (results.get("verdict") or {}).get("models", {}).get("unlearned")
    if v:
        lines.append(f"  verdict: {v['sentence']}")
    lines.append("  time (s): " + ", ".join(f"{k} {t:.1f}" for k, t in results["timings_s"].items()))
    lines.append(f"  run directory: {out}")
    return lines


def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, torch.Tensor):
        return obj.tolist()
    return obj


def load_retrained(spec: str, cfg, ds: Dataset, device, cache, quiet=False, flag="--retrained"):
    """The retrained reference (or, flag="--null", its null): trained and cached for "auto", else read
    from a checkpoint with the original's model source and input contract, like --checkpoint."""
    if spec == "auto":
        return obtain_reference("retrained", cfg, ds, device, cache, quiet)[0]
    model, meta = model_from_checkpoint(spec, ds, cfg.model.arch, cfg.model.width, source_options(cfg))
    recorded = meta.get("forget_classes")
    if recorded is not None and sorted(recorded) != sorted(cfg.data.forget):
        raise UserError(f"{flag} {spec!r} was trained without classes {recorded}, not {list(cfg.data.forget)}; "
                        "pass a reference retrained on the same splits, or --retrained auto")
    log(f"{flag[2:]}: {spec}", quiet)
    return model.to(device).eval()


def run_audit(models: dict, ds: Dataset, forget, *, device, seed=0, figures=False, quiet=False, null_model=None,
              independent=None, done=None, on_model=None, attacks=False):
    from ..audit import audit_models

    log(f"audit: {', '.join(models)} ...", quiet)
    return audit_models(models, ds, list(forget), device=device, original="original",
                        retrained="retrained" if "retrained" in models else None, seed=seed, figures=figures,
                        quiet=quiet, null_model=null_model, independent=independent, done=done,
                        on_model=on_model, attacks=attacks)
