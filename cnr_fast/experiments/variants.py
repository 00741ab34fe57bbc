"""CNR with one change: the config changes of `ablate`'s variants, defined once. The CNR controls of the
method registry (`cnr-raw`, `cnr-paper`) are two of them under the names `compare` and `unlearn --method`
know them by (methods.CONTROLS); the committed results use both names, so both stay."""

VARIANTS = {
    "full": {},
    "no-synthesis": {"synth": {"latent_opt": False}},  # raw GAN samples (Table 3 "w/o synthesis")
    "no-realism": {"synth": {"lambda_real": 0.0}},
    "no-tv": {"synth": {"lambda_smooth": 0.0}},
    "random-units": {"detect": {"selection": "random"}},
    "gradient-units": {"detect": {"selection": "gradient"}},
    "k3": {"detect": {"k": 3}},
    "k48": {"detect": {"k": 48}},
    "sign-paper": {"synth": {"sign": "paper"}},
    "relabel-step": {"reset": {"relabel": "step"}},
    "b32": {"synth": {"batch": 32}},
    "b256": {"synth": {"batch": 256}},
    "b1024": {"synth": {"batch": 1024}},
}
