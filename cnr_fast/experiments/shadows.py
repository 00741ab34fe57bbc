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
  retrained shadows, with K pairs per example and no extra model.

Cost: `pairs` x (train an original + retrain + one run of the method at its choice), less what the cache holds; the
log gives the time of each pair and an estimate of what is left. With a user's `--checkpoint`, the
shadow originals are still trained by cnr-fast's recipe (cfg.train): the attack then models that
recipe, not the user's pipeline; the result says so.
"""

from __future__ import annotations

import time

import torch

from ..audit import ulira as U
from ..audit.verdict import NULL
from ..progress import log
from ..references import obtain_reference
from ..train import predict
from ..tuning import applied_choice
from . import methods as M
from .runner import kept_model

PAIRS = 8  # the U-LiRA paper's experiments use many more; 8 bounds the cost on a CPU (see the module doc)


def forget_train(ds, forget):
    idx = torch.nonzero(torch.isin(ds.train.y, torch.as_tensor(list(forget)))).flatten()
    return ds.train.subset(idx)


def phis(model, split, device) -> torch.Tensor:
    return U.scaled_logit(predict(model, split, device=device), split.y)


def ulira_attack(method: str, cfg, ds, targets: dict, *, choice: str | None = None, pairs: int = PAIRS, device,
                 cache=None, quiet=False, state=None) -> dict:
    """targets: {"unlearned": the audited model, "retrained": the reference, optional "retrained_null" and
    "original"}.
    choice: the audited run's validation choice (methods.validation_choice(info)["chosen"]), or None for a
    method that chose nothing."""
    if pairs < 3:
        raise ValueError("U-LiRA needs at least 3 shadow pairs (the leave-one-out estimate fits on K - 1 >= 2)")
    forget = list(cfg.data.forget)
    split = forget_train(ds, forget)
    t_start = time.perf_counter()
    u_phis, r_phis, o_phis, seeds, pair_times = [], [], [], [], []
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

        key = f"ulira-s{s}-{method}" + (f"-{choice}" if choice else "")
        unl, _ = kept_model(state, key, orig, make)
        u_phis.append(phis(unl, split, device))
        r_phis.append(phis(retr, split, device))
        o_phis.append(phis(orig, split, device))
        seeds.append(s)
        pair_times.append(time.perf_counter() - t0)
        left = (pairs - k - 1) * sum(pair_times) / len(pair_times)
        log(f"U-LiRA: shadow pair {k + 1}/{pairs} (seed {s}) in {pair_times[-1]:.0f} s; about {left:.0f} s left",
            quiet)
    u, r = torch.stack(u_phis).numpy(), torch.stack(r_phis).numpy()
    tphis = {name: phis(m, split, device).numpy() for name, m in targets.items()}
    res = U.ulira(u, r, tphis, unlearned_targets=["unlearned"], retrained_targets=["retrained"])
    out = {"pairs": pairs, "shadow_seeds": seeds, "n_examples": int(len(split)), "method": method, "choice": choice,
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
    out["time_s"] = time.perf_counter() - t_start
    out["pair_time_s"] = pair_times
    if cfg.model.checkpoint:
        out["note"] = ("the original is a user checkpoint; the shadow originals were trained by cnr-fast's recipe "
                       "(config train.*), so the attack models that recipe, not the user's pipeline")
    return out


def _plain(d):
    """numpy scalars and arrays as JSON values."""
    if isinstance(d, dict):
        return {k: _plain(v) for k, v in d.items()}
    if hasattr(d, "tolist"):
        return d.tolist()
    return d


__all__ = ["PAIRS", "forget_train", "phis", "ulira_attack"]
