"""Bad Teacher (Chundawat et al. AAAI 2023): parity with a loop written from the authors' code, and forgetting
on sklearn digits.

The reference is vikram2000b/bad-teaching-unlearning: dataset.py `UnLearningData` (forget images flagged 1
first, then the retain images flagged 0), unlearn.py `UnlearnerLoss` (flag-mixed softmax targets of the two
teachers at temperature T, `F.kl_div` with its default "mean" reduction), `unlearning_step` (teachers under
no_grad, zero_grad / backward / step a batch), `blindspot_unlearner` (both teachers .eval(), DataLoader
shuffle=True, the student's mode untouched: train mode, as a freshly built module), and the notebook
CIFARSuper20_Rocket_Unlearn.ipynb (Adam, `random.sample(retain_train, int(0.3*len(retain_train)))`).
Matched by construction, not the authors' detail (see tests/test_parity.py's docstring): the retain subset
and each epoch's shuffle are drawn from a generator seeded like cnr_fast's, in cnr_fast's order (subset
first, then one permutation a pass), and the incompetent teacher's fresh weights come from the same seed
(the authors build `ResNet18(pretrained=False)`; here the architecture is re-initialised layer by layer).
"""

import copy
import warnings

import pytest
import torch
import torch.nn.functional as F
from test_forgetting import FORGET as DIGITS_FORGET
from test_forgetting import _check_forgets, digits, threads  # noqa: F401  (digits: the fixture)
from test_parity import CPU, FORGET, _max_rel, _retain_forget, _shuffled_batches, setup  # noqa: F401

from cnr_fast import experiments as E
from cnr_fast.config import RunConfig
from cnr_fast.references import derive_seed
from cnr_fast.train import forget_retain_accuracy

pytestmark = pytest.mark.usefixtures("one_thread")


def ref_unlearner_loss(output, labels, full_teacher_logits, unlearn_teacher_logits, KL_temperature):
    """unlearn.py UnlearnerLoss, as written there."""
    labels = torch.unsqueeze(labels, dim=1)
    f_teacher_out = F.softmax(full_teacher_logits / KL_temperature, dim=1)
    u_teacher_out = F.softmax(unlearn_teacher_logits / KL_temperature, dim=1)
    overall_teacher_out = labels * u_teacher_out + (1 - labels) * f_teacher_out
    student_out = F.log_softmax(output / KL_temperature, dim=1)
    with warnings.catch_warnings():  # torch warns that "mean" divides by the classes too: that is their loss
        warnings.simplefilter("ignore")
        return F.kl_div(student_out, overall_teacher_out)


def ref_fresh(original, seed):
    """The incompetent teacher: the same architecture with fresh initial weights (each layer's default
    initialisation, BatchNorm statistics at 0 / 1), eval mode."""
    model = copy.deepcopy(original)
    torch.manual_seed(seed)
    for m in model.modules():
        if hasattr(m, "reset_parameters"):
            m.reset_parameters()
    return model.eval()


def ref_bad_teacher(original, ds, lr, epochs, batch_size, seed, KL_temperature=1, share=0.3, student_train=True,
                    loss=ref_unlearner_loss):
    (xr, _), (xf, _) = _retain_forget(ds)
    gen = torch.Generator().manual_seed(seed)
    # retain_train_subset = random.sample(retain_train, int(0.3*len(retain_train)))
    subset = torch.randperm(len(xr), generator=gen)[: int(share * len(xr))]
    # UnLearningData(forget_data=forget_train, retain_data=retain_train_subset): forget first, y = 1; retain y = 0
    x = torch.cat([xf, xr[subset]])
    y = torch.cat([torch.ones(len(xf), dtype=torch.long), torch.zeros(len(subset), dtype=torch.long)])
    with torch.random.fork_rng(devices=[]):
        unlearning_teacher = ref_fresh(original, derive_seed(seed, "bad-teacher"))
    full_trained_teacher = copy.deepcopy(original).eval()
    model = copy.deepcopy(original).train(student_train)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    for _epoch in range(epochs):  # blindspot_unlearner -> unlearning_step
        for xb, yb in _shuffled_batches(x, y, batch_size, gen):
            with torch.no_grad():
                full_teacher_logits = full_trained_teacher(xb)
                unlearn_teacher_logits = unlearning_teacher(xb)
            output = model(xb)
            optimizer.zero_grad()
            loss(output, yb, full_teacher_logits, unlearn_teacher_logits, KL_temperature).backward()
            optimizer.step()
    return model.eval(), unlearning_teacher


def _gap(ours, ref):
    """Largest relative difference over the floating-point state (exact equality for the rest)."""
    gap = 0.0
    for (n, a), b in zip(ours.state_dict().items(), ref.state_dict().values()):
        if a.is_floating_point():
            gap = max(gap, _max_rel(a, b))
        else:
            assert torch.equal(a, b), n
    return gap


@pytest.mark.parametrize("lr", [1e-2, 2.2e-3])
@pytest.mark.parametrize("batch", [256, 7])
def test_bad_teacher_matches_the_authors_loop(setup, lr, batch):  # noqa: F811  (setup: the fixture)
    """Two epochs of blindspot_unlearner against cnr_fast's bad_teacher, float64, the same batches and
    teachers: batch 256 (the authors', one batch a pass: 16 forget + int(0.3 * 48) = 14 retain images) and
    7 (4 x 7 + 2, mixed forget / retain batches). Tolerance 1e-10 of each tensor's largest entry (only the order
    of sums may differ; measured: 0, bit for bit). Each deliberate change in the reference, measured at
    lr 1e-2 / 2.2e-3, batch 7 (batch 256): T 2 instead of 1 gives 0.13 / 0.023 (0.06 / 0.013), a 40% retain
    share 0.19 / 0.07, the student in eval mode 0.34 / 0.11 (weights), another seed 0.22 / 0.068, "batchmean"
    instead of kl_div's "mean" 9e-6 / 2e-6 (7e-5 / 1.5e-5: Adam all but cancels a constant loss scale)."""
    from cnr_fast.baselines.badteacher import bad_teacher

    original, ds = setup
    cfg = RunConfig().replace(seed=0)
    ours, info = bad_teacher(copy.deepcopy(original), ds, FORGET, cfg, lr, device=CPU, quiet=True, epochs=2,
                             batch_size=batch)
    ref, ref_teacher = ref_bad_teacher(original, ds, lr, 2, batch, seed=0)
    gap = _gap(ours, ref)
    assert gap < 1e-10, gap
    assert max(_max_rel(a, b) for a, b in zip(ref.parameters(), original.parameters())) > 1e-3  # it moved
    assert info["forget_used"] == 16 and info["retain_used"] == 14 and len(info["loss"]) == 2
    assert info["kl_temperature"] == 1 and info["retain_share"] == 0.3 and info["teacher_not_reset"] == []

    # the incompetent teacher: every tensor fresh (none left at the original's value), BatchNorm statistics
    # at a new model's 0 / 1, frozen, eval mode, and it knows nothing of the classes
    from cnr_fast.baselines.badteacher import incompetent_teacher

    teacher, left = incompetent_teacher(original, derive_seed(0, "bad-teacher"), CPU)
    assert left == [] and not teacher.training and not any(p.requires_grad for p in teacher.parameters())
    for (n, t), r, o in zip(teacher.state_dict().items(), ref_teacher.state_dict().values(),
                            original.state_dict().values()):
        assert torch.equal(t, r), n
        if t.is_floating_point():
            assert not torch.equal(t, o), n
        if "running_mean" in n or "running_var" in n:
            assert torch.equal(t, torch.full_like(t, 0.0 if "mean" in n else 1.0)), n
    (x, y), _ = _retain_forget(ds)
    with torch.no_grad():
        assert float((teacher(x).argmax(1) == y).double().mean()) < 0.5
        assert float((original(x).argmax(1) == y).double().mean()) > 0.6

    # the check can fail: the authors' loop with another temperature lands elsewhere
    if batch == 7:
        other, _ = ref_bad_teacher(original, ds, lr, 2, batch, seed=0, KL_temperature=2)
        assert _gap(ours, other) > 1e-4


def test_bad_teacher_forgets_on_digits_with_the_step_chosen_on_validation(digits):  # noqa: F811
    """At the authors' setting (Adam, 1 epoch, batch 256, T 1, 30% of the retain set), lr chosen on
    validation from LR_GRID (1e-4 .. 1e-2, the authors' run to their code's default). Measured at 1 thread:
    lr 2.2e-3 chosen; test forget 1.00 -> 0.03, retain 0.954 -> 0.960.

    Finding: at the authors' lr 1e-4 it does not forget here (test forget 1.00 -> 0.94): one epoch of the
    digits is 2 Adam steps (128 forget + 350 retain images), against 60 on CIFAR-100 at their scale."""
    from cnr_fast.baselines.badteacher import bad_teacher

    cfg, ds, original = digits
    info = _check_forgets("bad-teacher", cfg, ds, original)
    assert E.validation_choice(info)["chosen"].startswith("lr=")
    assert info["epochs"] == 1 and info["batch_size"] == 256 and info["kl_temperature"] == 1
    assert info["retain_share"] == 0.3 and info["lr"] in (1e-4, 4.6e-4, 2.2e-3, 1e-2)
    with threads(1):
        a0 = forget_retain_accuracy(original, ds.test, DIGITS_FORGET, device="cpu")
        model, _ = bad_teacher(original, ds, DIGITS_FORGET, cfg, 1e-4, device="cpu", quiet=True)
        a = forget_retain_accuracy(model, ds.test, DIGITS_FORGET, device="cpu")
    assert a0["forget_acc"] - a["forget_acc"] < 0.5, (a0, a)
