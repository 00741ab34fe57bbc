"""NegGrad+: descent on retain data and ascent on forget data, weighted (Kurmanji et al. NeurIPS 2023; as run in
kairanzhao/RUM, Zhao et al. NeurIPS 2024, "What makes unlearning hard and what to do about it").

As in kairanzhao/RUM, unlearn/neggrad.py (`negative_grad`, method `NG`) with unlearn/impl.py
(`iterative_unlearn`): each epoch one pass over the retain data, each retain batch paired with a forget
batch (`zip(r_loader, cycle(f_loader))`), train mode, two forward passes (retain, then forget), loss =
alpha * CE(retain) - (1 - alpha) * CE(forget); SGD, momentum 0.9, weight decay 5e-4 (arg_parser.py),
MultiStepLR at epochs 91 / 136 (never reached in 5 epochs), batch 256 (arg_parser.py), lr 0.01 and 5
epochs (the README's NegGrad+ command). Those values were set for CIFAR-10 / CIFAR-100 with ResNet-18
and 3,000 random forget examples, not class-wise forgetting on our data.

alpha is left open by the authors (`--alpha ${alpha}` in the README command; arg_parser.py's default
0.2). The SCRUB authors, who introduced NegGrad+, publish 0.95 for small data
(meghdadk/SCRUB, small_scale_unlearning.ipynb: `args.ng_alpha = 0.95`, lr 0.01, 10 epochs) and 0.9999 for
their large-scale runs. So alpha is chosen on validation (tuning.select_on_validation) from ALPHA_GRID,
four values spanning the published ones (0.99 added between them), like every method's open setting.
"""

from __future__ import annotations

import sys

import torch
import torch.nn.functional as F

from .. import dist
from ..tuning import select_on_validation
from ._common import generator, paired_batches, split_classes, trainable_copy

ALPHA_GRID = (0.2, 0.95, 0.99, 0.9999)
LR = 0.01  # README.md, NegGrad+ command (--unlearn_lr 0.01)
EPOCHS = 5  # README.md, NegGrad+ command (--unlearn_epochs 5)
BATCH = 256  # arg_parser.py --batch_size
MOMENTUM, WEIGHT_DECAY = 0.9, 5e-4  # arg_parser.py --momentum, --weight_decay


def run(original, ds, forget, cfg, *, device, quiet=False):
    return select_on_validation({f"alpha={a:g}": a for a in ALPHA_GRID},
                                lambda a: neggrad_plus(original, ds, forget, cfg, a, device=device, quiet=quiet),
                                ds, forget, device, "neggrad+", quiet, original=original)


def neggrad_plus(original, ds, forget, cfg, alpha, *, device, quiet=False, lr=LR, epochs=EPOCHS, batch_size=BATCH):
    retain_train, forget_train, _ = split_classes(ds, forget)
    model = trainable_copy(original, device)
    gen = generator(cfg.seed)
    params = list(model.parameters())
    opt = torch.optim.SGD(params, lr=lr, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY)
    make = paired_batches(retain_train, forget_train, batch_size, gen, device)
    hist = []
    for epoch in range(epochs):
        model.train()
        losses = []
        for x, y, xf, yf in make(epoch):
            opt.zero_grad(set_to_none=True)

            # retain and forget batches differ in size, so every rank takes both whole (no split across ranks)
            loss = alpha * F.cross_entropy(model(x), y) - (1 - alpha) * F.cross_entropy(model(xf), yf)
            loss.backward()
            dist.all_reduce_grads(params)
            opt.step()
            losses.append(float(loss.detach()))
        dist.sync_buffers(model)
        hist.append(sum(losses) / max(len(losses), 1))
        if not quiet:
            print(f"  neggrad+ alpha {alpha:g} epoch {epoch + 1}/{epochs}: loss {hist[-1]:.4f}", file=sys.stderr)
    return model.eval(), {"loss": hist, "alpha": alpha, "lr": lr, "epochs": epochs, "batch_size": batch_size}
