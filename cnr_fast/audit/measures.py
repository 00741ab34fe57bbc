"""The built-in measures' computes: each reads one model's features and the audit's shared facts from a
`context.MetricContext` and returns the metric's value (a float, or {tap or n: float}). metrics.py
registers each with its definition; audit_models only orchestrates.

Two metrics read from one computation share it through `ctx.shared` (the probe that gives probe_acc and
probe_overall_acc is fitted once), so the numbers are those of the one fit.
"""

from __future__ import annotations

import torch

from ..train import forget_retain_accuracy
from . import cka as _cka
from . import mia as _mia
from . import probes as _probes
from . import relearn as _relearn
from .gradcam import gradcam_overlap as _gradcam_overlap
from .neighbors import nn_purity as _nn_purity
from .selectivity import selectivity_profile


def _accuracy(ctx) -> dict:
    return ctx.shared("accuracy", lambda: forget_retain_accuracy(ctx.model, ctx.ds.test, ctx.forget,
                                                                 device=ctx.device))


def forget_acc(ctx):
    return _accuracy(ctx)["forget_acc"]


def retain_acc(ctx):
    return _accuracy(ctx)["retain_acc"]


def _linear(ctx, tap):
    def fit():
        tr, te = ctx.probe_train, ctx.test
        s, probe = _probes.linear_probe(tr.vec[tap], tr.y, te.vec[tap], te.y, ctx.forget)
        if ctx.name == ctx.audit.original:
            ctx.audit.keep_probe(tap, probe)
        return s
    return ctx.shared(("linear", tap), fit)


def probe_acc(ctx):
    return {t: _linear(ctx, t)["forget_acc"] for t in ctx.taps}


def probe_overall_acc(ctx):
    return {t: _linear(ctx, t)["overall_acc"] for t in ctx.taps}


def transfer_probe_acc(ctx):
    te = ctx.test
    return {t: _probes.transfer_probe(ctx.audit.original_probe(t), te.vec[t], te.y, ctx.forget)["forget_acc"]
            for t in ctx.taps}


def _mlp(ctx, tap):
    from .deep_probes import mlp_probe

    tr, te = ctx.probe_train, ctx.test
    return ctx.shared(("mlp", tap), lambda: mlp_probe(tr.vec[tap], tr.y, te.vec[tap], te.y, ctx.forget,
                                                      seed=ctx.seed))


def mlp_probe_acc(ctx):
    return {t: _mlp(ctx, t)["forget_acc"] for t in ctx.taps}


def mlp_probe_overall_acc(ctx):
    return {t: _mlp(ctx, t)["overall_acc"] for t in ctx.taps}


def _conv(ctx) -> dict:
    """{tap: conv probe result} for the taps with a spatial map."""
    from .deep_probes import conv_probe

    def fit():
        tr, te, reducer, out = ctx.probe_train, ctx.test, ctx.audit.reducer, {}
        for t in ctx.taps:
            maps_tr, maps_te = reducer.maps(tr.vec[t], t), reducer.maps(te.vec[t], t)
            if maps_tr is not None:
                out[t] = conv_probe(maps_tr, tr.y, maps_te, te.y, ctx.forget, seed=ctx.seed)
        return out
    return ctx.shared("conv", fit)


def conv_probe_acc(ctx):
    return {t: r["forget_acc"] for t, r in _conv(ctx).items()}


def conv_probe_overall_acc(ctx):
    return {t: r["overall_acc"] for t, r in _conv(ctx).items()}


def _inversion(ctx) -> dict:
    from .inversion import inversion_attack

    inv = ctx.audit.inversion
    return ctx.shared("inversion", lambda: inversion_attack(ctx.model, inv["judge"], ctx.forget, shape=inv["shape"],
                                                            prior=inv["prior"], seed=ctx.seed, device=ctx.device))


def inversion_judge_rate(ctx):
    return _inversion(ctx)["judge_forget_rate"]


def inversion_audited_confidence(ctx):
    return _inversion(ctx)["audited_confidence"]


def gradcam_overlap(ctx):
    a = ctx.audit
    return _gradcam_overlap(ctx.original, ctx.model, a.x_forget, a.y_forget, a.overlap_tap, device=ctx.device)


def knn_acc(ctx):
    tr, te = ctx.probe_train, ctx.test
    return {t: _probes.knn_decoder(tr.vec[t], tr.y, te.vec[t], te.y, ctx.forget, k=5)["forget_acc"] for t in ctx.taps}


def svm_acc(ctx):
    tr, te = ctx.probe_train, ctx.test
    return {t: _probes.svm_decoder(tr.vec[t], tr.y, te.vec[t], te.y, ctx.forget)["forget_acc"] for t in ctx.taps}


def _cka_on(rows_key):
    def compute(ctx):
        a = ctx.audit
        return _cka.cka_per_tap(a.original_test.full, ctx.test.full, a.cka_rows[rows_key], unbiased=a.cka_unbiased)
    return compute


cka_pos = _cka_on("retain")
cka_neg = _cka_on("forget")


def fewshot_probe_acc(ctx):
    tr, te, deepest = ctx.probe_train, ctx.test, ctx.audit.deepest
    return {str(n): _probes.fewshot_probe(tr.vec[deepest], tr.y, te.vec[deepest], te.y, ctx.forget, n,
                                          seed=ctx.seed)["forget_acc"] for n in ctx.audit.shots}


def _relearned(ctx) -> dict:
    a = ctx.audit
    return ctx.shared("relearn", lambda: {str(n): _relearn.relearn(ctx.model, ctx.ds.train, ctx.ds.test, ctx.forget, n,
                                                                   device=ctx.device, seed=ctx.seed,
                                                                   steps=a.relearn_steps) for n in a.shots})


def relearn_acc(ctx):
    # a reading from an attack that broke the model says nothing about relearning (relearn.valid)
    own = retain_acc(ctx)
    return {n: r["forget_acc"] if _relearn.valid(own, r["retain_acc"]) else None for n, r in _relearned(ctx).items()}


def relearn_retain_acc(ctx):
    return {n: r["retain_acc"] for n, r in _relearned(ctx).items()}


def _membership_logits(ctx):
    tr, te, fte = ctx.probe_train, ctx.test, ctx.forget_test
    ftr = torch.isin(tr.y, torch.as_tensor(ctx.forget))
    return tr, te, ftr, fte


def _population(ctx) -> dict:
    def attack():
        tr, te, ftr, fte = _membership_logits(ctx)
        return _mia.population_attack(tr.logits[~ftr], tr.y[~ftr], te.logits[~fte], te.y[~fte],
                                      tr.logits[ftr], tr.y[ftr], te.logits[fte], te.y[fte], seed=ctx.seed)
    return ctx.shared("population", attack)


def mia_acc(ctx):
    return _population(ctx)["mia_acc"]


def mia_attack_train_acc(ctx):
    return _population(ctx)["attack_train_acc"]


def mia_shadow_acc(ctx):
    tr, te, ftr, fte = _membership_logits(ctx)
    return _mia.shadow_attack(ctx.audit.mia_shadows, tr.logits[ftr], tr.y[ftr], te.logits[fte], te.y[fte],
                              seed=ctx.seed)


def nn_purity_by_layer(ctx):
    def each():
        tr, te, f = ctx.probe_train, ctx.test, ctx.forget_test
        return {t: _nn_purity(tr.vec[t], tr.y, te.vec[t][f], te.y[f], k=10) for t in ctx.taps}
    return ctx.shared("nn_purity", each)


def nn_purity(ctx):
    return nn_purity_by_layer(ctx)[ctx.audit.deepest]


def _selectivity(ctx) -> dict:
    a = ctx.audit
    return ctx.shared("selectivity", lambda: selectivity_profile(
        a.original_means(), {t: ctx.probe_train.class_means(t) for t in ctx.taps}, ctx.forget, a.retain,
        a.selectivity_k))


def selectivity(ctx):
    return _selectivity(ctx)["selectivity"]


def selectivity_delta(ctx):
    return _selectivity(ctx)["selectivity_delta"]
