"""Loss-free SSD (ssd-lf, baselines/lfssd.py): parity with the authors' code, and forgetting on digits.

The reference is written from the authors' code: if-loops/selective-synaptic-dampening, README.md
("Implementing LFSSD": in `calc_importance`, `loss = torch.norm(out, p="fro", dim=1).pow(2).mean()` and
`imp.data += p.grad.data.clone().abs()`), on src/ssd.py `ParameterPerturber.calc_importance` and
`modify_weight` and src/forget_full_class_strategies.py `ssd_tuning`, with the loaders of
src/forget_full_class_main.py (test_parity.ref_ssd_loaders, test_parity.ref_modify_weight: written there
from the same code; LFSSD leaves both unchanged). The tiny float64 original and data are test_parity's.
"""

import copy

import torch
from test_forgetting import _check_forgets, digits  # noqa: F401  (tests/ is on sys.path; digits is a fixture)
from test_parity import CPU, FORGET, _max_rel, assert_same_importances, ref_ssd, setup  # noqa: F401

from cnr_fast.data import Split

BATCH = 8  # 16 images a class: every batch of the authors' order holds one class (as in test_parity's SSD tests)
ALPHA, LAMBDA = 1.5, 1.0  # selects 29 of the tiny net's 310 weights (4 classes: I_f / I_D is at most ~4)


def ref_lf_calc_importance(model, dataloader):
    """ParameterPerturber.calc_importance with the README's two LFSSD lines."""
    importances = {k: torch.zeros_like(p) for k, p in model.named_parameters()}
    for batch in dataloader:
        x, _, _ = batch  # (img, label, clabel): LFSSD reads neither label
        model.zero_grad()
        out = model(x)
        loss = torch.norm(out, p="fro", dim=1).pow(2).mean()
        loss.backward()
        for (_, p), (_, imp) in zip(model.named_parameters(), importances.items()):
            if p.grad is not None:
                imp.data += p.grad.data.clone().abs()
    for imp in importances.values():
        imp.data /= float(len(dataloader))
    model.zero_grad(set_to_none=True)
    return importances


def ref_lfssd(original, ds, forget_class, alpha, lam, batch_size):
    """ssd_tuning with LFSSD's importances: eval mode, I_f over forget_train_dl, I_D over full_train_dl."""
    return ref_ssd(original, ds, forget_class, alpha, lam, batch_size, calc_importance=ref_lf_calc_importance)


def test_lfssd_matches_the_authors_code(setup, one_thread):  # noqa: F811  (setup: a fixture)
    from cnr_fast.baselines.lfssd import candidates, lf_importances
    from cnr_fast.baselines.ssd import authors_order, importances

    original, ds = setup
    base = copy.deepcopy(original).eval()
    forget_train, full_train = authors_order(ds.train, FORGET)
    imp_f = lf_importances(base, forget_train, BATCH, CPU)
    imp_d = lf_importances(base, full_train, BATCH, CPU)

    ref, ref_d, ref_f = ref_lfssd(original, ds, FORGET[0], ALPHA, LAMBDA, BATCH)
    names = [n for n, _ in original.named_parameters()]
    assert list(ref_d) == names and len(imp_d) == len(names)
    # 1e-6 of each tensor's largest importance: cnr_fast takes |g| of the float64 gradient cast to float32
    # and sums in float32 (a few float32 eps, 6e-8, per entry); the gradients agree to float64 round-off.
    # Measured: <= 1.3e-7 (importances), <= 1.9e-7 (dampened weights, below).
    assert_same_importances(names, imp_f, ref_f, imp_d, ref_d)

    # What makes it loss-free: the importances read no label (bit for bit with the labels scrambled) ...
    scrambled = Split(forget_train.x, (forget_train.y + 1) % ds.num_classes)
    assert all(torch.equal(a, b) for a, b in zip(lf_importances(copy.deepcopy(base), scrambled, BATCH, CPU), imp_f))
    # ... and they are not SSD's (squared gradients of the CE), which read them
    ssd_f = importances(copy.deepcopy(base), forget_train, BATCH, CPU)
    assert min(_max_rel(a, r) for a, r in zip(ssd_f, ref_f.values())) > 1e-2

    # The order matters (|batch-mean gradient| is not a mean of per-example magnitudes): class-mixed batches
    # (the stored, interleaved order) give a smaller I_D, far beyond the tolerance; so does train mode.
    mixed = lf_importances(copy.deepcopy(original).eval(), ds.train, BATCH, CPU)
    assert max(_max_rel(a, r) for a, r in zip(mixed, ref_d.values())) > 1e-2
    assert sum(float(a.sum()) for a in mixed) < 0.9 * sum(float(r.sum()) for r in ref_d.values())
    train_mode = lf_importances(copy.deepcopy(original).train(), full_train, BATCH, CPU)
    assert max(_max_rel(a, r) for a, r in zip(train_mode, ref_d.values())) > 1e-2

    # End to end (eval mode, the authors' order, dampening), from an original handed over in TRAIN mode so a
    # missing eval() would show. Selection is compared exactly: no entry lies within 1e-4 (relative) of the
    # boundary, far above the 1e-6 importance tolerance, so float32 vs float64 cannot flip one.
    for r_f, r_d in zip(ref_f.values(), ref_d.values()):
        gap = (r_f - ALPHA * r_d).abs() / torch.maximum(r_f, ALPHA * r_d).clamp_min(1e-300)
        assert float(gap.min()) > 1e-4
    ours, info = candidates(copy.deepcopy(original).train(), ds, FORGET, device=CPU, batch_size=BATCH, lam=LAMBDA)(ALPHA)
    n_sel = sum(int((r_f > ALPHA * r_d).sum()) for r_f, r_d in zip(ref_f.values(), ref_d.values()))
    n_total = sum(p.numel() for p in original.parameters())
    assert info == {"dampened_params": n_sel, "total_params": n_total, "alpha": ALPHA, "lambda": LAMBDA,
                    "batch_size": BATCH}
    assert 0 < n_sel < n_total // 2 and not ours.training
    n_shrunk = 0
    for (n, p0), p, pr, r_f, r_d in zip(original.named_parameters(), ours.parameters(), ref.parameters(),
                                        ref_f.values(), ref_d.values()):
        sel = r_f > ALPHA * r_d
        assert torch.equal(p.detach()[~sel], p0.detach()[~sel]), n  # unselected weights untouched
        # selected: 1e-6 relative (p.float() times a float32 beta carrying the importances' float32 error)
        assert torch.allclose(p.detach()[sel], pr.detach()[sel], rtol=1e-6, atol=0), n
        n_shrunk += int((pr.detach()[sel].abs() < p0.detach()[sel].abs()).sum())
    assert n_shrunk > 0  # beta < 1 for some selected weights: the dampening itself is exercised
    for (n, a), b in zip(ours.state_dict().items(), ref.state_dict().values()):
        assert torch.allclose(a, b, rtol=1e-6, atol=0), n  # buffers (BatchNorm statistics) untouched


def test_lfssd_forgets_on_digits_with_alpha_chosen_on_validation(digits):  # noqa: F811  (a fixture)
    """ssd-lf at the authors' lambda 1 and batch 64, alpha chosen on validation from the published 3.5 / 5 /
    10 (and 7.5). Measured (1 thread): alpha 3.5 chosen, 10,928 of 176,258 weights dampened; test forget
    accuracy 1.00 -> 0.00, retain 0.954 -> 0.948. Only the lowest published alpha forgets on 10 classes:
    on validation 5 leaves forget accuracy 0.5, and 7.5 / 10 dampen 271 / 100 weights and forget nothing."""
    cfg, ds, original = digits
    info = _check_forgets("ssd-lf", cfg, ds, original)
    assert set(info["validation"]) == {"alpha=3.5", "alpha=5", "alpha=7.5", "alpha=10"}
    assert info["lambda"] == 1.0 and info["batch_size"] == 64 and info["dampened_params"] > 0
    assert all("dampened_params" in v for v in info["validation"].values())
