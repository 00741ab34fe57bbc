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
from ..train import forget_retain_accuracy, resolve_device
from . import cka as _cka
from . import metrics as _metrics
from . import mia as _mia
from . import outputs as _outputs
from . import probes as _probes
from . import relearn as _relearn
from .features import DEFAULT_MAX_DIM, Reducer, extract
from .gradcam import gradcam_overlap, reaches_map
from .neighbors import nn_purity
from .selectivity import DEFAULT_K, selectivity_profile
from .verdict import NULL
from .verdict import verdict as _verdict

SHOTS = (1, 5, 25)
PROBE_TRAIN_SIZE = 2000
CKA_MAX = 1000  # retain (and forget) test examples CKA compares, at most
GRADCAM_TAPS = ("L3", "L4")
GRADCAM_N = 6
OVERLAP_N = 50  # forget test examples the scalar Grad-CAM overlap and the attention-head table use, at most

# trained probes, seconds per tap and model: computed only with attacks=True
DEEP_PROBES = ("mlp_probe_acc", "conv_probe_acc", "mlp_probe_overall_acc", "conv_probe_overall_acc")
# every metric's kind, definition, chance level and coordinate-boundness: the registry (metrics.py)
PER_TAP = tuple(n for n in _metrics.names("per_tap") if _metrics.REGISTRY[n].compute is None)


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
    features and probes, the retrained model's features) and their figures are computed again.
    on_model(name, {"metrics", "time_s"}) is called as each model's metrics are complete.
    taps: default every tap the original has (L0..L4 for the own archs; a model whose taps were found
    automatically may have fewer). attacks: also the paper's Table 10 attacks the default audit leaves out:
    the MLP and ResNet-based probes per tap (deep_probes.py) and model inversion judged by an independent
    classifier (inversion.py); several seconds per tap and model on a CPU.
    """
    if taps is None:
        from ..models.taps import tap_modules

        have = tap_modules(models[original])
        taps = [t for t in TAP_NAMES if t in have]
    taps = [t for t in TAP_NAMES if t in list(taps)]  # depth order
    check_taps(list(taps))
    if not taps:
        raise ValueError("no tap to audit")
    check_forget(forget, ds)
    if original not in models:
        raise ValueError(f"the original model {original!r} is not among the models {list(models)}")
    if retrained is not None and retrained not in models:
        raise ValueError(f"the retrained model {retrained!r} is not among the models {list(models)}")
    device = resolve_device(device) if isinstance(device, str) else device
    if null_model is not None and retrained is not None:
        if NULL in models:
            raise ValueError(f"{NULL!r} names the null model: give the audited models other names")
        models = {**models, NULL: null_model}
    forget = sorted(int(c) for c in forget)
    retain = ds.retain_classes(forget)
    deepest = taps[-1]
    reducer = Reducer(reduce, max_dim, seed)

    pt_idx = probe_train_indices(ds.train.y, probe_train_size, seed)
    probe_train = ds.train.subset(pt_idx)
    test = ds.test
    fmask_test = torch.isin(test.y, torch.as_tensor(forget))
    g = torch.Generator().manual_seed(seed)
    # CKA_pos and CKA_neg on the same number of examples: CKA estimates depend on N (the biased one
    # strongly: ~0.98 at N=100 vs ~0.87 at N=900 for unrelated ReLU features), so unequal N is unequal footing.
    r_rows = torch.nonzero(~fmask_test).flatten()
    f_rows = torch.nonzero(fmask_test).flatten()
    n_cka = min(len(r_rows), len(f_rows), CKA_MAX)
    r_rows = r_rows[torch.randperm(len(r_rows), generator=g)[:n_cka]].sort().values
    f_rows = f_rows[torch.randperm(len(f_rows), generator=g)[:n_cka]].sort().values
    if independent is None:
        independent = [retrained] if retrained is not None else []
    independent = (set(independent) | ({NULL} & set(models))) - {original}
    cam_rows = f_rows[torch.randperm(len(f_rows), generator=g)[:GRADCAM_N]].sort().values
    x_forget, y_forget = to_float(test.x[f_rows[:OVERLAP_N]]), test.y[f_rows[:OVERLAP_N]]
    # a ViT's last block gives Grad-CAM no patch gradient (gradcam.gradcam_overlap): one tap before the deepest
    overlap_tap = "L3" if "L3" in taps else taps[max(0, len(taps) - 2)]
    from .embedding import tsne_subsample

    tsne_rows = tsne_subsample(test.y.numpy(), seed=seed)

    metrics: dict[str, dict] = {}
    timings: dict[str, float] = {}
    shadows = None
    if mia_shadows:
        _say(quiet, f"training {mia_shadows} shadow model(s)")
        t0 = time.perf_counter()
        shadows = _mia.train_shadows(models[original], ds.train, mia_shadows, device=device, seed=seed,
                                     train_cfg=shadow_train_cfg, quiet=quiet)
        timings["mia_shadows"] = time.perf_counter() - t0
    inv = None
    if attacks:  # model inversion's independent judge (all classes) and image prior (no forget class), once
        from . import inversion as _inv

        _say(quiet, "model inversion: training the judge")
        t0 = time.perf_counter()
        inv = {"judge": _inv.train_judge(ds.train, ds.num_classes, seed=seed, device=device, test=test),
               "prior": _inv.fit_prior(ds.train, exclude=forget, seed=seed), "shape": tuple(test.x.shape[1:])}
        timings["inversion_judge"] = time.perf_counter() - t0
    order = [original] + [n for n in models if n != original]
    cam_taps = []
    if figures:  # Grad-CAM figure taps: those whose map the original's class scores reach (not a ViT's last block)
        x_probe = to_float(test.x[cam_rows[:2]]).to(device)
        cam_taps = [t for t in GRADCAM_TAPS if t in taps and reaches_map(models[original].to(device), x_probe, t)]
    figs = {"tsne": {}, "gradcam": {}, "tsne_labels": test.y[tsne_rows].numpy(), "forget": forget,
            "gradcam_images": test.x[cam_rows].numpy(), "gradcam_labels": test.y[cam_rows].numpy()}
    orig = {}
    # what the output measures compare with (outputs.py): a seeded incompetent model, the retrained reference
    ref_logits = _outputs.reference_logits(models[original], models[retrained] if retrained else None, test,
                                           fmask_test, device=device, seed=seed)
    done = dict(done or {})
    need_orig_probes = any(n not in done and n not in independent for n in order[1:])
    for name in order:
        t0 = time.perf_counter()
        model = models[name].to(device).eval()
        if name in done:
            metrics[name] = dict(done[name]["metrics"])
            timings[name] = float(done[name]["time_s"])
            _say(quiet, f"{name}: metrics reused from an interrupted run")
            if name not in (original, retrained, NULL) and not figures:
                continue
            tr = extract(model, probe_train, device=device, taps=taps, reducer=reducer, num_classes=ds.num_classes,
                         class_sums=True)
            te = extract(model, test, device=device, taps=taps, reducer=reducer, keep_full=True)
            if name == original:
                if need_orig_probes:
                    for t in taps:
                        orig.setdefault("probes", {})[t] = _probes.linear_probe(tr.vec[t], tr.y, te.vec[t], te.y,
                                                                                forget)[1]
                orig["full"] = te.full
                orig["means"] = {t: tr.class_means(t) for t in taps}
            if name == retrained:
                orig["retrained_full"] = te.full
            if name == NULL:
                orig["null_full"] = te.full
            if figures and name != NULL:
                _figures(figs, timings, name, model, te, test, cam_rows, tsne_rows, taps, cam_taps, device, seed,
                         quiet)
            del tr, te
            continue
        _say(quiet, f"{name}: features")
        tr = extract(model, probe_train, device=device, taps=taps, reducer=reducer, num_classes=ds.num_classes,
                     class_sums=True)
        te = extract(model, test, device=device, taps=taps, reducer=reducer, keep_full=True)
        m: dict = {}
        m.update(forget_retain_accuracy(model, test, forget, device=device))
        for key in PER_TAP:
            if attacks or key not in DEEP_PROBES:
                m[key] = {}
        _say(quiet, f"{name}: probes")
        for t in taps:
            s, probe = _probes.linear_probe(tr.vec[t], tr.y, te.vec[t], te.y, forget)
            m["probe_acc"][t], m["probe_overall_acc"][t] = s["forget_acc"], s["overall_acc"]
            if name == original:
                orig.setdefault("probes", {})[t] = probe
            if name not in independent:
                m["transfer_probe_acc"][t] = _probes.transfer_probe(orig["probes"][t], te.vec[t], te.y,
                                                                    forget)["forget_acc"]
            m["knn_acc"][t] = _probes.knn_decoder(tr.vec[t], tr.y, te.vec[t], te.y, forget, k=5)["forget_acc"]
            m["svm_acc"][t] = _probes.svm_decoder(tr.vec[t], tr.y, te.vec[t], te.y, forget)["forget_acc"]
            m["nn_purity_by_layer"][t] = nn_purity(tr.vec[t], tr.y, te.vec[t][fmask_test], te.y[fmask_test], k=10)
            if attacks:
                from .deep_probes import conv_probe, mlp_probe

                r = mlp_probe(tr.vec[t], tr.y, te.vec[t], te.y, forget, seed=seed)
                m["mlp_probe_acc"][t], m["mlp_probe_overall_acc"][t] = r["forget_acc"], r["overall_acc"]
                maps_tr, maps_te = reducer.maps(tr.vec[t], t), reducer.maps(te.vec[t], t)
                if maps_tr is not None:
                    r = conv_probe(maps_tr, tr.y, maps_te, te.y, forget, seed=seed)
                    m["conv_probe_acc"][t], m["conv_probe_overall_acc"][t] = r["forget_acc"], r["overall_acc"]
        m["nn_purity"] = m["nn_purity_by_layer"][deepest]
        m["gradcam_overlap"] = gradcam_overlap(models[original], model, x_forget, y_forget, overlap_tap, device=device)
        if inv is not None:
            _say(quiet, f"{name}: model inversion")
            a = _inv.inversion_attack(model, inv["judge"], forget, shape=inv["shape"], prior=inv["prior"], seed=seed,
                                      device=device)
            m["inversion_judge_rate"] = a["judge_forget_rate"]
            m["inversion_audited_confidence"] = a["audited_confidence"]
        m["fewshot_probe_acc"] = {
            str(n): _probes.fewshot_probe(tr.vec[deepest], tr.y, te.vec[deepest], te.y, forget, n, seed=seed)["forget_acc"]
            for n in shots
        }
        if name == original:
            orig["full"] = te.full
            orig["means"] = {t: tr.class_means(t) for t in taps}
        m["cka_pos"] = _cka.cka_per_tap(orig["full"], te.full, r_rows, unbiased=cka_unbiased)
        m["cka_neg"] = _cka.cka_per_tap(orig["full"], te.full, f_rows, unbiased=cka_unbiased)
        if name == retrained:
            orig["retrained_full"] = te.full
        if name == NULL:
            orig["null_full"] = te.full
        if name in independent:
            for key in _metrics.coordinate_bound():
                m.pop(key, None)
        else:
            sel = selectivity_profile(orig["means"], {t: tr.class_means(t) for t in taps}, forget, retain,
                                      selectivity_k)
            m["selectivity"], m["selectivity_delta"] = sel["selectivity"], sel["selectivity_delta"]
        _say(quiet, f"{name}: membership inference")
        ftr = torch.isin(tr.y, torch.as_tensor(forget))
        mia = _mia.population_attack(tr.logits[~ftr], tr.y[~ftr], te.logits[~fmask_test], te.y[~fmask_test],
                                     tr.logits[ftr], tr.y[ftr], te.logits[fmask_test], te.y[fmask_test], seed=seed)
        m["mia_acc"] = mia["mia_acc"]
        m["mia_attack_train_acc"] = mia["attack_train_acc"]
        if shadows is not None:
            m["mia_shadow_acc"] = _mia.shadow_attack(shadows, tr.logits[ftr], tr.y[ftr], te.logits[fmask_test],
                                                     te.y[fmask_test], seed=seed)
        if relearn:
            _say(quiet, f"{name}: relearn attack")
            after = {str(n): _relearn.relearn(model, ds.train, test, forget, n, device=device, seed=seed,
                                              steps=relearn_steps) for n in shots}
            m["relearn_retain_acc"] = {n: a["retain_acc"] for n, a in after.items()}
            # a reading from an attack that broke the model says nothing about relearning (relearn.valid)
            m["relearn_acc"] = {n: a["forget_acc"] if _relearn.valid(m["retain_acc"], a["retain_acc"]) else None
                                for n, a in after.items()}
        extra = _metrics.computed()
        if extra:
            ctx = _metrics.MetricContext(name=name, model=model, original=models[original], ds=ds, forget=forget,
                                         taps=list(taps), probe_train=tr, test=te, forget_test=fmask_test,
                                         independent=name in independent, device=device, seed=seed,
                                         retrained=retrained, reference_logits=ref_logits)
            for metric in extra:
                if not (metric.coordinate_bound and name in independent):
                    m[metric.name] = metric.compute(ctx)
        timings[name] = time.perf_counter() - t0
        if on_model is not None:
            on_model(name, {"metrics": m, "time_s": timings[name]})
        if figures and name != NULL:
            _figures(figs, timings, name, model, te, test, cam_rows, tsne_rows, taps, cam_taps, device, seed,
                         quiet)
        metrics[name] = m
        del tr, te

    attention = None
    try:  # ViTs: Table 6's per-head attention on the patches that matter for the forget class
        from .attention import attention_head_table, attention_modules

        attention_modules(models[original])
    except UserError:
        pass  # no attention module to read (a CNN)
    else:
        _say(quiet, "attention heads")
        attention = attention_head_table({n: models[n] for n in order}, original, x_forget, y_forget, device=device)
    chance = _metrics.chances(ds.num_classes, float(torch.isin(probe_train.y, torch.as_tensor(forget)).float().mean()))
    references = {"chance": chance, "original": original, "retrained": retrained,
                  "independent": sorted(independent)}
    if "null_full" in orig and "retrained_full" in orig:
        references["cka_null"] = {
            "pos": _cka.cka_per_tap(orig["retrained_full"], orig["null_full"], r_rows, unbiased=cka_unbiased),
            "neg": _cka.cka_per_tap(orig["retrained_full"], orig["null_full"], f_rows, unbiased=cka_unbiased),
        }
    if retrained is not None:
        references["distance_to_retrained"] = {
            name: distances(metrics[name], metrics[retrained]) for name in metrics
        }
    settings = {
        "dataset": ds.name, "forget": forget, "taps": list(taps), "seed": seed,
        "probe_train_size": len(probe_train), "test_size": len(test), "deepest_tap": deepest,
        "reduction": reducer.describe(), "max_dim": max_dim, "shots": list(shots),
        "cka_examples": {"retain": len(r_rows), "forget": len(f_rows)}, "selectivity_k": selectivity_k,
        "gradcam_overlap": {"tap": overlap_tap, "examples": len(x_forget)},
        "forget_test_size": int(fmask_test.sum()),
        "cka_estimator": "unbiased" if cka_unbiased else "biased",
        "relearn_steps": relearn_steps, "mia_shadows": mia_shadows, "attacks": bool(attacks),
        "relearn_lr": _relearn.RELEARN_LR, "device": str(device),
    }
    out = {"metrics": metrics, "references": references, "definitions": _metrics.definitions(), "settings": settings,
           "timings_s": timings}
    if attention is not None:
        out["attention_heads"] = attention
    if retrained is not None and NULL in metrics:
        out["verdict"] = _verdict(metrics, original=original, retrained=retrained, null=NULL,
                                  audited=[n for n in order if n not in (original, retrained, NULL)],
                                  n_forget=int(fmask_test.sum()), n_retain=int((~fmask_test).sum()))
    if figures:
        out["_figures"] = figs
    return out


def _figures(figs, timings, name, model, te, test, cam_rows, tsne_rows, taps, cam_taps, device, seed, quiet) -> None:
    _say(quiet, f"{name}: figures")
    t1 = time.perf_counter()
    from .embedding import tsne
    from .gradcam import gradcam

    figs["tsne"][name] = {t: tsne(te.vec[t][tsne_rows], seed=seed) for t in taps}
    x_cam = to_float(test.x[cam_rows]).to(device)
    figs["gradcam"][name] = {
        t: gradcam(model, x_cam, t, test.y[cam_rows].to(device)).numpy() for t in cam_taps
    }
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
