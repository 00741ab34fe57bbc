"""JiT: zero-shot unlearning by Lipschitz regularisation around the forget images (Foster, Schoepf,
Brintrup, "Zero-shot machine unlearning at scale via Lipschitz regularization", 2024; arXiv 2402.01401,
first titled "An Information Theoretic Approach to Machine Unlearning").

As in the authors' code, jwf40/Information-Theoretic-Unlearning (src/lipschitz.py `Lipschitz.modify_weight`
and `AddGaussianNoise`; src/forget_full_class_strategies.py `lipschitz_forgetting`; src/forget_full_class_main.py):

- one pass over the forget images, unshuffled, batch 128 (main.py: `forget_train_dl = DataLoader(forget_train,
  batch_size)`, `-b` default 128). Labels are never read, nor any retain image: needs = forget images only;
- per batch: the clean output `out = model(x)` (with its graph), then N = 25 noisy copies (main.py
  `"n_samples": 25`), each x + sigma * randn, clamped to the batch's [min, max] (`AddGaussianNoise`), whose
  outputs are taken under no_grad; loss = (1 / N) sum over copies of sum over the batch's images of
  ||out - out2||_2 / ||x - x2||_2 (a sum over images, not a mean; the authors' `.abs()` of a sum of norms is
  a no-op);
- plain SGD (lipschitz.py:278 `torch.optim.SGD(self.model.parameters(), lr=...)`: no momentum, no weight
  decay) on every parameter (`min_layer` / `max_layer` -1: all layers; `n_epochs` is never read by
  `modify_weight`: one pass);
- the gradients are zeroed once, before the pass (lipschitz.py:280), and never inside it, so step k applies
  the sum of the gradients of batches 1..k. We keep that (it is how the published numbers were made);
- the model stays in train mode: the authors build it with `getattr(models, args.net)(...)` and never call
  `.eval()` before `lipschitz_forgetting` (SSD's path in the same file does, line 678). For their VGG
  (torchvision vgg11, no BatchNorm) that means dropout on; on our ResNets it means BatchNorm normalises
  each forward with its batch's statistics and updates its running statistics (26 forwards a batch).
  (Their ViT's backbone, loaded by transformers' from_pretrained, is in eval mode, with no dropout.)

Settings the authors set per task and model (forget_full_class_main.py, full-class CIFAR-20 / CIFAR-100 /
PinsFaceRecognition, 20-105 classes; `lipschitz_weighting` is sigma): VGG ("VGG16", in fact VGG11, 32 px):
sigma 0.5, lr 3e-4; ViT-B/16 (224 px): sigma 0.8, lr 1.5. forget_random_main.py / forget_subclass_main.py:
VGG sigma 0.01, lr 3e-4; ViT sigma 0.5, lr 0.1 (random) and 1.5, 0.5 (subclass). sigma is in the units of
their inputs, normalised per channel by the CIFAR mean / std (src/datasets.py CIFAR_STD ~0.26 of [0, 1]);
ours are in [-1, 1], so a sigma of theirs is applied as sigma * NOISE_UNIT (2 x the mean CIFAR_STD, one
standard deviation of theirs on our scale). The loss is a sum over the batch of ratios whose size depends
on the image's dimension and the model's, so neither value carries over to our models and images: both are
chosen on validation (tuning.select_on_validation: the held-out validation split, not training retain
data; the method itself still reads forget images only), from LR_GRID x SIGMA_GRID, four values each,
spanning the authors' range (lr 3e-4 .. 1.5, sigma 0.01 .. 1.5). A pass is short (a forget class of 128
images is one step), so the 16 candidates cost about as much as a few epochs over the forget data.

On sklearn digits (tests/test_method_jit.py) validation keeps lr 3e-4, sigma 0.5, the authors' VGG full-class
setting, and the class is only partly forgotten (test forget accuracy 1.00 -> 0.66, retain 0.954 -> 0.938);
every candidate that forgets more costs retain accuracy beyond the rule's margin.
"""

from __future__ import annotations

import sys

import torch

from .. import dist
from ..data import batches
from ..tuning import select_on_validation
from ._common import generator, trainable_copy

LR_GRID = (3e-4, 5e-3, 0.1, 1.5)  # the authors' lrs 3e-4 (VGG), 0.1 / 0.5 / 1.5 (ViT); ~x16 steps between
SIGMA_GRID = (0.01, 0.1, 0.5, 1.5)  # the authors' sigmas 0.01, 0.5 (VGG), 0.5 / 0.8 / 1.5 (ViT), their units
N_SAMPLES = 25  # forget_full_class_main.py, parameters["n_samples"]
BATCH = 128  # forget_full_class_main.py `-b` default (the .sh scripts pass none)
CIFAR_STD = (0.2673342858792401, 0.2564384629170883, 0.27615047132568404)  # src/datasets.py: their inputs' unit
NOISE_UNIT = 2 * sum(CIFAR_STD) / 3  # one standard deviation of theirs on our [-1, 1] scale (x 2 from [0, 1])


def run(original, ds, forget, cfg, *, device, quiet=False):
    grid = {f"lr={lr:g},sigma={s:g}": (lr, s) for lr in LR_GRID for s in SIGMA_GRID}
    return select_on_validation(grid, lambda v: jit(original, ds, forget, cfg, v[0], v[1], device=device, quiet=quiet),
                                ds, forget, device, "jit", quiet, original=original)


def noisy(x, sigma, gen):
    """AddGaussianNoise: x + sigma * N(0, 1), clamped to the batch's own [min, max]; the noise is drawn on the
    CPU (the authors' `torch.randn(size).to(device)`), here from `gen`."""
    noise = torch.randn(x.shape, generator=gen).to(x.device)
    return torch.clamp(x + noise * sigma, min=x.min(), max=x.max())


def jit(original, ds, forget, cfg, lr, sigma, *, device, quiet=False, n_samples=N_SAMPLES, batch_size=BATCH,
        noise_unit=NOISE_UNIT):
    forget_train = ds.train.of_classes(forget)  # stored order, unshuffled (the authors forget one class)
    model = trainable_copy(original, device).train()  # the authors never call .eval() (docstring)
    gen = generator(cfg.seed)
    params = list(model.parameters())
    opt = torch.optim.SGD(params, lr=lr)
    opt.zero_grad(set_to_none=True)  # once: the authors' gradients accumulate over the pass (docstring)
    std = sigma * noise_unit
    losses = []
    for x, _ in batches(forget_train, batch_size, device=device):
        out = model(x)
        flat = x.flatten(1)
        loss = out.new_zeros(())
        for _ in range(n_samples):
            x2 = noisy(x, std, gen)
            with torch.no_grad():
                out2 = model(x2)
            ratio = torch.linalg.vector_norm(out - out2, dim=1) / torch.linalg.vector_norm(flat - x2.flatten(1), dim=1)
            loss = loss + ratio.sum()
        loss = loss / n_samples
        loss.backward()
        # every rank takes the whole batch with the same noise (same seed): the average is the same gradient
        dist.all_reduce_grads(params)
        opt.step()
        losses.append(float(loss.detach()))
    dist.sync_buffers(model)
    if not quiet:
        print(f"  jit lr {lr:g} sigma {sigma:g}: {len(losses)} steps, loss {losses[0]:.4f} -> {losses[-1]:.4f}",
              file=sys.stderr)
    return model.eval(), {"loss": losses, "lr": lr, "sigma": sigma, "noise_std": std, "n_samples": n_samples,
                          "batch_size": batch_size, "epochs": 1}
