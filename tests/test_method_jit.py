"""JiT (Foster, Schoepf, Brintrup 2024): parity with the authors' loop and what it does on digits.

The reference is written from jwf40/Information-Theoretic-Unlearning: src/lipschitz.py (`AddGaussianNoise`,
`Lipschitz.modify_weight`), src/forget_full_class_strategies.py (`lipschitz_forgetting`: the SGD it hands
over, the parameters) and src/forget_full_class_main.py (`forget_train_dl = DataLoader(forget_train,
batch_size)`, built by `build_retain_forget_sets` exactly as in the SSD repository, so test_parity's
`ref_ssd_loaders` builds it; the model is freshly constructed and never put in eval mode). The authors
draw the noise from the global RNG (`torch.randn(tensor.size())`); the reference draws it from a generator
seeded like cnr_fast's, in the same order (per batch, per noisy copy), to make a weight-for-weight
comparison possible: matched by construction, not an authors' detail.
"""

import copy

import pytest
import torch
from test_forgetting import FORGET as DIGITS_FORGET
from test_forgetting import digits, threads  # noqa: F401  (digits is a fixture)
from test_parity import CPU, FORGET, _max_rel, assert_same_state, ref_ssd_loaders, setup  # noqa: F401  (setup is a fixture)

from cnr_fast import experiments as E
from cnr_fast.config import RunConfig
from cnr_fast.train import forget_retain_accuracy
from cnr_fast.tuning import applied_choice

pytestmark = pytest.mark.usefixtures("one_thread")


class RefAddGaussianNoise:
    """lipschitz.py AddGaussianNoise(mean, std): x + randn * std + mean, clamped to the tensor's own min / max
    (the whole batch's). The v2.ToTensor() after it in `self.transforms` passes a tensor through unchanged."""

    def __init__(self, mean, std, gen):
        self.std, self.mean, self.gen = std, mean, gen

    def __call__(self, tensor):
        _max, _min = tensor.max(), tensor.min()
        tensor = tensor + torch.randn(tensor.size(), generator=self.gen) * self.std + self.mean
        return torch.clamp(tensor, min=_min, max=_max)


def ref_jit(original, ds, forget_class, lr, sigma, n_samples, batch_size, seed, accumulate=True, train_mode=True):
    """lipschitz_forgetting -> Lipschitz.modify_weight: SGD(lr) on all parameters, zero_grad once, then for each
    forget batch: out = model(x); for N copies, out2 = model(noisy x) under no_grad, K = |sum(||out - out2|| /
    ||x - x2||)|; loss = sum K / N; backward; step (no zero_grad in the loop). The model is in train mode (a
    fresh module). accumulate / train_mode False are counterfactuals, to show the comparison would see them."""
    model = copy.deepcopy(original).train(train_mode)
    opt = torch.optim.SGD(model.parameters(), lr=lr)  # forget_full_class_strategies.py, handed over as self.opt
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)  # modify_weight's own
    transforms = RefAddGaussianNoise(0.0, sigma, torch.Generator().manual_seed(seed))
    forget_dl, _ = ref_ssd_loaders(ds, forget_class, batch_size)
    opt.zero_grad()
    for x, _, y in forget_dl:
        image = x.unsqueeze(0) if x.dim() == 3 else x
        out = model(image)
        loss = torch.tensor(0.0)
        for _ in range(n_samples):
            img2 = transforms(copy.deepcopy(x))
            image2 = img2.unsqueeze(0) if img2.dim() == 3 else img2
            with torch.no_grad():
                out2 = model(image2)
            flatimg, flatimg2 = image.view(image.size()[0], -1), image2.view(image2.size()[0], -1)
            in_norm = torch.linalg.vector_norm(flatimg - flatimg2, dim=1)
            out_norm = torch.linalg.vector_norm(out - out2, dim=1)
            loss = loss + ((out_norm / in_norm).sum()).abs()
        loss = loss / n_samples
        if not accumulate:
            optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


def _worst(a, b):
    return max(_max_rel(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values())
               if x.is_floating_point())


LR, SIGMA = 1e-2, 0.5


@pytest.mark.parametrize("batch", [128, 6])
def test_jit_matches_the_authors_modify_weight(setup, batch):
    """The authors' loop against cnr_fast's, float64, 25 noisy copies, the same noise: batch 128 (the authors'
    default: the 16 forget images in one step) and 6 (three steps, 6 + 6 + 4, so the gradients the authors
    never zero accumulate from step to step). The original is handed over in eval mode; the authors' model
    is in train mode, so a missing .train() would show. Tolerance 1e-10 of each tensor's largest entry (only
    the order of sums may differ; measured: 0, bit for bit); buffers (BatchNorm's running statistics, updated by
    all 26 forwards a batch) are compared too. Measured counterfactuals: eval mode 0.4 / 0.85, zeroing the
    gradients each step 7e-3, another noise seed 2e-2 / 6e-2; the weights move by 6e-3 / 1e-2."""
    from cnr_fast.baselines.jit import jit

    original, ds = setup
    cfg = RunConfig().replace(seed=0)
    ours, info = jit(copy.deepcopy(original).eval(), ds, FORGET, cfg, LR, SIGMA, device=CPU, quiet=True,
                     batch_size=batch, noise_unit=1.0)
    ref = ref_jit(original, ds, FORGET[0], LR, SIGMA, 25, batch, seed=0)
    assert_same_state(ours, ref, 1e-10)
    assert len(info["loss"]) == (1 if batch == 128 else 3) and info["n_samples"] == 25
    assert max(_max_rel(a, b) for a, b in zip(ref.parameters(), original.parameters())) > 1e-3  # it moved
    # what the comparison would catch: eval mode, and (with several steps) zeroing the gradients each step
    assert _worst(ours, ref_jit(original, ds, FORGET[0], LR, SIGMA, 25, batch, 0, train_mode=False)) > 1e-3
    if batch == 6:
        assert _worst(ours, ref_jit(original, ds, FORGET[0], LR, SIGMA, 25, batch, 0, accumulate=False)) > 1e-3


def test_jit_run_applies_a_grid_candidate_on_the_authors_scale(setup):
    """run() with the candidate lr 3e-4, sigma 0.5 (the authors' VGG full-class setting) is the authors' loop
    at batch 128 with sigma given in their units: normalised by CIFAR_STD (src/datasets.py), i.e. on our [-1, 1]
    images a noise std of 0.5 x 2 x mean(CIFAR_STD)."""
    from cnr_fast.baselines.jit import run

    original, ds = setup
    cifar_std = (0.2673342858792401, 0.2564384629170883, 0.27615047132568404)  # src/datasets.py CIFAR_STD
    std = 0.5 * 2 * sum(cifar_std) / 3
    with applied_choice("lr=0.0003,sigma=0.5"):
        ours, info = run(copy.deepcopy(original), ds, FORGET, RunConfig().replace(seed=0), device=CPU, quiet=True)
    ref = ref_jit(original, ds, FORGET[0], 3e-4, std, 25, 128, seed=0)
    assert_same_state(ours, ref, 1e-10)  # as above (measured: 0)
    assert info["lr"] == 3e-4 and info["sigma"] == 0.5 and info["chosen_on_validation"] == "lr=0.0003,sigma=0.5"


def test_jit_on_digits_at_the_authors_setting(digits):
    """JiT as registered (lr x sigma chosen on validation over the authors' range) on digits, forget class 2.

    FINDING: JiT does not forget the class here. Validation keeps lr 3e-4, sigma 0.5, the authors' own VGG
    full-class setting: retain accuracy holds but the forget class is only partly forgotten (measured, test
    split: forget 1.00 -> 0.66, retain 0.954 -> 0.938), short of the suite's drop of 0.5. Every candidate of
    the grid that does forget on validation costs retain accuracy beyond the rule's margin (e.g. lr 3e-4 with
    sigma 0.1: val forget 0.14, retain 0.86 from 0.98; larger lrs collapse the model). So the test asserts the
    partial forgetting and that the trade-off is the method's, not the search's."""
    cfg, ds, original = digits
    with threads(1):
        a0 = forget_retain_accuracy(original, ds.test, DIGITS_FORGET, device="cpu")
        assert a0["forget_acc"] >= 0.9, a0
        model, info, _, _ = E.unlearn_model("jit", original, ds, cfg.replace(method="jit"), device="cpu", quiet=True)
        a = forget_retain_accuracy(model, ds.test, DIGITS_FORGET, device="cpu")
    choice = E.validation_choice(info)
    assert len(choice["validation"]) == 16 and choice["rule"]["within_margin"]
    assert (info["lr"], info["sigma"], info["n_samples"], info["batch_size"]) == (3e-4, 0.5, 25, 128)
    assert a0["retain_acc"] - a["retain_acc"] <= 0.05, (a0, a)
    assert 0.2 <= a0["forget_acc"] - a["forget_acc"] < 0.5, (a0, a)  # partial forgetting (the finding)
    # no candidate forgets half the class on validation while keeping retain accuracy within the margin
    rule = choice["rule"]
    for name, t in choice["validation"].items():
        if rule["original_val_forget_acc"] - t["val_forget_acc"] >= 0.5:
            assert t["val_retain_acc"] < rule["original_val_retain_acc"] - rule["retain_margin"], (name, t, rule)
