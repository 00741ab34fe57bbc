"""GAU: gradient ascent on forget data + descent on retain data, ascent bounded at chance.

loss = CE(retain) - min(CE(forget), ln C). Once the forget batch's CE exceeds ln C (the CE of a
uniform prediction over C classes) the ascent term is constant and gives no gradient, so Adam cannot
keep pushing the forget logits into a collapse that drags retain accuracy down.
"""

import math

import torch.nn.functional as F

from ._common import generator, paired_batches, split_classes, stabilise, trainable_copy


def run(original, ds, forget, cfg, *, device, quiet=False):
    b = cfg.baseline
    retain_train, forget_train, _ = split_classes(ds, forget)
    model = trainable_copy(original, device)
    gen = generator(cfg.seed)
    bound = math.log(ds.num_classes)

    def loss_fn(m, batch):
        x, y, xf, yf = batch
        return F.cross_entropy(m(x), y) - F.cross_entropy(m(xf), yf).clamp(max=bound)

    from ..train import fit

    steps = -(-len(retain_train) // b.batch_size)
    hist = fit(model, b.epochs, paired_batches(retain_train, forget_train, b.batch_size, gen, device), loss_fn,
               lr=b.lr, weight_decay=b.weight_decay, device=device, amp=cfg.amp, compile=cfg.compile, desc="gau", quiet=quiet,
               steps_per_epoch=steps)
    stab = stabilise(model, retain_train, b, gen, device=device, amp=cfg.amp, quiet=quiet, desc="gau: stabilise")
    return model.eval(), {"loss": hist, "stabilize_loss": stab, "ascent_bound": bound}
