"""Frozen per-stage configuration. Defaults are the paper's (Section 3.7, Algorithm 1).

Every dataclass round-trips through JSON (`to_dict` / `from_dict`), and `RunConfig.hash()` keys the
stage caches. Unknown keys in a config file are an error, not silently ignored.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field, fields

from .errors import UserError


@dataclass(frozen=True)
class DataConfig:
    dataset: str = "mnist5k"
    data_root: str | None = None
    download: bool = False
    image_size: int | None = None  # None: the dataset's native size (28 for MNIST, 32 for CIFAR, ...)
    test_fraction: float = 0.2  # embedded sets only; torchvision sets use their own test split
    # Validation split carved from the training split (seeded, class-stratified): every choice is
    # made on it; every table reports the test split. 0 turns it off (no choice can then be made).
    val_fraction: float = 0.1
    forget: tuple[int, ...] = (2,)  # the paper forgets digit 2 on MNIST


@dataclass(frozen=True)
class ModelConfig:
    arch: str = "resnet18"
    # ResNet channel multiplier; 0.125 gives 8-16-32-64 channels, which trains on 2 CPU cores
    # within the 5-minute default run. 1.0 is torchvision's ResNet.
    width: float = 0.125
    checkpoint: str | None = None


@dataclass(frozen=True)
class TrainConfig:
    """The one training recipe: original model and retrain-from-scratch (RFS) share it."""

    epochs: int = 6
    batch_size: int = 128
    lr: float = 2e-3
    weight_decay: float = 5e-4
    augment: bool = False
    # Initialisation of the retrained-from-scratch reference (and of RFS) relative to the original:
    # "independent" (default): its own seed, so "close to retrained" cannot mean "close to the shared
    # initial weights"; "shared": the original's initial weights (what the paper's setup implies).
    # RFS never shares the reference's seed: it would be the reference weight for weight.
    reference_init: str = "independent"


@dataclass(frozen=True)
class DetectConfig:
    taps: tuple[str, ...] = ("L1", "L2", "L3", "L4")  # Algorithm 1, line 2
    k: int = 12  # units per tap and per forget class; at most half the units of the tap
    selection: str = "activation"  # activation (paper) | gradient | random (Table 3 ablations)
    batch_size: int = 256


@dataclass(frozen=True)
class SynthConfig:
    gan_epochs: int = 50
    # The paper gives 50 epochs but no batch size. None = auto: 64 (the DCGAN default) unless that
    # leaves fewer than 25 updates an epoch, then smaller (down to 8). On mnist5k's 400 images of a
    # digit, batch 64 gave 350 updates in all and a grey-background generator whose images the reset
    # told apart from real ones by background alone (forget acc 0.46 after reset); batch 16, 0.12.
    gan_batch_size: int | None = None
    gan_lr: float = 2e-4
    latent_dim: int = 100
    ngf: int = 32  # generator / discriminator base width (DCGAN)
    batch: int = 64  # B, synthetic images per forget class
    steps: int = 500
    lr: float = 0.01
    alpha: float = 1.5
    lambda_real: float = 0.1
    lambda_smooth: float = 0.01
    # Sign of the selective loss (eq. 6). "paper": minimise A(U_f) - alpha*A(U_r) as printed,
    # i.e. images that switch forget units OFF. "excite": minimise -(A(U_f) - alpha*A(U_r)),
    # images that switch forget units ON. Default "excite": see README, "The sign of eq. 6".
    sign: str = "excite"
    latent_opt: bool = True  # False: Table 3 "w/o synthesis" ablation (raw generator samples)


@dataclass(frozen=True)
class ResetConfig:
    epochs: int = 10
    stabilize_epochs: int = 5
    lr: float = 1e-4
    weight_decay: float = 1e-4
    batch_size: int = 128
    synth_batch_size: int = 32
    # "once": each synthetic image keeps the random retain label drawn for it (Algorithm 1 line 21);
    # "step": labels drawn afresh every step, so the only thing to learn is "uniform over retain".
    relabel: str = "once"
    # gamma of eq. 7. The paper does not give a value; 1e-2 keeps the weights near theta_0
    # without pinning them (the pull is summed over all parameters).
    gamma: float = 1e-2


@dataclass(frozen=True)
class BaselineConfig:
    """Shared budget of the fine-tuning baselines: CNR's reset budget (10 + 5 epochs, same Adam)."""

    epochs: int = 10
    stabilize_epochs: int = 5
    lr: float = 1e-4
    weight_decay: float = 1e-4
    batch_size: int = 128
    kd_temperature: float = 4.0
    # SSD (Foster et al. AAAI 2024; if-loops/selective-synaptic-dampening, forget_full_class_main.py):
    # no training. Importances = squared gradient of each batch's mean CE, averaged over batches, in
    # eval mode, on the forget data and on the whole training set; batch 64.
    ssd_alpha: float = 10.0  # selection weighting (ResNet-18; the authors use 5 for ViT)
    ssd_lambda: float = 1.0  # dampening constant
    ssd_batch_size: int = 64
    # SCRUB (Kurmanji et al. NeurIPS 2023; meghdadk/SCRUB): the authors publish two settings,
    # "large" (large_scale_unlearning.ipynb, CIFAR-10 full class: SGD 5e-4, 3 epochs, msteps 2, T 4,
    # gamma 0.99, alpha 0.001) and "small" (small_scale_unlearning.ipynb: Adam 5e-4, wd 0.1, 10
    # epochs, msteps 3, T 2, gamma 1, alpha 0.5). "val" (default): both run, the one with the better
    # validation score is kept (see baselines/_common.select_on_validation).
    scrub_preset: str = "val"
    scrub_forget_batch: int = 512
    scrub_retain_batch: int = 256
    # SalUn (Fan et al. ICLR 2024; OPTML-Group/Unlearn-Saliency, Classification/): saliency mask = top
    # share of |grad of -CE on forget| over all parameters; random labelling (RL) on the masked weights.
    salun_ratio: float = 0.5
    salun_epochs: int = 10
    # SGD, momentum 0.9, weight decay 5e-4. The authors give no class-wise lr and say they search it in
    # [1e-4, 1e-1]: None (default) = chosen on the validation split from 1e-4, 1e-3, 1e-2, 1e-1.
    salun_lr: float | None = None
    salun_batch_size: int = 256


@dataclass(frozen=True)
class RunConfig:
    method: str = "cnr"
    seed: int = 0
    device: str = "auto"
    amp: bool = False
    compile: bool = False  # torch.compile the training loops (costs ~55 s a graph on 2 CPU cores; off by default)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    detect: DetectConfig = field(default_factory=DetectConfig)
    synth: SynthConfig = field(default_factory=SynthConfig)
    reset: ResetConfig = field(default_factory=ResetConfig)
    baseline: BaselineConfig = field(default_factory=BaselineConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict) -> "RunConfig":
        return _from_dict(cls, d, "config")

    def replace(self, **sections) -> "RunConfig":
        """`cfg.replace(synth={"alpha": 2.0}, seed=1)`: nested keyword updates, validated."""
        merged = self.to_dict()
        for key, val in sections.items():
            if isinstance(val, dict):
                merged[key] = {**merged[key], **val}
            else:
                merged[key] = val
        return RunConfig.from_dict(merged)


def _from_dict(cls, d: dict, where: str):
    if not isinstance(d, dict):
        raise UserError(f"{where}: expected a JSON object, got {type(d).__name__}")
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(d) - set(known))
    if unknown:
        raise UserError(f"{where}: unknown key(s) {unknown}; known keys are {sorted(known)}")
    kwargs = {}
    for name, val in d.items():
        sub = _SECTIONS.get(name) if cls is RunConfig else None
        if sub is not None:
            kwargs[name] = _from_dict(sub, val, f"{where}.{name}")
        elif isinstance(val, list):
            kwargs[name] = tuple(val)
        else:
            kwargs[name] = val
    return cls(**kwargs)


_SECTIONS = {
    "data": DataConfig,
    "model": ModelConfig,
    "train": TrainConfig,
    "detect": DetectConfig,
    "synth": SynthConfig,
    "reset": ResetConfig,
    "baseline": BaselineConfig,
}


def stable_hash(obj) -> str:
    """Short content hash of a JSON-able object (sorted keys), used as a cache key."""
    blob = json.dumps(obj, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def load_config_file(path: str) -> RunConfig:
    try:
        with open(path) as fh:
            d = json.load(fh)
    except FileNotFoundError:
        raise UserError(f"config file {path!r} does not exist; pass an existing JSON file to --config") from None
    except json.JSONDecodeError as e:
        raise UserError(f"config file {path!r} is not valid JSON ({e}); fix the file or drop --config") from None
    return RunConfig.from_dict(d)
