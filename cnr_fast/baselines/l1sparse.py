"""l1-sparse: fine-tune on the retain data with an L1 penalty on the weights whose strength decays linearly
over the epochs (Jia et al. NeurIPS 2023, "Model Sparsity Can Simplify Machine Unlearning": sparsity-aware
unlearning, "l1-sparse" in SalUn's tables).

As in OPTML-Group/Unlearn-Sparse (the authors' code; the same loop ships in OPTML-Group/Unlearn-Saliency,
Classification/unlearn/FT.py, whose l1-sparse README command is the same): the README's l1-sparse command
runs `--unlearn FT_prune`, and unlearn/FT_prune.py only calls `FT_l1` (then prints the conv weights'
sparsity and the test accuracy: no pruning, no mask on a dense original). `FT_l1` is unlearn/FT.py's
`FT_iter(..., with_l1=True)` under unlearn/impl.py's `iterative_unlearn`:

- each epoch one pass over the retain loader only (`data_loaders["retain"]`), train mode;
- loss = CE(retain batch) + alpha_t * ||theta||_1, where ||theta||_1 is `l1_regularization(model)`, the L1
  norm of ALL of `model.parameters()` concatenated (BatchNorm affine and biases included);
- alpha_t = alpha * (1 - epoch / (unlearn_epochs - no_l1_epochs)) while epoch < unlearn_epochs -
  no_l1_epochs, else 0 (FT.py, CIFAR branch). `no_l1_epochs` is arg_parser.py's `--no-l1-epochs`
  (default 0; argparse turns the dashes into `args.no_l1_epochs`, so FT.py's read is defined; added with
  the schedule in commit 6c1ba03 "Add l1 scheduler and imagenet"; Unlearn-Saliency's
  Classification/arg_parser.py has the same flag and default). No command sets it, so it is 0: alpha_t =
  alpha * (1 - epoch / 10), from alpha in the first epoch to alpha / 10 in the last (never 0);
- SGD(lr, momentum 0.9, weight decay 5e-4) (impl.py; arg_parser.py --momentum, --weight_decay), MultiStepLR
  at 91 / 136 (arg_parser.py --decreasing_lr, never reached in 10 epochs), no warmup (--warmup 0), batch
  256 (--batch_size), lr 0.01 and 10 epochs (the README's l1-sparse command: --unlearn_lr 0.01
  --unlearn_epochs 10).

Those values were set for CIFAR-10 with ResNet-18 (4,500 random forget examples in the README command;
class-wise forgetting in the paper), with the authors' training-time augmentation (random crop + flip,
dataset.py) on the retain loader, which our data pipeline does not apply.

alpha is left open by the authors: the README commands (both repositories) pass `--alpha ${alpha}`;
arg_parser.py's default 0.2 is the shared `--alpha` ("unlearn noise") of the Fisher / IU baselines, not an
L1 strength. The only concrete value run with the authors' FT_prune code that the search tools found is
1e-4 (JingWu321/Scissorhands, Classification/sh/main_0.2_cifar10.sh and main_0.5_cifar10.sh, l1_sparse:
`--alpha 0.0001 --unlearn_lr 0.01 --unlearn_epochs 10`, CIFAR-10 / ResNet-18; the same 1e-4 for SVHN and
CelebA-HQ there), a third party's choice, not the authors'. So alpha is chosen on validation
(tuning.select_on_validation) from ALPHA_GRID: four decade steps around that 1e-4, from 1e-6 to 1e-3. The
upper decade is there because the penalty's pull per weight is alpha_t * lr per SGD step and our datasets
give far fewer steps than CIFAR-10's (40,500 retain images / 256 = 159 a epoch; digits: 1,167 / 256 = 5),
so the same alpha shrinks the weights far less here. The papers' appendices (where a searched range for
the L1 strength would be stated) could not be read with the tools at hand.

Finding (tests/test_method_l1sparse.py): at these settings it does not forget a class of sklearn digits
(forget accuracy stays 1.00 for every alpha in the grid): the original already fits the retain data, so 50
SGD steps of fine-tuning at lr 0.01 leave the forget class intact.
"""

from __future__ import annotations

import sys

import torch
import torch.nn.functional as F

from .. import dist
from ..data import batches
from ..tuning import select_on_validation
from ._common import generator, split_classes, trainable_copy

ALPHA_GRID = (1e-6, 1e-5, 1e-4, 1e-3)
LR = 0.01  # README.MD, l1-sparse command (--unlearn_lr 0.01)
EPOCHS = 10  # README.MD, l1-sparse command (--unlearn_epochs 10)
NO_L1_EPOCHS = 0  # arg_parser.py --no-l1-epochs default; no command sets it
BATCH = 256  # arg_parser.py --batch_size
MOMENTUM, WEIGHT_DECAY = 0.9, 5e-4  # arg_parser.py --momentum, --weight_decay
DECREASING_LR = (91, 136)  # arg_parser.py --decreasing_lr (gamma 0.1, impl.py); not reached in 10 epochs


def run(original, ds, forget, cfg, *, device, quiet=False):
    return select_on_validation({f"alpha={a:g}": a for a in ALPHA_GRID},
                                lambda a: l1_sparse(original, ds, forget, cfg, a, device=device, quiet=quiet),
                                ds, forget, device, "l1-sparse", quiet, original=original)


def alpha_at(alpha, epoch, epochs, no_l1_epochs=NO_L1_EPOCHS):
    """FT.py's schedule (CIFAR branch): linear decay over the first epochs - no_l1_epochs epochs, then 0.
    (Unlearn-Sparse's FT.py also keeps alpha constant when no_l1_epochs == epochs; Unlearn-Saliency's
    divides by zero there; neither is reached with no_l1_epochs = 0.)"""
    span = epochs - no_l1_epochs
    return alpha * (1 - epoch / span) if epoch < span else 0.0


def l1_norm(model):
    """l1_regularization(model): the L1 norm of every parameter (its subgradient is sign(theta), 0 at 0)."""
    return sum(p.abs().sum() for p in model.parameters())


def l1_sparse(original, ds, forget, cfg, alpha, *, device, quiet=False, lr=LR, epochs=EPOCHS, batch_size=BATCH,
              no_l1_epochs=NO_L1_EPOCHS):
    retain_train, _, _ = split_classes(ds, forget)
    model = trainable_copy(original, device)
    gen = generator(cfg.seed)
    params = list(model.parameters())
    opt = torch.optim.SGD(params, lr=lr, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=list(DECREASING_LR), gamma=0.1)
    hist, schedule = [], []
    for epoch in range(epochs):
        a_t = alpha_at(alpha, epoch, epochs, no_l1_epochs)
        schedule.append(a_t)
        model.train()
        losses = []
        # every rank takes the whole batch (as neggrad.py): the averaged gradient is the single-process one
        for x, y in batches(retain_train, batch_size, shuffle=True, generator=gen, device=device):
            opt.zero_grad(set_to_none=True)
            loss = F.cross_entropy(model(x), y) + a_t * l1_norm(model)
            loss.backward()
            dist.all_reduce_grads(params)
            opt.step()
            losses.append(float(loss.detach()))
        sched.step()
        dist.sync_buffers(model)
        hist.append(sum(losses) / max(len(losses), 1))
        if not quiet:
            print(f"  l1-sparse alpha {alpha:g} epoch {epoch + 1}/{epochs} (alpha_t {a_t:.3g}): loss {hist[-1]:.4f}",
                  file=sys.stderr)
    with torch.no_grad():
        norm = float(l1_norm(model))
    return model.eval(), {"loss": hist, "alpha": alpha, "alpha_schedule": schedule, "no_l1_epochs": no_l1_epochs,
                          "lr": lr, "epochs": epochs, "batch_size": batch_size, "l1_norm": norm}
