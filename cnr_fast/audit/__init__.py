"""The audit: does a model still carry the forgotten class, in its outputs and in its hidden states?

`audit_models(models, ds, forget, device=...)` measures every model on the same splits with the same
feature reduction and returns {"metrics", "references", "definitions", "settings", "timings_s"} (all
JSON-able), with a retrained reference and a null model also "verdict" (verdict.py: where each audited
model stands between the original and the retrained model), plus "_figures" (arrays for the report,
dropped from JSON). `write_report(out_dir, result,
extra)` writes report.md, report.html (figures embedded) and figures/*.png.

Splits, fixed for every model: probe-train = a seeded class-stratified subset of ds.train (at most
`probe_train_size` examples); test = ds.test. Decoders are fitted on probe-train and scored on test.
This package imports models, data, ops, train, runs and errors only: it judges any checkpoint without
knowing which method made it.
"""

from __future__ import annotations

import math
import time

import numpy as np
import torch
from torch import nn

from ..data import Dataset, check_forget, to_float
from ..errors import UserError
from ..models import TAP_NAMES, check_taps
from ..train import resolve_device
from . import cka as _cka
from . import metrics as _metrics
from . import mia as _mia
from . import outputs as _outputs
from . import relearn as _relearn
from .context import AuditPass, MetricContext
from .features import DEFAULT_MAX_DIM, Reducer, extract
from .gradcam import reaches_map
from .selectivity import DEFAULT_K
from .verdict import NULL
from .verdict import verdict as _verdict

SHOTS = (1, 5, 25)
PROBE_TRAIN_SIZE = 2000
CKA_MAX = 1000  # retain (and forget) test examples CKA compares, at most
GRADCAM_TAPS = ("L3", "L4")
GRADCAM_N = 6
OVERLAP_N = 50  # forget test examples the scalar Grad-CAM overlap and the attention-head table use, at most


def probe_train_indices(y: torch.Tensor, size: int, seed: int = 0) -> torch.Tensor:
    """Seeded class-stratified subset of at most `size` indices (every class keeps its share, >= 1)."""
    n = len(y)
    if n <= size:
        return torch.arange(n)
    g = torch.Generator().manual_seed(seed)
    out = []
    for c in torch.unique(y):
        idx = torch.nonzero(y == c).flatten()
        take = max(1, len(idx) * size // n)
        out.append(idx[torch.randperm(len(idx), generator=g)[:take]])
    return torch.cat(out).sort().values


def _say(quiet, msg):
    if not quiet:
        import sys

        print(f"  audit: {msg}", flush=True, file=sys.stderr)


def audit_models(
    models: dict[str, nn.Module],
    ds: Dataset,
    forget: list[int],
    *,
    device="cpu",
    original: str = "original",
    retrained: str | None = None,
    taps=None,
    seed: int = 0,
    figures: bool = True,
    quiet: bool = False,
    probe_train_size: int = PROBE_TRAIN_SIZE,
    reduce: str = "pool",
    max_dim: int = DEFAULT_MAX_DIM,
    shots=SHOTS,
    relearn: bool = True,
    relearn_steps: int = _relearn.RELEARN_STEPS,
    selectivity_k: int = DEFAULT_K,
    mia_shadows: int = 0,
    shadow_train_cfg=None,
    independent=None,
    null_model: nn.Module | None = None,
    cka_unbiased: bool = True,
    done: dict | None = None,
    on_model=None,
    attacks: bool = False,
) -> dict:
    """Audit every model in `models` (the original included, first) on the same splits. See module doc.

    Every measure is a registered Metric (metrics.py) computed from one feature pass per model; this
    function extracts the features, calls each metric's compute and assembles the result.
    mia_shadows > 0 adds "mia_shadow_acc" (shadow-model attack, paper Table 10; each shadow is trained with
    train.train_classifier and `shadow_train_cfg` or TrainConfig defaults). Torch's CPU threads are the
    process's (`--threads`, threads.apply).
    independent: names of models NOT derived from the original (trained from scratch); default
    [retrained]. Their coordinate-bound metrics (transfer probe, selectivity) are left out: units of
    independently trained networks do not correspond. null_model: a second independently trained
    retrained model; with `retrained` it is audited like every model (as "retrained_null", without
    figures) and gives references["cka_null"], CKA(retrained, null_model), and the "verdict".
    done: {name: {"metrics", "time_s"}} of models audited earlier with the same arguments (a resumed
    run): their metrics are taken as they are; only what later models need of them (the original's
    features, the retrained and null models' features) and their figures are computed again.
    on_model(name, {"metrics", "time_s"}) is called as each model's metrics are complete.
    taps: default every tap the original has (L0..L4 for the own archs; a model whose taps were found
    automatically may have fewer). attacks: also the paper's Table 10 attacks the default audit leaves out:
    the MLP and ResNet-based probes per tap (deep_probes.py) and model inversion judged by an independent
    classifier (inversion.py); several seconds per tap and model on a CPU.
    """
    models, independent = _check_models(models, ds, forget, original, retrained, null_model, independent)
    _check_same_taps(models, original, taps)
    a = _audit_pass(models, ds, forget, device=device, original=original, retrained=retrained, taps=taps, seed=seed,
                    probe_train_size=probe_train_size, reduce=reduce, max_dim=max_dim, shots=shots, relearn=relearn,
                    relearn_steps=relearn_steps, selectivity_k=selectivity_k, cka_unbiased=cka_unbiased,
                    attacks=attacks)
    timings: dict[str, float] = {}
    a.mia_shadows = _timed(timings, "mia_shadows", quiet, f"training {mia_shadows} shadow model(s)",
                           lambda: _mia.train_shadows(models[original], ds.train, mia_shadows, device=a.device,
                                                      seed=seed, train_cfg=shadow_train_cfg, quiet=quiet)
                           ) if mia_shadows else None
    if attacks:  # model inversion's independent judge (all classes) and image prior (no forget class), once
        a.inversion = _timed(timings, "inversion_judge", quiet, "model inversion: training the judge",
                             lambda: _inversion_setup(ds, a))
    order = [original] + [n for n in models if n != original]
    plan = _figure_plan(models[original], a) if figures else None
    metrics: dict[str, dict] = {}
    done = dict(done or {})
    for name in order:
        t0 = time.perf_counter()
        model = models[name].to(a.device).eval()
        if name in done:
            metrics[name], timings[name] = dict(done[name]["metrics"]), float(done[name]["time_s"])
            _say(quiet, f"{name}: metrics reused from an interrupted run")
            if name not in (original, retrained, NULL) and not figures:
                continue
        else:
            _say(quiet, f"{name}: features")
        ctx = _features(a, name, model, models[original], name in independent, train=name not in done or
                        name == original)
        if name not in done:
            metrics[name] = _measure(ctx, quiet)
            timings[name] = time.perf_counter() - t0
            if on_model is not None:
                on_model(name, {"metrics": metrics[name], "time_s": timings[name]})
        if figures and name != NULL:
            _figures(plan, timings, name, model, ctx.test, a, quiet)
    out = _result(a, metrics, timings, independent, order, models, mia_shadows)
    if figures:
        out["_figures"] = plan
    return out


def _check_models(models, ds, forget, original, retrained, null_model, independent):
    """(models with the null model added, the names of models trained from scratch)."""
    check_forget(forget, ds)
    if original not in models:
        raise ValueError(f"the original model {original!r} is not among the models {list(models)}")
    if retrained is not None and retrained not in models:
        raise ValueError(f"the retrained model {retrained!r} is not among the models {list(models)}")
    if null_model is not None and retrained is not None:
        if NULL in models:
            raise ValueError(f"{NULL!r} names the null model: give the audited models other names")
        models = {**models, NULL: null_model}
    if independent is None:
        independent = [retrained] if retrained is not None else []
    return models, (set(independent) | ({NULL} & set(models))) - {original}


def _check_same_taps(models, original, taps) -> None:
    """Every model taps the same layers as the original (the audit compares each tap of a model with the same
    tap of the original): a model whose taps resolve to other modules, or lack one, is refused, naming them."""
    from ..models import LogitMask
    from ..models.taps import tap_paths

    def paths(m):
        return tap_paths(m.model if isinstance(m, LogitMask) else m)

    ref = paths(models[original])
    wanted = [t for t in (taps if taps is not None else ref) if t in ref]
    for name, m in models.items():
        if name == original:
            continue
        have = paths(m)
        off = [f"{t} is {have[t]!r} there, {ref[t]!r} in the original" if t in have else f"it has no {t}"
               for t in wanted if have.get(t) != ref[t]]
        if off:
            raise UserError(f"the {name} model does not tap the layers the original does ({'; '.join(off)}); every "
                            "model must be tapped at the same module paths: pass them, e.g. --taps "
                            + ",".join(f"{t}={ref[t]}" for t in wanted) + " (taps= in Python)")


def _audit_pass(models, ds, forget, *, device, original, retrained, taps, seed, probe_train_size, reduce, max_dim,
                shots, relearn, relearn_steps, selectivity_k, cka_unbiased, attacks) -> AuditPass:
    """The splits and rows every model is measured on, fixed before the first model."""
    if taps is None:
        from ..models.taps import tap_modules

        have = tap_modules(models[original])
        taps = [t for t in TAP_NAMES if t in have]
    taps = [t for t in TAP_NAMES if t in list(taps)]  # depth order
    check_taps(list(taps))
    if not taps:
        raise ValueError("no tap to audit")
    device = resolve_device(device) if isinstance(device, str) else device
    forget = sorted(int(c) for c in forget)
    test = ds.test
    fmask_test = torch.isin(test.y, torch.as_tensor(forget))
    g = torch.Generator().manual_seed(seed)
    # CKA_pos and CKA_neg on the same number of examples: CKA estimates depend on N (the biased one
    # strongly: ~0.98 at N=100 vs ~0.87 at N=900 for unrelated ReLU features), so unequal N is unequal footing.
    r_rows, f_rows = torch.nonzero(~fmask_test).flatten(), torch.nonzero(fmask_test).flatten()
    n_cka = min(len(r_rows), len(f_rows), CKA_MAX)
    r_rows = r_rows[torch.randperm(len(r_rows), generator=g)[:n_cka]].sort().values
    f_rows = f_rows[torch.randperm(len(f_rows), generator=g)[:n_cka]].sort().values
    cam_rows = f_rows[torch.randperm(len(f_rows), generator=g)[:GRADCAM_N]].sort().values
    return AuditPass(
        ds=ds, forget=forget, retain=ds.retain_classes(forget), taps=taps, device=device, seed=seed,
        original=original, retrained=retrained, reducer=Reducer(reduce, max_dim, seed),
        probe_train=ds.train.subset(probe_train_indices(ds.train.y, probe_train_size, seed)),
        forget_test=fmask_test, cka_rows={"retain": r_rows, "forget": f_rows, "gradcam": cam_rows},
        x_forget=to_float(test.x[f_rows[:OVERLAP_N]]), y_forget=test.y[f_rows[:OVERLAP_N]],
        # a ViT's last block gives Grad-CAM no patch gradient (gradcam.gradcam_overlap): one tap before the deepest
        overlap_tap="L3" if "L3" in taps else taps[max(0, len(taps) - 2)],
        shots=tuple(shots), selectivity_k=selectivity_k, cka_unbiased=cka_unbiased, relearn=relearn,
        relearn_steps=relearn_steps, attacks=bool(attacks),
        # what the output measures compare with (outputs.py): a seeded incompetent model, the retrained reference
        reference_logits=_outputs.reference_logits(models[original], models[retrained] if retrained else None, test,
                                                   fmask_test, device=device, seed=seed))


def _timed(timings, key, quiet, msg, fn):
    _say(quiet, msg)
    t0 = time.perf_counter()
    out = fn()
    timings[key] = time.perf_counter() - t0
    return out


def _inversion_setup(ds, a: AuditPass) -> dict:
    from . import inversion as _inv

    return {"judge": _inv.train_judge(ds.train, ds.num_classes, seed=a.seed, device=a.device, test=ds.test),
            "prior": _inv.fit_prior(ds.train, exclude=a.forget, seed=a.seed), "shape": tuple(ds.test.x.shape[1:])}


def _features(a: AuditPass, name, model, original, independent: bool, train: bool = True) -> MetricContext:
    """One pass over the model's probe-train (when `train`) and test features; the original's, the retrained
    model's and the null's are kept in `a` for what the later models compare with."""
    tr = extract(model, a.probe_train, device=a.device, taps=a.taps, reducer=a.reducer,
                 num_classes=a.ds.num_classes, class_sums=True) if train else None
    te = extract(model, a.ds.test, device=a.device, taps=a.taps, reducer=a.reducer, keep_full=True)
    if name == a.original:
        a.original_train, a.original_test = tr, te
    if name in (a.retrained, NULL):
        a.reference_full[name] = te.full
    return MetricContext(name=name, model=model, original=original, ds=a.ds, forget=a.forget, taps=list(a.taps),
                         probe_train=tr, test=te, forget_test=a.forget_test, independent=independent,
                         device=a.device, seed=a.seed, retrained=a.retrained, reference_logits=a.reference_logits,
                         audit=a)


def _measure(ctx: MetricContext, quiet) -> dict:
    """Every registered metric this model gets, in the registry's order."""
    m = {}
    for metric in _metrics.REGISTRY.values():
        if (metric.coordinate_bound and ctx.independent) or (metric.requires and not getattr(ctx.audit,
                                                                                             metric.requires)):
            continue
        if metric.stage:
            _say(quiet, f"{ctx.name}: {metric.stage}")
        m[metric.name] = metric.compute(ctx)
    return m


def _result(a: AuditPass, metrics, timings, independent, order, models, mia_shadows) -> dict:
    attention = None
    try:  # ViTs: Table 6's per-head attention on the patches that matter for the forget class
        from .attention import attention_head_table, attention_modules

        attention_modules(models[a.original])
    except UserError:
        pass  # no attention module to read (a CNN)
    else:
        attention = attention_head_table({n: models[n] for n in order}, a.original, a.x_forget, a.y_forget,
                                         device=a.device)
    fmask = a.forget_test
    share = float(torch.isin(a.probe_train.y, torch.as_tensor(a.forget)).float().mean())
    references = {"chance": _metrics.chances(a.ds.num_classes, share), "original": a.original,
                  "retrained": a.retrained, "independent": sorted(independent)}
    if NULL in a.reference_full and a.retrained in a.reference_full:
        references["cka_null"] = {
            k: _cka.cka_per_tap(a.reference_full[a.retrained], a.reference_full[NULL], a.cka_rows[rows],
                                unbiased=a.cka_unbiased) for k, rows in (("pos", "retain"), ("neg", "forget"))}
    if a.retrained is not None:
        references["distance_to_retrained"] = {name: distances(metrics[name], metrics[a.retrained]) for name in metrics}
    settings = {
        "dataset": a.ds.name, "forget": a.forget, "taps": list(a.taps), "seed": a.seed,
        "probe_train_size": len(a.probe_train), "test_size": len(a.ds.test), "deepest_tap": a.deepest,
        "reduction": a.reducer.describe(), "max_dim": a.reducer.max_dim, "shots": list(a.shots),
        "cka_examples": {"retain": len(a.cka_rows["retain"]), "forget": len(a.cka_rows["forget"])},
        "selectivity_k": a.selectivity_k, "gradcam_overlap": {"tap": a.overlap_tap, "examples": len(a.x_forget)},
        "forget_test_size": int(fmask.sum()), "cka_estimator": "unbiased" if a.cka_unbiased else "biased",
        "relearn_steps": a.relearn_steps, "mia_shadows": mia_shadows, "attacks": a.attacks,
        "relearn_lr": _relearn.RELEARN_LR, "device": str(a.device),
    }
    out = {"metrics": metrics, "references": references, "definitions": _metrics.definitions(), "settings": settings,
           "timings_s": timings}
    if attention is not None:
        out["attention_heads"] = attention
    if a.retrained is not None and NULL in metrics:
        out["verdict"] = _verdict(metrics, original=a.original, retrained=a.retrained, null=NULL,
                                  audited=[n for n in order if n not in (a.original, a.retrained, NULL)],
                                  n_forget=int(fmask.sum()), n_retain=int((~fmask).sum()))
    return out


def _figure_plan(original, a: AuditPass) -> dict:
    """The figures' rows and taps (the same for every model) and the arrays the report draws, filled per model."""
    from .embedding import tsne_subsample

    test, cam_rows = a.ds.test, a.cka_rows["gradcam"]
    # Grad-CAM figure taps: those whose map the original's class scores reach (not a ViT's last block)
    x_probe = to_float(test.x[cam_rows[:2]]).to(a.device)
    rows = tsne_subsample(test.y.numpy(), seed=a.seed)
    return {"tsne": {}, "gradcam": {}, "tsne_rows": rows, "tsne_labels": test.y[rows].numpy(), "forget": a.forget,
            "cam_taps": [t for t in GRADCAM_TAPS if t in a.taps and reaches_map(original.to(a.device), x_probe, t)],
            "gradcam_images": test.x[cam_rows].numpy(), "gradcam_labels": test.y[cam_rows].numpy()}


def _figures(figs, timings, name, model, te, a: AuditPass, quiet) -> None:
    _say(quiet, f"{name}: figures")
    t1 = time.perf_counter()
    from .embedding import tsne
    from .gradcam import gradcam

    test, rows, cam_rows = a.ds.test, figs["tsne_rows"], a.cka_rows["gradcam"]
    figs["tsne"][name] = {t: tsne(te.vec[t][rows], seed=a.seed) for t in a.taps}
    x_cam = to_float(test.x[cam_rows]).to(a.device)
    figs["gradcam"][name] = {t: gradcam(model, x_cam, t, test.y[cam_rows].to(a.device)).numpy() for t in figs["cam_taps"]}
    timings[f"{name}:figures"] = time.perf_counter() - t1


def distances(a: dict, b: dict) -> dict:
    """|a - b| per metric; for per-tap / per-n metrics the mean over the keys both hold."""
    out = {}
    for key, va in a.items():
        vb = b.get(key)
        if isinstance(va, dict) and isinstance(vb, dict):
            common = [k for k in va if k in vb and _finite(va[k]) and _finite(vb[k])]
            if common:
                out[key] = float(np.mean([abs(va[k] - vb[k]) for k in common]))
        elif _finite(va) and _finite(vb):
            out[key] = abs(float(va) - float(vb))
    return out


def _finite(v) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(v)


def json_view(result: dict) -> dict:
    """The result without its figure arrays (what results.json holds)."""
    return {k: v for k, v in result.items() if not k.startswith("_")}


def write_report(out_dir, audit_result: dict, extra: dict | None = None) -> list[str]:
    from .report import write_report as _w

    return _w(out_dir, audit_result, extra or {})


__all__ = ["NULL", "audit_models", "distances", "json_view", "probe_train_indices", "write_report"]
