"""Non-linear recovery probes on frozen tap features: a 3-layer MLP and a small residual conv net.

Source: the CNR paper's Table 10, "Robustness against stronger privacy attacks on CIFAR-10/ResNet-50",
lists, under the linear probe, two rows of forget-class probe accuracy:

    Attack Type          Original  ROFT   GAU    KDU    CNR
    Linear Probe         0.856     0.647  0.791  0.731  0.220
    3-Layer MLP Probe    0.923     0.734  0.823  0.789  0.334
    ResNet-based Probe   0.945     0.789  0.856  0.812  0.423

That table (its caption and those two row names) is all the paper says about these probes: no
architecture beyond "3-layer" and "ResNet-based", no width, optimiser, training length, regularisation,
train/test split, input layer or input shape (flattened vector or spatial map) is given anywhere in
the text. Every such choice below is ours, stated where it is made.

Common protocol (the same as probes.py, so the numbers sit next to the linear probe's): each probe is
fitted on the probe-train features (all classes, forget included) and scored on the test features;
`forget_acc` is the share of forget-class test examples labelled with their true label and
`overall_acc` the accuracy on all test examples (`probes.scores`). A probe with capacity needs its
size and its training length chosen on data it is not fitted on, never on test: probe-train is split,
class-stratified and seeded, into a fit part and a validation part (`val_frac`); every candidate size
in a small grid is trained on the fit part with Adam, evaluated on validation after each epoch, and
kept at its best validation epoch (early stopping with `patience`); the candidate with the best
validation accuracy wins (ties: the first in the grid) and is scored on test. It is not refitted on
the whole of probe-train (sklearn's `MLPClassifier(early_stopping=True)` does the same: the validation
part is held out and the best validation weights are kept).

Everything random (the split, initialisation, minibatch order) is drawn inside `torch.random.fork_rng`
from `seed`, so a probe is a function of its inputs and seed and leaves the caller's RNG untouched.
Computation is on the CPU in float32; the tap features of the audit are there already.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..data import stratified_split
from .linear import Standardizer, _t
from .probes import _y, scores

VAL_FRAC = 0.2  # share of probe-train held out (class-stratified) to choose the size and the stopping epoch
WEIGHT_DECAY = 1e-4  # sklearn MLPClassifier's alpha default, as Adam's (coupled) L2 decay
# MLP probe: (first, second) hidden widths tried, chosen on validation; Adam as sklearn's MLPClassifier
MLP_HIDDEN = ((256, 128), (64, 32))
MLP_LR = 1e-3
MLP_BATCH = 200
MLP_MAX_EPOCHS = 100
MLP_PATIENCE = 10  # sklearn's n_iter_no_change
# conv probe: widths tried (stem and residual block channels), chosen on validation
CONV_WIDTHS = (16, 32)
CONV_MAX_SIDE = 8  # maps are average-pooled to at most 8 x 8 first (cost bound)
CONV_LR = 1e-2
CONV_BATCH = 128
CONV_MAX_EPOCHS = 60
CONV_PATIENCE = 5


def _train_early_stopped(model: nn.Module, xf, yf, xv, yv, *, lr, weight_decay, max_epochs, patience, batch_size, g):
    """Adam on minibatches of the fit part; after every epoch the validation accuracy (eval mode). Returns
    (validation accuracy of the kept weights, the epoch they come from); `model` ends with those weights."""
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay, foreach=True)
    n = len(yf)
    best_acc, best_epoch, best_state = -1.0, 0, copy.deepcopy(model.state_dict())
    for epoch in range(1, max_epochs + 1):
        model.train()
        perm = torch.randperm(n, generator=g)
        for i in range(0, n, batch_size):
            b = perm[i:i + batch_size]
            if len(b) < 2 and n >= 2:  # a lone example makes BatchNorm's batch statistics degenerate
                continue
            loss = F.cross_entropy(model(xf[b]), yf[b])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            acc = float((model(xv).argmax(1) == yv).float().mean())
        if acc > best_acc:  # strict: a plateau keeps the earlier (shorter-trained) weights
            best_acc, best_epoch, best_state = acc, epoch, copy.deepcopy(model.state_dict())
        elif epoch - best_epoch >= patience:
            break
    model.load_state_dict(best_state)
    model.eval()
    return best_acc, best_epoch


def _select_and_score(make, candidates, train_x, train_y, test_x, test_y, forget, *, seed, val_frac, batch_size,
                      **train_kw) -> dict:
    """The shared protocol (module docstring): split, train every candidate, keep the best on validation,
    score it on test. `make(candidate, n_classes)` builds a fresh model (inside the forked RNG)."""
    y = _y(train_y)
    classes, yi = torch.unique(y, return_inverse=True)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        g = torch.Generator().manual_seed(seed)
        fit, val = (torch.as_tensor(i) for i in stratified_split(y.numpy(), val_frac, seed))
        if len(val) == 0:  # too few examples to hold any out: select and stop on the fit part itself
            val = fit
        xf, yf, xv, yv = train_x[fit], yi[fit], train_x[val], yi[val]
        best = None
        for cand in candidates:
            model = make(cand, len(classes))
            acc, epoch = _train_early_stopped(model, xf, yf, xv, yv, batch_size=batch_size, g=g, **train_kw)
            if best is None or acc > best[0]:
                best = (acc, epoch, cand, model)
        _, epoch, cand, model = best
        with torch.no_grad():
            pred = classes[model(test_x).argmax(1)]
    return {**scores(pred, test_y, forget), "hidden": cand, "epochs": epoch}


def _mlp(d: int, hidden: tuple[int, int], k: int) -> nn.Module:
    h1, h2 = hidden
    return nn.Sequential(nn.Linear(d, h1), nn.ReLU(), nn.Linear(h1, h2), nn.ReLU(), nn.Linear(h2, k))


def _grid(hidden) -> list[tuple[int, ...]]:
    """A single (h1, h2) pair or a sequence of them."""
    hidden = list(hidden)
    if any(isinstance(h, (tuple, list)) for h in hidden):
        return [tuple(int(u) for u in h) for h in hidden]
    return [tuple(int(u) for u in hidden)]


def mlp_probe(train_x, train_y, test_x, test_y, forget, *, hidden: Sequence = MLP_HIDDEN, seed: int = 0,
              val_frac: float = VAL_FRAC, max_epochs: int = MLP_MAX_EPOCHS, patience: int = MLP_PATIENCE,
              lr: float = MLP_LR, weight_decay: float = WEIGHT_DECAY, batch_size: int = MLP_BATCH) -> dict:
    """3-layer MLP recovery probe (paper Table 10, "3-Layer MLP Probe"; see the module docstring for
    what the paper says and the shared protocol).

    The attack: on the (N, D) features of one tap (reduced by the audit, D <= ~1100), standardised with
    probe-train statistics (`linear.Standardizer`, as the linear probe), a multilayer perceptron with
    three linear layers, D -> h1 -> ReLU -> h2 -> ReLU -> classes, trained with cross-entropy to
    recover every class label, forget included, and asked to label the forget-class test examples.

    Our choices (the paper gives none): "3-layer" read as three linear layers (two hidden); hidden
    sizes chosen on validation from `hidden` (default (256, 128) or (64, 32): the larger matches
    sklearn's habit of a few hundred units, the smaller wins where the fit part is small and
    high-dimensional; one pair disables the choice); Adam at lr 1e-3 (sklearn's and torch's default),
    minibatches of 200 (sklearn's `batch_size="auto"`), L2 weight decay 1e-4 (sklearn's alpha
    default, applied as Adam's coupled decay), torch's default initialisation; 20% of probe-train
    held out for validation; at most 100 epochs, stopped after 10 without a better validation
    accuracy (sklearn's `n_iter_no_change`), the best epoch's weights kept. Measured on 2000 x 1024
    features, 10 classes, one thread (AMD EPYC, cores shared with other jobs): 1.6-2.5 s CPU time,
    2.4-4 s wall, most of it the (256, 128) candidate.

    Returns {"forget_acc", "overall_acc", "hidden": the chosen (h1, h2), "epochs": the epoch whose
    weights were kept}.
    """
    scaler = Standardizer.fit(train_x)
    xtr, xte = scaler(train_x), scaler(test_x)
    return _select_and_score(lambda h, k: _mlp(xtr.shape[1], h, k), _grid(hidden), xtr, train_y, xte, test_y,
                             forget, seed=seed, val_frac=val_frac, batch_size=batch_size, max_epochs=max_epochs,
                             patience=patience, lr=lr, weight_decay=weight_decay)


class _Block(nn.Module):
    """Basic ResNet block: conv3x3(stride)-BN-ReLU-conv3x3-BN, plus the input (a strided 1x1 conv + BN
    where the shape changes), ReLU."""

    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.c1, self.b1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout)
        self.c2, self.b2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout)
        self.skip = (nn.Identity() if stride == 1 and cin == cout else
                     nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)))

    def forward(self, x):
        return F.relu(self.skip(x) + self.b2(self.c2(F.relu(self.b1(self.c1(x))))))


class ConvProbeNet(nn.Module):
    """Two coordinate channels appended (`coords`), 1x1 conv stem (C [+ 2] -> w) + BN + ReLU, `blocks`
    basic blocks at width w (the first at stride 2 on maps wider than 1x1), global average pool, linear."""

    def __init__(self, c: int, w: int, k: int, side: int = 8, blocks: int = 1, coords: bool = True):
        super().__init__()
        self.coords = coords
        self.stem = nn.Sequential(nn.Conv2d(c + 2 * coords, w, 1, bias=False), nn.BatchNorm2d(w), nn.ReLU())
        self.blocks = nn.Sequential(*[_Block(w, w, 2 if i == 0 and side > 1 else 1) for i in range(blocks)])
        self.head = nn.Linear(w, k)

    def forward(self, x):
        if self.coords:  # row and column position in [-1, 1]: absolute position readable after pooling
            n, _, h, w = x.shape
            yy = torch.linspace(-1, 1, h, dtype=x.dtype).view(1, 1, h, 1).expand(n, 1, h, w)
            xx = torch.linspace(-1, 1, w, dtype=x.dtype).view(1, 1, 1, w).expand(n, 1, h, w)
            x = torch.cat([x, yy, xx], 1)
        return self.head(self.blocks(self.stem(x)).mean((2, 3)))


def pool_maps(maps, max_side: int = CONV_MAX_SIDE) -> torch.Tensor:
    """(N, C, H, W) float32, adaptive-average-pooled to at most max_side x max_side (untouched if smaller)."""
    maps = _t(maps)
    if maps.ndim != 4:
        raise ValueError(f"conv_probe needs (N, C, H, W) maps, got shape {tuple(maps.shape)}")
    h, w = maps.shape[2:]
    if h > max_side or w > max_side:
        maps = F.adaptive_avg_pool2d(maps, (min(h, max_side), min(w, max_side)))
    return maps


def conv_probe(train_maps, train_y, test_maps, test_y, forget, *, widths: Sequence[int] = CONV_WIDTHS,
               blocks: int = 1, coords: bool = True, max_side: int = CONV_MAX_SIDE, seed: int = 0,
               val_frac: float = VAL_FRAC, max_epochs: int = CONV_MAX_EPOCHS, patience: int = CONV_PATIENCE,
               lr: float = CONV_LR, weight_decay: float = WEIGHT_DECAY, batch_size: int = CONV_BATCH) -> dict:
    """Small residual conv-net recovery probe on one tap's spatial maps (paper Table 10, "ResNet-based
    Probe"; see the module docstring for what the paper says and the shared protocol).

    The attack: the (N, C, H, W) maps of one tap (e.g. 8x28x28 .. 64x4x4) are kept spatial, not
    flattened, so learned convolutions can combine channels locally and read *where* something is
    active; each channel standardised with probe-train statistics (mean and std over examples and
    positions); then `ConvProbeNet`: two coordinate channels (row, column in [-1, 1]) appended, a 1x1
    conv to width w + BatchNorm + ReLU, one basic ResNet block (3x3 conv at stride 2 + BN + ReLU, 3x3
    conv + BN, strided 1x1 projection skip, ReLU), global average pooling, a linear classifier; trained
    with cross-entropy to recover every class label, forget included.

    Cost bound (ours): the maps are first average-pooled with `F.adaptive_avg_pool2d` to at most
    `max_side` x `max_side` (default 8: L0/L1 28x28 -> 8x8, L2 14x14 -> 8x8; L3 7x7 and L4 4x4
    untouched), so on early taps the probe sees a coarser grid than the tap's own.

    Our choices (the paper gives none: "ResNet-based" is all it says):
    * one residual block at stride 2 after a 1x1 stem: the smallest net that is still a ResNet; its
      receptive field covers an 8x8 map. Global average pooling alone makes a conv net nearly blind to
      absolute position (only zero padding breaks translation invariance), which a flattened linear
      probe does read; the coordinate channels (CoordConv, Liu et al. 2018) give that back at the cost
      of two input channels (`coords=False` drops them). Measured on 8x8 noise maps with a 2x2 blob
      in the class's quadrant (4 classes, 800 training maps, seeds 0 and 1): with coordinates one
      block reached 0.99-1.00 test accuracy, without them 0.90-0.91; two blocks without coordinates
      reached 1.00 too, at ~1.3x the cost.
    * width chosen on validation from `widths` (default 16 or 32 channels): within a one-thread CPU
      budget; a ResNet-50-sized probe on ~2000 examples would only overfit.
    * Adam at lr 1e-2 with minibatches of 128 (BatchNorm tolerates it; 1e-3 / 3e-3 needed more epochs
      for lower validation accuracy here), L2 weight decay 1e-4, torch's default initialisation;
      20% of probe-train held out for validation; at most 60 epochs, stopped after 5 without a better
      validation accuracy, the best epoch's weights kept (BatchNorm in eval mode for validation and
      test). Measured on 2000 x 32 x 8 x 8 maps, 10 classes, one thread (AMD EPYC, cores shared with
      other jobs): 5.6-7.5 s CPU time, 8.6-11 s wall; `widths=(16,)` or a smaller `max_side` cut it.

    Not a stronger linear probe: global average pooling discards a position-specific pattern that a
    flattened linear probe reads. On maps whose class is a random per-class mean map plus noise
    (2000 x 32 x 8 x 8, 10 classes) this probe read 0.81-0.88 of the forget class, the linear probe
    on the flattened maps 1.00. It complements the linear and MLP probes; take the strongest.

    Returns {"forget_acc", "overall_acc", "hidden": the chosen width w, "epochs": the epoch whose
    weights were kept}.
    """
    tr, te = pool_maps(train_maps, max_side), pool_maps(test_maps, max_side)
    if tr.shape[1:] != te.shape[1:]:
        raise ValueError(f"train maps {tuple(tr.shape[1:])} and test maps {tuple(te.shape[1:])} differ")
    mean = tr.mean((0, 2, 3), keepdim=True)
    std = tr.std((0, 2, 3), unbiased=False, keepdim=True)
    std = torch.where(std > 1e-8, std, torch.ones_like(std))  # dead channels stay at 0
    tr, te = (tr - mean) / std, (te - mean) / std
    c, side = tr.shape[1], max(tr.shape[2:])
    return _select_and_score(lambda w, k: ConvProbeNet(c, w, k, side, blocks, coords), [int(w) for w in widths],
                             tr, train_y, te, test_y, forget, seed=seed, val_frac=val_frac, batch_size=batch_size,
                             max_epochs=max_epochs, patience=patience, lr=lr, weight_decay=weight_decay)

