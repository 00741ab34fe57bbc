"""The non-linear probes of paper Table 10 (3-layer MLP, ResNet-based conv net) against independent
computations: scikit-learn's MLPClassifier and LogisticRegression, and tasks built so that only a
non-linear (MLP) or a spatial (conv) decoder can read the class."""

import numpy as np
import pytest
import torch

from cnr_fast.audit import deep_probes

FORGET = [2]


def xor_task(n, seed, margin=0.3):
    """4 classes in 20-d from two XORs of sign pairs: y = 2 [x0 x1 > 0] + [x2 x3 > 0]. Every class has
    the same mean and covariance, so no linear decoder beats chance; the four informative coordinates
    are kept `margin` away from 0 so an MLP can be near-perfect; 16 coordinates are pure noise."""
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 1, (n, 20))
    x[:, :4] = np.sign(x[:, :4]) * (margin + np.abs(x[:, :4]))
    y = 2 * (x[:, 0] * x[:, 1] > 0) + (x[:, 2] * x[:, 3] > 0)
    return x.astype(np.float32), y.astype(np.int64)


def quadrant_maps(n, seed, channels=8, side=16, blob=4, amp=1.5):
    """(n, C, 16, 16) noise maps with one bright blob x blob square (all channels) at a random place
    inside the quadrant of the class (4 classes). Each map gets the same blob mass, so every channel's
    spatial mean has the same distribution in every class: only *where* the blob is tells the class.
    16 > CONV_MAX_SIDE, so the probe's pooling to 8x8 is exercised too."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 4
    x = torch.randn(n, channels, side, side, generator=g)
    half = side // 2
    oy = (y // 2) * half + torch.randint(0, half - blob + 1, (n,), generator=g)
    ox = (y % 2) * half + torch.randint(0, half - blob + 1, (n,), generator=g)
    for i in range(n):
        x[i, :, oy[i]:oy[i] + blob, ox[i]:ox[i] + blob] += amp
    return x, y


def _sk_mlp(xtr, ytr, xte, seed):
    """sklearn's MLP with the probe's first hidden sizes, Adam, early stopping (10% validation, 10
    epochs of patience), on features standardised with probe-train statistics like ours."""
    MLPClassifier = pytest.importorskip("sklearn.neural_network").MLPClassifier
    StandardScaler = pytest.importorskip("sklearn.preprocessing").StandardScaler
    sc = StandardScaler().fit(xtr)
    m = MLPClassifier(hidden_layer_sizes=(256, 128), solver="adam", early_stopping=True, random_state=seed,
                      max_iter=500).fit(sc.transform(xtr), ytr)
    return m.predict(sc.transform(xte))


def _acc(pred, y, forget=2):
    f = y == forget
    return (pred[f] == forget).mean(), (pred == y).mean()


def test_mlp_reads_nonlinear_code_like_sklearn_mlp_and_unlike_logreg():
    LogisticRegression = pytest.importorskip("sklearn.linear_model").LogisticRegression
    xtr, ytr = xor_task(2000, 0)
    xte, yte = xor_task(1000, 1)
    ours = deep_probes.mlp_probe(xtr, ytr, xte, yte, FORGET)
    sk_forget, sk_overall = _acc(_sk_mlp(xtr, ytr, xte, 0), yte)
    lin_forget, lin_overall = _acc(LogisticRegression(max_iter=2000).fit(xtr, ytr).predict(xte), yte)
    # measured: ours 0.996 / 0.998, sklearn MLP 0.987 / 0.994, logistic regression 0.29 / 0.27 (chance 0.25)
    assert ours["forget_acc"] > 0.9 and ours["overall_acc"] > 0.9
    assert sk_forget > 0.9 and sk_overall > 0.9
    assert lin_forget < 0.45 and lin_overall < 0.4
    assert ours["forget_acc"] == pytest.approx(sk_forget, abs=0.1)
    assert ours["overall_acc"] == pytest.approx(sk_overall, abs=0.1)
    assert ours["hidden"] in deep_probes.MLP_HIDDEN and 1 <= ours["epochs"] <= deep_probes.MLP_MAX_EPOCHS


def test_mlp_on_digits_agrees_with_sklearn_mlp():
    datasets = pytest.importorskip("sklearn.datasets")
    train_test_split = pytest.importorskip("sklearn.model_selection").train_test_split
    x, y = datasets.load_digits(return_X_y=True)
    xtr, xte, ytr, yte = train_test_split(x.astype(np.float32), y, test_size=0.4, stratify=y, random_state=0)
    ours = deep_probes.mlp_probe(xtr, ytr, xte, yte, [3])
    sk_forget, sk_overall = _acc(_sk_mlp(xtr, ytr, xte, 0), yte, forget=3)
    # 73 test examples of class 3 (1/73 = 0.014 a step); measured: ours 0.945, sklearn 0.904
    assert sk_forget > 0.85 and ours["forget_acc"] > 0.85
    assert ours["forget_acc"] == pytest.approx(sk_forget, abs=0.1)
    assert ours["overall_acc"] == pytest.approx(sk_overall, abs=0.05)


@pytest.fixture(scope="module")
def quadrants():
    xtr, ytr = quadrant_maps(800, 0)
    xte, yte = quadrant_maps(800, 1)
    return xtr, ytr, xte, yte


def test_conv_probe_reads_spatial_code_that_pooled_logreg_cannot(quadrants):
    LogisticRegression = pytest.importorskip("sklearn.linear_model").LogisticRegression
    xtr, ytr, xte, yte = quadrants
    ours = deep_probes.conv_probe(xtr, ytr, xte, yte, FORGET)
    # independent check that the code is spatial only: channels averaged over space carry no class
    pooled = LogisticRegression(max_iter=2000).fit(xtr.mean((2, 3)).numpy(), ytr.numpy())
    lin_forget, lin_overall = _acc(pooled.predict(xte.mean((2, 3)).numpy()), yte.numpy())
    assert ours["forget_acc"] > 0.9 and ours["overall_acc"] > 0.9
    assert lin_forget < 0.45 and lin_overall < 0.35  # chance 0.25
    assert ours["hidden"] in deep_probes.CONV_WIDTHS


def test_conv_probe_shuffled_labels_control(quadrants):
    """Train labels permuted: the maps no longer say anything about the label, so the probe must fall to
    chance. The fit does not depend on `forget`, so the mean of forget_acc over the four choices of
    forget class is the mean per-class recall, here (balanced test set) overall_acc: that is the chance
    check. forget_acc for one class alone is not: a probe stopped early on noise may label most maps
    with one class (measured: 0.89 of the class-2 maps labelled 2 at overall 0.26)."""
    xtr, ytr, xte, yte = quadrants
    perm = torch.randperm(len(ytr), generator=torch.Generator().manual_seed(0))
    s = deep_probes.conv_probe(xtr, ytr[perm], xte, yte, FORGET)
    assert abs(s["overall_acc"] - 0.25) < 0.1


def test_conv_probe_scrubbed_forget_class_control(quadrants):
    """Forget-class maps replaced (train and test) by copies of retain maps plus a little noise: what
    made class 2 readable is gone, the rest is intact; the probe must stop labelling them 2 (as the
    scrubbed control of test_probes.py for the linear decoders)."""
    xtr, ytr, xte, yte = quadrants
    g = torch.Generator().manual_seed(1)

    def scrub(x, y):
        x, f = x.clone(), y == 2
        pool = x[~f]
        x[f] = pool[torch.randint(0, len(pool), (int(f.sum()),), generator=g)]
        x[f] += 0.1 * torch.randn(x[f].shape, generator=g)
        return x

    s = deep_probes.conv_probe(scrub(xtr, ytr), ytr, scrub(xte, yte), yte, FORGET)
    assert s["forget_acc"] < 0.35  # chance 0.25; the retain classes stay readable
    assert s["overall_acc"] > 0.6  # 3 of 4 classes still near-perfect


def test_same_seed_same_result_and_caller_rng_untouched(blobs):
    xtr, ytr, xte, yte = blobs
    maps_tr, maps_ytr = quadrant_maps(160, 2, channels=4, side=8, blob=2)
    maps_te, maps_yte = quadrant_maps(80, 3, channels=4, side=8, blob=2)
    torch.manual_seed(1234)
    state = torch.get_rng_state()
    a = deep_probes.mlp_probe(xtr, ytr, xte, yte, FORGET, seed=3)
    c = deep_probes.conv_probe(maps_tr, maps_ytr, maps_te, maps_yte, FORGET, seed=3, max_epochs=5)
    assert torch.equal(torch.get_rng_state(), state)
    assert deep_probes.mlp_probe(xtr, ytr, xte, yte, FORGET, seed=3) == a
    assert deep_probes.conv_probe(maps_tr, maps_ytr, maps_te, maps_yte, FORGET, seed=3, max_epochs=5) == c
    assert torch.equal(torch.get_rng_state(), state)
    assert a["forget_acc"] > 0.9  # the blobs are linearly separable: an MLP reads them too


def test_single_hidden_pair_disables_the_choice(blobs):
    xtr, ytr, xte, yte = blobs
    s = deep_probes.mlp_probe(xtr, ytr, xte, yte, FORGET, hidden=(32, 16))
    assert s["hidden"] == (32, 16) and s["forget_acc"] > 0.9


def test_stratified_split():
    """The probes hold out validation with the project's split (cnr_fast.data.stratified_split)."""
    from cnr_fast.data import stratified_split

    y = np.repeat(np.arange(3), [50, 10, 1])
    fit, val = stratified_split(y, 0.2, seed=0)
    assert len(np.intersect1d(fit, val)) == 0 and len(fit) + len(val) == len(y)
    assert [int((y[val] == c).sum()) for c in range(3)] == [10, 2, 0]  # the lone example stays in fit
    assert np.array_equal(stratified_split(y, 0.2, seed=0)[1], val)
    assert not np.array_equal(stratified_split(y, 0.2, seed=1)[1], val)
    assert deep_probes.stratified_split is stratified_split


def test_pool_maps_caps_side():
    assert deep_probes.pool_maps(torch.zeros(2, 8, 28, 28)).shape == (2, 8, 8, 8)
    assert deep_probes.pool_maps(torch.zeros(2, 32, 7, 7)).shape == (2, 32, 7, 7)
    assert deep_probes.pool_maps(np.zeros((2, 64, 4, 4))).dtype == torch.float32
    with pytest.raises(ValueError):
        deep_probes.pool_maps(torch.zeros(2, 64))
