"""U-LiRA over shadow pairs: can an adversary tell the audited method's model from a retrained one, per
forget example? (Hayes et al., "Inexact unlearning needs more careful evaluations to avoid a false
sense of privacy"; the statistics are audit/ulira.py.)

Shadow pair k (seed = the run's seed + 1 + k): an original trained with the forget class by the run's
recipe, unlearned by the audited method at the setting the audited run chose on validation (`choice`,
applied with tuning.applied_choice: every shadow is the one algorithm at one setting, as in Hayes et
al., and a shadow costs one run of the method instead of its whole search), and a model retrained
without the forget class. Both references come from the cache, so pairs shared with `compare`'s seeds
(or an earlier U-LiRA run) are not trained again; the unlearned shadows are kept in the run's resume
state under the seed, method and choice, so seeds of a `compare` that chose alike share them. The statistic is LiRA's scaled logit of the true label on every forget-class
*training* example (the examples unlearning removed). Reported:

* "audited": per-example log-likelihood ratios of the audited model, scored against the retrained
  reference (not a shadow): AUC and TPR at 1% FPR of (example, audited) vs (example, retrained);
* "null": the same attack with the second retrained model (the audit's null) in the audited model's
  place: what the attack scores on a model that never saw the class (about 0.5 when it cannot tell);
* "original": the attack's reach on this data: the same likelihood ratio fitted on the shadow originals
  (before unlearning) against the retrained shadows, scoring the run's original against the retrained
  reference (needs targets["original"]); an attack that cannot tell the original here cannot tell any
  unlearned model either;
* "shadows": leave-one-out over the pairs (each pair in turn the target): the method's shadows vs the
  retrained shadows, with K pairs per example and no extra model;
* "klom": KLOM (audit/klom.py: Easy Data Unlearning Bench, arXiv 2602.16400), from the same pairs: per
  example, the KL divergence between the histograms of its margin over the K unlearned shadows and over the
  K retrained shadows, P95 over the benchmark's three splits: "forget" (every forget-class training
  example, U-LiRA's split), "retain" (retain-class training examples) and "val" (held-out examples of every
  class: ds.val, or ds.test without one), the last two a seeded subsample of at most KLOM_MAX; plus the
  held-out examples of the forget and of the retain classes apart ("val_forget_classes",
  "val_retain_classes": in class removal the forget class's held-out examples sit in the tail the P95 reads).
  "original" puts the shadow originals in the method's place; "null" (K >= 8) the first half of the retrained
  shadows, against their second half. KLOM needs no target model: it scores the method, not the run's
  audited model.

Cost: `pairs` x (train an original + retrain + one run of the method at its choice), less what the cache holds; the
log gives the time of each pair and an estimate of what is left. KLOM adds a forward pass of each pair's
three models over at most 2 x KLOM_MAX more examples. With a user's `--checkpoint`, the shadow originals
are still trained by cnr-fast's recipe (cfg.train): the attack then models that recipe, not the user's
pipeline; the result says so.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from ..audit import klom as KL
from ..audit import ulira as U
from ..audit.verdict import NULL
from ..progress import log
from ..references import obtain_reference
from ..train import predict
from ..tuning import applied_choice
from . import methods as M
from .runner import kept_model

PAIRS = 8  # the U-LiRA paper's experiments use many more; 8 bounds the cost on a CPU (see the module doc)
KLOM_MAX = 2000  # retain-class training and held-out examples KLOM scores, at most (EasyDUB scores all)


def forget_train(ds, forget):
    y = ds.train.y  # on the GPU where the CLI put the data there (Dataset.to_device_if_fits)
    idx = torch.nonzero(torch.isin(y, torch.as_tensor(list(forget), device=y.device))).flatten()
    return ds.train.subset(idx)


def klom_splits(ds, forget, seed: int) -> tuple[dict, str]:
    """KLOM's splits (module doc): {"forget", "retain", "val"} and the name of the held-out split used."""
    g = torch.Generator().manual_seed(seed)

    def sample(split, rows):
        rows = rows.cpu()
        return split.subset(rows[torch.randperm(len(rows), generator=g)[:KLOM_MAX]].sort().values)

    is_f = torch.isin(ds.train.y.cpu(), torch.as_tensor(list(forget)))
    held, name = (ds.val, "val") if ds.val is not None and len(ds.val) else (ds.test, "test")
    return {"forget": forget_train(ds, forget), "retain": sample(ds.train, torch.nonzero(~is_f).flatten()),
            "val": sample(held, torch.arange(len(held)))}, name


def phis(model, split, device) -> torch.Tensor:
    return U.scaled_logit(predict(model, split, device=device), split.y.cpu())  # predict's logits are on the CPU


def ulira_attack(method: str | M.Prepared, cfg, ds, targets: dict, *, choice: str | None = None, pairs: int = PAIRS,
                 device, cache=None, quiet=False, state=None) -> dict:
    """method: a name, or what methods.prepare returned (run on each shadow's config without a look-up).
    targets: {"unlearned": the audited model, "retrained": the reference, optional "retrained_null" and
    "original"}.
    choice: the audited run's validation choice (methods.validation_choice(info)["chosen"]), or None for a
    method that chose nothing."""
    if pairs < 3:
        raise ValueError("U-LiRA needs at least 3 shadow pairs (the leave-one-out estimate fits on K - 1 >= 2)")
    if not isinstance(method, M.Prepared):
        method = M.prepare(method, cfg)
    forget = list(cfg.data.forget)
    splits, held_out = klom_splits(ds, forget, cfg.seed)
    split = splits["forget"]
    t_start = time.perf_counter()
    u_phis, r_phis, o_phis, seeds, pair_times = [], [], [], [], []
    margins = {kind: {part: [] for part in splits} for kind in ("unlearned", "retrained", "original")}
    for k in range(pairs):
        t0 = time.perf_counter()
        s = cfg.seed + 1 + k
        scfg = cfg.replace(seed=s)
        orig = obtain_reference("original", scfg, ds, device, cache, quiet)[0]
        retr = obtain_reference("retrained", scfg, ds, device, cache, quiet)[0]

        def make(orig=orig, scfg=scfg):
            with applied_choice(choice):
                model, info, t, _ = M.unlearn_model(method, orig, ds, scfg, device=device, quiet=True)
            return model, {"time": t.get("unlearn")}

        key = f"ulira-s{s}-{method.name}" + (f"-{choice}" if choice else "")
        unl, _ = kept_model(state, key, orig, make)
        for kind, model, phi in (("unlearned", unl, u_phis), ("retrained", retr, r_phis), ("original", orig, o_phis)):
            logits = {part: predict(model, sp, device=device) for part, sp in splits.items()}
            phi.append(U.scaled_logit(logits["forget"], split.y.cpu()))
            for part, sp in splits.items():  # the same logits: the margin is KLOM's, the scaled logit LiRA's
                margins[kind][part].append(KL.margins(logits[part], sp.y.cpu()))
        seeds.append(s)
        pair_times.append(time.perf_counter() - t0)
        left = (pairs - k - 1) * sum(pair_times) / len(pair_times)
        log(f"U-LiRA: shadow pair {k + 1}/{pairs} (seed {s}) in {pair_times[-1]:.0f} s; about {left:.0f} s left",
            quiet)
    u, r = torch.stack(u_phis).numpy(), torch.stack(r_phis).numpy()
    tphis = {name: phis(m, split, device).numpy() for name, m in targets.items()}
    res = U.ulira(u, r, tphis, unlearned_targets=["unlearned"], retrained_targets=["retrained"])
    out = {"pairs": pairs, "shadow_seeds": seeds, "n_examples": int(len(split)), "method": method.name, "choice": choice,
           "audited": _plain(res["evaluation"]), "mean_score": res["mean_score"],
           "frac_positive": res["frac_positive"], "settings": res["settings"]}
    if NULL in tphis:
        null = U.ulira(u, r, tphis, unlearned_targets=[NULL], retrained_targets=["retrained"])
        out["null"] = _plain(null["evaluation"])
    if "original" in tphis:
        reach = U.ulira(torch.stack(o_phis).numpy(), r, tphis, unlearned_targets=["original"],
                        retrained_targets=["retrained"])
        out["original"] = _plain(reach["evaluation"])
    loo = U.ulira_loo(u, r)
    out["shadows"] = _plain({k: v for k, v in loo.items() if k not in ("mean_llr", "mean_llr_retrained",
                                                                      "per_example_auc", "scores_unlearned",
                                                                      "scores_retrained")})
    out["klom"] = klom_result(margins, splits, held_out, forget)
    out["time_s"] = time.perf_counter() - t_start
    out["pair_time_s"] = pair_times
    if cfg.model.checkpoint:
        out["note"] = ("the original is a user checkpoint; the shadow originals were trained by cnr-fast's recipe "
                       "(config train.*), so the attack models that recipe, not the user's pipeline")
    return out


def klom_result(margins: dict, splits: dict, held_out: str, forget) -> dict:
    """KLOM over the shadow pairs (module doc) from margins {kind: {split: [pair k's (N,) margins]}}."""
    m = {kind: {s: np.stack(v) for s, v in per.items()} for kind, per in margins.items()}
    val_f = torch.isin(splits["val"].y.cpu(), torch.as_tensor(list(forget))).numpy()
    res = KL.shadow_summary(m["unlearned"], m["retrained"], m["original"],
                            groups={"val_forget_classes": ("val", val_f), "val_retain_classes": ("val", ~val_f)})
    sizes = {s: len(sp) for s, sp in splits.items()}
    sizes.update(val_forget_classes=int(val_f.sum()), val_retain_classes=int((~val_f).sum()))
    return {**res, "pairs": len(m["retrained"]["forget"]), "examples": sizes, "held_out_split": held_out,
            "max_examples": KLOM_MAX, "definition": KL.DEFINITION,
            "settings": {"bins": KL.BINS, "eps": KL.EPS, "clip": list(KL.CLIP), "percentile": KL.PERCENTILE,
                         "direction": "KL(unlearned || retrained)", "log": "natural"}}


def _plain(d):
    """numpy scalars and arrays as JSON values."""
    if isinstance(d, dict):
        return {k: _plain(v) for k, v in d.items()}
    if hasattr(d, "tolist"):
        return d.tolist()
    return d


__all__ = ["KLOM_MAX", "PAIRS", "forget_train", "klom_result", "klom_splits", "phis", "ulira_attack"]
