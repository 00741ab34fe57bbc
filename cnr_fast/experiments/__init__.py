"""Drivers a Python user can call without the CLI, split by job:

- methods.py: the method registry (`Method`, `register`, `get`, `names`) and `unlearn_model`;
- runner.py: the per-seed runner every driver shares (references, resumable state entries, one audit);
- compare.py, ablate.py, scenarios.py: the drivers (and the scenario registry);
- stats.py: intervals, paired tests, Holm, the verdict; reports.py: Markdown and figures;
- merge.py: runs over disjoint seeds into one result.
The reference models (original, retrained, null) and their cache live in `cnr_fast.references`.

    from cnr_fast import experiments
    from cnr_fast.config import RunConfig
    result = experiments.compare(RunConfig(), ["cnr", "cnr-real", "rl", "ssd"], seeds=3, device="cpu")
    print(experiments.compare_report_md(result))

Every unlearning method unlearns the per-seed original and is audited on the test split; the
validation split (`data.val_fraction`) is where anything is chosen.
"""

from __future__ import annotations

from ..references import (  # noqa: F401
    REFERENCE_INIT,
    derive_seed,
    file_sha256,
    load_original,
    obtain_reference,
    original_record,
    reference_key,
    reference_seeds,
    train_reference,
)
from .ablate import ABLATIONS, SWEEPS, ablate, ablate_tables, merge_ablate  # noqa: F401
from .compare import compare, compare_tables  # noqa: F401
from .methods import Method, get, is_from_scratch, names, register, resolve, unlearn_model, validation_choice  # noqa: F401
from .reports import (  # noqa: F401
    summary_keys,
    ablate_figures,
    ablate_report_md,
    choices_md,
    compare_report_md,
    originals_md,
    scenario_figure,
    scenario_report_md,
)
from ..audit.verdict import flatten  # noqa: F401
from .runner import begin_provenance, machine_info, val_accuracy  # noqa: F401
from .scenarios import CONTINUAL_ORDER, MULTICLASS_SETS, SCENARIOS, continual, merge_results, multiclass  # noqa: F401
from .stats import (  # noqa: F401
    SEPARATION,
    SEPARATION_ALPHA,
    format_p,
    holm,
    is_coordinate_bound,
    judge,
    separation,
    summarise,
    t_interval,
)
