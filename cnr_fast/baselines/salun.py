"""SalUn (Fan, Liu, Zhang, Wei, Wong, Liu, ICLR 2024): saliency-masked random labelling.

As in the authors' code (OPTML-Group/Unlearn-Saliency, Classification/generate_mask.py, unlearn/RL.py):
1. Mask: with the model in eval mode, sum over forget batches the gradient of -CE(true labels);
   the top `ratio` (0.5) of all parameters by |summed gradient|, one global threshold, get 1.
2. RL: each epoch one pass over the forget data with labels drawn uniformly over all classes
   (afresh each batch), then one pass over the retain data with their labels; CE, train mode.
   After backward the gradients are multiplied by the mask; after each step the unmasked (mask 0)
   parameters are put back to their starting values (the authors' current RL.py, so weight decay and
   momentum cannot move them either). SGD, momentum 0.9, weight decay 5e-4, 10 epochs, batch 256
   (arg_parser.py defaults). The README gives no class-wise lr and the authors say they search it in
   [1e-4, 1e-1]: by default lr is chosen on the validation split from {1e-4, 1e-3, 1e-2, 1e-1}.
"""

import sys

import torch
import torch.nn.functional as F

from .. import dist
from ..data import batches
from ._common import generator, select_on_validation, split_classes, trainable_copy

LR_GRID = (1e-4, 1e-3, 1e-2, 1e-1)


def saliency_mask(model, forget_split, ratio: float, batch_size: int, device) -> list[torch.Tensor]:
    model.eval()
    params = list(model.parameters())
    grads = [torch.zeros_like(p, dtype=torch.float32) for p in params]
    for x, y in batches(forget_split, batch_size, device=device):
        model.zero_grad(set_to_none=True)
        dist.backward(lambda b: -F.cross_entropy(model(b[0]), b[1]), (x, y), params)
        for g, p in zip(grads, params):
            if p.grad is not None:
                g += p.grad.detach().float()
    model.zero_grad(set_to_none=True)
    flat = torch.cat([g.abs().flatten() for g in grads])
    # generate_mask.py: threshold_index = int(len(all_elements) * ratio); exactly that many weights, the
    # largest |gradient| first (rank < threshold_index), so ties at the cut do not add weights
    k = int(ratio * flat.numel())
    keep = torch.zeros(flat.numel(), dtype=torch.bool)
    if k > 0:
        keep[torch.argsort(flat, descending=True, stable=True)[:k].cpu()] = True
    out, start = [], 0
    for g in grads:
        out.append(keep[start : start + g.numel()].view_as(g).to(g.device))
        start += g.numel()
    return out


def run(original, ds, forget, cfg, *, device, quiet=False):
    b = cfg.baseline
    mask = saliency_mask(trainable_copy(original, device), split_classes(ds, forget)[1], b.salun_ratio,
                         b.salun_batch_size, device)
    if b.salun_lr is not None:
        return random_labelling(original, ds, forget, cfg, mask, b.salun_lr, device=device, quiet=quiet)
    return select_on_validation({f"lr={lr:g}": lr for lr in LR_GRID},
                                lambda lr: random_labelling(original, ds, forget, cfg, mask, lr, device=device,
                                                            quiet=quiet),
                                ds, forget, device, "salun", quiet, original=original)


def random_labelling(original, ds, forget, cfg, mask, lr, *, device, quiet=False, desc="salun"):
    """The authors' RL loop (unlearn/RL.py, CIFAR-10 branch); mask None = every weight moves (plain RL)."""
    b = cfg.baseline
    retain_train, forget_train, _ = split_classes(ds, forget)
    model = trainable_copy(original, device)
    gen = generator(cfg.seed)
    params = list(model.parameters())
    start = [p.detach().clone() for p in params] if mask is not None else None
    opt = torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=5e-4)

    def step(x, y):
        opt.zero_grad(set_to_none=True)
        loss = dist.backward(lambda b: F.cross_entropy(model(b[0]), b[1]), (x, y), params)
        if mask is not None:
            for p, m in zip(params, mask):
                if p.grad is not None:
                    p.grad.mul_(m)
        opt.step()
        if mask is not None:
            with torch.no_grad():
                for p, m, p0 in zip(params, mask, start):
                    p.copy_(torch.where(m, p, p0))
        return loss

    hist = []
    for epoch in range(b.salun_epochs):
        model.train()
        fl = [step(x, torch.randint(ds.num_classes, (len(x),), generator=gen).to(device))
              for x, _ in batches(forget_train, b.salun_batch_size, shuffle=True, generator=gen, device=device)]
        rl = [step(x, y) for x, y in batches(retain_train, b.salun_batch_size, shuffle=True, generator=gen,
                                            device=device)]
        dist.sync_buffers(model)
        hist.append({"forget_loss": sum(fl) / max(len(fl), 1), "retain_loss": sum(rl) / max(len(rl), 1)})
        if not quiet:
            print(f"  {desc} epoch {epoch + 1}/{b.salun_epochs}: forget {hist[-1]['forget_loss']:.4f} "
                  f"retain {hist[-1]['retain_loss']:.4f}", file=sys.stderr)
    total = sum(p.numel() for p in params)
    masked = total if mask is None else int(sum(int(m.sum()) for m in mask))
    return model.eval(), {"loss": hist, "lr": lr, "mask_params": masked, "total_params": total}
