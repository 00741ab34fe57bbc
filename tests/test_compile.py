"""--compile (torch.compile with Inductor, which compiles for the CPU here) against eager, issue 30.

Every loop --compile reaches goes through `train.fit`: the originals and references, CNR's reset and
stabilisation, ROFT, GAU and KDU (`cnr-fast doctor` and the README list them; the DCGAN, the latent
optimisation and the other baselines run eager). So `fit` is checked here on a tiny BatchNorm net:

- the compiled run's epoch losses and final weights equal eager's within float32 reordering (bound 1e-4
  relative on this budget);
- graphs are compiled once per batch shape, not once per epoch, per step-size candidate (a fresh model
  of the same architecture), per resume, or for a deepcopy of a trained model (torch._dynamo counters);
- a compiled run stopped after an epoch and resumed from its saved state ends as the uninterrupted one;
- fit's check of the compiled gradients against float64 tells round-off from a wrong gradient.

On the default ResNet-18 a whole run compiled does not end where eager ends, and neither does eager with
its inputs moved by 1e-6: training amplifies round-off (Adam turns a near-zero gradient's sign into a
step of size lr). `bench/bench_compile.py` measures both, and the gradients against float64.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn as nn

from cnr_fast.train import ce_loss, fit

CPU = torch.device("cpu")
TOL = 1e-4


def _net():
    torch.manual_seed(0)
    # no conv bias before BatchNorm: its gradient is round-off, which Adam turns into steps of size lr
    # that differ between any two summation orders (eager and compiled alike)
    return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(32, 10))


X = torch.randn(100, 1, 8, 8, generator=torch.Generator().manual_seed(1))
Y = torch.randint(0, 10, (100,), generator=torch.Generator().manual_seed(2))


def _batches(epoch):
    p = torch.randperm(100, generator=torch.Generator().manual_seed(epoch))
    for i in range(0, 100, 32):  # 32, 32, 32 and a last batch of 4: two shapes
        yield X[p[i:i + 32]], Y[p[i:i + 32]]


def _rel(a, b):
    a, b = a.detach().double(), b.detach().double()
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-12))


def _graphs():
    from torch._dynamo.utils import counters

    return counters["stats"]["unique_graphs"]


def _fit(model, epochs, *, compile, **kw):
    return fit(model, epochs, _batches, ce_loss, lr=1e-2, weight_decay=0.0, device=CPU, compile=compile,
               quiet=True, **kw)


@pytest.fixture
def fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def test_compiled_fit_matches_eager_and_compiles_once_per_shape(fresh_dynamo):
    eager = _net()
    h_eager = _fit(eager, 3, compile=False)
    assert _graphs() == 0

    compiled = _net()
    after_epoch = []
    h_comp = _fit(compiled, 3, compile=True, on_epoch_end=lambda e: after_epoch.append(_graphs()) and False)
    assert all(abs(a - b) <= TOL * abs(b) for a, b in zip(h_comp, h_eager)), (h_comp, h_eager)
    sd_e, sd_c = eager.state_dict(), compiled.state_dict()
    for k in sd_e:
        assert _rel(sd_c[k], sd_e[k]) <= TOL, (k, _rel(sd_c[k], sd_e[k]))
    # the batches of 32 and the last of 4: at most one graph each (Inductor may mark the batch dimension
    # dynamic after the second shape and serve both with one), and none after the first epoch
    assert 1 <= after_epoch[0] <= 2 and after_epoch == [after_epoch[0]] * 3, after_epoch

    # the next candidate of a step-size search: a fresh model of the same architecture, another lr
    n = _graphs()
    fit(_net(), 2, _batches, ce_loss, lr=1e-3, weight_decay=0.0, device=CPU, compile=True, quiet=True)
    assert _graphs() == n
    # the drivers' copies: a deepcopy of the trained model trains, compiled, on the same graphs
    clone = copy.deepcopy(compiled)
    _fit(clone, 1, compile=True)
    assert _graphs() == n
    assert any(_rel(clone.state_dict()[k], sd_c[k]) > 0 for k in sd_c)  # it did train


def test_compiled_fit_resumed_after_an_epoch_ends_as_the_uninterrupted_run(fresh_dynamo):
    whole = _net()
    h_whole = _fit(whole, 3, compile=True)
    n = _graphs()

    saved = []
    first = _net()
    _fit(first, 3, compile=True, save_state=lambda s: saved.append(copy.deepcopy(
        {**s, "model": first.state_dict()})), on_epoch_end=lambda e: e == 0)  # stopped after epoch 1
    assert [s["epoch"] for s in saved] == [1]
    resumed = _net()
    resumed.load_state_dict(saved[0]["model"])
    h_resumed = _fit(resumed, 3, compile=True, resume=saved[0])
    assert h_resumed == pytest.approx(h_whole, rel=1e-6)
    for k, v in whole.state_dict().items():
        assert _rel(resumed.state_dict()[k], v) <= 1e-6, k
    assert _graphs() == n  # resuming compiles nothing new


def test_the_gradient_check_tells_round_off_from_a_wrong_compiled_gradient(fresh_dynamo, capsys):
    """fit checks a compiled model's gradients against float64 on its first batch (train.compile_gradient_error):
    the tiny net compiles to round-off; a 'compiler' whose module returns 1.5 times the output (what a
    miscompile looks like: O(1) off, where float32 round-off is at most 1e-2 on a gradient that cancels)
    is caught and said in one warning line, once per model class and shape."""
    from cnr_fast import train as T

    e = T.compile_gradient_error(_net(), X[:32])
    assert e["eager"] < 1e-5 and e["compiled"] < 1e-4, e

    class OffByHalf(nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, x):
            out = self.m(x)
            return out * 1.5  # every gradient 1.5 times the true one: 0.5 off

    bad = T.compile_gradient_error(_net(), X[:32], compiler=OffByHalf)
    assert bad["eager"] == e["eager"] and abs(bad["compiled"] - 0.5) < 1e-3, bad

    T._COMPILE_CHECKED.clear()
    real = T.compile_gradient_error
    try:
        T.compile_gradient_error = lambda m, x: real(m, x, compiler=OffByHalf)
        _fit(_net(), 2, compile=True)
        _fit(_net(), 1, compile=True)
        checks = T.compile_checks()  # what results.json records under compile_checks
        assert len(checks) == 1 and checks[0]["ok"] is False and checks[0]["input"] == [32, 1, 8, 8]
    finally:
        T.compile_gradient_error = real
        T._COMPILE_CHECKED.clear()
    err = capsys.readouterr().err
    assert err.count("warning: --compile") == 1 and "from float64" in err
