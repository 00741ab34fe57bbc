"""ROFT: retain-only fine-tuning of the original for the whole budget (epochs + stabilize_epochs).

Adam, weight decay baseline.weight_decay; the step size is baseline.lr, or, when it is null (the
default), chosen on validation from tuning.ADAM_LR_GRID like every method whose authors leave it open.
"""

from ..train import finetune
from ..tuning import maybe_tuned_lr
from ._common import generator, split_classes, trainable_copy


def run(original, ds, forget, cfg, *, device, quiet=False):
    return maybe_tuned_lr(cfg.baseline.lr, lambda lr: roft(original, ds, forget, cfg, lr, device=device, quiet=quiet),
                          ds, forget, device, "roft", quiet, original=original)


def roft(original, ds, forget, cfg, lr, *, device, quiet=False):
    b = cfg.baseline
    retain_train, _, _ = split_classes(ds, forget)
    model = trainable_copy(original, device)
    hist = finetune(model, retain_train, b.epochs + b.stabilize_epochs, batch_size=b.batch_size, lr=lr,
                    weight_decay=b.weight_decay, gen=generator(cfg.seed), device=device, amp=cfg.amp,
                    compile=cfg.compile, desc="roft", quiet=quiet)
    return model.eval(), {"loss": hist}
