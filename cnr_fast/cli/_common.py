"""Arguments and steps that several verbs share: config from flags, the cached original model."""

from __future__ import annotations

import argparse
import sys

import torch

from ..config import RunConfig, load_config_file
from ..data import DATASETS, Dataset, load_dataset
from ..errors import UserError
from ..models import ARCHS, model_from_checkpoint, vit_patch
from ..references import load_original, obtain_reference  # noqa: F401  (re-exported for the verbs)
from ..train import resolve_device


def parse_forget(text: str) -> tuple[int, ...]:
    try:
        vals = tuple(int(v) for v in str(text).split(",") if v.strip() != "")
    except ValueError:
        raise argparse.ArgumentTypeError(f"--forget takes class indices like 2 or 2,5, not {text!r}") from None
    return vals


def add_data_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("data")
    g.add_argument("--dataset", help=f"one of {', '.join(DATASETS)} (default mnist5k, embedded, no download)")
    g.add_argument("--data-root", help="folder holding torchvision datasets")
    g.add_argument("--download", action="store_true", default=None, help="let torchvision download into --data-root")
    g.add_argument("--image-size", type=int, help="resize images to this many pixels a side")
    g.add_argument("--forget", type=parse_forget, help="forget class(es): 2, or several as 2,5 (default 2)")
    g.add_argument("--val-fraction", type=float,
                   help="share of the training split held out for validation (default 0.1; choices are made on it)")


def add_model_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model")
    g.add_argument("--arch", help=f"one of {', '.join(ARCHS)} (default resnet18)")
    g.add_argument("--width", type=float, help="ResNet channel multiplier (default 0.125 = 8..64 channels; 1 = torchvision)")
    g.add_argument("--train-epochs", type=int, help="epochs for training the original / retrained model (default 6)")
    g.add_argument("--weights", help="torchvision ImageNet state-dict file (resnet18/34/50/101 at --width 1, vit_b16): "
                                     "the original and the references are fine-tuned from it (new head); no download")
    g.add_argument("--lr", type=float, help="learning rate of the original / retrained model's training (default 2e-3)")
    g.add_argument("--reference-init",
                   help="initial weights of the retrained reference and RFS: independent of the original's "
                        "(default) or shared with it (see README)")


def add_run_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("run")
    g.add_argument("--config", help="JSON config file (a previous run's config.json works); flags override it")
    g.add_argument("--seed", type=int, help="random seed (default 0)")
    g.add_argument("--device", help="auto (default), cpu, cuda, cuda:N")
    g.add_argument("--amp", action="store_true", default=None, help="mixed precision (GPU: bf16, or fp16 + grad scaler; CPU: bf16 only where the CPU has "
                   "bf16 instructions, fp32 elsewhere with a warning; `cnr-fast doctor` says which)")
    g.add_argument("--compile", action="store_true", default=None,
                   help="torch.compile the training loops (pays off on a GPU; not on a 2-core CPU)")
    g.add_argument("--cache-dir", help="model cache (default $XDG_CACHE_HOME/cnr-fast or ~/.cache/cnr-fast)")
    g.add_argument("--quiet", action="store_true", help="no progress output")
    one_line_errors(p)


def one_line_errors(p: argparse.ArgumentParser) -> None:
    """argparse's own errors (a bad int, a missing value) as one line, exit 2, like a UserError."""

    def error(message: str):
        p.exit(2, f"{p.prog}: error: {message}; see `{p.prog} --help`\n")

    p.error = error


# flag -> (section, key); section None = top level
FLAG_MAP = {
    "dataset": ("data", "dataset"), "data_root": ("data", "data_root"), "download": ("data", "download"),
    "image_size": ("data", "image_size"), "forget": ("data", "forget"),
    "arch": ("model", "arch"), "width": ("model", "width"), "checkpoint": ("model", "checkpoint"), "weights": ("model", "weights"),
    "train_epochs": ("train", "epochs"), "lr": ("train", "lr"), "reference_init": ("train", "reference_init"),
    "val_fraction": ("data", "val_fraction"),
    "method": (None, "method"), "seed": (None, "seed"), "device": (None, "device"), "amp": (None, "amp"), "compile": (None, "compile"),
    "k": ("detect", "k"), "taps": ("detect", "taps"), "selection": ("detect", "selection"),
    "alpha": ("synth", "alpha"), "lambda_real": ("synth", "lambda_real"), "lambda_smooth": ("synth", "lambda_smooth"),
    "sign": ("synth", "sign"), "latent_opt": ("synth", "latent_opt"), "synth_steps": ("synth", "steps"),
    "gan_epochs": ("synth", "gan_epochs"), "synth_batch": ("synth", "batch"),
    "reset_epochs": ("reset", "epochs"), "stabilize_epochs": ("reset", "stabilize_epochs"), "gamma": ("reset", "gamma"),
    "relabel": ("reset", "relabel"),
    "baseline_epochs": ("baseline", "epochs"),
}


def config_from_args(args) -> RunConfig:
    cfg = load_config_file(args.config) if getattr(args, "config", None) else RunConfig()
    updates: dict = {}
    for flag, (section, key) in FLAG_MAP.items():
        val = getattr(args, flag, None)
        if val is None:
            continue
        if isinstance(val, list):
            val = tuple(val)
        if section is None:
            updates[key] = val
        else:
            updates.setdefault(section, {})[key] = val
    # stabilisation epochs apply to the baselines' budget too, so one flag keeps them comparable
    if getattr(args, "stabilize_epochs", None) is not None:
        updates.setdefault("baseline", {})["stabilize_epochs"] = args.stabilize_epochs
    if getattr(args, "reset_epochs", None) is not None and getattr(args, "baseline_epochs", None) is None:
        updates.setdefault("baseline", {})["epochs"] = args.reset_epochs
    seeds = getattr(args, "seeds", None)
    if seeds is not None and seeds < 1:
        raise UserError(f"--seeds {seeds}: the number of seeds must be at least 1; pass --seeds 1 or more")
    cfg = cfg.replace(**updates) if updates else cfg
    check_config(cfg)
    return cfg


def check_config(cfg: RunConfig) -> RunConfig:
    """Every name, number and choice of a run, and CNR_FAST_BACKEND, checked before any work."""
    from ..config import validate
    from ..experiments.methods import get as get_method

    get_method(cfg.method)  # an unknown name is one line naming the closest ones
    check_arch_known(cfg)
    name = cfg.data.dataset
    if name not in DATASETS[:-1] and not name.startswith("imagefolder:"):
        raise UserError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    if name == "imagefolder:":
        raise UserError("imagefolder: needs a folder; pass --dataset imagefolder:DIR (one sub-folder per class)")
    validate(cfg)
    from ..models import check_taps

    check_taps(cfg.detect.taps)
    check_backend()
    return cfg


def check_backend() -> None:
    """CNR_FAST_BACKEND must name a backend this install has (or be unset / auto)."""
    import os

    want = os.environ.get("CNR_FAST_BACKEND", "auto").strip().lower() or "auto"
    if want == "auto":
        return
    from ..ops.backend import REGISTRY

    names = sorted({b.name for backends in REGISTRY.values() for b in backends})
    if want not in names:
        raise UserError(f"unknown backend {want!r} in CNR_FAST_BACKEND; choose one of auto, {', '.join(names)} "
                        "(or unset it)")


from ..progress import log  # noqa: E402,F401  (the verbs' progress lines)


def prepare_run(cfg: RunConfig, quiet=False) -> tuple[RunConfig, Dataset, torch.device]:
    """Resolve the device, load the data; a ViT gets images resized up to a multiple of its patch."""
    device = resolve_device(cfg.device)
    if cfg.model.weights:
        from ..models.pretrained import PRETRAINED_ARCHS, read_weights

        if cfg.model.arch not in PRETRAINED_ARCHS:
            raise UserError(f"--weights is for {', '.join(PRETRAINED_ARCHS)}; got --arch {cfg.model.arch}")
        if cfg.model.checkpoint:
            raise UserError("--weights and --checkpoint both give the original's weights; pass one of them")
        read_weights(cfg.model.weights)  # exists and is a safe state dict, before any training
    if cfg.amp and device.type == "cpu":
        from ..hardware import cpu_amp_allowed

        if not cpu_amp_allowed():  # warns once, says why; the run's config then records amp: false
            cfg = cfg.replace(amp=False)
    torch.manual_seed(cfg.seed)
    ds = load_dataset(cfg.data)
    patch = vit_patch(cfg.model.arch)
    if patch and cfg.data.image_size is None and ds.image_size % patch:
        size = -(-ds.image_size // patch) * patch
        log(f"data: {cfg.model.arch} needs a multiple of {patch} px; resizing {ds.image_size} -> {size} "
            "(pass --image-size to choose)", quiet)
        cfg = cfg.replace(data={"image_size": size})
        ds = load_dataset(cfg.data)
    if device.type == "cuda":
        ds = ds.to_device_if_fits(device)
    n_val = len(ds.val) if ds.val is not None else 0
    log(f"data: {ds.name}: {len(ds.train)} train / {n_val} validation / {len(ds.test)} test, {ds.num_classes} classes, "
        f"{ds.in_channels}x{ds.image_size}x{ds.image_size}; forget {list(cfg.data.forget)}", quiet)
    return cfg, ds, device


def check_arch_known(cfg: RunConfig) -> None:
    if cfg.model.arch not in ARCHS:
        raise UserError(f"unknown arch {cfg.model.arch!r}; choose one of {', '.join(ARCHS)}")


def add_audit_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("audit (see `cnr-fast audit --help` for what each number means)")
    g.add_argument("--audit", choices=["full", "fast", "off"], default="fast",
                   help="fast (default): every metric, no t-SNE / Grad-CAM figures; full: with figures; off: accuracies only")
    g.add_argument("--retrained", default="auto",
                   help="retrain-from-scratch reference for the audit: auto (default; trained once and cached), "
                        "off, or a checkpoint path")


def load_retrained(spec: str, cfg: RunConfig, ds: Dataset, device, cache, quiet=False):
    if spec == "auto":
        return obtain_reference("retrained", cfg, ds, device, cache, quiet)[0]
    model, meta = model_from_checkpoint(spec, ds, cfg.model.arch, cfg.model.width)
    recorded = meta.get("forget_classes")
    if recorded is not None and sorted(recorded) != sorted(cfg.data.forget):
        raise UserError(f"--retrained {spec!r} was trained without classes {recorded}, not {list(cfg.data.forget)}; "
                        "pass a reference retrained on the same splits, or --retrained auto")
    return model.to(device)


def run_audit(models: dict, ds: Dataset, forget, *, device, seed=0, figures=False, quiet=False, null_model=None,
              independent=None, done=None, on_model=None):
    from ..audit import audit_models

    log(f"audit: {', '.join(models)} ...", quiet)
    return audit_models(models, ds, list(forget), device=device, original="original",
                        retrained="retrained" if "retrained" in models else None, seed=seed, figures=figures,
                        quiet=quiet, null_model=null_model, independent=independent, done=done,
                        on_model=on_model)


def add_method_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("CNR (paper defaults; Table 3 ablations are these switches)")
    g.add_argument("--k", type=int, help="units per tap and forget class (default 12; at most half a tap's units)")
    g.add_argument("--taps", type=lambda s: tuple(s.split(",")), help="detection taps (default L1,L2,L3,L4)")
    g.add_argument("--selection", help="unit selection: activation (default), gradient or random")
    g.add_argument("--alpha", type=float, help="retain-unit weight of eq. 6 (default 1.5)")
    g.add_argument("--lambda-real", type=float, help="realism weight (default 0.1; 0 = w/o realism)")
    g.add_argument("--lambda-smooth", type=float, help="TV weight (default 0.01; 0 = w/o smoothness)")
    g.add_argument("--sign", help="sign of eq. 6: excite (default) or paper (see README)")
    g.add_argument("--no-latent-opt", dest="latent_opt", action="store_false", default=None,
                   help="w/o synthesis ablation: raw generator samples, no latent optimisation")
    g.add_argument("--synth-steps", type=int, help="latent optimisation steps (default 500)")
    g.add_argument("--synth-batch", type=int, help="B, synthetic images per forget class (default 64)")
    g.add_argument("--gan-epochs", type=int, help="DCGAN epochs (default 50)")
    g.add_argument("--reset-epochs", type=int, help="reset epochs (default 10; baselines get the same budget)")
    g.add_argument("--stabilize-epochs", type=int, help="retain-only epochs after reset (default 5)")
    g.add_argument("--gamma", type=float, help="L2 pull to the original weights, eq. 7 (default 1e-2)")
    g.add_argument("--relabel",
                   help="random retain labels of the synthetic images: drawn once (default) or every step")
    g.add_argument("--baseline-epochs", type=int, help="baselines' unlearning epochs (default = reset epochs)")


def merge_files(arg: str, what: str, merge) -> dict:
    """Read the comma list of JSON result files in `arg` and merge them with `merge` (a driver's merge)."""
    import json
    from pathlib import Path

    results = []
    for path in [p.strip() for p in arg.split(",") if p.strip()]:
        try:
            results.append(json.loads(Path(path).read_text()))
        except (OSError, ValueError) as e:
            raise UserError(f"--merge: cannot read {path!r} ({e}); pass {what} files") from None
    try:
        return merge(results)
    except (KeyError, TypeError) as e:
        raise UserError(f"--merge: a file lacks the per-seed values ({e}); pass {what} files written by this "
                        "version of cnr-fast") from None


def add_resume_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--restart", action="store_true",
                   help="discard the state an interrupted run kept in OUT.state/ and start over")


def driver_state(out, key: dict, restart: bool, quiet: bool = False):
    """(state, resumed): the resume state of a run, `OUT.state/` beside --out (see cnr_fast.resume),
    opened (or reset by --restart); resumed is True when it holds an earlier invocation's units.

    Each completed unit of work (unlearn: a stage; compare / ablate: a (seed, method or variant[,
    round]) and each audit) is kept there; the same command after a crash or Ctrl-C continues after
    the last one. Removed once --out is written."""
    from ..resume import RunState, state_dir_for

    state = RunState(state_dir_for(out), key)
    resumed = state.open(restart=restart)
    if resumed:
        log(f"resuming the interrupted run from {state.path}", quiet)
        state.clean_stale(out)
    return state, resumed


def run_with_state(state, work):
    """work() under `state`: kept on Ctrl-C (with a line saying how to resume) and on a crash; removed
    when work() refuses its input (UserError) before anything was kept. The caller removes it once
    its output is written. Returns work()'s value."""
    fresh = not any(state.path.glob("*.pt"))  # no unit kept before this invocation
    try:
        result = work()
    except KeyboardInterrupt:
        print(f"completed work is kept in {state.path}; run the same command again to resume it",
              file=sys.stderr, flush=True)
        raise
    except UserError:
        if fresh and not any(state.path.glob("*.pt")):
            state.remove()
        raise
    return result
