"""ROFT: retain-only fine-tuning of the original for the whole budget (epochs + stabilize_epochs)."""

from ..data import batches
from ..train import ce_loss, fit
from ._common import generator, split_classes, trainable_copy


def run(original, ds, forget, cfg, *, device, quiet=False):
    b = cfg.baseline
    retain_train, _, _ = split_classes(ds, forget)
    model = trainable_copy(original, device)
    gen = generator(cfg.seed)
    steps = -(-len(retain_train) // b.batch_size)
    hist = fit(model, b.epochs + b.stabilize_epochs,
               lambda e: batches(retain_train, b.batch_size, shuffle=True, generator=gen, device=device), ce_loss,
               lr=b.lr, weight_decay=b.weight_decay, device=device, amp=cfg.amp, compile=cfg.compile, desc="roft", quiet=quiet,
               steps_per_epoch=steps)
    return model.eval(), {"loss": hist}
