import numpy as np
import pytest
import torch

from cnr_fast.audit.mia import attack_features, population_attack


def _logits(n, confident, g):
    y = torch.randint(0, 5, (n,), generator=g)
    z = torch.randn(n, 5, generator=g)
    z[torch.arange(n), y] += 8.0 if confident else 0.5
    return z, y


def test_planted_membership_signal_detected():
    pytest.importorskip("sklearn", reason="the attack model is sklearn's LogisticRegression")
    g = torch.Generator().manual_seed(0)
    m, n = _logits(400, True, g), _logits(400, False, g)
    ti, to = _logits(200, True, g), _logits(200, False, g)
    r = population_attack(*m, *n, *ti, *to)
    assert r["mia_acc"] > 0.85 and r["attack_train_acc"] > 0.85


def test_no_signal_is_near_half():
    pytest.importorskip("sklearn", reason="the attack model is sklearn's LogisticRegression")
    g = torch.Generator().manual_seed(1)
    m, n, ti, to = (_logits(400, True, g) for _ in range(4))
    assert abs(population_attack(*m, *n, *ti, *to)["mia_acc"] - 0.5) < 0.1


def test_logit_mask_minus_inf_is_finite():
    z = torch.randn(6, 4)
    z[:, 2] = float("-inf")
    y = torch.tensor([2, 2, 0, 1, 3, 2])
    f = attack_features(z, y)
    assert np.isfinite(f).all()
    assert f[0, 0] == 100.0  # loss of a masked true class is capped


def test_shadow_attack_runs_and_fresh_copy(tiny_resnet):
    pytest.importorskip("sklearn", reason="the attack model is sklearn's LogisticRegression")
    from cnr_fast.audit.mia import shadow_attack, train_shadows
    from cnr_fast.models import fresh_copy
    from cnr_fast.config import TrainConfig
    from cnr_fast.data import Split
    from cnr_fast.models import LogitMask

    orig = LogitMask(tiny_resnet(), [2])
    fresh = fresh_copy(orig)
    assert not isinstance(fresh, LogitMask)
    assert not torch.equal(fresh.conv1.weight, orig.model.conv1.weight)
    g = torch.Generator().manual_seed(0)
    sp = Split(torch.randint(0, 256, (64, 1, 28, 28), generator=g, dtype=torch.uint8), torch.arange(64) % 10)
    shadows = train_shadows(orig, sp, 1, device="cpu", train_cfg=TrainConfig(epochs=1, batch_size=32))
    assert len(shadows) == 1 and shadows[0][0].shape == (32, 10)
    acc = shadow_attack(shadows, *_logits(50, True, g), *_logits(50, False, g))
    assert 0.0 <= acc <= 1.0
