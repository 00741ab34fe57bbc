"""The method registry: every unlearning method, CNR control and baseline, as one `Method` entry.

An entry declares what the rest of the code reads instead of hard-coding names: its function, its role
(CNR, a control of CNR, a baseline), whether it is trained from scratch (RFS: its units do not
correspond to the original's, so it is audited as an independent model and coordinate-bound metrics
are not reported for it), whether it keeps resumable state entries of its own stages, the config sections and
CLI flags it reads, and whether `compare` runs it by default. `cnr-fast ls`, `unlearn --method`,
`compare --methods`, the audit's independence and the reports all read this registry.

Adding a method: a file with `run(original, ds, forget, cfg, *, device, quiet=False, **_) -> (model,
info)` and one `register(Method(...))` call (here for the built-in ones, or from the user's code):

    from cnr_fast.experiments.methods import Method, register
    register(Method("mine", run=my_run, role="baseline", description="what it does"))

`run` receives `state` (a resume.RunState: a method that saves its stages there resumes from them),
`reuse` (a dict kept across the runs of
one driver on one original, e.g. CNR's GAN) and `options` (its own settings, below) as keywords, each
only if its signature names it. A control may be a config variant of another method (`variant_of` +
`changes`) with no function.

A method's own settings are `Option`s in its entry: each is a CLI flag `--METHOD-OPTION` of `unlearn`,
`compare` and `ablate`, a key `method_options.METHOD.OPTION` of a config file and of config.json, and
a key of the `options` dict its `run` receives (defaults filled in). Nothing else needs editing:

    register(Method("mine", run=my_run, options=(Option("strength", float, 1.0, "how hard", low=0.0),)))
"""

from __future__ import annotations

import dataclasses
import inspect
import io
import math
import time
from typing import Callable

import torch

from ..config import RunConfig
from ..errors import UserError
from ..registry import Registry
from .variants import VARIANTS

ROLES = ("cnr", "control", "baseline")
# the CNR controls and the ablation variant (variants.py) each one is: one definition of the change
CONTROLS = {"cnr-raw": "no-synthesis", "cnr-paper": "sign-paper"}
DATA_NEEDS = ("forget", "retain", "labels")
OPTION_TYPES = (int, float, str, bool)


@dataclasses.dataclass(frozen=True)
class Option:
    """One setting of one method: `--METHOD-NAME` on the CLI, `method_options.METHOD.NAME` in a config."""

    name: str  # a Python identifier; the flag spells "_" as "-"
    type: type  # one of OPTION_TYPES
    default: object
    help: str = ""
    low: float | None = None  # lowest allowed value (numbers)
    strict: bool = False  # the value must be above `low`, not equal to it
    choices: tuple = ()  # the allowed values (strings)

    def __post_init__(self):
        if not self.name.isidentifier():
            raise ValueError(f"option {self.name!r}: the name must be a Python identifier")
        if self.type not in OPTION_TYPES:
            raise ValueError(f"option {self.name!r}: type must be one of int, float, str, bool")

    def flag(self, method: str) -> str:
        return f"--{method}-{self.name.replace('_', '-')}"


@dataclasses.dataclass(frozen=True)
class Method:
    name: str
    run: Callable | None = None  # run(original, ds, forget, cfg, *, device, quiet, state=None, reuse=None)
    role: str = "baseline"  # one of ROLES
    description: str = ""
    from_scratch: bool = False  # trained from scratch on the retain data, not derived from the original
    config_sections: tuple[str, ...] = ()  # the RunConfig sections it reads besides data / model
    flags: tuple[str, ...] = ()  # the CLI flags that set them (`cnr-fast ls` prints them)
    variant_of: str | None = None  # a config variant of this method (a control): run it with `changes`
    changes: dict | None = None
    default_in_compare: bool = True
    options: tuple[Option, ...] = ()  # its own settings (see the module docstring)
    # the training data it reads, of DATA_NEEDS: "forget" (forget-class images), "retain" (retain-class images),
    # "labels" (their true labels); () for none (LM); None: not declared (a user's method)
    needs: tuple[str, ...] | None = None

    def __post_init__(self):
        if self.role not in ROLES:
            raise ValueError(f"method {self.name!r}: role {self.role!r} is not one of {ROLES}")
        if (self.run is None) == (self.variant_of is None):
            raise ValueError(f"method {self.name!r}: give a run function or variant_of, exactly one")
        if self.needs is not None and set(self.needs) - set(DATA_NEEDS):
            raise ValueError(f"method {self.name!r}: needs {self.needs} must be of {DATA_NEEDS}")


_REGISTRY = Registry("method")
_BUILTINS_LOADED = False


def register(method: Method, replace: bool = False) -> Method:
    """Add a method (a name already registered is refused unless replace=True)."""
    _load_builtins()
    if method.variant_of is not None and method.variant_of not in _REGISTRY:
        raise ValueError(f"method {method.name!r}: variant_of {method.variant_of!r} is not registered")
    return _REGISTRY.register(method, replace=replace)


def unregister(name: str) -> None:
    """Remove a method you registered (a built-in is refused: register yours under its name with replace=True)."""
    _load_builtins()
    _REGISTRY.unregister(name)


def _all() -> dict[str, Method]:
    _load_builtins()
    return _REGISTRY


def names(role: str | None = None, default_only: bool = False) -> tuple[str, ...]:
    """Registered method names in registration order (built-ins first), optionally of one role."""
    return tuple(n for n, m in _all().items()
                 if (role is None or m.role == role) and (not default_only or m.default_in_compare))


def get(name: str) -> Method:
    """The entry of `name`; an unknown name is a UserError naming the closest ones."""
    return _all().find(name)


def check_names(methods: list[str]) -> None:
    """A list of method names for a driver: known, at least one, none twice."""
    if not methods:
        raise UserError(f"no method given; choose from {', '.join(names())}")
    bad = [m for m in methods if m not in _all()]
    if bad:
        raise UserError(f"unknown method(s) {bad}; choose from {', '.join(names())}")
    if len(set(methods)) != len(methods):
        raise UserError(f"--methods lists a method twice: {methods}")


def entries() -> tuple[Method, ...]:
    """Every registered entry, in registration order (built-ins first)."""
    return tuple(_all().values())


@dataclasses.dataclass(frozen=True)
class Prepared:
    """A method resolved once for a run (`prepare`): what the drivers and `unlearn_model` read instead of
    looking the name up again."""

    name: str  # the name asked for (a control keeps its own, e.g. "cnr-raw")
    method: Method  # its entry
    entry: Method  # the entry that runs: a control's base method, else `method`
    cfg: RunConfig | None  # the config it runs with (a control's changes applied)
    options: dict  # the runner's option values (cfg's over the defaults)

    @property
    def from_scratch(self) -> bool:
        return self.entry.from_scratch

    @property
    def data_needs(self) -> str:
        """What training data it reads, in words ("forget and retain images, with labels"; "none")."""
        needs = self.entry.needs
        if needs is None:
            return "not declared"
        parts = [p for p in ("forget", "retain") if p in needs]
        if not parts:
            return "none"
        return " and ".join(parts) + " images" + (", with labels" if "labels" in needs else ", no labels")

    def on(self, cfg: RunConfig) -> Prepared:
        """The same method on another config (another seed, a shadow's): no registry look-up."""
        m = self.method
        run_cfg = cfg.replace(**m.changes) if m.variant_of is not None and m.changes else cfg
        given = cfg.method_options.get(self.entry.name, {})
        return dataclasses.replace(self, cfg=run_cfg, options={o.name: given.get(o.name, o.default)
                                                               for o in self.entry.options})


def prepare(name: str, cfg: RunConfig | None = None) -> Prepared:
    """Resolve method `name` once: its entry, the entry that runs, the config and options it runs with. An
    unknown name is a UserError naming the closest ones."""
    m = get(name)
    entry = _all()[m.variant_of] if m.variant_of is not None else m  # register() checked that it exists
    p = Prepared(name, m, entry, cfg, {o.name: o.default for o in entry.options})
    return p.on(cfg) if cfg is not None else p


def option_values(name: str, cfg: RunConfig) -> dict:
    """The options of method `name` (a control: of the method it varies) with cfg's values over the defaults."""
    return prepare(name, cfg).options


def check_options(cfg: RunConfig) -> None:
    """Every method option in cfg: of a registered method, declared by it, of its type and range."""
    from ..config import check_type

    for method, given in cfg.method_options.items():
        entry = get(method)  # an unknown method: one line with the closest names
        declared = {o.name: o for o in entry.options}
        for key, val in given.items():
            where = f"method_options.{method}.{key}"
            if key not in declared:
                known = ", ".join(declared) or "none"
                raise UserError(f"{where}: method {method!r} has no option {key!r} (its options: {known}); "
                                "drop it or fix the name")
            o = declared[key]
            if o.type is float and isinstance(val, int) and not isinstance(val, bool):
                val = float(val)
            check_type(val, o.type, where)
            how = f"pass a valid value with {o.flag(method)}"
            if o.choices and val not in o.choices:
                raise UserError(f"{where} is {val!r}; choose one of {', '.join(map(str, o.choices))} ({how})")
            if o.type in (int, float) and o.low is not None:
                if o.type is float and not math.isfinite(val):
                    raise UserError(f"{where} is {val}; {how}")
                if (val <= o.low) if o.strict else (val < o.low):
                    raise UserError(f"{where} is {val}, it must be {'above' if o.strict else 'at least'} {o.low}; {how}")


def data_needs(name: str) -> str:
    """What training data a method reads, in words ("forget and retain images, with labels"; "none")."""
    return prepare(name).data_needs


TRAIN_DATA = {"all": DATA_NEEDS, "forget": ("forget", "labels")}  # what compare's methods may read; the
# forget images' labels are the forget classes of the request itself


def not_applicable(name: str, train_data: str = "all") -> str | None:
    """Why method `name` cannot run when only TRAIN_DATA[train_data] is at hand (None: it can)."""
    needs = prepare(name).entry.needs
    if train_data == "all":
        return None
    if needs is None:
        return "does not declare the training data it reads (Method.needs), so it is not run without it"
    missing = [n for n in needs if n not in TRAIN_DATA[train_data]]
    words = {"forget": "forget-class images", "retain": "retain-class images", "labels": "their labels"}
    return f"needs {' and '.join(words[n] for n in missing)}, not given to it here" if missing else None


def is_from_scratch(name: str | None) -> bool:
    """True for a registered method trained from scratch (unknown names: False)."""
    return bool(name) and name in _all() and prepare(name).from_scratch


def resolve(name: str, cfg: RunConfig | None) -> tuple[Method, RunConfig | None]:
    """(the entry that runs, config) for a method or a config-variant control such as "cnr-raw"."""
    p = prepare(name, cfg)
    return p.entry, p.cfg


def unlearn_model(method: str | Prepared, original, ds, cfg: RunConfig | None = None, *, device, quiet=False,
                  reuse: dict | None = None, state=None):
    """Run one method (or CNR control) on `original`. Returns (model, info, timings, extra run files).

    method: a name (resolved here, with `cfg`), or what `prepare` returned (cfg=None: its own config;
    a cfg: the same method on it, without a registry look-up).

    reuse: a dict kept across calls on the same original and seed (compare / ablate) so that CNR
    variants reuse one GAN per forget class; the reused GAN's training time is still charged.
    state: a resume.RunState (`cnr-fast unlearn`): a method whose run takes `state` saves its stages' entries
    there and a rerun continues from them; any other method is one entry, done again if it did not finish.
    A method's info may carry "synthetic_images" (written as synthetic.pt / .png) and "timings_s" (per
    stage; "charged_reused_s" is time of reused work charged to this run).
    """
    if isinstance(method, Prepared):
        p = method.on(cfg) if cfg is not None else method
    else:
        p = prepare(method, cfg)
    cfg = p.cfg
    forget = list(cfg.data.forget)
    t0 = time.perf_counter()
    model, info = _call(p.entry, original, ds, forget, cfg, device=device, quiet=quiet, state=state, reuse=reuse,
                        options=p.options)
    info = dict(info)
    files: dict[str, object] = {}
    synth = info.pop("synthetic_images", None)
    if synth is not None:
        buf = io.BytesIO()
        torch.save(synth, buf)
        files["synthetic.pt"] = buf.getvalue()
        png = image_grid_png(synth)
        if png:
            files["synthetic.png"] = png
    timings = {"detect": 0.0, "synthesize": 0.0, "reset": 0.0, **dict(info.pop("timings_s", {}))}
    timings["unlearn"] = time.perf_counter() - t0 + timings.pop("charged_reused_s", 0.0)
    return model, info, timings, files


def _call(entry: Method, original, ds, forget, cfg, **kw):
    params = inspect.signature(entry.run).parameters
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        kw = {k: v for k, v in kw.items() if k in params}
    return entry.run(original, ds, forget, cfg, **kw)


def validation_choice(info: dict) -> dict | None:
    """{"chosen": name, "validation": {candidate: scores}} of a method whose setting was chosen on
    validation (at the top of its info, or in its reset's log for CNR and cnr-real); None otherwise."""
    for where in (info, info.get("reset") if isinstance(info.get("reset"), dict) else None):
        if where and "chosen_on_validation" in where:
            out = {"chosen": where["chosen_on_validation"], "validation": where["validation"]}
            if "validation_rule" in where:  # the original's accuracies, the margin, within it or not
                out["rule"] = where["validation_rule"]
            return out
    return None


def image_grid_png(x: torch.Tensor, nrow: int = 16) -> bytes | None:
    try:
        from PIL import Image
        from torchvision.utils import make_grid
    except ImportError:
        return None
    grid = make_grid(x[:128].clamp(-1, 1) * 0.5 + 0.5, nrow=nrow, padding=1)
    arr = (grid.permute(1, 2, 0).numpy() * 255).round().astype("uint8")
    buf = io.BytesIO()
    Image.fromarray(arr if arr.shape[2] == 3 else arr[:, :, 0]).save(buf, format="PNG")
    return buf.getvalue()


def _load_builtins() -> None:
    """Register the built-in methods once, in the order `ls` and `compare` list them."""
    global _BUILTINS_LOADED
    if _BUILTINS_LOADED:
        return
    _BUILTINS_LOADED = True
    from ..baselines import (
        badteacher,
        gau,
        jit,
        kdu,
        l1sparse,
        lfssd,
        lm,
        neggrad,
        rfs,
        rl,
        roft,
        salun,
        scrub,
        ssd,
        unsir,
    )
    from ..cnr.pipeline import run_cnr, run_real

    cnr_sections, cnr_flags = ("detect", "synth", "reset"), (
        "--k", "--taps", "--selection", "--alpha", "--lambda-real", "--lambda-smooth", "--sign", "--latent-opt",
        "--synth-steps", "--gan-epochs", "--synth-batch", "--reset-epochs", "--stabilize-epochs", "--gamma",
        "--relabel", "--reset-lr")
    fine_tune = dict(config_sections=("baseline",), flags=("--baseline-epochs", "--reset-epochs", "--stabilize-epochs",
                                                                "--baseline-lr"))
    salun_loop = dict(config_sections=("baseline",), flags=("--salun-epochs",))  # their authors' 10 epochs
    both = ("forget", "retain", "labels")  # forget and retain images with their labels
    builtin = [
        Method("cnr", run_cnr, "cnr", "Class-Specific Neuron Reset: detect, synthesise, reset, stabilise",
               config_sections=cnr_sections, flags=cnr_flags, needs=both),
        Method("cnr-real", run_real, "control",
               "CNR's reset fed B real forget images instead of synthetic ones: no detection, no synthesis",
               config_sections=("synth", "reset"), flags=("--synth-batch", "--reset-epochs", "--reset-lr"),
               needs=both),
        Method("rl", rl.run, "baseline", "random labelling (SalUn's loop, no mask)", needs=both, **salun_loop),
        Method("ssd", ssd.run, "baseline", "selective synaptic dampening (Foster et al. 2024)",
               config_sections=("baseline",), needs=both),
        Method("scrub", scrub.run, "baseline", "teacher-student max/min steps (Kurmanji et al. 2023)",
               config_sections=("baseline",), needs=both),
        Method("salun", salun.run, "baseline", "saliency-masked random labelling (Fan et al. 2024)", needs=both,
               **salun_loop),
        Method("neggrad+", neggrad.run, "baseline",
               "descent on retain, ascent on forget, weighted by alpha (Kurmanji et al. 2023, as run in RUM)",
               config_sections=("baseline",), default_in_compare=False, needs=both),
        Method("l1-sparse", l1sparse.run, "baseline", "fine-tune on retain data with a decaying L1 penalty (Jia et al. 2023)",
               config_sections=("baseline",), default_in_compare=False, needs=("retain", "labels")),
        Method("bad-teacher", badteacher.run, "baseline",
               "distil from the original on retain and a random teacher on forget (Chundawat et al. 2023)",
               config_sections=("baseline",), default_in_compare=False, needs=("forget", "retain")),
        Method("unsir", unsir.run, "baseline", "error-maximising noise for the forget class, impair then repair "
               "(Tarun et al. 2023)", config_sections=("baseline",), default_in_compare=False, needs=("retain", "labels")),
        Method("jit", jit.run, "baseline", "Lipschitz smoothing around forget images, no retain data (Foster et al. 2024)",
               config_sections=("baseline",), default_in_compare=False, needs=("forget",)),
        # labels: the importances read none, but D is batched class by class as the authors' loaders do (lfssd.py)
        Method("ssd-lf", lfssd.run, "baseline", "loss-free SSD: importances from the output's l2 norm, not the loss "
               "(Foster et al. 2024)", default_in_compare=False, needs=both),
        Method("rfs", rfs.run, "baseline", "retrain from scratch on the retain classes", from_scratch=True,
               config_sections=("train",), flags=("--train-epochs", "--lr"), needs=("retain", "labels")),
        Method("roft", roft.run, "baseline", "fine-tune on retain data only", needs=("retain", "labels"), **fine_tune),
        Method("gau", gau.run, "baseline", "gradient ascent on forget (bounded) + descent on retain", needs=both,
               **fine_tune),
        Method("kdu", kdu.run, "baseline", "distil the original with its forget logits masked", needs=both,
               **fine_tune),
        Method("lm", lm.run, "baseline", "mask the forget logits at inference; weights untouched", needs=()),
        Method("cnr-raw", None, "control", "raw GAN samples, no latent optimisation; ablate's no-synthesis",
               variant_of="cnr", changes=VARIANTS[CONTROLS["cnr-raw"]]),
        Method("cnr-paper", None, "control", "eq. 6 minimised with the sign as printed; ablate's sign-paper",
               variant_of="cnr", changes=VARIANTS[CONTROLS["cnr-paper"]]),
    ]
    for m in builtin:
        _REGISTRY.setdefault(m.name, m)
    _REGISTRY.seal_builtins()
