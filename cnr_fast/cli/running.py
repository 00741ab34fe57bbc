"""What a verb does around its work: device and data for a run, the resume state beside --out (one
Ctrl-C / refusal policy for every verb), and merging result files of runs over disjoint seeds."""

from __future__ import annotations

import sys

import torch

from ..config import RunConfig
from ..data import Dataset, class_table, load_dataset, load_dataset_forgetting, named_classes
from ..errors import UserError
from ..models import vit_patch
from ..progress import log
from ..train import resolve_device


def prepare_run(cfg: RunConfig, quiet=False, forget_names=None) -> tuple[RunConfig, Dataset, torch.device]:
    """Resolve the device, load the data; a ViT gets images resized up to a multiple of its patch.
    forget_names: --forget given with class names (args.forget_names), resolved against the data's
    classes. The class mapping, and what loading decided (splits as given or carved), are printed."""
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
    ds, forget = load_dataset_forgetting(cfg.data, forget_names)
    if forget_names:
        cfg = cfg.replace(data={"forget": forget})
    patch = vit_patch(cfg.model.arch)
    if patch and cfg.data.image_size is None and ds.image_size % patch:
        size = -(-ds.image_size // patch) * patch
        log(f"data: {cfg.model.arch} needs a multiple of {patch} px; resizing {ds.image_size} -> {size} "
            "(pass --image-size to choose)", quiet)
        cfg = cfg.replace(data={"image_size": size})
        ds = load_dataset(cfg.data)
    for note in ds.notes:  # a warning is printed even with --quiet
        if note.startswith("warning"):
            print(f"cnr-fast: {note}", file=sys.stderr, flush=True)
        else:
            log(f"data: {note}", quiet)
    if device.type == "cuda":
        ds = ds.to_device_if_fits(device)
    n_val = len(ds.val) if ds.val is not None else 0
    log(f"data: {ds.name}: {len(ds.train)} train / {n_val} validation / {len(ds.test)} test, {ds.num_classes} classes, "
        f"{ds.in_channels}x{ds.image_size}x{ds.image_size}; forget "
        + named_classes(cfg.data.forget, ds), quiet)
    log("classes (index name: train/validation/test): " + describe_classes(ds), quiet)
    return cfg, ds, device


def describe_classes(ds: Dataset, most: int = 20) -> str:
    rows = class_table(ds)
    text = ", ".join(f"{r['index']} {r['name']}: {r['train']}/{r['val']}/{r['test']}" for r in rows[:most])
    return text + (f", ... ({len(rows)} in all; results.json lists them)" if len(rows) > most else "")


def merge_files(arg: str, what: str, merge) -> dict:
    """Read the comma list of JSON result files in `arg` and merge them with `merge` (a driver's merge)."""
    from ..runs import read_result_json

    results = []
    for path in [p.strip() for p in arg.split(",") if p.strip()]:
        try:
            results.append(read_result_json(path))
        except (OSError, ValueError) as e:
            raise UserError(f"--merge: cannot read {path!r} ({e}); pass {what} files") from None
    try:
        return merge(results)
    except (KeyError, TypeError) as e:
        raise UserError(f"--merge: a file lacks the per-seed values ({e}); pass {what} files written by this "
                        "version of cnr-fast") from None


def driver_state(out, key: dict, restart: bool, quiet: bool = False):
    """(state, resumed): the resume state of a run, `OUT.state/` beside --out (see cnr_fast.resume),
    opened (or reset by --restart); resumed is True when it holds an earlier invocation's entries.

    Each completed piece of work, a state entry (unlearn: a stage; compare / ablate: a (seed, method or variant[,
    round]) and each audit) is kept there; the same command after a crash or Ctrl-C continues after
    the last one. Removed once --out is written."""
    from ..resume import RunState, state_dir_for

    state = RunState(state_dir_for(out), key)
    resumed = state.open(restart=restart)
    if resumed:
        log(f"resuming the interrupted run from {state.path}", quiet)
        state.clean_stale(out)
    return state, resumed


def run_with_state(state, work, who: str, discard_on_refusal: bool = False):
    """work() under `state`, the one Ctrl-C and refusal policy of every verb: on Ctrl-C (and a crash)
    the state is kept, with a line saying how to resume; when work() refuses its input (UserError) the
    state is removed if nothing was kept before this invocation and, unless discard_on_refusal (unlearn
    on a fresh run: a diverged stage leaves nothing behind), nothing was kept during it either. The
    caller removes the state once its output is written. Returns work()'s value."""
    fresh = not any(state.path.glob("*.pt"))  # nothing kept before this invocation
    try:
        return work()
    except KeyboardInterrupt:
        print(f"{who}: completed work is kept in {state.path}; run the same command again to resume it",
              file=sys.stderr, flush=True)
        raise
    except UserError:
        if fresh and (discard_on_refusal or not any(state.path.glob("*.pt"))):
            state.remove()
        raise
