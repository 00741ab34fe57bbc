"""SCRUB (Kurmanji, Triantafillou, Hayes, Triantafillou, NeurIPS 2023): teacher-student unlearning.

The student starts as a copy of the original (the teacher, frozen, eval mode). Each epoch
e = 1..E: for e <= msteps a max pass over the forget data (loss = -KL(teacher || student), moving
away from the teacher), then a min pass over the retain data (gamma * CE + alpha * KL). KL is
Hinton's distillation loss at temperature T (kl_div(log_softmax(s/T), softmax(t/T)) * T^2 / batch).
The authors publish two settings (meghdadk/SCRUB), both in PRESETS: "large" (large_scale_unlearning.ipynb,
CIFAR-10 full class: SGD lr 5e-4, momentum 0.9, weight decay 5e-4, E = 3, msteps = 2, gamma 0.99,
alpha 0.001, T = 4; lr milestones 3, 5, 9 never reached) and "small" (small_scale_unlearning.ipynb:
Adam lr 5e-4, weight decay 0.1, E = 10, msteps = 3, gamma 1, alpha 0.5, T = 2, lr x0.1 after epochs
5, 8, 9). Each setting keeps its own notebook's loaders: "large" forget batch 512, retain batch 256
(large_scale_unlearning.ipynb: `replace_loader_dataset(..., batch_size=512 / 256)`), "small" forget 64,
retain 32 (small_scale_unlearning.ipynb: `args.forget_bs = 64`, `args.retain_bs = 32`). The authors'
README names the small notebook for small data sets (their small CIFAR-5 / Lacuna-5, 5 classes x 100
images a class as forget/retain scale) and the large one for CIFAR-10 / Lacuna-10 at full size;
mnist5k (3,240 retain and 360 forget training images, 10 classes) is closer to the small scale. On
mnist5k, 360 forget images are 1 max step an epoch at batch 512 and 6 at batch 64.
scrub_preset "val" (default) runs both settings and keeps the one with the better validation score
(tuning.select_on_validation); baseline.scrub_forget_batch / scrub_retain_batch override the
setting's loaders when set.
The max and min passes are separate steps by design, so forget batches are normalised by their own
BatchNorm statistics in the max pass, as in the authors' code.
"""

import sys

import torch
import torch.nn.functional as F

from .. import dist
from ..data import batches
from ._common import frozen_copy, generator, select_on_validation, split_classes, trainable_copy

PRESETS = {
    "large": {"optim": "sgd", "lr": 5e-4, "weight_decay": 5e-4, "epochs": 3, "msteps": 2, "gamma": 0.99,
              "alpha": 0.001, "T": 4.0, "milestones": (3, 5, 9), "forget_batch": 512, "retain_batch": 256},
    "small": {"optim": "adam", "lr": 5e-4, "weight_decay": 0.1, "epochs": 10, "msteps": 3, "gamma": 1.0,
              "alpha": 0.5, "T": 2.0, "milestones": (5, 8, 9), "forget_batch": 64, "retain_batch": 32},
}


def distill_kl(student_logits, teacher_logits, t: float) -> torch.Tensor:
    logp = F.log_softmax(student_logits.float() / t, dim=1)
    q = F.softmax(teacher_logits.float() / t, dim=1)
    return F.kl_div(logp, q, reduction="sum") * t * t / student_logits.shape[0]


def run(original, ds, forget, cfg, *, device, quiet=False):
    preset = cfg.baseline.scrub_preset
    if preset in PRESETS:
        return scrub(original, ds, forget, cfg, PRESETS[preset], device=device, quiet=quiet)
    if preset != "val":
        from ..errors import UserError

        raise UserError(f"unknown scrub_preset {preset!r}; choose one of large, small, val")
    return select_on_validation(PRESETS, lambda p: scrub(original, ds, forget, cfg, p, device=device, quiet=quiet),
                                ds, forget, device, "scrub", quiet, original=original)


def max_loss_of(model, teacher, x, t):
    """SCRUB's max step: KL(teacher || student) on forget images (its negative is minimised)."""
    with torch.no_grad():
        tl = teacher(x)
    return distill_kl(model(x), tl, t)


def min_loss_of(model, teacher, batch, t, hp):
    """SCRUB's min step: gamma CE + alpha KL(teacher || student) on retain images."""
    x, y = batch
    with torch.no_grad():
        tl = teacher(x)
    logits = model(x)
    return hp["gamma"] * F.cross_entropy(logits, y) + hp["alpha"] * distill_kl(logits, tl, t)


def scrub(original, ds, forget, cfg, hp: dict, *, device, quiet=False):
    b = cfg.baseline
    retain_train, forget_train, _ = split_classes(ds, forget)
    teacher = frozen_copy(original, device)
    model = trainable_copy(original, device)
    if hp["optim"] == "sgd":
        opt = torch.optim.SGD(model.parameters(), lr=hp["lr"], momentum=0.9, weight_decay=hp["weight_decay"])
    else:
        opt = torch.optim.Adam(model.parameters(), lr=hp["lr"], weight_decay=hp["weight_decay"])
    gen = generator(cfg.seed)
    t = hp["T"]
    hp = {**hp, "forget_batch": b.scrub_forget_batch or hp["forget_batch"],
          "retain_batch": b.scrub_retain_batch or hp["retain_batch"]}
    hist = []
    for epoch in range(1, hp["epochs"] + 1):
        for group in opt.param_groups:  # repdistiller adjust_learning_rate: lr * 0.1^(epochs past milestones)
            group["lr"] = hp["lr"] * 0.1 ** sum(epoch > m for m in hp["milestones"])
        model.train()
        max_loss = float("nan")
        if epoch <= hp["msteps"]:
            tot, n = 0.0, 0
            for x, _ in batches(forget_train, hp["forget_batch"], shuffle=True, generator=gen, device=device):
                opt.zero_grad(set_to_none=True)
                loss = dist.backward(lambda xb: -max_loss_of(model, teacher, xb, t), x, model.parameters())
                opt.step()
                tot, n = tot + loss, n + 1
            max_loss = tot / max(n, 1)
        tot, n = 0.0, 0
        for x, y in batches(retain_train, hp["retain_batch"], shuffle=True, generator=gen, device=device):
            opt.zero_grad(set_to_none=True)
            loss = dist.backward(lambda b: min_loss_of(model, teacher, b, t, hp), (x, y), model.parameters())
            opt.step()
            tot, n = tot + loss, n + 1
        dist.sync_buffers(model)
        hist.append({"max_loss": max_loss, "min_loss": tot / max(n, 1)})
        if not quiet:
            print(f"  scrub epoch {epoch}/{hp['epochs']}: max {max_loss:.4f} min {hist[-1]['min_loss']:.4f}",
                  file=sys.stderr)
    return model.eval(), {"loss": hist, "settings": {k: list(v) if isinstance(v, tuple) else v for k, v in hp.items()}}
