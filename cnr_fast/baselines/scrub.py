"""SCRUB (Kurmanji, Triantafillou, Hayes, Triantafillou, NeurIPS 2023): teacher-student unlearning.

The student starts as a copy of the original (the teacher, frozen, eval mode). Each epoch
e = 1..E: for e <= msteps a max pass over the forget data (loss = -KL(teacher || student), moving
away from the teacher), then a min pass over the retain data (gamma * CE + alpha * KL). KL is
Hinton's distillation loss at temperature T (kl_div(log_softmax(s/T), softmax(t/T)) * T^2 / batch).
Settings of the authors' CIFAR-10 full-class run (meghdadk/SCRUB, large_scale_unlearning.ipynb):
SGD lr 5e-4, momentum 0.9, weight decay 5e-4, E = 3, msteps = 2, gamma 0.99, alpha 0.001, T = 4,
forget batch 512, retain batch 256; the lr milestones (3, 5, 9) are never reached in 3 epochs.
The max and min passes are separate steps by design, so forget batches are normalised by their own
BatchNorm statistics in the max pass, as in the authors' code.
"""

import sys

import torch
import torch.nn.functional as F

from ..data import batches
from ._common import frozen_copy, generator, split_classes, trainable_copy


def distill_kl(student_logits, teacher_logits, t: float) -> torch.Tensor:
    logp = F.log_softmax(student_logits.float() / t, dim=1)
    q = F.softmax(teacher_logits.float() / t, dim=1)
    return F.kl_div(logp, q, reduction="sum") * t * t / student_logits.shape[0]


def run(original, ds, forget, cfg, *, device, quiet=False):
    b = cfg.baseline
    retain_train, forget_train, _ = split_classes(ds, forget)
    teacher = frozen_copy(original, device)
    model = trainable_copy(original, device)
    opt = torch.optim.SGD(model.parameters(), lr=b.scrub_lr, momentum=0.9, weight_decay=5e-4)
    gen = generator(cfg.seed)
    t = b.scrub_temperature
    hist = []
    for epoch in range(1, b.scrub_epochs + 1):
        model.train()
        max_loss = float("nan")
        if epoch <= b.scrub_max_epochs:
            tot, n = 0.0, 0
            for x, _ in batches(forget_train, b.scrub_forget_batch, shuffle=True, generator=gen, device=device):
                with torch.no_grad():
                    tl = teacher(x)
                loss = -distill_kl(model(x), tl, t)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                tot, n = tot + float(loss.detach()), n + 1
            max_loss = tot / max(n, 1)
        tot, n = 0.0, 0
        for x, y in batches(retain_train, b.scrub_retain_batch, shuffle=True, generator=gen, device=device):
            with torch.no_grad():
                tl = teacher(x)
            logits = model(x)
            loss = b.scrub_gamma * F.cross_entropy(logits, y) + b.scrub_alpha * distill_kl(logits, tl, t)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            tot, n = tot + float(loss.detach()), n + 1
        hist.append({"max_loss": max_loss, "min_loss": tot / max(n, 1)})
        if not quiet:
            print(f"  scrub epoch {epoch}/{b.scrub_epochs}: max {max_loss:.4f} min {hist[-1]['min_loss']:.4f}",
                  file=sys.stderr)
    return model.eval(), {"loss": hist}
