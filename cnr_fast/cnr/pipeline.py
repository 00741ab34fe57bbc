"""CNR end to end: detect -> synthesize -> reset, with per-stage wall times."""

from __future__ import annotations

import dataclasses
import time

import torch

from ..profiling import nvtx_range
from .detect import detect
from .reset import reset
from .synthesize import synthesize


def _sync(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def run_cnr(original, ds, forget, cfg, *, device, quiet=False, reuse=None, state=None):
    """cfg: RunConfig. Returns (unlearned model, info) with info["timings_s"] per stage.

    state: a resume.RunState (cnr-fast unlearn): every stage saves its completed state entries there and a
    rerun continues from them (see cnr_fast.resume). Not combined with reuse.
    """
    forget = list(forget)
    timings = {}

    # Detection + synthesis depend only on the original, the data, the seed and these two configs: runs
    # that share them (e.g. --relabel step next to the default in `ablate`) reuse the images, and the
    # time it took to make them is charged to every run that uses them.
    from ..config import stable_hash

    key = ("synthetic", stable_hash({"detect": cfg.to_dict()["detect"], "synth": cfg.to_dict()["synth"],
                                     "seed": cfg.seed, "forget": forget, "amp": cfg.amp}), id(original))
    if reuse is not None and key in reuse and reuse[key][0] is original:  # same object, not a reused id
        _, synth_x, synth_log, det_summary, cached = reuse[key]
        timings.update(detect=cached["detect"], synthesize=cached["synthesize"],
                       charged_reused_s=cached["detect"] + cached["synthesize"])
        if not quiet:
            print("  synthesize: detection and synthetic images reused from an identical earlier run "
                  "(their time charged to this run)", flush=True, file=__import__("sys").stderr)
    else:
        t0 = time.perf_counter()
        saved = state.load("detect") if state is not None else None
        if saved is not None:
            from .detect import Detection

            saved["shapes"] = {k: tuple(v) for k, v in saved["shapes"].items()}
            det = Detection(**saved)
        else:
            with nvtx_range("cnr/detect"):
                det = detect(original, ds.train, forget, ds.num_classes, cfg.detect, device=device, amp=cfg.amp,
                             seed=cfg.seed, quiet=quiet)
            if state is not None:
                state.save("detect", det.to_state())
        _sync(device)
        timings["detect"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        with nvtx_range("cnr/synthesize"):
            synth_x, _, synth_log = synthesize(original, ds.train, det, cfg.synth, device=device, amp=cfg.amp,
                                               seed=cfg.seed, quiet=quiet, reuse=reuse, state=state)
        _sync(device)
        reused = sum(v.get("gan_reused_s", 0.0) for v in synth_log.values())
        timings["synthesize"] = time.perf_counter() - t0 + reused
        timings["charged_reused_s"] = reused
        det_summary = det.summary()
        if reuse is not None:
            reuse[key] = (original, synth_x, synth_log, det_summary, {"detect": timings["detect"],
                                                                "synthesize": timings["synthesize"]})

    t0 = time.perf_counter()
    with nvtx_range("cnr/reset"):
        model, reset_log = tuned_reset(original, ds, forget, synth_x, cfg, device=device, quiet=quiet, state=state)
    _sync(device)
    timings["reset"] = time.perf_counter() - t0

    info = {"timings_s": timings, "detect": det_summary, "synthesize": synth_log, "reset": reset_log,
            "synthetic_images": synth_x}
    return model, info


def tuned_reset(original, ds, forget, x, cfg, *, device, quiet=False, state=None):
    """The reset at cfg.reset.lr, or, when it is null (default), at each step size of
    tuning.ADAM_LR_GRID with the validation choice kept (every baseline's step size gets the same
    search). Each candidate keeps its own state entries. Returns (model, reset log with "lr" and, when
    searched, "validation" and "chosen_on_validation")."""
    from ..resume import view
    from ..tuning import maybe_tuned_lr

    retain = ds.retain_classes(forget)
    searched = cfg.reset.lr is None

    def one(lr):
        return reset(original, ds.train.of_classes(retain), x, retain, dataclasses.replace(cfg.reset, lr=lr),
                     device=device, amp=cfg.amp, seed=cfg.seed, compile=cfg.compile, quiet=quiet,
                     state=view(state, f"lr={lr:g}-") if searched else state)

    return maybe_tuned_lr(cfg.reset.lr, one, ds, forget, device, "reset", quiet, original=original)


def real_forget_images(ds, forget, per_class: int, seed: int) -> torch.Tensor:
    """`per_class` real training images of each forget class (seeded draw; all of them if fewer)."""
    from ..data import to_float

    g = torch.Generator().manual_seed(seed)
    out = []
    for c in forget:
        own = ds.train.of_classes([c])
        idx = torch.randperm(len(own), generator=g)[:per_class]
        out.append(to_float(own.x[idx.to(own.x.device)].cpu()))
    return torch.cat(out)


def run_real(original, ds, forget, cfg, *, device, quiet=False, state=None):
    """`cnr-real`, a control of CNR's synthesis: CNR's reset (same budget, same step-size search, random
    *retain* labels, L2 pull, stabilisation) fed B *real* forget-class training images per class instead
    of synthetic ones. If it forgets as well as CNR, detection and synthesis buy nothing on that metric.
    (Not the literature's random-labelling baseline: that is `rl`, baselines/rl.py.)"""
    forget = list(forget)
    x = real_forget_images(ds, forget, cfg.synth.batch, cfg.seed)
    t0 = time.perf_counter()
    with nvtx_range("cnr/real/reset"):
        model, reset_log = tuned_reset(original, ds, forget, x, cfg, device=device, quiet=quiet, state=state)
    _sync(device)
    timings = {"detect": 0.0, "synthesize": 0.0, "reset": time.perf_counter() - t0}
    return model, {"timings_s": timings, "reset": reset_log, "real_images_per_class": cfg.synth.batch,
                   "synthetic_images": x}
