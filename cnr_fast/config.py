"""Frozen per-stage configuration. Defaults are the paper's (Section 3.7, Algorithm 1).

Every dataclass round-trips through JSON (`to_dict` / `from_dict`); `stable_hash` of a config's dict
keys the model cache (references.reference_key) and a run's resume state. Unknown keys in a config file are an error, not silently ignored.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import numbers
import types
import typing
from dataclasses import dataclass, field, fields

from .errors import UserError


@dataclass(frozen=True)
class DataConfig:
    dataset: str = "mnist5k"
    data_root: str | None = None
    download: bool = False
    image_size: int | None = None  # None: the dataset's native size (28 for MNIST, 32 for CIFAR, ...)
    # Share of one pool held out for test: embedded sets and a single image folder; torchvision sets and
    # an image folder with train/ and test/ (or test_dir) use their own test split.
    test_fraction: float = 0.2
    # A test split kept elsewhere: a folder of class folders, read like imagefolder:'s (its classes must
    # be the training folder's). Only with an imagefolder: dataset.
    test_dir: str | None = None
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
    # torchvision ImageNet state-dict file: original and references start from it (models/pretrained.py)
    weights: str | None = None
    # For a model source other than cnr-fast's own archs (`arch` = torchvision:NAME, timm:NAME,
    # FILE.py:FUNCTION, package.module:FUNCTION; models/sources.py): its builder's keyword
    # arguments ("key=value"), its input normalisation, and taps by module path ("L1=layer1").
    model_args: tuple[str, ...] = ()
    normalize: str = "pm1"
    tap_paths: tuple[str, ...] = ()
    # Where the logits are when the forward returns a tuple, dict or output object (an index or a key;
    # None: models/sources.pick_logits's rule).
    logits_from: str | None = None


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
    # Adam step size. The paper gives 1e-4 for its scale; None (default): chosen on validation from
    # tuning.ADAM_LR_GRID (which holds 1e-4), the same search every baseline's step size gets.
    lr: float | None = None
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
    # Adam step size of ROFT, GAU and KDU. None (default): chosen on validation from
    # tuning.ADAM_LR_GRID, as CNR's reset step size is (reset.lr).
    lr: float | None = None
    weight_decay: float = 1e-4
    batch_size: int = 128
    kd_temperature: float = 4.0
    # SSD (Foster et al. AAAI 2024; if-loops/selective-synaptic-dampening, src/forget_full_class_main.py):
    # no training. Importances = squared gradient of each batch's mean CE, averaged over batches, in
    # eval mode, on the forget data and on the whole training set taken in the authors' order (the
    # retain set class by class, then the forget set, unshuffled); batch 64 (`-b` default).
    # ssd_alpha None (default): chosen on validation from ssd.ALPHA_GRID, which holds the authors' 10
    # (ResNet-18; 5 for ViT), set for 20-105 classes; a value here is used as it is.
    ssd_alpha: float | None = None
    ssd_lambda: float = 1.0  # dampening constant
    ssd_batch_size: int = 64
    # SCRUB (Kurmanji et al. NeurIPS 2023; meghdadk/SCRUB): the authors publish two settings,
    # "large" (large_scale_unlearning.ipynb, CIFAR-10 full class: SGD 5e-4, 3 epochs, msteps 2, T 4,
    # gamma 0.99, alpha 0.001, forget / retain batch 512 / 256) and "small" (small_scale_unlearning.ipynb,
    # the one their README names for small data sets: Adam 5e-4, wd 0.1, 10 epochs, msteps 3, T 2,
    # gamma 1, alpha 0.5, forget / retain batch 64 / 32). "val" (default): both run, the validation rule
    # keeps one (tuning.choose).
    scrub_preset: str = "val"
    scrub_forget_batch: int | None = None  # None: the setting's own loader (512 large, 64 small)
    scrub_retain_batch: int | None = None  # None: the setting's own loader (256 large, 32 small)
    # SalUn (Fan et al. ICLR 2024; OPTML-Group/Unlearn-Saliency, Classification/): saliency mask = top
    # share of |grad of -CE on forget| over all parameters; random labelling (RL) on the masked weights.
    salun_ratio: float = 0.5
    salun_epochs: int = 10
    # SGD, momentum 0.9, weight decay 5e-4. The authors give no class-wise lr and say they search it in
    # [1e-4, 1e-1]: None (default) = chosen on the validation split from 1e-4, 1e-3, 1e-2, 1e-1.
    # The same loop, settings and lr grid run the RL baseline (random labelling, no mask).
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
    # Settings of methods that declare their own (methods.Option): {"method": {"option": value}}.
    # Checked against the method registry by methods.check_options; omitted from to_dict when empty,
    # so the configs, cache keys and resume keys of runs that set none are what they were.
    method_options: dict = field(default_factory=dict, hash=False)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        for section, key, default in OMITTED_AT_DEFAULT:  # settings added later: old keys stay as they were
            where = d if section is None else d[section]
            if where[key] == default:
                del where[key]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "RunConfig":
        return _from_dict(cls, d, "config")

    def replace(self, **sections) -> "RunConfig":
        """`cfg.replace(synth={"alpha": 2.0}, seed=1)`: nested keyword updates, validated."""
        merged = self.to_dict()
        for key, val in sections.items():
            if key == "method_options":  # per method: the options given replace those of the same name
                old = merged.get(key, {})
                merged[key] = {**old, **{m: {**old.get(m, {}), **opts} for m, opts in val.items()}}
            elif isinstance(val, dict):
                merged[key] = {**merged[key], **val}
            else:
                merged[key] = val
        return RunConfig.from_dict(merged)


# Settings added after configs were first hashed (cache keys, resume keys, digests): left out of
# to_dict while at their default, so every run that does not use them keeps the keys it had.
OMITTED_AT_DEFAULT = ((None, "method_options", {}), ("model", "model_args", ()), ("model", "normalize", "pm1"),
                      ("model", "tap_paths", ()), ("data", "test_dir", None),
                      ("model", "logits_from", None))


def _from_dict(cls, d: dict, where: str):
    if not isinstance(d, dict):
        raise UserError(f"{where}: expected a JSON object, got {type(d).__name__}; write it as {{\"key\": value, ...}} "
                        "(a previous run's config.json shows the form)")
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(d) - set(known))
    if unknown:
        raise UserError(f"{where}: unknown key(s) {unknown}; known keys are {sorted(known)}")
    kwargs = {}
    hints = typing.get_type_hints(cls)
    for name, val in d.items():
        sub = _SECTIONS.get(name) if cls is RunConfig else None
        if cls is RunConfig and name == "method_options":
            kwargs[name] = _method_options(val, f"{where}.{name}")
        elif sub is not None:
            kwargs[name] = val if isinstance(val, sub) else _from_dict(sub, val, f"{where}.{name}")
        else:
            if isinstance(val, list):
                val = tuple(val)
            check_type(val, hints[name], f"{where}.{name}")
            kwargs[name] = val
    return cls(**kwargs)


def _method_options(val, where: str) -> dict:
    """The shape of method_options ({method: {option: JSON scalar}}); names and types are the method
    registry's to check (methods.check_options)."""
    if not isinstance(val, dict) or not all(isinstance(v, dict) for v in val.values()):
        raise UserError(f"{where} must map a method name to its options, e.g. {{\"mine\": {{\"strength\": 2}}}}; "
                        f"got {json.dumps(val, default=str)}")
    for m, opts in val.items():
        for k, v in opts.items():
            if not isinstance(v, (bool, int, float, str)) and v is not None:
                raise UserError(f"{where}.{m}.{k} must be a number, a string, true/false or null, not "
                                f"{json.dumps(v, default=str)}")
    return {m: dict(opts) for m, opts in val.items()}


def _type_ok(val, tp) -> bool:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return any(_type_ok(val, a) for a in typing.get_args(tp))
    if tp is type(None):
        return val is None
    if tp is bool:
        return isinstance(val, bool)
    if tp is int:
        return isinstance(val, numbers.Integral) and not isinstance(val, bool)
    if tp is float:
        return isinstance(val, numbers.Real) and not isinstance(val, bool)
    if tp is str:
        return isinstance(val, str)
    if origin is tuple:
        (item, *_rest) = typing.get_args(tp)
        return isinstance(val, tuple) and all(_type_ok(v, item) for v in val)
    return True


def _type_name(tp) -> str:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is tuple:
        return f"a list of {_type_name(typing.get_args(tp)[0])}s"
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false",
            type(None): "null"}.get(tp, str(tp))


def check_type(val, tp, where: str) -> None:
    if not _type_ok(val, tp):
        raise UserError(f"{where} must be {_type_name(tp)}, not {json.dumps(val, default=str)}; fix that value "
                        "(a previous run's config.json shows the expected form)")


# choices of the string settings (the stages check them too; here they are checked before any work)
CHOICES = {
    ("train", "reference_init"): ("independent", "shared"),
    ("detect", "selection"): ("activation", "gradient", "random"),
    ("synth", "sign"): ("excite", "paper"),
    ("reset", "relabel"): ("once", "step"),
    ("baseline", "scrub_preset"): ("val", "large", "small"),
}
# (section, key) -> (lowest allowed value, strictly above it?, how to set it); None section = top level
_LIMITS = {
    (None, "seed"): (0, False, "--seed"),
    ("data", "image_size"): (1, False, "--image-size"),
    ("data", "test_fraction"): (0.0, True, "data.test_fraction in --config"),
    ("model", "width"): (0.0, True, "--width"),
    ("train", "epochs"): (1, False, "--train-epochs"),
    ("train", "batch_size"): (1, False, "train.batch_size in --config"),
    ("train", "lr"): (0.0, True, "--lr"),
    ("train", "weight_decay"): (0.0, False, "train.weight_decay in --config"),
    ("detect", "k"): (1, False, "--k"),
    ("detect", "batch_size"): (1, False, "detect.batch_size in --config"),
    ("synth", "gan_epochs"): (1, False, "--gan-epochs"),
    ("synth", "gan_batch_size"): (1, False, "synth.gan_batch_size in --config"),
    ("synth", "gan_lr"): (0.0, True, "synth.gan_lr in --config"),
    ("synth", "latent_dim"): (1, False, "synth.latent_dim in --config"),
    ("synth", "ngf"): (1, False, "synth.ngf in --config"),
    ("synth", "batch"): (1, False, "--synth-batch"),
    ("synth", "steps"): (0, False, "--synth-steps"),
    ("synth", "lr"): (0.0, True, "synth.lr in --config"),
    ("synth", "alpha"): (0.0, False, "--alpha"),
    ("synth", "lambda_real"): (0.0, False, "--lambda-real"),
    ("synth", "lambda_smooth"): (0.0, False, "--lambda-smooth"),
    ("reset", "epochs"): (1, False, "--reset-epochs"),
    ("reset", "stabilize_epochs"): (0, False, "--stabilize-epochs"),
    ("reset", "lr"): (0.0, True, "reset.lr in --config"),
    ("reset", "weight_decay"): (0.0, False, "reset.weight_decay in --config"),
    ("reset", "batch_size"): (1, False, "reset.batch_size in --config"),
    ("reset", "synth_batch_size"): (1, False, "reset.synth_batch_size in --config"),
    ("reset", "gamma"): (0.0, False, "--gamma"),
    ("baseline", "epochs"): (1, False, "--baseline-epochs"),
    ("baseline", "stabilize_epochs"): (0, False, "--stabilize-epochs"),
    ("baseline", "lr"): (0.0, True, "baseline.lr in --config"),
    ("baseline", "weight_decay"): (0.0, False, "baseline.weight_decay in --config"),
    ("baseline", "batch_size"): (1, False, "baseline.batch_size in --config"),
    ("baseline", "kd_temperature"): (0.0, True, "baseline.kd_temperature in --config"),
    ("baseline", "ssd_alpha"): (0.0, True, "baseline.ssd_alpha in --config"),
    ("baseline", "ssd_lambda"): (0.0, True, "baseline.ssd_lambda in --config"),
    ("baseline", "ssd_batch_size"): (1, False, "baseline.ssd_batch_size in --config"),
    ("baseline", "scrub_forget_batch"): (1, False, "baseline.scrub_forget_batch in --config"),
    ("baseline", "scrub_retain_batch"): (1, False, "baseline.scrub_retain_batch in --config"),
    ("baseline", "salun_ratio"): (0.0, True, "baseline.salun_ratio in --config"),
    ("baseline", "salun_epochs"): (1, False, "--salun-epochs (baseline.salun_epochs)"),
    ("baseline", "salun_lr"): (0.0, True, "baseline.salun_lr in --config"),
    ("baseline", "salun_batch_size"): (1, False, "baseline.salun_batch_size in --config"),
}


def validate(cfg: RunConfig) -> RunConfig:
    """Check every number and choice of `cfg` before any work; a bad one is a UserError naming the
    setting, its value and the fix. Names of methods, archs and datasets are checked by the CLI."""
    d = cfg.to_dict()
    for (section, key), (low, strict, how) in _LIMITS.items():
        val = d[key] if section is None else d[section][key]
        if val is None:
            continue
        name = key if section is None else f"{section}.{key}"
        if isinstance(val, float) and not math.isfinite(val):
            raise UserError(f"{name} is {val}; pass a finite number with {how}")
        if (val <= low) if strict else (val < low):
            bound = f"above {low}" if strict else f"at least {low}"
            raise UserError(f"{name} is {val}, it must be {bound}; pass a valid value with {how}")
    for (section, key), options in CHOICES.items():
        if d[section][key] not in options:
            raise UserError(f"unknown {key} {d[section][key]!r}; choose one of {', '.join(options)}")
    if not 0.0 <= d["data"]["val_fraction"] < 0.5 or not math.isfinite(d["data"]["val_fraction"]):
        raise UserError(f"val_fraction {d['data']['val_fraction']} is outside [0, 0.5); pass a share of the training "
                        "split such as --val-fraction 0.1")
    if d["data"]["test_fraction"] >= 1:
        raise UserError(f"data.test_fraction {d['data']['test_fraction']} must be below 1; pass e.g. 0.2 in --config")
    if d["baseline"]["salun_ratio"] > 1:
        raise UserError(f"baseline.salun_ratio {d['baseline']['salun_ratio']} must be at most 1; pass e.g. 0.5")
    if not d["detect"]["taps"]:
        raise UserError("detect.taps is empty; pass --taps with some of L0,L1,L2,L3,L4")
    if d["synth"]["latent_opt"] and d["synth"]["steps"] < 1:
        raise UserError(f"synth.steps is {d['synth']['steps']}; latent optimisation needs at least 1 step: pass "
                        "--synth-steps 1 or more, or --no-latent-opt")
    return cfg


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
    if isinstance(d, dict):
        d = {k: v for k, v in d.items() if k != "classes"}  # a run's config.json records its class mapping
    return RunConfig.from_dict(d)
