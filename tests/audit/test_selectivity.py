import pytest
import torch

from cnr_fast.audit.selectivity import selectivity_profile, top_units


def test_selectivity_by_hand():
    # 3 classes, 6 units; forget class 0 is selective for units 4 and 5
    means = torch.zeros(3, 6)
    means[0, 4], means[0, 5], means[0, 1] = 5.0, 4.0, 1.0
    means[1, 0] = 2.0
    idx = top_units(means, [0], [1, 2], k=2)
    assert sorted(idx[0].tolist()) == [4, 5]
    erased = means.clone()
    erased[0, 4:] = 0.0
    out = selectivity_profile({"L1": means}, {"L1": erased}, [0], [1, 2], k=2)
    assert out["selectivity_orig"]["L1"] == pytest.approx(4.5)
    assert out["selectivity"]["L1"] == pytest.approx(0.0)
    assert out["selectivity_delta"]["L1"] == pytest.approx(-4.5)
    same = selectivity_profile({"L1": means}, {"L1": means}, [0], [1, 2], k=2)
    assert same["selectivity_delta"]["L1"] == 0.0


def test_k_capped_at_half_the_units():
    assert top_units(torch.randn(3, 6), [0], [1, 2], k=12).shape == (1, 3)
