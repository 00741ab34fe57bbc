"""RFS: retrain from scratch on the retain classes, same recipe as the original model."""

from ..models import build_model
from ..train import train_classifier
from ._common import split_classes


def run(original, ds, forget, cfg, *, device, quiet=False):
    retain_train, _, _ = split_classes(ds, forget)
    import torch

    torch.manual_seed(cfg.seed)
    model = build_model(cfg.model.arch, ds.num_classes, ds.in_channels, ds.image_size, cfg.model.width).to(device)
    hist = train_classifier(model, retain_train, cfg.train, device=device, amp=cfg.amp, seed=cfg.seed, compile=cfg.compile,
                            desc="rfs", quiet=quiet)
    return model.eval(), {"loss": hist}
