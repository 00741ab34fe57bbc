"""`cnr-fast unlearn`: remove class(es) from a classifier with CNR or a baseline; write a run directory."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from .. import dist
from ..config import stable_hash
from ..data import class_table
from ..errors import UserError
from ..experiments import methods as M
from ..experiments.runner import begin_provenance
from ..experiments.unlearn import AUDIT_LEVELS, AuditPlan, summary_lines, unlearn_run
from ..models import LogitMask
from ..progress import log
from ..references import load_original
from ..resume import kill_point, weights_digest
from ..runs import check_out_dir, load_checkpoint, save_checkpoint, staged_dir, write_run_files
from .args import (
    add_data_args,
    add_method_args,
    add_model_args,
    add_run_args,
    check_ulira_pairs,
    config_from_args,
    note_compile,
    note_flags_not_taken,
    note_klom_pairs,
)
from .running import driver_state, prepare_run, run_with_state

EXAMPLES = """examples:
  cnr-fast unlearn                                   # CNR on mnist5k, forget digit 2, default CPU model
  cnr-fast unlearn --out runs/cnr-2 --forget 2,5     # forget two classes at once
  cnr-fast unlearn --method gau --out runs/gau       # a baseline, same schema
  cnr-fast unlearn --sign paper --out runs/paper     # eq. 6 minimised as printed (see README)
  cnr-fast unlearn --dataset cifar10 --data-root ~/data --arch resnet18 --width 1 --device cuda --amp
  cnr-fast unlearn --checkpoint my_model.pt --arch resnet50 --width 1 --dataset cifar100 --data-root ~/data
  cnr-fast unlearn --arch vit_b16 --amp --dataset imagefolder:~/data/cub --image-size 224 --device cuda

results.json: metrics.{original,unlearned}.{forget_acc,retain_acc} are accuracies on the held-out
test split of the forget / retain classes; timings_s holds wall seconds per stage (detect,
synthesize, reset: 0 for baselines, whose whole time is "unlearn") and the total.
"""


def add_parser(sub) -> None:
    p = sub.add_parser("unlearn", help="remove class(es) from a classifier and write a run directory",
                       description=__doc__, epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--method", help=f"one of {', '.join(M.names())} (default cnr; `cnr-fast ls` says which are "
                                    "controls of CNR)")
    p.add_argument("--checkpoint", help="the model to unlearn (default: train or reuse a cached original model)")
    p.add_argument("--out", help="run directory (default runs/<method>-<dataset>-<time>). Work in progress is kept "
                                 "in OUT.state/ beside it; the same command on the same --out resumes an "
                                 "interrupted run, and does nothing for a finished one")
    p.add_argument("--restart", action="store_true",
                   help="discard an interrupted run's state (OUT.state/) or a finished run's results and start over")
    add_data_args(p)
    add_model_args(p)
    add_run_args(p)
    add_audit_args(p)
    add_method_args(p)
    p.set_defaults(func=run)


def _adopt_checkpoint_arch(args) -> None:
    """With --checkpoint and no --arch/--width, take them from the checkpoint's metadata; for a model source
    other than the own archs, also how it was built and where its taps are (for every model of the run)."""
    if args.checkpoint:
        from ..config import ModelConfig
        from ..models import takes_width

        _, meta = load_checkpoint(args.checkpoint)
        if args.arch is None and meta.get("arch"):
            args.arch = meta["arch"]
        if args.width is None and meta.get("width") is not None and takes_width(args.arch or ModelConfig.arch):
            args.width = float(meta["width"])
        for key in ("model_args", "normalize"):  # how a source other than the own archs was built
            if meta.get(key) and getattr(args, key, None) is None:
                setattr(args, key, meta[key])
        if meta.get("tap_paths") and not any("=" in t for t in (getattr(args, "taps", None) or ())):
            args.recorded_tap_paths = tuple(meta["tap_paths"])


def run(args) -> int:
    t_start = time.perf_counter()
    started = begin_provenance()
    _adopt_checkpoint_arch(args)
    cfg = config_from_args(args)
    method = M.prepare(cfg.method, cfg)  # resolved once; an unknown name is one line naming the closest ones
    args.ulira_pairs = ulira_pairs(args)  # resolved once: thorough's default, checked
    if args.retrained not in (None, "auto", "off") and not Path(args.retrained).is_file():
        raise UserError(f"--retrained {args.retrained!r} does not exist; pass a checkpoint path, auto or off")
    if args.expect_acc is not None and not 0 < args.expect_acc <= 1:
        raise UserError(f"--expect-acc {args.expect_acc}: pass the original's accuracy as a share in (0, 1], e.g. 0.95")
    if args.null is not None:
        if args.retrained in (None, "auto", "off"):
            raise UserError("--null PATH goes with --retrained PATH (with --retrained auto the null is trained "
                            "and cached too); pass both paths, or drop --null")
        if not Path(args.null).is_file():
            raise UserError(f"--null {args.null!r} does not exist; pass the path of a second retrained model")
    if args.out:
        check_out_dir(args.out)  # before any work: a file, or a folder this user cannot write, is refused now
    quiet = args.quiet
    cfg, ds, device = prepare_run(cfg, quiet, getattr(args, "forget_names", None))
    method = method.on(cfg)  # the data's classes and the device resolved: the same method, no look-up
    note_flags_not_taken(args, [method], quiet)
    note_compile(args, quiet)
    note_klom_pairs(args.ulira_pairs, quiet)
    given = [f for f, v in (("--retrained", args.retrained not in (None, "auto", "off")), ("--null", args.null)) if v]
    if args.audit == "off" and given:  # read by the audit alone: not loaded, not checked
        log(f"note: {' and '.join(given)} are read by the audit alone; with --audit off they are not loaded or "
            "checked", quiet)
    out = Path(args.out or f"runs/{cfg.method}-{ds.name.replace('/', '_').replace(':', '_')}-"
               f"{time.strftime('%Y%m%d-%H%M%S')}")
    check_out_dir(out)
    key = _run_key(cfg, args)
    if not args.restart and _finished(out, key):
        print(f"cnr-fast unlearn: {out} already holds this run's results ({out / 'results.json'}); nothing to do "
              "(pass --restart to run it again)", file=sys.stderr, flush=True)
        return 0

    original, orig_meta, orig_path, cache_hit = load_original(cfg, ds, device, args.cache_dir, quiet)
    args.original_is_own = bool(orig_meta.get("kind"))  # trained by cnr-fast (its cache, or a checkpoint it wrote)
    state, _ = driver_state(out, {**key, "original_sha256": weights_digest(original)}, args.restart, quiet)
    # bad input or a diverged stage on a fresh run leaves nothing behind (an earlier run's state stays)
    return run_with_state(state, lambda: _run(args, method, ds, device, out, original, orig_path, cache_hit, key,
                                              state, t_start, started), "cnr-fast unlearn", discard_on_refusal=True)


def _run_key(cfg, args) -> dict:
    """What decides a run's results: a rerun with the same key resumes (or finds finished) the run."""
    key = {"format": 1, "config": cfg.to_dict(), "audit": args.audit, "retrained": args.retrained}
    if args.null is not None:
        key["null"] = args.null
    if args.ulira_pairs:  # left out at 0, so runs without U-LiRA keep their keys
        key["ulira_pairs"] = args.ulira_pairs
    return key


def ulira_pairs(args) -> int:
    """The U-LiRA shadow pairs a run asks for (0 = off); a bad value is one line, exit 2."""
    from ..experiments.shadows import PAIRS

    pairs = check_ulira_pairs(args.ulira_pairs if args.ulira_pairs is not None
                              else (PAIRS if args.audit == "thorough" else 0))
    if pairs and (args.audit == "off" or args.retrained in (None, "off")):
        raise UserError("--ulira-pairs needs the audit and the retrained reference: drop --audit off / "
                        "--retrained off, or pass --ulira-pairs 0")
    return pairs


def _finished(out: Path, key: dict) -> bool:
    try:
        old = json.loads((out / "results.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(old, dict) and old.get("run_key") == stable_hash(key)


def _run(args, method, ds, device, out, original, orig_path, cache_hit, key, state, t_start, started) -> int:
    plan = AuditPlan(level=args.audit, retrained=args.retrained, null=args.null, ulira_pairs=args.ulira_pairs,
                     cache=args.cache_dir)
    run = unlearn_run(method, original, ds, device=device, state=state, plan=plan, orig_path=orig_path,
                      cache_hit=cache_hit, own_original=args.original_is_own, expect_acc=args.expect_acc,
                      force=args.force, quiet=args.quiet, t_start=t_start, started=started)
    results = {**run.results, "unlearned_checkpoint": str(out / "model.pt"), "run_key": stable_hash(key),
               "resumed_entries": list(state.reused)}
    results["world_size"] = dist.world()
    if not dist.is_main():  # under torchrun rank 0 alone writes the run directory
        dist.barrier()
        return 0
    # Every output goes to a staging folder first and into `out` only when all of it is written: a
    # failure (disk full, ...) leaves `out` absent, or as it was.
    files = dict(run.files)
    with staged_dir(out) as stage:
        model = run.model
        save_checkpoint(stage / "model.pt", model.model if isinstance(model, LogitMask) else model, run.meta)
        # a control's changes spelled out; the class mapping beside them (informational: --config skips it)
        files["config.json"] = {**method.cfg.to_dict(), "classes": class_table(ds)}
        if run.audit is not None:
            from ..audit import write_report

            write_report(stage, run.audit, {"method": method.name, "checkpoint": str(out / "model.pt"),
                                               "original": str(orig_path),
                                               "validation_choice": results["validation_choice"]})
        files["results.json"] = results  # last, so its presence means the run finished
        write_run_files(stage, files)
        kill_point("final")
    state.remove()  # the run directory is complete: its state is no longer needed
    dist.barrier()
    _print_table(results, out, quiet=False)
    if run.meta.get("logit_mask"):  # printed even with --quiet: the weights alone are the original's
        print(f"cnr-fast unlearn: note: {out / 'model.pt'} holds the original's weights unchanged; logit masking is "
              f"meta['logit_mask'] = {run.meta['logit_mask']}: set those logits to -inf after your forward (cnr-fast "
              "audit applies it)", file=sys.stderr, flush=True)
    return 0


def _print_table(results: dict, out: Path, quiet: bool) -> None:
    print("\n" + "\n".join(summary_lines(results, out)))


def add_audit_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("audit (see `cnr-fast audit --help` for what each number means)")
    g.add_argument("--audit", choices=AUDIT_LEVELS, default="fast",
                   help="fast (default): every metric but the Table 10 attacks, no t-SNE / Grad-CAM figures; full: "
                        "with figures; thorough: "
                        "full plus the paper's Table 10 attacks (MLP and conv probes, model inversion) and U-LiRA over "
                        "--ulira-pairs shadow pairs (default 8: trains pairs x (original + retrained + this method at "
                        "its chosen setting), less what the cache holds); off: accuracies only")
    g.add_argument("--ulira-pairs", type=int, default=None, metavar="K",
                   help="U-LiRA shadow pairs (>= 3; 0 = off); default 8 with --audit thorough, else off")
    g.add_argument("--retrained", default="auto",
                   help="retrain-from-scratch reference for the audit: auto (default; trained once and cached, with "
                        "its null), off, or a checkpoint path (read like --checkpoint: same --model, --normalize)")
    g.add_argument("--expect-acc", type=float, default=None, metavar="ACC",
                   help="the original's test accuracy over all classes in your own evaluation: a run whose measured "
                        "accuracy is more than 0.05 below it stops before any work (wrong input contract)")
    g.add_argument("--force", action="store_true",
                   help="run even when the input checks (first BatchNorm statistics, accuracy near chance or below "
                        "--expect-acc) say the model is not fed as it was trained")
    g.add_argument("--null", default=None, metavar="PATH",
                   help="with --retrained PATH: a second model retrained without the class, independently of the "
                        "first; the verdict needs it (read like --checkpoint)")
