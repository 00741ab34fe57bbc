"""SSD: selective synaptic dampening (Foster, Schoepf, Brintrup, AAAI 2024). No training.

As the authors' code does (if-loops/selective-synaptic-dampening, src/ssd.py `calc_importance`,
`forget_full_class_strategies.py`): with the model in eval mode, the importance of every parameter
is the squared gradient of a batch's mean cross-entropy (true labels), averaged over the batches,
once over the forget data (I_f) and once over the whole training set, retain and forget (I_D).
Every parameter with I_f > alpha * I_D is multiplied by beta = min(lambda * I_D / I_f, 1).
Defaults for full-class forgetting: alpha = 10 (ResNet-18), lambda = 1, batch 64.
"""

import torch
import torch.nn.functional as F

from .. import dist
from ..data import batches
from ._common import split_classes, trainable_copy


def importances(model, split, batch_size, device) -> list[torch.Tensor]:
    """Mean over batches of grad(mean CE of the batch)^2, per parameter (the authors' estimator)."""
    params = [p for p in model.parameters()]
    imp = [torch.zeros_like(p, dtype=torch.float32) for p in params]
    n = 0
    for x, y in batches(split, batch_size, device=device):
        model.zero_grad(set_to_none=True)
        # the gradient of the whole batch's mean CE (under torchrun: shares averaged), then squared
        dist.backward(lambda b: F.cross_entropy(model(b[0]), b[1]), (x, y), params)
        for acc, p in zip(imp, params):
            if p.grad is not None:
                acc += p.grad.detach().float().square()
        n += 1
    model.zero_grad(set_to_none=True)
    return [a / max(n, 1) for a in imp]


@torch.no_grad()
def dampen(model, imp_all, imp_forget, alpha: float, lam: float) -> dict:
    changed, total = 0, 0
    for p, i_d, i_f in zip(model.parameters(), imp_all, imp_forget):
        sel = i_f > alpha * i_d
        beta = (lam * i_d / i_f.clamp_min(torch.finfo(torch.float32).tiny)).clamp(max=1.0)
        p[sel] = (p.float()[sel] * beta[sel]).to(p.dtype)
        changed += int(sel.sum())
        total += sel.numel()
    return {"dampened_params": changed, "total_params": total}


def run(original, ds, forget, cfg, *, device, quiet=False):
    b = cfg.baseline
    _, forget_train, _ = split_classes(ds, forget)
    model = trainable_copy(original, device).eval()
    imp_f = importances(model, forget_train, b.ssd_batch_size, device)
    imp_d = importances(model, ds.train, b.ssd_batch_size, device)
    info = dampen(model, imp_d, imp_f, b.ssd_alpha, b.ssd_lambda)
    if not quiet:
        import sys

        print(f"  ssd: dampened {info['dampened_params']} of {info['total_params']} parameters", file=sys.stderr)
    return model.eval(), {**info, "alpha": b.ssd_alpha, "lambda": b.ssd_lambda}
