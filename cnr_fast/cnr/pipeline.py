"""CNR end to end: detect -> synthesize -> reset, with per-stage wall times."""

from __future__ import annotations

import time

import torch

from ..profiling import nvtx_range
from .detect import detect
from .reset import reset
from .synthesize import synthesize


def _sync(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def run_cnr(original, ds, forget, cfg, *, device, quiet=False):
    """cfg: RunConfig. Returns (unlearned model, info) with info["timings_s"] per stage."""
    forget = list(forget)
    retain = [c for c in range(ds.num_classes) if c not in forget]
    timings = {}

    t0 = time.perf_counter()
    with nvtx_range("cnr/detect"):
        det = detect(original, ds.train, forget, ds.num_classes, cfg.detect, device=device, amp=cfg.amp,
                     seed=cfg.seed, quiet=quiet)
    _sync(device)
    timings["detect"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    with nvtx_range("cnr/synthesize"):
        synth_x, _, synth_log = synthesize(original, ds.train, det, cfg.synth, device=device, amp=cfg.amp,
                                           seed=cfg.seed, quiet=quiet)
    _sync(device)
    timings["synthesize"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    with nvtx_range("cnr/reset"):
        model, reset_log = reset(original, ds.train.of_classes(retain), synth_x, retain, cfg.reset, device=device,
                                 amp=cfg.amp, seed=cfg.seed, compile=cfg.compile, quiet=quiet)
    _sync(device)
    timings["reset"] = time.perf_counter() - t0

    info = {"timings_s": timings, "detect": det.summary(), "synthesize": synth_log, "reset": reset_log,
            "synthetic_images": synth_x}
    return model, info
