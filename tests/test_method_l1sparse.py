"""l1-sparse (Jia et al. NeurIPS 2023): parity with the authors' loop, and what it does on digits.

The reference below is written from OPTML-Group/Unlearn-Sparse, not from cnr_fast's module:
unlearn/FT_prune.py (`FT_prune` = `FT_l1`, then a sparsity print), unlearn/FT.py (`l1_regularization`,
`FT_iter(..., with_l1=True)`, CIFAR branch), unlearn/impl.py (`iterative_unlearn`: SGD, MultiStepLR, one
scheduler step an epoch), arg_parser.py (--no-l1-epochs 0, --warmup 0, --batch_size 256, momentum 0.9,
weight decay 5e-4). The tiny float64 original, the data and the shuffle order (drawn from a generator seeded
like cnr_fast's, matched by construction) are tests/test_parity.py's.
"""

import copy

import pytest
import torch
from test_forgetting import FORGET as DIGITS_FORGET
from test_forgetting import digits  # noqa: F401  (the module-scoped fixture)
from test_parity import CPU, FORGET, _impl_setup, _max_rel, assert_same_state, _shuffled_batches, setup  # noqa: F401

from cnr_fast.config import RunConfig

pytestmark = pytest.mark.usefixtures("one_thread")


def ref_l1_regularization(model):
    """unlearn/FT.py: the L1 norm of every parameter, concatenated."""
    params_vec = []
    for param in model.parameters():
        params_vec.append(param.view(-1))
    return torch.linalg.norm(torch.cat(params_vec), ord=1)


def ref_ft_l1(original, ds, alpha, lr, epochs, batch_size, seed, no_l1_epochs=0):
    """iterative_unlearn(FT_l1), CIFAR branch: per epoch model.train(), a pass over the retain loader; the
    epoch's current_alpha = alpha * (1 - epoch / (unlearn_epochs - no_l1_epochs)) while epoch <
    unlearn_epochs - no_l1_epochs, else 0 (the `== 0` branch, constant alpha, is not reached here);
    loss = CE + current_alpha * l1_regularization(model) (`loss +=`), zero_grad, backward, step; the
    scheduler steps after each epoch. Also returns the alphas used, per epoch."""
    model, optimizer, scheduler, criterion, (xr, yr), _, gen = _impl_setup(original, ds, lr, seed)
    used = []
    for epoch in range(epochs):
        model.train()
        for image, target in _shuffled_batches(xr, yr, batch_size, gen):
            if epoch < epochs - no_l1_epochs:
                current_alpha = alpha * (1 - epoch / (epochs - no_l1_epochs))
            elif epochs - no_l1_epochs == 0:
                current_alpha = alpha
            else:
                current_alpha = 0
            output_clean = model(image)
            loss = criterion(output_clean, target)
            loss += current_alpha * ref_l1_regularization(model)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        used.append(current_alpha)
        scheduler.step()
    return model.eval(), used


@pytest.mark.parametrize("alpha,no_l1_epochs", [(1e-3, 0), (3e-2, 1)])
@pytest.mark.parametrize("batch", [256, 7])
def test_l1_sparse_matches_the_authors_ft_l1_loop(setup, alpha, no_l1_epochs, batch):  # noqa: F811
    """Three epochs of FT_l1 against cnr_fast's l1_sparse, float64, the same batches: batch 256 (the
    authors' default; one batch a pass here) and 7 (48 retain examples = 6 x 7 + 6, a short last batch).
    no_l1_epochs 0 is the authors' setting (decay 1, 2/3, 1/3); 1 also checks the schedule's zero branch
    (1, 1/2, then 0). Tolerance 1e-10 of each tensor's largest entry (float64 end to end; the L1 term's
    gradient is alpha_t * sign(theta) in both, only the order of sums may differ). Measured: 0, bit for
    bit, in all four cases. Deliberate changes: the schedule one epoch late (alpha * (1 - (epoch + 1) /
    (epochs + 1))) gives 6.5e-5 to 5.9e-2; the L1 norm over conv / linear weights only (no biases, no
    BatchNorm affine) 2.6e-4 to 0.18; no penalty at all (plain FT) 2.6e-4 to 0.15."""
    from cnr_fast.baselines.l1sparse import l1_sparse

    original, ds = setup
    lr, epochs = 1e-2, 3
    cfg = RunConfig().replace(seed=0)
    ours, info = l1_sparse(copy.deepcopy(original), ds, FORGET, cfg, alpha, device=CPU, quiet=True, lr=lr,
                           epochs=epochs, batch_size=batch, no_l1_epochs=no_l1_epochs)
    ref, used = ref_ft_l1(original, ds, alpha, lr, epochs, batch, seed=0, no_l1_epochs=no_l1_epochs)
    assert_same_state(ours, ref)
    assert info["alpha_schedule"] == pytest.approx(used, rel=1e-12, abs=0)
    assert info["alpha"] == alpha and info["lr"] == lr and len(info["loss"]) == epochs

    # not vacuous: the penalty itself moved the weights far beyond the tolerance (the same loop with
    # alpha 0, plain FT, ends elsewhere), and the run moved them from the original
    plain, _ = ref_ft_l1(original, ds, 0.0, lr, epochs, batch, seed=0)
    assert max(_max_rel(a, b) for a, b in zip(ref.parameters(), plain.parameters())) > 1e-4
    assert max(_max_rel(a, b) for a, b in zip(ref.parameters(), original.parameters())) > 1e-3


def test_l1_sparse_at_the_authors_setting_does_not_forget_a_digit(digits):  # noqa: F811
    """FINDING: at the authors' setting (SGD 0.01, momentum 0.9, weight decay 5e-4, 10 epochs, batch 256,
    decaying L1 with alpha chosen on validation from 1e-6..1e-3) l1-sparse does NOT forget digit 2 on
    sklearn digits: fine-tuning on the retain classes for 50 SGD steps leaves the forget class's test
    accuracy where it was. Measured: test forget 1.00 -> 1.00, retain 0.954 -> 0.969; validation forget
    1.00 for every alpha in the grid, so the rule keeps the first, 1e-6 (run directly, 1e-3 gives test
    forget 1.00 / retain 0.966, and only 1e-2, outside the grid, moves it, to 0.91, retain 0.93). The
    original already fits the retain data (the first epoch's mean loss is 0.019), so the retain gradients
    that fine-tuning-based forgetting relies on are small, and the L1 pull (alpha_t * lr a step) is far
    smaller than at CIFAR-10 scale (about 5 steps an epoch here, not 159). So instead of
    test_forgetting's `_check_forgets` (forget accuracy down by >= 0.5, retain by <= 0.05), which fails
    here, this test measures the same two numbers the same way and asserts what the method does: forget
    accuracy drops by less than 0.5 and retain accuracy holds, at the authors' settings."""
    from cnr_fast import experiments as E
    from cnr_fast.baselines.l1sparse import ALPHA_GRID
    from cnr_fast.train import forget_retain_accuracy

    cfg, ds, original = digits
    a0 = forget_retain_accuracy(original, ds.test, DIGITS_FORGET, device="cpu")
    assert a0["forget_acc"] >= 0.9, a0  # an original that knows the class
    model, info, _, _ = E.unlearn_model("l1-sparse", original, ds, cfg.replace(method="l1-sparse"), device="cpu",
                                        quiet=True)
    a = forget_retain_accuracy(model, ds.test, DIGITS_FORGET, device="cpu")
    assert a0["forget_acc"] - a["forget_acc"] < 0.5, (a0, a)  # the finding: it does not forget
    assert a0["retain_acc"] - a["retain_acc"] <= 0.05, (a0, a)
    assert info["epochs"] == 10 and info["lr"] == 0.01 and info["batch_size"] == 256 and info["no_l1_epochs"] == 0
    assert E.validation_choice(info)["chosen"] in {f"alpha={g:g}" for g in ALPHA_GRID}
    assert info["alpha_schedule"] == pytest.approx([info["alpha"] * (1 - e / 10) for e in range(10)])
