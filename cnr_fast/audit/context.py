"""What a metric's compute() reads: the audit's shared facts (`AuditPass`, one per audit_models call) and
one model's features (`MetricContext`, one per audited model).

Every measure, built-in or registered from outside, is `compute(ctx) -> value`. The features of each model
are extracted once (probe-train and test, every tap); what several measures share for one model (a probe
fitted once and read by two metrics, the relearn attack's two readings) sits in `ctx.memo` under the key
of the helper that computed it, and what every model compares with (the original's probes, class means
and unreduced features) in the AuditPass, computed when first asked for.
"""

from __future__ import annotations

import dataclasses

import torch

from . import probes as _probes


@dataclasses.dataclass
class AuditPass:
    """The splits, rows and options every model of one audit is measured with, and the original's features."""

    ds: object  # the Dataset
    forget: list  # forget classes, sorted
    retain: list
    taps: list  # audited taps, in depth order
    device: object
    seed: int
    original: str  # the original's name in the audit
    retrained: str | None
    reducer: object  # features.Reducer
    probe_train: object  # the probe-train Split
    forget_test: torch.Tensor  # bool mask of the forget-class rows of ds.test
    cka_rows: dict  # {"retain": rows, "forget": rows}: the test rows CKA compares on (equal N)
    x_forget: torch.Tensor  # forget test images of the Grad-CAM overlap and the attention-head table
    y_forget: torch.Tensor
    overlap_tap: str
    shots: tuple
    selectivity_k: int
    cka_unbiased: bool
    relearn: bool  # the relearn attack runs (Metric.requires == "relearn")
    relearn_steps: int
    attacks: bool  # the Table 10 attacks run (Metric.requires == "attacks")
    mia_shadows: list | None = None  # trained shadow models (Metric.requires == "mia_shadows")
    inversion: dict | None = None  # model inversion's judge, image prior and input shape (with attacks)
    reference_logits: dict = dataclasses.field(default_factory=dict)  # outputs.reference_logits
    # the original's features (probe-train and test), set when the original has been extracted
    original_train: object = None
    original_test: object = None
    reference_full: dict = dataclasses.field(default_factory=dict)  # unreduced test features of retrained / null
    _probes: dict = dataclasses.field(default_factory=dict)

    @property
    def deepest(self) -> str:
        return self.taps[-1]

    def original_probe(self, tap: str):
        """The recovery probe fitted on the original's probe-train features at `tap` (fitted once)."""
        if tap not in self._probes:
            tr, te = self.original_train, self.original_test
            self._probes[tap] = _probes.linear_probe(tr.vec[tap], tr.y, te.vec[tap], te.y, self.forget)[1]
        return self._probes[tap]

    def keep_probe(self, tap: str, probe) -> None:
        """The original's probe, fitted by its own probe_acc: not fitted a second time."""
        self._probes.setdefault(tap, probe)

    def original_means(self) -> dict:
        return {t: self.original_train.class_means(t) for t in self.taps}


@dataclasses.dataclass(frozen=True)
class MetricContext:
    """What a metric's compute() may read, for one audited model."""

    name: str  # the model's name in the audit ("original", "unlearned", ...)
    model: object  # the model, on `device`, in eval mode
    original: object  # the original model
    ds: object  # the Dataset (train / val / test splits)
    forget: list  # forget classes
    taps: list  # audited taps, in depth order
    probe_train: object  # features.Features of the probe-train split (.vec[tap], .y, .logits, .class_means)
    test: object  # features.Features of the test split (.vec[tap], .full[tap], .y, .logits)
    forget_test: object  # bool mask of forget-class rows of the test split
    independent: bool  # trained from scratch (not derived from the original)
    device: object
    seed: int
    retrained: str | None = None  # the retrained reference's name in this audit (None: the audit has none)
    # logits on the forget-class rows of the test split (in order) of the references outputs.py compares with:
    # "incompetent" (the original's architecture freshly initialised, seeded) and "retrained" (when there is one)
    reference_logits: dict = dataclasses.field(default_factory=dict)
    audit: AuditPass | None = None  # the audit's shared facts (the built-in measures read them)
    memo: dict = dataclasses.field(default_factory=dict)  # what this model's measures share

    def shared(self, key, fn):
        """fn() once per model and key: what two measures read from one computation."""
        if key not in self.memo:
            self.memo[key] = fn()
        return self.memo[key]
