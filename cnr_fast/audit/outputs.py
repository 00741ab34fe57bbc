"""Output-distribution measures on the forget class: ZRF, activation distance and JS divergence.

All three compare softmax outputs on the same examples: the forget-class examples of the audit's test
split (ds.test), as the authors' notebook does (bad-teaching-unlearning, CIFARSuper20_Rocket_Unlearn.ipynb,
cell "Measure ZRF": every score on `forget_valid_dl`, the forget class's examples of the test split).
Natural logarithms throughout; 0 log 0 = 0; a -inf logit (LogitMask) is a probability of 0.

Sources (Chundawat, Tarun, Mandal, Kankanhalli, "Can Bad Teaching Induce Forgetting? Unlearning in Deep
Networks using an Incompetent Teacher", AAAI 2023, arXiv 2205.08096; official code
vikram2000b/bad-teaching-unlearning, commit f1aa988, metrics.py). Only the paper's abstract was readable in the
reference store: its formulas below are as the paper is commonly quoted (ZRF = 1 - (1/n_f) sum_i
JS(M(x_i), T_d(x_i)), M the unlearned model, T_d the incompetent teacher), read against its code; where the
code computes something else, that is said:

* JS divergence (paper: JS(p || q) = 0.5 KL(p || m) + 0.5 KL(q || m), m = (p + q) / 2): `js_divergence`,
  per example, in [0, log 2]. The code's `JSDiv(p, q)` returns 0.5 F.kl_div(log p, m) + 0.5 F.kl_div(log q, m);
  F.kl_div(input, target) is KL(target || exp(input)), so that is 0.5 KL(m || p) + 0.5 KL(m || q) (the KLs
  the other way round: unbounded, inf where p has a 0 that q has not), and its default reduction "mean"
  divides the sum by examples x classes (the warning printed in the notebook), so its numbers shrink with
  the class count. `bad_teaching_jsdiv` reproduces it, to read published numbers that came from that code;
  the registered measures use the paper's definition.
* ZRF, Zero Retrain Forgetting (paper; code metrics.py `UnLearningScore(tmodel, gold_model, forget_dl)`, called
  with the incompetent teacher as `gold_model`): ZRF = 1 - mean over forget examples of JS(unlearned model's
  output, incompetent model's output). The incompetent model is "ResNet18(num_classes=20, pretrained=False)"
  in the notebook: the architecture freshly initialised, in eval mode. Here: a copy of the original with
  every submodule's reset_parameters() run (models.fresh_copy, the project's one "same architecture, fresh
  weights"; parameters set directly on a module, e.g. a ViT's class token and position embedding, keep the
  original's values), seeded with the audit's seed on the CPU, one for every audited model. That is PyTorch's
  default layer initialisation, not an architecture's own: cnr-fast's ResNets, like torchvision's ResNet18
  in the notebook, draw conv weights from kaiming_normal(fan_out) in their constructor, reset_parameters
  from kaiming_uniform(a=sqrt 5) (a smaller spread, outputs nearer uniform). ZRF depends on the incompetent
  model, so its values compare across models of one audit, not with the paper's tables. In
  [1 - log 2, 1] = [0.307, 1]: 1 = outputs like the incompetent model's on the forget class; the incompetent
  model itself scores 1 (the chance level given).
* Activation distance (code metrics.py `actv_dist(model1, model2, dataloader)`, added in commit 8086ca3
  "Added membership attack and activation distance": mean over examples of the l2 norm of the difference of
  the two models' softmax outputs; the name goes back to Golatkar et al., "Forgetting Outside the Box",
  ECCV 2020, not read here): here between this model and the retrained reference, in [0, sqrt(2)]; 0 = the
  retrained model's outputs.
* JS to the retrained model (the notebook's last line, `1 - UnLearningScore(gold_model, student_model,
  forget_valid_dl)`, the JS between the retrained and the unlearned model's outputs): mean over the forget
  examples of `js_divergence`, in [0, log 2].

The retrained reference scores 0 on the last two by definition (it is compared with itself; returned as 0.0,
not computed) and its own value on ZRF; a second, independently retrained model (the audit's null) shows
how far two models that never saw the class lie apart, which is the distance an unlearned model can
honestly be expected to reach. Without a retrained reference in the audit the last two are None.
"""

from __future__ import annotations

import copy

import numpy as np
import torch

INCOMPETENT = "incompetent"  # MetricContext.reference_logits keys
RETRAINED = "retrained"


def probabilities(logits) -> np.ndarray:
    """Softmax in float64, (N, C): -inf logits give probability 0; NaN or +inf logits raise ValueError."""
    z = torch.as_tensor(logits).detach().to("cpu", torch.float64)
    if z.ndim != 2 or torch.isnan(z).any() or torch.isposinf(z).any():
        raise ValueError(f"logits must be (N, C) without NaN or +inf, got shape {tuple(z.shape)}")
    return torch.softmax(z, 1).numpy()


def _pair(p, q) -> tuple[np.ndarray, np.ndarray]:
    p, q = np.asarray(p, dtype=np.float64), np.asarray(q, dtype=np.float64)
    if p.shape != q.shape or p.ndim != 2:
        raise ValueError(f"p and q must both be (N, C), got {p.shape} and {q.shape}")
    return p, q


def _kl_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """sum_c a log(a / b) per row, 0 log 0 = 0 (b > 0 wherever a > 0 here)."""
    ratio = np.divide(a, b, out=np.ones_like(a), where=a > 0)
    return (a * np.log(ratio)).sum(1)


def js_divergence(p, q) -> np.ndarray:
    """Per row, JS(p || q) = 0.5 KL(p || m) + 0.5 KL(q || m), m = (p + q) / 2, in nats: (N,) in [0, log 2]."""
    p, q = _pair(p, q)
    m = 0.5 * (p + q)
    return 0.5 * _kl_rows(p, m) + 0.5 * _kl_rows(q, m)


def zrf(p_model, p_incompetent) -> float:
    """ZRF = 1 - mean over rows of JS(p_model, p_incompetent) (module doc)."""
    return float(1.0 - js_divergence(p_model, p_incompetent).mean())


def activation_distance(p, q) -> float:
    """Mean over rows of ||p - q||_2 (bad-teaching metrics.py actv_dist)."""
    p, q = _pair(p, q)
    return float(np.sqrt(((p - q) ** 2).sum(1)).mean())


def bad_teaching_jsdiv(p, q) -> float:
    """The official code's JSDiv(p, q) (module doc): 0.5 mean_{n,c} m (log m - log p) + 0.5 mean_{n,c}
    m (log m - log q), m = (p + q) / 2; inf where p or q has a zero that the other has not."""
    p, q = _pair(p, q)
    m = 0.5 * (p + q)
    with np.errstate(divide="ignore", invalid="ignore"):  # log 0 = -inf; -inf - -inf where m = 0 is masked
        lm, lp, lq = np.log(m), np.log(p), np.log(q)
        # F.kl_div's elementwise target * (log target - input), with 0 where the target is 0
        t = lambda lx: np.where(m > 0, m * (lm - lx), 0.0)
        return float(0.5 * t(lp).mean() + 0.5 * t(lq).mean())


# ----------------------------------------------------------------------------------- in the audit


def incompetent_model(original, seed: int):
    """The incompetent model: the original's architecture freshly initialised (models.fresh_copy), seeded on the
    CPU so the same seed gives the same weights on any device; the global RNG is left as it was."""
    from ..models import fresh_copy

    return fresh_copy(copy.deepcopy(original).cpu(), seed).eval()


def reference_logits(original, retrained, test, forget_mask, *, device, seed: int) -> dict:
    """Logits on the forget-class rows of the test split (in their order) of the references the measures
    compare with: {"incompetent": ..., "retrained": ... (when a retrained model is given)}."""
    from ..train import predict

    rows = test.subset(forget_mask)
    out = {INCOMPETENT: predict(incompetent_model(original, seed).to(device), rows, device=device)}
    if retrained is not None:
        out[RETRAINED] = predict(retrained.to(device).eval(), rows, device=device)
    return out


def _own(ctx) -> np.ndarray:
    return probabilities(ctx.test.logits[ctx.forget_test.cpu()])


def zrf_metric(ctx):
    ref = ctx.reference_logits.get(INCOMPETENT)
    return None if ref is None else zrf(_own(ctx), probabilities(ref))


def _to_retrained(fn):
    def compute(ctx):
        if ctx.retrained is not None and ctx.name == ctx.retrained:
            return 0.0  # the reference against itself
        ref = ctx.reference_logits.get(RETRAINED)
        return None if ref is None else fn(_own(ctx), probabilities(ref))

    return compute


activation_distance_metric = _to_retrained(activation_distance)
js_metric = _to_retrained(lambda p, q: float(js_divergence(p, q).mean()))

__all__ = ["activation_distance", "activation_distance_metric", "bad_teaching_jsdiv", "incompetent_model",
           "js_divergence", "js_metric", "probabilities", "reference_logits", "zrf", "zrf_metric"]
