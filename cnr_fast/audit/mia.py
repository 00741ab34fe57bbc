"""Membership inference on the forget class, population attack (Shokri-style features, one attack model).

Per-example attack features from the audited model's logits: the cross-entropy loss of the true label,
its log, the prediction entropy and the max softmax probability. Logits are clamped to >= -1e4 first,
so the -inf forget logits of LogitMask give a large finite loss (capped at 100) instead of inf / nan.
The attack (logistic regression on standardised features) is trained on retain-train examples
(members, label 1) against retain-test examples (non-members, label 0), equal counts. mia_acc is its
accuracy at telling forget-train (members of the original's training set) from forget-test examples,
equal counts by seeded subsampling: 0.5 = no membership signal.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

LOGIT_FLOOR = -1e4
LOSS_CAP = 100.0


def attack_features(logits: torch.Tensor, y: torch.Tensor) -> np.ndarray:
    z = torch.nan_to_num(logits.double(), nan=0.0, neginf=LOGIT_FLOOR, posinf=-LOGIT_FLOOR).clamp(min=LOGIT_FLOOR)
    logp = F.log_softmax(z, 1)
    p = logp.exp()
    loss = (-logp.gather(1, y.long().view(-1, 1)).squeeze(1)).clamp(max=LOSS_CAP)
    ent = -(p * logp.clamp(min=-LOSS_CAP)).sum(1)
    conf = p.max(1).values
    return torch.stack([loss, torch.log(loss + 1e-12), ent, conf], 1).numpy()


def _balanced(a: int, b: int, rng) -> tuple[np.ndarray, np.ndarray]:
    n = min(a, b)
    return rng.permutation(a)[:n], rng.permutation(b)[:n]


def population_attack(member_logits, member_y, nonmember_logits, nonmember_y,
                      target_in_logits, target_in_y, target_out_logits, target_out_y, *, seed: int = 0) -> dict:
    """Train on (members vs non-members), score on (target_in vs target_out). Returns mia_acc, attack_train_acc."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(seed)
    fm, fn = attack_features(member_logits, member_y), attack_features(nonmember_logits, nonmember_y)
    im, inn = _balanced(len(fm), len(fn), rng)
    x = np.concatenate([fm[im], fn[inn]])
    t = np.concatenate([np.ones(len(im)), np.zeros(len(inn))])
    if len(im) == 0:
        return {"mia_acc": float("nan"), "attack_train_acc": float("nan")}
    attack = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(x, t)
    ti, to = attack_features(target_in_logits, target_in_y), attack_features(target_out_logits, target_out_y)
    a, b = _balanced(len(ti), len(to), rng)
    if len(a) == 0:
        return {"mia_acc": float("nan"), "attack_train_acc": float(attack.score(x, t))}
    xt = np.concatenate([ti[a], to[b]])
    tt = np.concatenate([np.ones(len(a)), np.zeros(len(b))])
    return {"mia_acc": float(attack.score(xt, tt)), "attack_train_acc": float(attack.score(x, t))}


# ------------------------------------------------------------------------------------ shadow models


def fit_attack(in_logits, in_y, out_logits, out_y, *, seed: int = 0):
    """Logistic-regression attack on attack_features, (in = 1, out = 0) with equal counts."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(seed)
    fi, fo = attack_features(in_logits, in_y), attack_features(out_logits, out_y)
    a, b = _balanced(len(fi), len(fo), rng)
    x = np.concatenate([fi[a], fo[b]])
    t = np.concatenate([np.ones(len(a)), np.zeros(len(b))])
    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(x, t)


def score_attack(attack, in_logits, in_y, out_logits, out_y, *, seed: int = 0) -> float:
    rng = np.random.default_rng(seed + 1)
    fi, fo = attack_features(in_logits, in_y), attack_features(out_logits, out_y)
    a, b = _balanced(len(fi), len(fo), rng)
    if len(a) == 0:
        return float("nan")
    x = np.concatenate([fi[a], fo[b]])
    t = np.concatenate([np.ones(len(a)), np.zeros(len(b))])
    return float(attack.score(x, t))


def train_shadows(template, train_split, n_shadows: int, *, device, seed: int = 0, train_cfg=None,
                  quiet: bool = True) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Shadow models (paper Table 10, "Enhanced MIA"): each is a fresh copy of `template` trained with the
    project's one recipe (train.train_classifier, TrainConfig defaults unless given) on a seeded random
    half of `train_split`; returns per shadow (in_logits, in_y, out_logits, out_y) on its own
    in-half (members) and out-half (non-members)."""
    from ..config import TrainConfig
    from ..models import fresh_copy
    from ..train import predict, train_classifier

    cfg = train_cfg or TrainConfig()
    out = []
    for s in range(n_shadows):
        g = torch.Generator().manual_seed(seed * 7919 + s)
        perm = torch.randperm(len(train_split), generator=g)
        half = len(perm) // 2
        s_in, s_out = train_split.subset(perm[:half]), train_split.subset(perm[half:])
        torch.manual_seed(seed * 7919 + s)
        shadow = fresh_copy(template).to(device)
        train_classifier(shadow, s_in, cfg, device=device, seed=seed + s, desc=f"shadow {s + 1}", quiet=quiet)
        out.append((predict(shadow, s_in, device=device), s_in.y, predict(shadow, s_out, device=device), s_out.y))
    return out


def shadow_attack(shadow_outputs, target_in_logits, target_in_y, target_out_logits, target_out_y, *,
                  seed: int = 0) -> float:
    """Attack trained on the shadows' (member vs non-member) outputs, scored on the target's forget
    train (members) vs forget test (non-members): 0.5 = no signal."""
    il = torch.cat([o[0] for o in shadow_outputs])
    iy = torch.cat([o[1] for o in shadow_outputs])
    ol = torch.cat([o[2] for o in shadow_outputs])
    oy = torch.cat([o[3] for o in shadow_outputs])
    attack = fit_attack(il, iy, ol, oy, seed=seed)
    return score_attack(attack, target_in_logits, target_in_y, target_out_logits, target_out_y, seed=seed)
