"""The audit's metric registry: every number the audit reports, as one `Metric` entry.

An entry declares its name, its kind (scalar, per tap, per n), the one-line help `cnr-fast audit --help`
prints, the definition the results carry, its chance level, whether it is coordinate-bound (compares unit
coordinates with the original's: reported only for models derived from the original, never judged in
`compare`), what it needs to run (`requires`: an option of the audit, e.g. the Table 10 attacks), and how it
is computed: `compute(ctx)`, called once per audited model with a `MetricContext` (context.py: that model's
features, the audit's shared facts). The built-in measures are entries like any other; their computes are
measures.py's functions of the same name (the output measures' are in outputs.py). A metric of your own:

    from cnr_fast.audit.metrics import Metric, register
    register(Metric("forget_margin", "scalar", "mean forget logit minus the largest other logit",
                    definition="...", compute=lambda ctx: ...))

Its values then appear in results.json, the reports, `compare.json` and the compare tables.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

from ..registry import Registry
from . import measures as _measures
from . import outputs as _outputs
from .context import AuditPass, MetricContext  # noqa: F401 (what a compute reads; plug-ins import it from here)

KINDS = ("scalar", "per_tap", "per_n")


@dataclasses.dataclass(frozen=True)
class Metric:
    name: str
    kind: str  # one of KINDS
    help: str  # one line for `cnr-fast audit --help`
    definition: str = ""  # the full definition results.json and the reports carry (default: help)
    chance: Callable | None = None  # chance(num_classes, forget_share_of_probe_train) -> float
    coordinate_bound: bool = False
    compute: Callable | None = None  # compute(MetricContext) -> value (a float, or {tap or n: float})
    # an AuditPass attribute that must be true for the metric to be computed ("attacks", "relearn",
    # "mia_shadows"); the metric is absent from the results otherwise
    requires: str = ""
    stage: str = ""  # the progress line printed before it is computed ("probes", "relearn attack", ...)
    judged: bool = True  # about the forget class: placed between original and retrained by verdict.py
    # in every summary table (compare's tables, ablate.md, the scenario reports; the full compare table shows every
    # metric anyway): True for the metric (every key of a per-tap / per-n one), or the keys of a per-tap / per-n
    # metric that are, e.g. ("L4",)
    headline: bool | tuple = False

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"metric {self.name!r}: kind {self.kind!r} is not one of {KINDS}")
        if self.requires and self.requires not in _REQUIRES:
            raise ValueError(f"metric {self.name!r}: requires {self.requires!r} is not an option of the audit "
                             f"({', '.join(_REQUIRES)})")


_REQUIRES = ("attacks", "relearn", "mia_shadows")
REGISTRY = Registry("metric")


def register(metric: Metric, replace: bool = False) -> Metric:
    """Add a metric (a name already registered is refused unless replace=True)."""
    return REGISTRY.register(metric, replace=replace)


def unregister(name: str) -> None:
    """Remove a metric you registered (a built-in is refused)."""
    REGISTRY.unregister(name)


def names(kind: str | None = None) -> tuple[str, ...]:
    return tuple(n for n, m in REGISTRY.items() if kind is None or m.kind == kind)


def headline_keys(available) -> list[str]:
    """The keys of `available` ("probe_acc.L4", "mia_acc", ...) that the registry puts in every summary table
    (Metric.headline), in the registry's order."""
    have, out = list(available), []
    for n, m in REGISTRY.items():
        if not m.headline:
            continue
        if m.kind == "scalar":
            keys = [n]
        elif m.headline is True:
            keys = sorted(k for k in have if k.startswith(n + "."))
        else:
            keys = [f"{n}.{k}" for k in m.headline]
        out += [k for k in keys if k in have and k not in out]
    return out


def coordinate_bound() -> tuple[str, ...]:
    return tuple(n for n, m in REGISTRY.items() if m.coordinate_bound)


def definitions() -> dict[str, str]:
    """Every metric's definition (and the CKA null's, after cka_neg), for results.json and the reports."""
    out = {}
    for n, m in REGISTRY.items():
        out[n] = m.definition or m.help
        if n == "cka_neg":
            out["cka_null"] = CKA_NULL_DEFINITION
    return out


def chances(num_classes: int, forget_share: float) -> dict[str, float]:
    return {n: float(m.chance(num_classes, forget_share)) for n, m in REGISTRY.items() if m.chance is not None}


def _per_class(c, _share):
    return 1.0 / c


for _m in (
    Metric("forget_acc", "scalar", "the model's own test accuracy on the forget classes",
           "Share of forget-class test examples the model classifies as their true class "
           "(train.forget_retain_accuracy).", chance=_per_class, headline=True),
    Metric("retain_acc", "scalar", "the model's own test accuracy on the retain classes",
           "Share of retain-class test examples the model classifies correctly.", judged=False, headline=True),
    Metric("probe_acc", "per_tap", "forget accuracy of a logistic-regression probe on the tap's features (recovery)",
           "Per tap: accuracy on forget-class test examples of a multinomial logistic-regression probe (C=1, "
           "standardised features) fitted on this model's probe-train features with all classes (recovery).",
           chance=_per_class, stage="probes", headline=("L4",)),
    Metric("probe_overall_acc", "per_tap", "that probe's accuracy on all test examples",
           "Per tap: the same recovery probe's accuracy on all test examples.", judged=False),
    Metric("transfer_probe_acc", "per_tap",
           "forget accuracy of the ORIGINAL model's probe applied unchanged to this model's features",
           "Per tap: forget-class test accuracy of the probe fitted on the ORIGINAL model's probe-train features, "
           "applied unchanged (its standardisation included) to this model's test features. Coordinate-bound: "
           "reported only for models derived from the original.", coordinate_bound=True, headline=("L4",)),
    Metric("mlp_probe_acc", "per_tap", "forget accuracy of a 3-layer MLP probe (paper Table 10; --audit thorough)",
           "Per tap: forget-class test accuracy of a 3-layer MLP (two ReLU hidden layers) fitted on this model's "
           "standardised probe-train features with all classes, its width ((256, 128) or (64, 32)) and stopping epoch "
           "chosen on a class-stratified 20% of probe-train (deep_probes.py; the paper's Table 10 gives the row "
           "name only). Computed with attacks=True (`unlearn --audit thorough`, `audit --attacks`).",
           chance=_per_class, requires="attacks"),
    Metric("conv_probe_acc", "per_tap", "forget accuracy of a small residual conv probe on the tap's spatial map "
           "(paper Table 10's ResNet-based probe; --audit thorough)",
           "Per tap with a spatial map: forget-class test accuracy of a small residual conv net (1x1 stem with "
           "coordinate channels, one basic block, global pooling, linear) on the tap's pooled map (at most 8x8), "
           "width chosen and training stopped on a class-stratified 20% of probe-train (deep_probes.py). Absent for "
           "taps without spatial extent or with --reduce project. Computed with attacks=True.",
           chance=_per_class, requires="attacks"),
    Metric("mlp_probe_overall_acc", "per_tap", "the MLP probe's accuracy on all test examples (attacks)",
           "Per tap: the same MLP probe's accuracy on all test examples: read it beside mlp_probe_acc (an early-"
           "stopped probe that labels most examples as one class can show a high forget accuracy at chance "
           "overall).", judged=False, requires="attacks"),
    Metric("conv_probe_overall_acc", "per_tap", "the conv probe's accuracy on all test examples (attacks)",
           "Per tap: the same conv probe's accuracy on all test examples (see mlp_probe_overall_acc).",
           judged=False, requires="attacks"),
    Metric("inversion_judge_rate", "scalar",
           "share of model-inversion images of the forget class an independent judge labels as it (attacks)",
           "Model inversion (paper Table 10; inversion.py): 16 inputs per forget class optimised to maximise this "
           "model's forget-class log-softmax (TV and L2 priors, a Gaussian image prior fitted on the retain "
           "classes' training images only), then labelled by an independent judge (a small CNN trained on every "
           "class, not derived from any audited model): the share it labels as the forget class. Computed with "
           "attacks=True (`unlearn --audit thorough`, `audit --attacks`, `compare --attacks`).",
           chance=_per_class, requires="attacks", stage="model inversion"),
    Metric("inversion_audited_confidence", "scalar",
           "the audited model's own mean forget-class probability on its inversions (attacks)",
           "Mean softmax probability this model gives the forget class on its own inversions: how well the "
           "optimisation did on the model, whatever the judge sees.", judged=False, requires="attacks"),
    Metric("gradcam_overlap", "scalar",
           "cosine of this model's Grad-CAM maps with the original's on forget test examples (1 = same evidence)",
           "Mean over up to 50 forget-class test examples of the cosine similarity between this model's and the "
           "original's Grad-CAM maps for the true (forget) class at tap L3 (ViT: the last block gives Grad-CAM no "
           "patch gradient), each on the tap's own grid (gradcam.gradcam_overlap). 1 = the model still looks where "
           "the original looked for the class; chance is above 0 (non-negative maps overlap). A logit-masked model "
           "is measured through the model it wraps."),
    Metric("knn_acc", "per_tap", "forget accuracy of a k=5 nearest-neighbour vote",
           "Per tap: forget-class test accuracy of a k=5 nearest-neighbour majority vote (Euclidean, probe-train "
           "features as the neighbours).", headline=("L4",)),
    Metric("svm_acc", "per_tap", "forget accuracy of a linear SVM",
           "Per tap: forget-class test accuracy of a one-vs-rest linear SVM (squared hinge, C=1, standardised "
           "features) fitted on probe-train.", headline=("L4",)),
    Metric("cka_pos", "per_tap", "unbiased linear CKA with the original on retain test examples (1 = unchanged)",
           "Per tap: linear CKA, unbiased (debiased HSIC) estimator, between the original's and this model's "
           "unreduced activations on retain-class test examples, as many as cka_neg uses (1 = same representation "
           "up to rotation and scale; ~0 = unrelated). Compare with references.cka_null.", judged=False, headline=("L4", "L2")),
    Metric("cka_neg", "per_tap", "the same CKA on forget test examples, equal N (~0 = unrelated)",
           "Per tap: the same unbiased linear CKA on forget-class test examples (same N as cka_pos).", headline=("L4", "L2")),
    Metric("fewshot_probe_acc", "per_n", "forget accuracy of the deepest tap's probe fitted with only n forget examples",
           "Keyed by n: forget-class test accuracy of the recovery probe at the deepest audited tap, fitted on "
           "probe-train with only n examples per forget class (all retain examples kept).", headline=("5",)),
    Metric("relearn_acc", "per_n", "forget accuracy after 20 Adam steps on n forget + n retain training examples",
           "Keyed by n: forget-class test accuracy after fine-tuning a copy of the model on n forget-train examples "
           "per forget class plus as many retain-train examples, 20 full-batch Adam steps (lr 1e-3, BatchNorm "
           "statistics frozen). Void (null, not judged) where the attack cost more than 0.2 of the model's retain "
           "accuracy: it then broke the model rather than taught it (relearn_retain_acc).", requires="relearn", stage="relearn attack", headline=("5",)),
    Metric("relearn_retain_acc", "per_n", "retain accuracy after the relearn attack (a large drop voids relearn_acc)",
           "Keyed by n: retain-class test accuracy after the relearn attack of relearn_acc. More than 0.2 below "
           "the model's own retain accuracy: the attack broke the model, and relearn_acc[n] is void.",
           judged=False, requires="relearn"),
    Metric("mia_acc", "scalar", "membership-inference accuracy on forget train vs forget test examples (0.5 = no signal)",
           "Accuracy of a population membership-inference attack (logistic regression on loss, log-loss, entropy "
           "and max-confidence of the model's outputs, trained on retain-train members vs retain-test non-members) "
           "at telling forget-class probe-train examples from forget-class test examples, equal counts; 0.5 = no "
           "signal.", chance=lambda _c, _s: 0.5, stage="membership inference", headline=True),
    Metric("mia_attack_train_acc", "scalar", "the membership attack's accuracy on its own training pairs",
           "The membership attack's accuracy on its own training pairs (retain-train members vs retain-test "
           "non-members): how much membership signal the outputs carry at all.", judged=False),
    Metric("mia_shadow_acc", "scalar", "the same attack trained on shadow models (--mia-shadows N)",
           "Shadow-model membership attack (paper Table 10): the same attack features, attack trained on shadow "
           "models (same architecture, fresh weights, the project's training recipe on a random half of the "
           "training split) telling their members from non-members, scored on this model's forget-class "
           "probe-train vs test examples; 0.5 = no signal.", requires="mia_shadows"),
    Metric("nn_purity", "scalar",
           "forget share of the 10 nearest probe-train neighbours of forget test examples (deepest tap)",
           "At the deepest audited tap: mean over forget-class test examples of the share of their 10 nearest "
           "probe-train neighbours (Euclidean) that carry the forget label; chance = the forget share of "
           "probe-train.", chance=lambda _c, share: share,
           judged=False, headline=True),  # the verdict counts it once, as nn_purity_by_layer at the deepest tap
    Metric("nn_purity_by_layer", "per_tap", "nn_purity at every tap", "nn_purity at every tap."),
    Metric("selectivity", "per_tap", "forget selectivity of the original's top-12 forget units",
           "Per tap: mean over the original's top-K forget-selective units (K=12, eqs. 1-3 on probe-train) of "
           "this model's selectivity S = mu(forget) - mean over retain classes of mu(c).", coordinate_bound=True),
    Metric("selectivity_delta", "per_tap",
           "change in forget selectivity of the original's top-12 forget units (negative = erased)",
           "Per tap: selectivity of this model minus that of the original on the same units (negative = forget "
           "selectivity reduced). Coordinate-bound, like selectivity: reported only for models derived from the "
           "original.", coordinate_bound=True, headline=("L4",)),
    Metric("zrf", "scalar", "Zero Retrain Forgetting: 1 - mean JS to a randomly initialised model on forget test "
           "examples (1 = as incompetent)",
           "ZRF (Chundawat et al., AAAI 2023, 'Can bad teaching induce forgetting?'; code vikram2000b/bad-teaching-"
           "unlearning metrics.py UnLearningScore): 1 - mean over the forget-class test examples of the Jensen-Shannon "
           "divergence (nats, paper's definition) between this model's softmax output and that of an incompetent "
           "model, the original's architecture freshly initialised (seeded with the audit's seed). In [1 - log 2, 1]; "
           "the incompetent model itself scores 1 (the chance column); read it against the retrained model's own "
           "value (outputs.py).", chance=lambda _c, _s: 1.0, compute=_outputs.zrf_metric),
    Metric("activation_distance", "scalar", "mean l2 distance of the softmax outputs to the retrained model's "
           "on forget test examples (0 = retrained)",
           "Activation distance (bad-teaching-unlearning metrics.py actv_dist): mean over the forget-class test "
           "examples of ||p_model - p_retrained||_2 of the softmax outputs, in [0, sqrt 2]. The retrained reference "
           "scores 0 (itself), the null model the distance of a second model that never saw the class; None "
           "without a retrained reference (outputs.py).", compute=_outputs.activation_distance_metric),
    Metric("js_to_retrained", "scalar", "mean Jensen-Shannon divergence of the outputs from the retrained model's "
           "on forget test examples (0 = retrained)",
           "Mean over the forget-class test examples of JS(p_model || p_retrained) = 0.5 KL(p || m) + 0.5 KL(q || m), "
           "m = (p + q) / 2, in nats, in [0, log 2] (the JS of Chundawat et al., AAAI 2023; their notebook reports it "
           "between the unlearned and the retrained model). The retrained reference scores 0, the null model "
           "the divergence of a second model that never saw the class; None without a retrained reference "
           "(outputs.py).", compute=_outputs.js_metric),
):
    # a built-in's compute is measures.py's function of the same name (the output measures bring theirs)
    register(_m if _m.compute else dataclasses.replace(_m, compute=getattr(_measures, _m.name)))
del _m
REGISTRY.seal_builtins()

# not a per-model metric: a reference the audit reports beside cka_pos / cka_neg
CKA_NULL_DEFINITION = ("references.cka_null.{pos,neg}: the same CKA between the retrained reference and a second, "
                       "independently trained retrained model: the level two unrelated networks of this recipe reach "
                       "at each tap.")
