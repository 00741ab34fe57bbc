"""One rank of tests/test_dist.py's 2-process gloo check (also called in-process as the 1-process oracle).

    python tests/dist_worker.py OUT   (with RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT set)

Runs each data-parallel piece on fixed random inputs and (rank 0) saves what it produced to OUT:
fit on a BatchNorm-free net (uneven last batch included), detection's class means, sharded latent
optimisation, the audit's feature pass, and SSD's importances.
"""

from __future__ import annotations

import sys

import torch
import torch.nn as nn


def _split(n=50, c=1, s=12, classes=4, seed=1):
    from cnr_fast.data import Split

    g = torch.Generator().manual_seed(seed)
    return Split(torch.randint(0, 256, (n, c, s, s), generator=g, dtype=torch.uint8),
                 torch.randint(0, classes, (n,), generator=g))


def _plain_net(seed=2, classes=4):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 6, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(3), nn.Flatten(),
                         nn.Linear(54, classes))


def _resnet(seed=3, classes=4):
    from cnr_fast.models import build_model

    torch.manual_seed(seed)
    return build_model("resnet18", classes, 1, 12, width=0.125).eval()


def compute() -> dict:
    from cnr_fast.audit.features import extract
    from cnr_fast.baselines.ssd import importances
    from cnr_fast.cnr.detect import class_means
    from cnr_fast.cnr.synthesize import Discriminator, Generator, optimise_latents
    from cnr_fast.config import SynthConfig
    from cnr_fast.data import batches
    from cnr_fast.train import ce_loss, fit

    dev = torch.device("cpu")
    split = _split()
    out = {}

    net = _plain_net()
    gen = torch.Generator().manual_seed(4)
    hist = fit(net, 2, lambda e: batches(split, 12, shuffle=True, generator=gen), ce_loss, lr=1e-2,
               weight_decay=1e-4, device=dev, quiet=True)
    out["fit_weights"] = {k: v.clone() for k, v in net.state_dict().items()}
    out["fit_history"] = torch.tensor(hist)

    model = _resnet()
    taps = ["L1", "L3", "L4"]
    means, shapes, counts = class_means(model, split, taps, 4, device=dev, batch_size=16, quiet=True)
    out["means"], out["counts"] = means, counts

    torch.manual_seed(5)
    g, d = Generator(16, 1, 12, ngf=8).eval(), Discriminator(1, 12, ndf=8).eval()
    idx = torch.Generator().manual_seed(6)
    f_idx = {t: torch.randperm(int(torch.tensor(shapes[t]).prod()), generator=idx)[:3] for t in taps}
    r_idx = {t: torch.randperm(int(torch.tensor(shapes[t]).prod()), generator=idx)[:3] for t in taps}
    cfg = SynthConfig(latent_dim=16, ngf=8, batch=7, steps=5, lr=0.05)  # 7 codes: uneven shares
    x, log = optimise_latents(model, g, d, f_idx, r_idx, taps, cfg, device=dev, seed=7, quiet=True)
    out["latent_images"] = x
    out["latent_log"] = torch.tensor([log["selective_before"], log["selective_after"], log["realism_after"],
                                      log["tv_after"]], dtype=torch.float64)
    out["latent_hist"] = torch.tensor(log["model_pred_hist"])

    feats = extract(model, split, device=dev, taps=taps, batch_size=16, num_classes=4, class_sums=True,
                    keep_full=True)
    out["vec"], out["full"], out["logits"] = feats.vec, feats.full, feats.logits
    out["sums"], out["sum_counts"] = feats.sums, feats.counts

    out["ssd"] = importances(_plain_net(seed=8), split, 16, dev)
    return out


def main(path: str) -> None:
    from cnr_fast import dist

    dist.setup("cpu")
    assert dist.world() == 2, dist.world()
    out = compute()
    out["world_size"] = dist.world()
    if dist.is_main():
        torch.save(out, path)
    dist.shutdown()


if __name__ == "__main__":
    main(sys.argv[1])
