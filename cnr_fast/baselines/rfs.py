"""RFS: retrain from scratch on the retain classes, same recipe as the original model.

Its initial weights and data order come from `references.reference_seeds("rfs", cfg)`: never the
retrained reference's (RFS would be the reference weight for weight), and independent of the
original's unless `train.reference_init = "shared"` (then the original's initial weights).
"""

from ..references import train_reference


def run(original, ds, forget, cfg, *, device, quiet=False):
    model, meta = train_reference("rfs", cfg, ds, device, quiet=quiet, desc="rfs")
    return model.eval(), {"init_seed": meta["init_seed"], "data_order_seed": meta["data_order_seed"]}
