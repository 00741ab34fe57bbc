"""ROFT: retain-only fine-tuning of the original for the whole budget (epochs + stabilize_epochs)."""

from ..train import finetune
from ._common import generator, split_classes, trainable_copy


def run(original, ds, forget, cfg, *, device, quiet=False):
    b = cfg.baseline
    retain_train, _, _ = split_classes(ds, forget)
    model = trainable_copy(original, device)
    hist = finetune(model, retain_train, b.epochs + b.stabilize_epochs, batch_size=b.batch_size, lr=b.lr,
                    weight_decay=b.weight_decay, gen=generator(cfg.seed), device=device, amp=cfg.amp,
                    compile=cfg.compile, desc="roft", quiet=quiet)
    return model.eval(), {"loss": hist}
