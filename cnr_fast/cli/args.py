"""The flags several verbs share and the RunConfig they make: every name, number and choice checked
before any work (one line and exit 2 on bad input)."""

from __future__ import annotations

import argparse

from ..config import RunConfig, load_config_file
from ..data import DATASETS
from ..errors import UserError
from ..models import ARCHS
from ..models.sources import LOGITS_HELP, NORMALIZE_HELP


def parse_forget(text: str) -> tuple:
    """Class indices (2 or 2,5) or class names (cat or cat,dog; an image folder's folder names); name:2 is the
    class named "2" (a folder named by a number)."""
    vals = tuple(v.strip() for v in str(text).split(",") if v.strip() != "")
    return tuple(v[len("name:"):] if v.startswith("name:") else int(v) if v.lstrip("-").isdigit() else v
                 for v in vals)


SEARCH = "search"  # --reset-lr / --baseline-lr: choose on validation (the config's null)


def parse_lr(text: str):
    """A step size > 0, or "search"."""
    if str(text).strip().lower() == SEARCH:
        return SEARCH
    try:
        lr = float(text)
    except ValueError:
        lr = 0.0
    if not lr > 0:
        raise argparse.ArgumentTypeError(f"takes a step size > 0 such as 1e-3, or search; not {text!r}")
    return lr


def add_data_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("data")
    g.add_argument("--dataset", help=f"one of {', '.join(DATASETS)} (default mnist5k, embedded, no download)")
    g.add_argument("--data-root", help="folder holding torchvision datasets")
    g.add_argument("--download", action="store_true", default=None, help="let torchvision download into --data-root")
    g.add_argument("--image-size", type=int, help="resize images to this many pixels a side")
    g.add_argument("--forget", type=parse_forget,
                   help="forget class(es) by index (2, or 2,5; default 2) or by name (an image folder's class "
                        "folder: cat or cat,dog; name:2 for a folder named 2); the mapping is printed before any work")
    g.add_argument("--test-dir", help="imagefolder: a test split kept elsewhere (one sub-folder per class, the "
                                      "training folder's classes)")
    g.add_argument("--test-fraction", type=float,
                   help="share of one pool held out for test (an embedded set, or an image folder without test/; "
                        "default 0.2)")
    g.add_argument("--val-fraction", type=float,
                   help="share of the training split held out for validation (default 0.1; choices are made on it)")


def add_model_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model")
    g.add_argument("--model", dest="arch", metavar="SOURCE",
                   help=f"the model: one of cnr-fast's own ({', '.join(ARCHS)}; default resnet18), torchvision:NAME, "
                        "timm:NAME, FILE.py:FUNCTION or package.module:FUNCTION (your builder); see README")
    g.add_argument("--arch", dest="arch", help="the same as --model (cnr-fast's own archs)")
    g.add_argument("--model-arg", dest="model_args", action="append", metavar="KEY=VALUE",
                   help="a keyword argument of the --model builder (repeatable), e.g. --model-arg depth=4")
    g.add_argument("--normalize", help=f"the model's input normalisation: {NORMALIZE_HELP}")
    g.add_argument("--logits-from", metavar="INDEX|KEY", help=LOGITS_HELP)
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
                   help="torch.compile the loops that run through train.fit (originals, references, CNR's reset and "
                        "stabilisation, ROFT, GAU, KDU; `cnr-fast doctor` lists them)")
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
    "image_size": ("data", "image_size"), "forget": ("data", "forget"), "test_dir": ("data", "test_dir"),
    "test_fraction": ("data", "test_fraction"),
    "arch": ("model", "arch"), "model_args": ("model", "model_args"), "normalize": ("model", "normalize"), "logits_from": ("model", "logits_from"),
    "width": ("model", "width"), "checkpoint": ("model", "checkpoint"), "weights": ("model", "weights"),
    "train_epochs": ("train", "epochs"), "lr": ("train", "lr"), "reference_init": ("train", "reference_init"),
    "val_fraction": ("data", "val_fraction"),
    "method": (None, "method"), "seed": (None, "seed"), "device": (None, "device"), "amp": (None, "amp"), "compile": (None, "compile"),
    "k": ("detect", "k"), "taps": ("detect", "taps"), "selection": ("detect", "selection"),
    "alpha": ("synth", "alpha"), "lambda_real": ("synth", "lambda_real"), "lambda_smooth": ("synth", "lambda_smooth"),
    "sign": ("synth", "sign"), "latent_opt": ("synth", "latent_opt"), "synth_steps": ("synth", "steps"),
    "gan_epochs": ("synth", "gan_epochs"), "synth_batch": ("synth", "batch"),
    "reset_epochs": ("reset", "epochs"), "stabilize_epochs": ("reset", "stabilize_epochs"), "gamma": ("reset", "gamma"),
    "relabel": ("reset", "relabel"),
    "baseline_epochs": ("baseline", "epochs"), "salun_epochs": ("baseline", "salun_epochs"), "reset_lr": ("reset", "lr"), "baseline_lr": ("baseline", "lr"),
}


def config_from_args(args) -> RunConfig:
    cfg = load_config_file(args.config) if getattr(args, "config", None) else RunConfig()
    updates: dict = {}
    for flag, (section, key) in FLAG_MAP.items():
        val = getattr(args, flag, None)
        if val is None:
            continue
        if flag == "forget" and any(isinstance(v, str) for v in val):
            args.forget_names = val  # names: resolved against the data's classes (running.prepare_run)
            continue
        if isinstance(val, list):
            val = tuple(val)
        if val == SEARCH:
            val = None  # the config's "choose on validation"
        if section is None:
            updates[key] = val
        else:
            updates.setdefault(section, {})[key] = val
    # stabilisation epochs apply to the baselines' budget too, so one flag keeps them comparable
    if getattr(args, "stabilize_epochs", None) is not None:
        updates.setdefault("baseline", {})["stabilize_epochs"] = args.stabilize_epochs
    if getattr(args, "reset_epochs", None) is not None and getattr(args, "baseline_epochs", None) is None:
        updates.setdefault("baseline", {})["epochs"] = args.reset_epochs
    taps = getattr(args, "taps", None)
    if taps is not None and any("=" in t for t in taps):  # L1=module.path,...: the taps and where they are
        from ..models.taps import split_items

        updates.setdefault("model", {})["tap_paths"], updates.setdefault("detect", {})["taps"] = split_items(taps)
    elif getattr(args, "recorded_tap_paths", None):  # the --checkpoint's taps (unlearn), for every model of the run
        updates.setdefault("model", {})["tap_paths"] = tuple(args.recorded_tap_paths)
    options: dict = {}
    for dest, val in vars(args).items():
        if dest.startswith(OPTION_DEST) and val is not None:
            method, key = dest[len(OPTION_DEST):].split(":", 1)
            options.setdefault(method, {})[key] = val
    if options:
        updates["method_options"] = options
    seeds = getattr(args, "seeds", None)
    if seeds is not None and seeds < 1:
        raise UserError(f"--seeds {seeds}: the number of seeds must be at least 1; pass --seeds 1 or more")
    cfg = cfg.replace(**updates) if updates else cfg
    check_config(cfg)
    from ..models import takes_width

    if getattr(args, "width", None) is not None and not takes_width(cfg.model.arch):
        raise UserError(f"--width scales cnr-fast's own ResNets; {cfg.model.arch} is built as it is defined, so the "
                        "flag would change nothing: drop --width (a builder's own size goes through --model-arg)")
    return cfg


def check_config(cfg: RunConfig) -> RunConfig:
    """Every name, number and choice of a run, and CNR_FAST_BACKEND, checked before any work."""
    from ..config import validate
    from ..experiments.methods import check_options

    check_options(cfg)  # cfg.method is resolved by the driver that runs it (methods.prepare)
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




def check_arch_known(cfg: RunConfig) -> None:
    """An own arch must be known; other sources are checked when built (models/sources.py)."""
    from ..models.sources import kind, parse_model_args, parse_normalize

    if kind(cfg.model.arch) == "own" and cfg.model.arch not in ARCHS:
        raise UserError(f"unknown model {cfg.model.arch!r}; choose one of {', '.join(ARCHS)}, or torchvision:NAME, "
                        "timm:NAME, FILE.py:FUNCTION")
    parse_model_args(cfg.model.model_args)
    parse_normalize(cfg.model.normalize)


def add_method_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("CNR (paper defaults; Table 3 ablations are these switches)")
    g.add_argument("--k", type=int, help="units per tap and forget class (default 12; at most half a tap's units)")
    g.add_argument("--taps", type=lambda s: tuple(s.split(",")),
                   help="detection taps (default L1,L2,L3,L4); NAME=module.path,... also says where they are "
                        "(any --model; `cnr-fast taps` lists candidates)")
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
    g.add_argument("--baseline-epochs", type=int,
                   help="ROFT's, GAU's and KDU's unlearning epochs (default = reset epochs); RL and SalUn run "
                        "--salun-epochs, SCRUB its preset's, SSD has none")
    g.add_argument("--salun-epochs", type=int, help="RL's and SalUn's epochs (default 10, their authors')")
    g.add_argument("--reset-lr", type=parse_lr, metavar="LR|search",
                   help="Adam step size of CNR's reset: a value (one reset, no search), or search (default: chosen on "
                        "validation from 1e-4, 3e-4, 1e-3, 3e-3, one reset each)")
    g.add_argument("--baseline-lr", type=parse_lr, metavar="LR|search",
                   help="Adam step size of the fine-tuning baselines ROFT, GAU and KDU: a value, or search "
                        "(default, as --reset-lr)")
    add_option_args(p)


OPTION_DEST = "method_option:"  # argparse dest of a method's own option: method_option:METHOD:NAME


def add_option_args(p: argparse.ArgumentParser) -> None:
    """A flag for every option a registered method declares (methods.Option), grouped by method."""
    from ..experiments import methods as M

    for entry in M.entries():
        name = entry.name
        if not entry.options:
            continue
        g = p.add_argument_group(f"{name}: {entry.description}")
        for o in entry.options:
            kind = argparse.BooleanOptionalAction if o.type is bool else None
            extra = {"action": kind} if kind else {"type": o.type, "metavar": o.name.upper()}
            g.add_argument(o.flag(name), dest=f"{OPTION_DEST}{name}:{o.name}", default=None,
                           help=f"{o.help} (default {o.default})", **extra)


def add_resume_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--restart", action="store_true",
                   help="discard the state an interrupted run kept in OUT.state/ and start over")


def check_ulira_pairs(pairs: int) -> int:
    """--ulira-pairs K: 0 (off) or at least 3 (U-LiRA's leave-one-out fits on K - 1 >= 2 pairs)."""
    if pairs < 0:
        raise UserError(f"--ulira-pairs {pairs} is negative; pass 0 (off) or at least 3")
    if 0 < pairs < 3:
        raise UserError(f"--ulira-pairs {pairs}: U-LiRA needs at least 3 shadow pairs (or 0 for none)")
    return pairs


def note_klom_pairs(pairs: int, quiet: bool = False) -> None:
    """Below 2 * klom.NULL_MIN_HALF pairs KLOM, computed from the U-LiRA pairs, is near its ceiling: said in the
    log once every input check has passed (a refused run prints its one error line alone)."""
    from ..audit.klom import NULL_MIN_HALF
    from ..progress import log

    if 0 < pairs < 2 * NULL_MIN_HALF:
        log(f"note: --ulira-pairs {pairs}: KLOM, from the same pairs, needs {2 * NULL_MIN_HALF} or more to mean "
            f"anything (with fewer almost every example sits at its ceiling); U-LiRA runs as asked", quiet)


def note_compile(args, quiet: bool = False) -> None:
    """--compile: which loops it reaches and which run eager, in the log once every input check has passed."""
    if getattr(args, "compile", None):
        from ..progress import log
        from ..train import COMPILED_LOOPS, EAGER_LOOPS

        log(f"note: --compile reaches {'; '.join(COMPILED_LOOPS)}; these run eager: {'; '.join(EAGER_LOOPS)}", quiet)


def note_flags_not_taken(args, methods, quiet: bool = False) -> None:
    """A method setting given on the command line that none (or only some) of `methods` read: named in the
    log, so no budget is assumed that did not run (--baseline-epochs never reaches RL, --reset-lr never LM)."""
    from ..experiments import methods as M
    from ..progress import log

    entries = {p.name: p.entry for p in (m if isinstance(m, M.Prepared) else M.prepare(m) for m in methods)}
    for dest, (section, _key) in FLAG_MAP.items():
        if section not in ("detect", "synth", "reset", "baseline") or dest == "taps" or getattr(args, dest, None) is None:
            continue
        flag = "--" + dest.replace("_", "-")
        readers = [m for m, e in entries.items() if flag in e.flags]  # the registry's flags (`cnr-fast ls`)
        # methods with no settings (LM) are not named unless nothing reads the flag at all
        others = [m for m in entries if m not in readers and (entries[m].config_sections or not readers)]
        if others:
            log(f"note: {flag} is read by {', '.join(readers) or 'none of the methods run'}; not by {', '.join(others)} "
                "(`cnr-fast ls` lists the flags each method reads)", quiet)
