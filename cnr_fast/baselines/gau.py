"""GAU: gradient ascent on forget data + descent on retain data, ascent bounded at chance.

loss = CE(retain) - mean_i min(CE_i(forget), ln C), the bound per example: once an example's CE
exceeds ln C (the CE of a uniform prediction over C classes) it gives no more gradient, so Adam
cannot keep pushing the forget logits into a collapse that drags retain accuracy down. (Bounding
the batch mean instead stopped the ascent as soon as a few examples had a huge loss, while most
forget examples were still classified correctly: forget accuracy 0.88 over 3 seeds.)
"""

import math

import torch
import torch.nn.functional as F

from ..tuning import maybe_tuned_lr
from ._common import generator, paired_batches, split_classes, trainable_copy


def run(original, ds, forget, cfg, *, device, quiet=False):
    """The step size is baseline.lr, or chosen on validation when it is null (tuning.maybe_tuned_lr)."""
    return maybe_tuned_lr(cfg.baseline.lr, lambda lr: gau(original, ds, forget, cfg, lr, device=device, quiet=quiet),
                          ds, forget, device, "gau", quiet, original=original)


def gau(original, ds, forget, cfg, lr, *, device, quiet=False):
    b = cfg.baseline
    retain_train, forget_train, _ = split_classes(ds, forget)
    model = trainable_copy(original, device)
    gen = generator(cfg.seed)
    bound = math.log(ds.num_classes)

    def loss_fn(m, batch):
        x, y, xf, yf = batch
        # One forward pass over forget + retain (as CNR's reset): separate train-mode passes would let
        # BatchNorm normalise an all-forget batch with its own statistics, a shortcut to tell them apart.
        logits = m(torch.cat([xf, x]))
        ascent = F.cross_entropy(logits[: len(xf)], yf, reduction="none").clamp(max=bound).mean()
        return F.cross_entropy(logits[len(xf) :], y) - ascent

    from ..train import fit

    steps = -(-len(retain_train) // b.batch_size)
    # The whole budget (epochs + stabilize_epochs) is ascent + descent: the descent term already keeps
    # retain accuracy, and a retain-only phase afterwards undid the forgetting (forget accuracy
    # 0.36 after 10 GAU epochs, 0.84 after 5 more retain-only ones, mnist5k seed 0).
    hist = fit(model, b.epochs + b.stabilize_epochs, paired_batches(retain_train, forget_train, b.batch_size, gen, device), loss_fn,
               lr=lr, weight_decay=b.weight_decay, device=device, amp=cfg.amp, compile=cfg.compile, desc="gau", quiet=quiet,
               steps_per_epoch=steps)
    return model.eval(), {"loss": hist, "ascent_bound": bound}
