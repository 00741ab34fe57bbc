"""`cnr-fast ls`: the methods, archs, datasets, taps and ops this install knows."""

from __future__ import annotations


def add_parser(sub) -> None:
    p = sub.add_parser("ls", help="list methods, archs, datasets, taps and ops", description=__doc__,
                       epilog="example:\n  cnr-fast ls")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..experiments import methods as M
    from ..data import DATASETS
    from ..models import ARCHS, TAP_NAMES
    from ..ops.backend import REGISTRY

    print("methods:  " + ", ".join(m for m in M.names() if M.get(m).role != "control"))
    print("controls: " + "; ".join(f"{m} ({M.get(m).description})" for m in M.names("control")))
    for m in M.names():
        entry = M.resolve(m, None)[0]
        print(f"data {m} reads: {M.data_needs(m)}")
        own = M.get(m).options
        none = ("none of the shared ones; its own below" if own else
                "none: its settings are its authors' or chosen on validation (README, \"The baselines\")")
        print(f"flags of {m}: {' '.join(entry.flags) or none}")
        for o in own:
            print(f"option of {m}: {o.flag(m)} {o.type.__name__}, default {o.default}: {o.help}")
    from ..audit import metrics as audit_metrics
    from ..experiments.scenarios import SCENARIOS

    for name in audit_metrics.names():
        m = audit_metrics.REGISTRY[name]
        print(f"metric {name} ({m.kind}{', coordinate-bound' if m.coordinate_bound else ''}): {m.help}")
    for sc in SCENARIOS.values():
        print(f"scenario {sc.name}: {sc.description}")
    print("archs:    " + ", ".join(ARCHS) + "; any other model: --model torchvision:NAME, timm:NAME, "
          "FILE.py:FUNCTION or package.module:FUNCTION")
    print("datasets: " + ", ".join(DATASETS))
    print("taps:     " + ", ".join(TAP_NAMES))
    for op, backends in REGISTRY.items():
        print(f"op {op}: " + ", ".join(b.name for b in backends))
    return 0
