"""Planted signal: separable forget class -> decoders high; scrubbed to retain-like noise -> near chance."""

import numpy as np
import pytest
import torch

from cnr_fast.audit import probes

FORGET = [2]


def scrub(x, y, rng):
    """Forget-class features replaced by draws that look like the retain classes (no class signal)."""
    x = x.copy()
    f = y == 2
    pool = x[~f]
    x[f] = pool[rng.integers(0, len(pool), f.sum())] + rng.normal(0, 0.1, (f.sum(), x.shape[1]))
    return x


def test_planted_signal_decoders_high(blobs):
    xtr, ytr, xte, yte = blobs
    assert probes.linear_probe(xtr, ytr, xte, yte, FORGET)[0]["forget_acc"] > 0.9
    assert probes.knn_decoder(xtr, ytr, xte, yte, FORGET)["forget_acc"] > 0.9
    assert probes.svm_decoder(xtr, ytr, xte, yte, FORGET)["forget_acc"] > 0.9


def test_scrubbed_decoders_near_chance(blobs):
    xtr, ytr, xte, yte = blobs
    rng = np.random.default_rng(1)
    xtr, xte = scrub(xtr, ytr, rng), scrub(xte, yte, rng)
    # chance for 4 classes is 0.25; a decoder that can only guess stays at or below it
    assert probes.linear_probe(xtr, ytr, xte, yte, FORGET)[0]["forget_acc"] < 0.35
    assert probes.knn_decoder(xtr, ytr, xte, yte, FORGET)["forget_acc"] < 0.35
    assert probes.svm_decoder(xtr, ytr, xte, yte, FORGET)["forget_acc"] < 0.35


def test_probe_scores_equal_sklearn_probe(blobs):
    LogisticRegression = pytest.importorskip("sklearn.linear_model").LogisticRegression
    StandardScaler = pytest.importorskip("sklearn.preprocessing").StandardScaler
    xtr, ytr, xte, yte = blobs
    sc = StandardScaler().fit(xtr)
    ref = LogisticRegression(max_iter=5000).fit(sc.transform(xtr), ytr).predict(sc.transform(xte))
    s, _ = probes.linear_probe(xtr, ytr, xte, yte, FORGET)
    f = yte == 2
    assert s["forget_acc"] == pytest.approx((ref[f] == 2).mean(), abs=1 / f.sum() + 1e-9)
    assert s["overall_acc"] == pytest.approx((ref == yte).mean(), abs=2 / len(yte))


def test_transfer_probe_same_and_other_features(blobs):
    xtr, ytr, xte, yte = blobs
    s, probe = probes.linear_probe(xtr, ytr, xte, yte, FORGET)
    assert probes.transfer_probe(probe, xte, yte, FORGET) == s  # applied to the same features
    perm = np.random.default_rng(0).permutation(xte.shape[1])
    assert probes.transfer_probe(probe, xte[:, perm], yte, FORGET)["forget_acc"] < s["forget_acc"]
    assert np.isnan(probes.transfer_probe(probe, xte[:, :5], yte, FORGET)["forget_acc"])


def test_fewshot_indices_and_curve(blobs):
    xtr, ytr, xte, yte = blobs
    for n in (1, 5, 25):
        idx = probes.fewshot_indices(ytr, FORGET, n, seed=0)
        assert (ytr[idx.numpy()] == 2).sum() == n
        assert (ytr[idx.numpy()] != 2).sum() == (ytr != 2).sum()
    assert torch.equal(probes.fewshot_indices(ytr, FORGET, 5, 3), probes.fewshot_indices(ytr, FORGET, 5, 3))
    assert probes.fewshot_probe(xtr, ytr, xte, yte, FORGET, 25)["forget_acc"] > 0.8


def test_scores_empty_forget():
    s = probes.scores(torch.tensor([0, 1]), torch.tensor([0, 0]), [2])
    assert np.isnan(s["forget_acc"]) and s["overall_acc"] == 0.5
