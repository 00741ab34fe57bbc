"""KDU: distil the frozen original into a copy of itself with the forget classes suppressed.

Teacher targets: softmax(teacher_logits / T) with the forget logits masked to -inf, i.e. the
original's distribution renormalised over the retain classes. Applied to retain and forget batches
(KL(teacher || student) * T^2, the usual scaling), plus CE on retain labels.
"""


import torch
import torch.nn.functional as F

from ..train import finetune, fit
from ..tuning import maybe_tuned_lr
from ._common import frozen_copy, generator, paired_batches, split_classes, trainable_copy


def run(original, ds, forget, cfg, *, device, quiet=False):
    """The step size is baseline.lr, or chosen on validation when it is null (tuning.maybe_tuned_lr)."""
    return maybe_tuned_lr(cfg.baseline.lr, lambda lr: kdu(original, ds, forget, cfg, lr, device=device, quiet=quiet),
                          ds, forget, device, "kdu", quiet, original=original)


def kdu(original, ds, forget, cfg, lr, *, device, quiet=False):
    b = cfg.baseline
    retain_train, forget_train, _ = split_classes(ds, forget)
    teacher = frozen_copy(original, device)
    model = trainable_copy(original, device)
    gen = generator(cfg.seed)
    mask = torch.zeros(ds.num_classes, dtype=torch.bool, device=device)
    mask[list(forget)] = True
    t = b.kd_temperature

    def kd(student_logits, x):
        with torch.no_grad():
            target = F.softmax(teacher(x).float().masked_fill(mask, float("-inf")) / t, dim=1)
        logp = F.log_softmax(student_logits.float() / t, dim=1)
        # forget columns have target 0: clamp so 0 * log 0 gives 0, not nan
        return (target * (torch.log(target.clamp_min(1e-12)) - logp)).sum(1).mean() * t * t

    def loss_fn(m, batch):
        x, y, xf, _ = batch
        # One forward pass over forget + retain (the BatchNorm shortcut, as in CNR's reset and GAU).
        logits = m(torch.cat([xf, x]))
        lf, lr_ = logits[: len(xf)], logits[len(xf) :]
        return kd(lr_, x) + kd(lf, xf) + F.cross_entropy(lr_, y)

    steps = -(-len(retain_train) // b.batch_size)
    hist = fit(model, b.epochs, paired_batches(retain_train, forget_train, b.batch_size, gen, device), loss_fn,
               lr=lr, weight_decay=b.weight_decay, device=device, amp=cfg.amp, compile=cfg.compile, desc="kdu", quiet=quiet,
               steps_per_epoch=steps)
    stab = finetune(model, retain_train, b.stabilize_epochs, batch_size=b.batch_size, lr=lr,
                    weight_decay=b.weight_decay, gen=gen, device=device, amp=cfg.amp, compile=cfg.compile,
                    desc="kdu: stabilise", quiet=quiet)
    return model.eval(), {"loss": hist, "stabilize_loss": stab}
