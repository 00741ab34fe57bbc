"""Bad Teacher (Chundawat, Tarun, Mandal, Kankanhalli, AAAI 2023, "Can Bad Teaching Induce Forgetting?
Unlearning in Deep Networks using an Incompetent Teacher"): the student, a copy of the original, is distilled
towards the original (the competent teacher) on retain images and towards a randomly initialised model of
the same architecture (the incompetent teacher) on forget images.

As in the authors' code, vikram2000b/bad-teaching-unlearning:
- dataset.py `UnLearningData`: the forget images flagged 1 and the retain images flagged 0 in one data set
  (forget first), shuffled into mixed batches (unlearn.py `blindspot_unlearner`: DataLoader(shuffle=True)).
  Only which images are forget and which retain is read, never a class label: needs = forget, retain.
- unlearn.py `UnlearnerLoss`: target = flag * softmax(incompetent / T) + (1 - flag) * softmax(original / T),
  loss = F.kl_div(log_softmax(student / T), target) with kl_div's default reduction "mean", i.e. the sum over
  the batch and the classes divided by batch x classes (no T^2 factor).
- unlearn.py `unlearning_step`: teachers under no_grad, one Adam step a batch; `blindspot_unlearner` puts both
  teachers in eval mode and never touches the student's mode, which in the notebook is a freshly built module
  (train mode): the student trains in train mode (BatchNorm batch statistics), as here.
- CIFARSuper20_Rocket_Unlearn.ipynb, the "UnLearning via proposed method" cell: KL_temperature = 1,
  Adam(lr=0.0001), epochs = 1, batch_size = 256, retain_data = retain_train_subset, which is
  `random.sample(retain_train, int(0.3*len(retain_train)))` (the cell building the loaders): 30% of the retain
  set, drawn once. The incompetent teacher is `ResNet18(num_classes=20, pretrained=False).eval()`: the same
  architecture, fresh initial weights, never trained (BatchNorm running statistics at their initial 0 / 1).
The SSD authors' re-run of Bad Teacher for full-class forgetting (if-loops/selective-synaptic-dampening,
src/forget_full_class_strategies.py `blindspot`: KL_temperature 1, Adam lr 0.0001, 30% retain subset,
epochs 1, batch 256) uses the same values.

Scale: those values were set for CIFAR-100 / CIFAR-Super20 at 224 px with an ImageNet-pretrained ResNet-18
(one epoch there: 500 forget + 14,850 retain images, 60 Adam steps at batch 256). On our data one epoch is a
few steps (sklearn digits: 2; mnist5k: 6), and lr 1e-4 moves the student too little to forget. So the Adam
step size is chosen on validation (tuning.select_on_validation) from LR_GRID, which spans the authors' own
range: 1e-4, the value of their run, to 1e-2, the default of unlearn.py `blindspot_unlearner(lr=0.01)`
(with `optimizer='adam'`). Epochs, batch, temperature and the 30% share stay the authors'.

The incompetent teacher (`incompetent_teacher`): a copy of the original with every module's parameters
re-drawn by its own reset_parameters() (PyTorch's default initialisation of that layer; BatchNorm also resets
its running statistics to 0 / 1, as a fresh model has), the global RNG seeded with a seed derived from
cfg.seed (references.derive_seed: never the original's own init seed), the caller's RNG state restored.
This works for any architecture (the user's too) without knowing how it was built. Two differences from a
freshly built model: an architecture whose constructor draws its own initialisation (cnr-fast's and
torchvision's ResNet: Kaiming-normal convolutions) gets the layers' defaults instead, and a parameter
owned directly by a module without reset_parameters (a ViT's class token and position embedding) keeps its
value; those are listed in info["teacher_not_reset"]. Either way the teacher knows nothing of the data,
which is what the method asks of it: on sklearn digits (ResNet-18 at width 0.125, 10 classes) its mean top
softmax probability is 0.11 re-initialised this way and 0.12-0.14 built afresh, one class taking nearly every
argmax in both (a fresh torchvision ResNet-18 for 20 classes, the authors' teacher: 0.11).
(nn.MultiheadAttention's `_reset_parameters` is called too: its input projection is its own parameter.)
"""

from __future__ import annotations

import copy
import sys

import torch
import torch.nn.functional as F

from .. import dist
from ..models import fresh_copy, not_reset
from ..data import Split, batches
from ..references import derive_seed
from ..tuning import select_on_validation
from ._common import frozen_copy, generator, split_classes, trainable_copy

KL_TEMPERATURE = 1.0  # CIFARSuper20_Rocket_Unlearn.ipynb: KL_temperature = 1
RETAIN_SHARE = 0.3  # notebook: random.sample(retain_train, int(0.3*len(retain_train)))
LR = 1e-4  # notebook: torch.optim.Adam(student_model.parameters(), lr = 0.0001)
EPOCHS = 1  # notebook: blindspot_unlearner(..., epochs = 1, ...)
BATCH = 256  # notebook: batch_size = 256
# From the authors' run (1e-4) to their blindspot_unlearner default (1e-2): four values evenly spaced in log
# (a third of a decade apart, rounded), the grid size every method's one open value gets (tuning.py)
LR_GRID = (LR, 4.6e-4, 2.2e-3, 1e-2)


def run(original, ds, forget, cfg, *, device, quiet=False):
    return select_on_validation({f"lr={lr:g}": lr for lr in LR_GRID},
                                lambda lr: bad_teacher(original, ds, forget, cfg, lr, device=device, quiet=quiet),
                                ds, forget, device, "bad-teacher", quiet, original=original)


def incompetent_teacher(original, seed: int, device):
    """A copy of `original` with fresh random parameters (models.fresh_copy, drawn on the CPU under `seed`),
    frozen, eval mode. Returns (teacher, names of the parameters no reset method covered)."""
    teacher = fresh_copy(copy.deepcopy(original).cpu(), seed)
    teacher = teacher.to(device).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher, not_reset(teacher)


def unlearner_loss(logits, is_forget, full_logits, unlearn_logits, t: float) -> torch.Tensor:
    """unlearn.py UnlearnerLoss: KL towards the incompetent teacher on forget rows (flag 1) and the competent
    one on retain rows (flag 0); kl_div's "mean" reduction, over every row and class."""
    flag = is_forget.to(logits.dtype).unsqueeze(1)
    target = flag * F.softmax(unlearn_logits / t, dim=1) + (1 - flag) * F.softmax(full_logits / t, dim=1)
    return F.kl_div(F.log_softmax(logits / t, dim=1), target, reduction="sum") / target.numel()


def unlearning_data(retain: Split, forget: Split, share: float, gen) -> Split:
    """UnLearningData(forget_data, retain_subset): forget images first (y = 1), then a random `share` of the
    retain images drawn once (y = 0). The flag takes the place of the label; class labels are never read."""
    keep = torch.randperm(len(retain), generator=gen)[: int(share * len(retain))]
    x = torch.cat([forget.x, retain.x[keep]])
    flag = torch.cat([torch.ones(len(forget), dtype=torch.long), torch.zeros(len(keep), dtype=torch.long)])
    return Split(x, flag.to(x.device))


def bad_teacher(original, ds, forget, cfg, lr, *, device, quiet=False, epochs=EPOCHS, batch_size=BATCH,
                retain_share=RETAIN_SHARE, temperature=KL_TEMPERATURE):
    retain_train, forget_train, _ = split_classes(ds, forget)
    gen = generator(cfg.seed)
    data = unlearning_data(retain_train, forget_train, retain_share, gen)
    full = frozen_copy(original, device)
    unlearn, not_reset = incompetent_teacher(original, derive_seed(cfg.seed, "bad-teacher"), device)
    model = trainable_copy(original, device)
    params = list(model.parameters())
    opt = torch.optim.Adam(params, lr=lr)

    def loss_of(batch):
        x, flag = batch
        with torch.no_grad():
            full_logits, unlearn_logits = full(x), unlearn(x)
        return unlearner_loss(model(x), flag, full_logits, unlearn_logits, temperature)

    hist = []
    for epoch in range(epochs):
        model.train()
        losses = []
        for x, flag in batches(data, batch_size, shuffle=True, generator=gen, device=device):
            opt.zero_grad(set_to_none=True)
            losses.append(dist.backward(loss_of, (x, flag), params))
            opt.step()
        dist.sync_buffers(model)
        hist.append(sum(losses) / max(len(losses), 1))
        if not quiet:
            print(f"  bad-teacher lr {lr:g} epoch {epoch + 1}/{epochs}: loss {hist[-1]:.5f}", file=sys.stderr)
    return model.eval(), {"loss": hist, "lr": lr, "epochs": epochs, "batch_size": batch_size,
                          "kl_temperature": temperature, "retain_share": retain_share,
                          "retain_used": len(data) - len(forget_train), "forget_used": len(forget_train),
                          "teacher_not_reset": not_reset}
