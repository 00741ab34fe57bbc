"""Drivers a Python user can call without the CLI: reference models, one method, a comparison.

    from cnr_fast import experiments
    from cnr_fast.config import RunConfig
    result = experiments.compare(RunConfig(), ["cnr", "cnr-real", "rl", "ssd"], seeds=3, device="cpu")
    print(experiments.compare_report_md(result))

Reference models (all trained with the one recipe, `TrainConfig`, and cached by what they were
trained on and how):

- original: all classes, initial weights from `seed`.
- retrained: the retrain-from-scratch reference, retain classes only. With
  `train.reference_init = "independent"` (default) its initial weights and data order come from
  a seed derived from `seed`, so nothing but the recipe and the data ties it to the original;
  "shared" gives it the original's initial weights and data order (what the paper's setup implies).
- retrained_null: a second retrained model, always independent of both. CKA(retrained,
  retrained_null) is the "unrelated model" level printed beside every CKA number.

RFS (a method, not a reference) never takes the reference's seed: it would be the reference weight
for weight. Every unlearning method unlearns the per-seed original and is audited on the test split;
the validation split (`data.val_fraction`) is where anything is chosen.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import hashlib
import io
import math
import os
import sys
import time

import numpy as np
import torch

from .config import RunConfig, stable_hash
from .errors import UserError

# The methods (`cnr-fast ls`) and the CNR controls: each control is CNR with one part removed,
# with CNR's budget, L2 pull and stabilisation unchanged.
# `cnr-real` is CNR's reset fed real forget images (a control of the synthesis, cnr/pipeline.run_real);
# `rl` is the literature's random-labelling baseline (baselines/rl.py).
METHODS = ("cnr", "cnr-real", "rl", "ssd", "scrub", "salun", "rfs", "roft", "gau", "kdu", "lm")
VARIANTS = {
    "cnr-raw": ("cnr", {"synth": {"latent_opt": False}}),  # raw GAN samples: is latent optimisation needed?
    "cnr-paper": ("cnr", {"synth": {"sign": "paper"}}),  # eq. 6 minimised as printed
}
ALL_METHODS = METHODS + tuple(VARIANTS)
# The controls of CNR's claims, each CNR with one part removed or changed (cnr-fast ls prints these)
CONTROLS = {
    "cnr-real": "CNR's reset fed B real forget images instead of synthetic ones: no detection, no synthesis",
    "cnr-raw": "raw GAN samples, no latent optimisation",
    "cnr-paper": "eq. 6 minimised with the sign as printed",
}
REFERENCE_INIT = ("independent", "shared")

# Metrics that compare unit coordinates (a probe or unit set of the original applied to another
# model). Between independently trained networks units do not correspond, so they are reported only
# for models derived from the original and never used to judge separation.
COORDINATE_BOUND = ("transfer_probe_acc", "selectivity", "selectivity_delta")


def log(msg: str, quiet: bool = False) -> None:
    if not quiet:
        print(msg, file=sys.stderr, flush=True)


def begin_provenance() -> dict:
    """The code version and load when a run starts (provenance.begin); pass it to machine_info at the end."""
    from .provenance import begin

    return begin()


def machine_info(started: dict | None = None) -> dict:
    """Where and from what a result was measured (provenance.provenance: code version at the start,
    versions, threads, CPU model and flags, load before and after)."""
    from .provenance import provenance

    return provenance(started)


def derive_seed(seed: int, tag: str) -> int:
    """A seed for `tag` that is a fixed function of `seed` and independent of it in practice."""
    return int(stable_hash({"seed": int(seed), "tag": tag}), 16) % (2**31 - 1)


def resolve_method(name: str, cfg: RunConfig) -> tuple[str, RunConfig]:
    """(base method, config) for a method or a named CNR control such as "cnr-raw"."""
    if name in VARIANTS:
        base, changes = VARIANTS[name]
        return base, cfg.replace(**changes)
    if name not in METHODS:
        raise UserError(f"unknown method {name!r}; choose one of {', '.join(ALL_METHODS)}")
    return name, cfg


def reference_seeds(kind: str, cfg: RunConfig) -> tuple[int, int]:
    """(init seed, data-order seed) of a reference model or of RFS."""
    mode = cfg.train.reference_init
    if mode not in REFERENCE_INIT:
        raise UserError(f"unknown reference_init {mode!r}; choose one of {', '.join(REFERENCE_INIT)}")
    if kind == "original":
        return cfg.seed, cfg.seed
    if kind == "retrained":
        if mode == "shared":
            return cfg.seed, cfg.seed
        s = derive_seed(cfg.seed, "retrained")
        return s, s
    if kind == "retrained_null":
        s = derive_seed(cfg.seed, "retrained_null")
        return s, s
    if kind == "rfs":
        order = derive_seed(cfg.seed, "rfs")
        return (cfg.seed if mode == "shared" else order), order
    raise ValueError(f"unknown reference kind {kind!r}")


def reference_key(kind: str, cfg: RunConfig, ds) -> str:
    """Cache key of a trained reference model: what it was trained on and how."""
    forget = [] if kind == "original" else list(cfg.data.forget)
    weights = {"weights_sha256": file_sha256(cfg.model.weights)} if cfg.model.weights else {}
    # The thread count is part of the key: on CPU, 1 and 2 threads sum in other orders and train other
    # models from the same seed, so a shared cache must not serve one for the other.
    return stable_hash({"kind": kind, "data": ds.fingerprint(), "arch": cfg.model.arch, "width": cfg.model.width,
                        "train": cfg.to_dict()["train"], "seed": cfg.seed, "seeds": reference_seeds(kind, cfg),
                        "forget": forget, "torch_threads": torch.get_num_threads(), **weights})


def file_sha256(path) -> str:
    """sha256 of a file, read once per (path, size, mtime) in a process: a --weights file is hashed for
    every reference's cache key and meta, and a ViT-B/16 state dict is 344 MB."""
    try:
        st = os.stat(path)
    except OSError as e:
        raise UserError(f"cannot read {str(path)!r} ({e.strerror}); pass a readable file") from None
    return _file_sha256(os.path.abspath(path), st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=16)
def _file_sha256(path: str, size: int, mtime_ns: int) -> str:
    h = hashlib.sha256()
    try:
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    except OSError as e:
        raise UserError(f"cannot read {path!r} ({e.strerror}); pass a readable file") from None
    return h.hexdigest()


def train_reference(kind: str, cfg: RunConfig, ds, device, quiet=False, desc=None):
    """Train a fresh original / retrained / retrained_null / RFS model. Returns (model, meta)."""
    from .models import build_model, model_meta
    from .train import forget_retain_accuracy, train_classifier

    classes = list(range(ds.num_classes))
    if kind != "original":
        classes = [c for c in classes if c not in cfg.data.forget]
    init_seed, order_seed = reference_seeds(kind, cfg)
    torch.manual_seed(init_seed)
    weights = {}
    if cfg.model.weights:
        from .models.pretrained import load_pretrained

        model = build_model(cfg.model.arch, ds.num_classes, ds.in_channels, ds.image_size, cfg.model.width,
                            stem="imagenet")
        info = load_pretrained(model, cfg.model.weights, cfg.model.arch, cfg.model.width)
        weights = {"weights": str(cfg.model.weights), "weights_sha256": file_sha256(cfg.model.weights),
                   "weights_adapted": info["adapted"]}
        log(f"{kind}: {info['loaded']} tensors from --weights {cfg.model.weights} (head new"
            + (f"; adapted {', '.join(info['adapted'])}" if info["adapted"] else "") + ")", quiet)
        model = model.to(device)
    else:
        model = build_model(cfg.model.arch, ds.num_classes, ds.in_channels, ds.image_size, cfg.model.width).to(device)
    desc = desc or kind
    log(f"{desc}: training {cfg.model.arch} (width {cfg.model.width}) on classes {classes} for "
        f"{cfg.train.epochs} epochs ...", quiet)
    t0 = time.perf_counter()
    train_classifier(model, ds.train.of_classes(classes), cfg.train, device=device, amp=cfg.amp, seed=order_seed,
                     compile=cfg.compile, desc=desc, quiet=quiet)
    acc = forget_retain_accuracy(model, ds.test, cfg.data.forget, device=device)
    meta = {**model_meta(cfg.model.arch, cfg.model.width, ds, model), **weights, "kind": kind,
            "trained_classes": classes,
            "forget_classes": [] if kind == "original" else list(cfg.data.forget), "seed": cfg.seed,
            "init_seed": init_seed, "data_order_seed": order_seed, "reference_init": cfg.train.reference_init,
            "train": cfg.to_dict()["train"], "test_accuracy": acc, "train_time_s": time.perf_counter() - t0}
    return model.eval(), meta


def obtain_reference(kind: str, cfg: RunConfig, ds, device, cache: str | None, quiet=False):
    """The original, retrained or retrained_null model, trained once and cached.

    Returns (model, meta, path, cache_hit). An entry is looked up, and built, under an exclusive
    lock (fcntl.flock on `<entry>.lock` beside it): two runs sharing a cache never build the same
    entry at once (the second waits, then finds it) and never read a half-written one (entries are
    written atomically anyway). An entry that cannot be loaded (corrupt, truncated, not fitting)
    is reported on stderr and rebuilt.
    """
    from .runs import cache_dir

    path = cache_dir(cache) / "models" / f"{kind}-{cfg.model.arch}-{ds.name.replace('/', '_').replace(':', '_')}-" \
        f"{reference_key(kind, cfg, ds)}.pt"
    from . import dist

    # under torchrun rank 0 alone holds the lock and decides; the others follow it (a lock on every
    # rank would deadlock: the entry is trained by all ranks together)
    with _entry_lock(path) if dist.is_main() else contextlib.nullcontext():
        return _obtain_locked(kind, cfg, ds, device, path, quiet)


def _obtain_locked(kind, cfg, ds, device, path, quiet):
    from . import dist
    from .models import model_from_checkpoint
    from .runs import save_checkpoint

    found = None
    if dist.is_main() and path.is_file():
        try:
            found = model_from_checkpoint(path, ds)
        except UserError as e:
            print(f"cnr-fast: warning: cached {kind} model {str(path)!r} is unusable ({str(e)[:200]}); rebuilding it",
                  file=sys.stderr, flush=True)
    if dist.agree(found is not None):
        model, meta = found if found is not None else model_from_checkpoint(path, ds)
        log(f"{kind}: cached model {path}", quiet)
        return model.to(device).eval(), meta, path, True
    model, meta = train_reference(kind, cfg, ds, device, quiet)
    if dist.is_main():
        save_checkpoint(path, model, meta)
    dist.barrier()
    acc = meta["test_accuracy"]
    log(f"{kind}: trained in {meta['train_time_s']:.1f}s, forget acc {acc['forget_acc']:.3f}, "
        f"retain acc {acc['retain_acc']:.3f}; cached at {path}", quiet)
    return model, meta, path, False


def _entry_lock(path):
    """Exclusive flock on `<path>.lock` (a no-op where fcntl does not exist)."""
    import contextlib
    import errno as _errno

    from .runs import write_error

    @contextlib.contextmanager
    def held():
        try:
            import fcntl
        except ImportError:  # not POSIX: no lock
            yield
            return
        lock = path.with_name(path.name + ".lock")
        try:
            lock.parent.mkdir(parents=True, exist_ok=True)
            fh = open(lock, "a+b")  # noqa: SIM115  (held across the yield below)
        except OSError as e:
            if e.errno is None:
                raise
            err = write_error(lock, e)
            if e.errno in (_errno.EACCES, _errno.EPERM, _errno.EROFS):
                err = UserError(f"model cache {str(lock.parent)!r} is not writable ({e.strerror}); pass "
                                "--cache-dir DIR with a folder you can write to")
            raise err from None
        with fh:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)

    return held()


def load_original(cfg: RunConfig, ds, device, cache, quiet=False):
    """--checkpoint if given (checked against arch and classes; never modified), else the cached original."""
    from .models import model_from_checkpoint

    if cfg.model.checkpoint:
        model, meta = model_from_checkpoint(cfg.model.checkpoint, ds, cfg.model.arch, cfg.model.width)
        if meta.get("logit_mask"):
            raise UserError(f"checkpoint {cfg.model.checkpoint!r} is a logit-masked model; pass the original model")
        log(f"original: {cfg.model.checkpoint}", quiet)
        return model.to(device), meta, cfg.model.checkpoint, True
    return obtain_reference("original", cfg, ds, device, cache, quiet)


def unlearn_model(method: str, original, ds, cfg: RunConfig, *, device, quiet=False, shared: dict | None = None,
                  state=None):
    """Run one method (or CNR control) on `original`. Returns (model, info, timings, extra run files).

    shared: a dict kept across calls on the same original and seed (compare / ablate) so that CNR
    variants reuse one GAN per forget class; the reused GAN's training time is still charged.
    state: a resume.RunState (`cnr-fast unlearn`): CNR and cnr-real save their stages' units there and a
    rerun continues from them; a baseline is one unit, done again if it did not finish.
    """
    base, cfg = resolve_method(method, cfg)
    forget = list(cfg.data.forget)
    t0 = time.perf_counter()
    files: dict[str, object] = {}
    if base in ("cnr", "cnr-real"):
        from .cnr.pipeline import run_cnr, run_real

        if base == "cnr":
            model, info = run_cnr(original, ds, forget, cfg, device=device, quiet=quiet, gan_cache=shared,
                                  state=state)
        else:
            model, info = run_real(original, ds, forget, cfg, device=device, quiet=quiet, state=state)
        synth = info.pop("synthetic_images")
        buf = io.BytesIO()
        torch.save(synth, buf)
        files["synthetic.pt"] = buf.getvalue()
        png = image_grid_png(synth)
        if png:
            files["synthetic.png"] = png
        timings = dict(info.pop("timings_s"))
    else:
        from .baselines import get as get_baseline

        model, info = get_baseline(base)(original, ds, forget, cfg, device=device, quiet=quiet)
        timings = {"detect": 0.0, "synthesize": 0.0, "reset": 0.0}
    timings["unlearn"] = time.perf_counter() - t0 + timings.pop("charged_reused_s", 0.0)
    return model, info, timings, files


def original_record(model, seed: int) -> dict:
    """Which original a table's rows unlearned: its seed, a digest of its weights (tables with the same
    digest share the original) and the thread count it was made with (part of the cache key)."""
    from .resume import weights_digest

    return {"seed": int(seed), "weights_sha256": weights_digest(model), "torch_threads": torch.get_num_threads()}


def validation_choice(info: dict) -> dict | None:
    """{"chosen": name, "validation": {candidate: scores}} of a method whose setting was chosen on
    validation (at the top of its info, or in its reset's log for CNR and cnr-real); None otherwise."""
    for where in (info, info.get("reset") if isinstance(info.get("reset"), dict) else None):
        if where and "chosen_on_validation" in where:
            return {"chosen": where["chosen_on_validation"], "validation": where["validation"]}
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


# ------------------------------------------------------------------------------------------------
# compare


SEPARATION = 0.10
SEPARATION_ALPHA = 0.05  # on the Holm-adjusted p over the metrics judged in one run
HEADLINE = ("forget_acc", "retain_acc", "val_forget_acc", "val_retain_acc", "probe_acc.L4", "knn_acc.L4",
            "svm_acc.L4", "fewshot_probe_acc.5", "relearn_acc.5", "mia_acc", "nn_purity", "cka_pos.L4",
            "cka_neg.L4", "cka_pos.L2", "cka_neg.L2", "transfer_probe_acc.L4", "selectivity_delta.L4")


def is_coordinate_bound(key: str) -> bool:
    return key.split(".")[0] in COORDINATE_BOUND


def flatten(metrics: dict) -> dict[str, float]:
    out = {}
    for k, v in metrics.items():
        if isinstance(v, dict):
            for kk, vv in v.items():
                if isinstance(vv, (int, float)) and not isinstance(vv, bool):
                    out[f"{k}.{kk}"] = float(vv)
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            out[k] = float(v)
    return out


def t_interval(values) -> tuple[float, float, float]:
    """(mean, low, high) of a Student-t 95% interval; NaN bounds for fewer than 2 finite values."""
    from scipy import stats

    a = np.asarray([v for v in values if math.isfinite(v)], dtype=np.float64)
    if len(a) == 0:
        return float("nan"), float("nan"), float("nan")
    mean = float(a.mean())
    if len(a) < 2:
        return mean, float("nan"), float("nan")
    half = float(stats.t.ppf(0.975, len(a) - 1) * a.std(ddof=1) / math.sqrt(len(a)))
    return mean, mean - half, mean + half


def summarise(values: list[float], cnr_values: list[float] | None) -> dict:
    """Mean, 95% t-interval over seeds and the paired t-test p-value against CNR (pairs = seeds)."""
    from scipy import stats

    a = np.asarray(values, dtype=np.float64)
    mean, lo, hi = t_interval(values)
    if len(a) >= 2 and not np.isfinite(a).all():
        lo = hi = float("nan")
    p = None
    if cnr_values is not None and len(a) >= 2:
        b = np.asarray(cnr_values, dtype=np.float64)
        d = a - b
        if not np.isfinite(d).all():
            p = None
        elif np.allclose(d, d[0]):
            # constant paired differences: the t statistic is undefined, so there is no p (never 0);
            # identical values are no evidence of a difference (p 1)
            p = 1.0 if np.allclose(d, 0) else None
        else:
            p = float(stats.ttest_rel(b, a).pvalue)
    return {"mean": mean, "ci_low": lo, "ci_high": hi, "p_vs_cnr": p, "values": a.tolist()}


def holm(pvalues: dict) -> dict:
    """Holm-Bonferroni adjusted p-values of a family {name: p or None}; None stays None."""
    items = sorted(((p, k) for k, p in pvalues.items() if p is not None), key=lambda t: t[0])
    m, out, running = len(items), {k: None for k in pvalues}, 0.0
    for i, (p, k) in enumerate(items):
        running = max(running, min(1.0, (m - i) * p))
        out[k] = running
    return out


def format_p(p: float | None) -> str:
    """A p-value for a table: never printed as 0."""
    if p is None or not math.isfinite(p):
        return "n/a"
    if p < 1e-4:
        return "<1e-4"
    return f"{p:.2g}"


def separation(per_seed: list[dict], key: str) -> dict | None:
    """How `key` differs between the original and the retrained model, paired over seeds
    (original - retrained): mean, 95% interval and the paired t-test p (None with one seed or constant
    differences, where t is undefined). `judge` decides `separates` over the whole family."""
    from scipy import stats

    d = [ps["original"].get(key, float("nan")) - ps["retrained"].get(key, float("nan")) for ps in per_seed]
    if not all(math.isfinite(v) for v in d):
        return None
    mean, lo, hi = t_interval(d)
    a = np.asarray(d, dtype=np.float64)
    p = float(stats.ttest_1samp(a, 0.0).pvalue) if len(a) >= 2 and not np.allclose(a, a[0]) else None
    excludes_zero = (lo > 0 or hi < 0) if math.isfinite(lo) else abs(mean) > 0
    return {"difference": mean, "ci_low": lo, "ci_high": hi, "p": p, "excludes_zero": bool(excludes_zero)}


def judge(per_seed: list[dict], table: dict, methods: list[str], keys: list[str]) -> dict:
    """Per coordinate-free metric: does it separate retrained from original, and each method's distance
    to retrained (mean over seeds of |method - retrained|; computed for every metric, meaningful only
    where it separates).

    Separates = |difference| >= SEPARATION and the Holm-adjusted p (over every metric judged here, the
    family) below SEPARATION_ALPHA. Where t is undefined (one seed; the same difference on every seed)
    there is no p and the interval decides (it excludes 0 when the constant difference is not 0)."""
    seps = {}
    for k in keys:
        if is_coordinate_bound(k) or k.startswith("val_"):
            continue
        sep = separation(per_seed, k)
        if sep is not None:
            seps[k] = sep
    adjusted = holm({k: v["p"] for k, v in seps.items()})
    out = {}
    for k, sep in seps.items():
        ph = adjusted[k]
        evidence = ph < SEPARATION_ALPHA if ph is not None else sep["excludes_zero"]
        entry = {"original": table["original"][k]["mean"], "retrained": table["retrained"][k]["mean"], **sep,
                 "p_holm": ph, "separates": bool(abs(sep["difference"]) >= SEPARATION and evidence)}
        dist = {}
        for m in methods:
            vals = [abs(ps[m].get(k, float("nan")) - ps["retrained"][k]) for ps in per_seed]
            dist[m] = t_interval(vals)[0]
        entry["distance_to_retrained"] = dist
        finite = {m: v for m, v in dist.items() if math.isfinite(v)}
        entry["closest"] = min(finite, key=finite.get) if finite else None
        out[k] = entry
    return out


def val_accuracy(model, ds, forget, device, amp: bool = False) -> dict:
    """{"val_forget_acc", "val_retain_acc"} on the validation split; {} when there is none."""
    from .train import forget_retain_accuracy

    if ds.val is None or len(ds.val) == 0:
        return {}
    acc = forget_retain_accuracy(model, ds.val, forget, device=device, amp=amp)
    return {"val_forget_acc": acc["forget_acc"], "val_retain_acc": acc["retain_acc"]}


def _unit(state, name: str, start, make):
    """One resumable unit of a driver (compare, multiclass, continual, ablate).

    make() -> (model, info) with `info` plain values. With a resume.RunState, a unit that an earlier
    invocation completed is loaded instead: its weights into a copy of `start` (the model the method
    started from), its info, and the torch RNG state it left, so the rest of the run draws what an
    uninterrupted run draws. A model of another class than `start` (LM's logit mask: no training,
    cheap) is not kept and is made again.
    """
    from .resume import kill_point, rng_state, set_rng_state

    saved = state.load(name) if state is not None else None
    if saved is not None:
        model = copy.deepcopy(start)
        model.load_state_dict(saved["model"])
        set_rng_state(saved["rng"])
        return model.eval(), saved["info"]
    model, info = make()
    if state is not None and type(model) is type(start):
        state.save(name, {"model": model.state_dict(), "info": info, "rng": rng_state()})
        kill_point(f"unit:{name}")
    return model, info


def _audit_unit(state, name: str, make) -> dict:
    """make() -> a JSON-able audit summary; kept in `state` like `_unit` (with the RNG state)."""
    from .resume import kill_point, rng_state, set_rng_state

    saved = state.load(name) if state is not None else None
    if saved is not None:
        set_rng_state(saved["rng"])
        return saved["result"]
    result = make()
    if state is not None:
        state.save(name, {"result": result, "rng": rng_state()})
        kill_point(f"unit:{name}")
    return result


def _null_table(cka_null: list[dict]) -> dict:
    """Per part (pos / neg) and tap: the summary over seeds of CKA(retrained, null)."""
    return {part: {t: summarise([c.get(part, {}).get(t, float("nan")) for c in cka_null], None)
                   for t in sorted(set().union(*[set(c.get(part, {})) for c in cka_null]))}
            for part in ("pos", "neg")}


def compare(cfg: RunConfig, methods: list[str], seeds: int = 3, *, device="cpu", cache: str | None = None,
            fixed_original: bool = False, figures: bool = False, quiet: bool = False, ds=None, state=None,
            unit_prefix: str = "") -> dict:
    """Every method on the same original per seed, one audit per seed; returns the compare.json dict.

    state: a resume.RunState (the CLI's `OUT.state/`): each (seed, method) and each seed's audit is
    kept there as it completes, and a rerun continues after the last one (see `_unit`).

    By default each seed trains (or takes from the cache) its own original, retrained reference and
    null model, so the intervals cover the randomness of training as well as of unlearning.
    fixed_original=True keeps one original / reference / null (seed cfg.seed) for every seed.
    """
    from .audit import audit_models, json_view
    from .data import load_dataset
    from .train import resolve_device

    bad = [m for m in methods if m not in ALL_METHODS]
    if bad or not methods:
        raise UserError(f"unknown method(s) {bad}; choose from {', '.join(ALL_METHODS)}")
    if len(set(methods)) != len(methods):
        raise UserError(f"--methods lists a method twice: {methods}")
    if seeds < 1:
        raise UserError("--seeds must be at least 1")
    if cfg.model.checkpoint and not fixed_original:
        raise UserError("compare with --checkpoint keeps that one original for every seed; add --fixed-original")
    device = resolve_device(device) if isinstance(device, str) else device
    ds = ds if ds is not None else load_dataset(cfg.data)
    forget = list(cfg.data.forget)
    t_start = time.perf_counter()
    per_seed: list[dict] = []
    timings: dict[str, list[float]] = {m: [] for m in methods}
    choices: dict[str, list] = {m: [] for m in methods}  # per seed: the validation choice, or None
    originals: list[dict] = []
    started = begin_provenance()
    ref_times: dict[str, list[float]] = {"original": [], "retrained": []}
    cka_null: list[dict] = []
    audit_settings = None
    for s in range(seeds):
        seed = cfg.seed + s
        ref_cfg = cfg.replace(seed=cfg.seed if fixed_original else seed)
        original, ometa, _, _ = load_original(ref_cfg, ds, device, cache, quiet)
        originals.append(original_record(original, ref_cfg.seed))
        retrained, rmeta, _, _ = obtain_reference("retrained", ref_cfg, ds, device, cache, quiet)
        null, _, _, _ = obtain_reference("retrained_null", ref_cfg, ds, device, cache, quiet)
        for name, meta in (("original", ometa), ("retrained", rmeta)):
            if meta.get("train_time_s") is not None:
                ref_times[name].append(float(meta["train_time_s"]))
        models = {"original": original, "retrained": retrained}
        independent = ["retrained"]
        shared: dict = {}
        val = {"original": val_accuracy(original, ds, forget, device),
               "retrained": val_accuracy(retrained, ds, forget, device)}
        for m in methods:
            log(f"compare: seed {seed}, method {m}", quiet)
            base = resolve_method(m, cfg)[0]

            def make(m=m, base=base):
                model, minfo, t, _ = unlearn_model(m, original, ds, ref_cfg.replace(seed=seed, method=base),
                                                   device=device, quiet=quiet, shared=shared)
                return model, {"time": t["unlearn"], "val": val_accuracy(model, ds, forget, device),
                               "choice": validation_choice(minfo)}

            model, info = _unit(state, f"{unit_prefix}s{seed}-{m}", original, make)
            models[m] = model
            timings[m].append(info["time"])
            choices[m].append(info.get("choice"))
            val[m] = info["val"]
            if base == "rfs":
                independent.append(m)

        def audit_seed():
            view = json_view(audit_models(models, ds, forget, device=device, original="original",
                                          retrained="retrained", seed=seed, figures=figures, quiet=quiet,
                                          independent=independent, null_model=null))
            return {"settings": view["settings"], "cka_null": view["references"].get("cka_null", {}),
                    "metrics": view["metrics"]}

        view = _audit_unit(state, f"{unit_prefix}s{seed}-audit", audit_seed)
        audit_settings = view["settings"]
        cka_null.append(view["cka_null"])
        per_seed.append({name: {**flatten(v), **val.get(name, {})} for name, v in view["metrics"].items()})
    result = {
        "dataset": ds.name, "arch": cfg.model.arch, "width": cfg.model.width, "forget_classes": forget,
        "seeds": [cfg.seed + s for s in range(seeds)], "fixed_original": bool(fixed_original),
        "reference_init": cfg.train.reference_init,
        "splits": {"train": len(ds.train), "val": len(ds.val) if ds.val is not None else 0, "test": len(ds.test)},
        "coordinate_bound_metrics": list(COORDINATE_BOUND), "separation_threshold": SEPARATION,
        "chance_acc": 1.0 / ds.num_classes,
        "audit_settings": audit_settings, "config": cfg.to_dict(), "total_time_s": time.perf_counter() - t_start,
        "machine": machine_info(started),
        "per_seed": per_seed, "per_seed_cka_null": cka_null, "per_seed_times": timings,
        "per_seed_reference_times": ref_times, "per_seed_choices": choices, "per_seed_originals": originals,
    }
    return _compare_tables(result)


def _compare_tables(result: dict) -> dict:
    """(Re)compute a compare result's tables and verdicts from its per-seed values."""
    per_seed, methods = result["per_seed"], list(result["per_seed_times"])
    names = ["original", "retrained", *methods]
    keys = sorted(set().union(*[set(ps[n]) for ps in per_seed for n in names]))
    table = _summarise_runs(per_seed, names, "cnr" if "cnr" in methods else None, paired=methods, p_key="p_vs_cnr")
    result.update({
        "methods": {m: table[m] for m in methods},
        "references": {"original": table["original"], "retrained": table["retrained"],
                       "chance_acc": result["chance_acc"], "cka_null": _null_table(result["per_seed_cka_null"])},
        "verdicts": judge(per_seed, table, methods, keys),
        "unlearn_time_s": {m: summarise(v, None) for m, v in result["per_seed_times"].items()},
        "reference_train_time_s": {k: summarise(v, None) for k, v in result["per_seed_reference_times"].items()
                                   if v},
    })
    return result


def _cell(s: dict | None) -> str:
    if s is None or not math.isfinite(s.get("mean", float("nan"))):
        return "-"
    if not math.isfinite(s["ci_high"]):
        return f"{s['mean']:.3f}"
    return f"{s['mean']:.3f} [{s['ci_low']:.3f}, {s['ci_high']:.3f}]"


def originals_md(result: dict) -> list[str]:
    """One line naming each seed's original by a digest of its weights: tables (and files) whose digests
    agree unlearned the same models."""
    recs = result.get("per_seed_originals")
    if not recs:
        return ["Originals: not recorded in this file (it predates per-seed original digests).", ""]
    return ["Originals (sha256 of the weights, first 12 hex digits; the same digest in another table means the "
            "same model): " + ", ".join(f"seed {r['seed']} {r['weights_sha256'][:12]} ({r['torch_threads']} thread"
                                         f"{'s' if r['torch_threads'] != 1 else ''})" for r in recs) + ".", ""]


def choices_md(choices: dict, seeds: list) -> list[str]:
    """Markdown lines: each method's validation choice per seed, with every candidate's scores."""
    rows = [(m, seed, c) for m, per in choices.items() for seed, c in zip(seeds, per) if c]
    if not rows:
        return []
    out = ["", "## Settings chosen on validation", "",
           "Each candidate: validation forget / retain accuracy (score = retain - forget); the chosen one in bold. "
           "Chosen per seed on that seed's original (`tuning.py`).", "",
           "| method | seed | candidates |", "|---|---|---|"]
    for m, seed, c in rows:
        cells = []
        for name, v in c["validation"].items():
            txt = f"{name}: {v['val_forget_acc']:.2f} / {v['val_retain_acc']:.2f}"
            if "dampened_params" in v:
                txt += f" ({v['dampened_params']} dampened)"
            cells.append(f"**{txt}**" if name == c["chosen"] else txt)
        out.append(f"| {m} | {seed} | " + "; ".join(cells) + " |")
    return out


def compare_report_md(result: dict, short: bool = False) -> str:
    methods = list(result["methods"])
    refs = result["references"]
    keys = [k for k in HEADLINE if k in refs["original"]]
    if not short:
        keys += sorted(k for k in refs["original"] if k not in keys)
    seeds_note = ("one original, retrained and null model (seed %d) for every seed" % result["seeds"][0]
                  if result.get("fixed_original") else "a fresh original, retrained and null model per seed")
    lines = [f"# compare: {result['dataset']} / {result['arch']} (width {result['width']}), forget "
             f"{result['forget_classes']}, seeds {result['seeds']}", "",
             f"Splits: {result['splits']['train']} train / {result['splits']['val']} validation / "
             f"{result['splits']['test']} test; every cell is on test except `val_*`. References: {seeds_note}; "
             f"reference initialisation: {result['reference_init']}.", ""]
    lines += originals_md(result)
    head = ["metric", "original", "retrained", "null", *methods]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    null = refs.get("cka_null", {})
    for k in keys:
        nul = "-"
        if k.startswith("cka_pos.") or k.startswith("cka_neg."):
            part, tap = k[4:7], k.split(".")[1]
            nul = _cell(null.get(part, {}).get(tap))
        row = [k + (" (coord.)" if is_coordinate_bound(k) else ""), _cell(refs["original"].get(k)),
               _cell(refs["retrained"].get(k)), nul]
        for m in methods:
            s = result["methods"][m].get(k)
            cell = _cell(s)
            if s is not None and s.get("p_vs_cnr") is not None:
                cell += f" (p={format_p(s['p_vs_cnr'])}, Holm {format_p(s.get('p_vs_cnr_holm'))})"
            row.append(cell)
        lines.append("| " + " | ".join(row) + " |")
    lines += ["", f"Cells: mean [95% t-interval over seeds] (paired t-test p against CNR, raw and Holm-adjusted over "
              f"the methods on that metric; n/a where the paired differences are constant). Chance accuracy "
              f"{refs['chance_acc']:.3f}; MIA chance 0.5. `null` = unbiased CKA between the retrained model and a "
              "second, independently trained one: what an unrelated model scores at that tap. (coord.) = compares "
              "unit coordinates with the original's, reported only for models derived from the original.", ""]
    t = result["unlearn_time_s"]
    rt = result.get("reference_train_time_s", {}).get("retrained")
    lines.append("Wall time per method (s, mean over seeds): " + ", ".join(
        f"{m} {t[m]['mean']:.1f}" for m in methods) + (f"; retraining from scratch (reference) {rt['mean']:.1f}"
                                                       if rt else "") + ".")
    lines += choices_md(result.get("per_seed_choices", {}), result["seeds"])
    lines += ["", "## Which metrics tell the retrained model from the original",
              "", f"Separates = |original - retrained| >= {result['separation_threshold']} and the paired t-test "
              f"p, Holm-adjusted over the {len(result['verdicts'])} metrics judged, below {SEPARATION_ALPHA} "
              "(with one seed, or the same difference on every seed, there is no p and the 95% interval must "
              "exclude 0). Coordinate-bound metrics are not judged.", ""]
    for k in keys:
        v = result["verdicts"].get(k)
        if v is None:
            continue
        diff = f"difference {v['difference']:+.3f} [{v['ci_low']:+.3f}, {v['ci_high']:+.3f}]"
        if "p_holm" in v:  # files written before the Holm verdict have no p
            diff += f", p={format_p(v['p'])}, Holm {format_p(v['p_holm'])}"
        if not v["separates"]:
            lines.append(f"- {k}: does NOT separate them ({diff}); closeness to retrained on it says nothing.")
            continue
        dist = v["distance_to_retrained"]
        order = sorted(dist, key=lambda m: dist[m] if math.isfinite(dist[m]) else 9e9)
        lines.append(f"- {k}: separates them ({diff}). Distance to retrained, closest first: "
                     + ", ".join(f"{m} {dist[m]:.3f}" for m in order) + ".")
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------------
# ablate: what each part of CNR buys (paper Table 3 and its robustness sweeps)

ABLATIONS = {
    "full": {},
    "no-synthesis": {"synth": {"latent_opt": False}},  # raw GAN samples (Table 3 "w/o synthesis")
    "no-realism": {"synth": {"lambda_real": 0.0}},
    "no-tv": {"synth": {"lambda_smooth": 0.0}},
    "random-units": {"detect": {"selection": "random"}},
    "gradient-units": {"detect": {"selection": "gradient"}},
    "k3": {"detect": {"k": 3}},
    "k48": {"detect": {"k": 48}},
    "sign-paper": {"synth": {"sign": "paper"}},
    "relabel-step": {"reset": {"relabel": "step"}},
    "b32": {"synth": {"batch": 32}},
    "b256": {"synth": {"batch": 256}},
    "b1024": {"synth": {"batch": 1024}},
}
# sweeps plotted against their knob; "full" is the default point of each
SWEEPS = {"k": {"k3": 3, "full": 12, "k48": 48}, "B": {"b32": 32, "full": 64, "b256": 256, "b1024": 1024}}
ABLATE_METRICS = ("forget_acc", "retain_acc", "val_forget_acc", "val_retain_acc", "probe_acc.L4", "knn_acc.L4",
                  "fewshot_probe_acc.5", "mia_acc", "nn_purity", "cka_neg.L4", "cka_neg.L2", "cka_pos.L4",
                  "selectivity_delta.L4")


def _summarise_runs(per_seed: list[dict], names: list[str], baseline: str | None, paired=None,
                    p_key: str = "p_vs_full") -> dict:
    """Per name and metric: mean, 95% interval over seeds and, for names in `paired` (default: all but
    the baseline), the paired test against `baseline`. Metrics with no finite value are left out."""
    keys = sorted(set().union(*[set(ps[n]) for ps in per_seed for n in names if n in ps]))
    paired = set(names if paired is None else paired) - {baseline}
    table: dict[str, dict] = {}
    for n in names:
        table[n] = {}
        for k in keys:
            vals = [ps.get(n, {}).get(k, float("nan")) for ps in per_seed]
            if not any(math.isfinite(v) for v in vals):
                continue  # e.g. a coordinate-bound metric of an independently trained model
            base = [ps.get(baseline, {}).get(k, float("nan")) for ps in per_seed] \
                if baseline is not None and n in paired else None
            s = summarise(vals, base)
            s[p_key] = s.pop("p_vs_cnr")
            table[n][k] = s
    # Holm over each metric's family: every name tested against the baseline on that metric
    for k in keys:
        fam = {n: table[n][k][p_key] for n in names if k in table[n] and p_key in table[n][k] and n in paired}
        for n, adj in holm(fam).items():
            table[n][k][p_key + "_holm"] = adj
        for n in names:  # the baseline (and untested names) carry the key too, as null, like p_key
            if k in table[n]:
                table[n][k].setdefault(p_key + "_holm", None)
    return table


def ablate(cfg: RunConfig, variants: list[str] | None = None, seeds: int = 3, *, device="cpu",
           cache: str | None = None, relearn: bool = False, quiet: bool = False, ds=None, state=None) -> dict:
    """Every CNR variant on one original per seed; returns the ablate.json dict (state: as `compare`'s).

    Per seed: one original, retrained reference and null model, shared by every variant; a GAN, and the
    synthetic images of variants that do not change detection or synthesis, are made once and reused
    (their time charged to each run that uses them). One audit per seed measures every variant
    (relearn attack off by default: it is the slowest metric and not part of Table 3).
    """
    from .audit import audit_models, json_view
    from .data import load_dataset
    from .train import resolve_device

    variants = list(variants or ABLATIONS)
    bad = [v for v in variants if v not in ABLATIONS]
    if bad:
        raise UserError(f"unknown ablation(s) {bad}; choose from {', '.join(ABLATIONS)}")
    if "full" not in variants:
        variants = ["full", *variants]
    if seeds < 1:
        raise UserError("--seeds must be at least 1")
    device = resolve_device(device) if isinstance(device, str) else device
    ds = ds if ds is not None else load_dataset(cfg.data)
    forget = list(cfg.data.forget)
    t_start = time.perf_counter()
    started = begin_provenance()
    per_seed, timings, cka_null, originals = [], {v: [] for v in variants}, [], []
    for s in range(seeds):
        scfg = cfg.replace(seed=cfg.seed + s, method="cnr")
        original = load_original(scfg, ds, device, cache, quiet)[0]
        originals.append(original_record(original, scfg.seed))
        retrained = obtain_reference("retrained", scfg, ds, device, cache, quiet)[0]
        null = obtain_reference("retrained_null", scfg, ds, device, cache, quiet)[0]
        models = {"original": original, "retrained": retrained}
        val = {"original": val_accuracy(original, ds, forget, device),
               "retrained": val_accuracy(retrained, ds, forget, device)}
        shared: dict = {}
        for v in variants:
            log(f"ablate: seed {scfg.seed}, variant {v}", quiet)

            def make(v=v):
                model, _, t, _ = unlearn_model("cnr", original, ds, scfg.replace(**ABLATIONS[v]), device=device,
                                               quiet=quiet, shared=shared)
                return model, {"time": t["unlearn"], "val": val_accuracy(model, ds, forget, device)}

            model, info = _unit(state, f"s{scfg.seed}-{v}", original, make)
            models[v] = model
            timings[v].append(info["time"])
            val[v] = info["val"]

        def audit_seed():
            view = json_view(audit_models(models, ds, forget, device=device, retrained="retrained", seed=scfg.seed,
                                          figures=False, quiet=quiet, null_model=null, relearn=relearn))
            return {"references": view["references"], "metrics": view["metrics"]}

        audit = _audit_unit(state, f"s{scfg.seed}-audit", audit_seed)
        cka_null.append(audit["references"].get("cka_null", {}))
        per_seed.append({n: {**flatten(m), **val.get(n, {})} for n, m in audit["metrics"].items()})
    result = {"dataset": ds.name, "arch": cfg.model.arch, "width": cfg.model.width, "forget_classes": forget,
              "seeds": [cfg.seed + s for s in range(seeds)], "variants": {v: ABLATIONS[v] for v in variants},
              "sweeps": {k: {v: x for v, x in sw.items() if v in variants} for k, sw in SWEEPS.items()},
              "chance_acc": 1.0 / ds.num_classes,
              "splits": {"train": len(ds.train), "val": len(ds.val) if ds.val is not None else 0,
                         "test": len(ds.test)},
              "config": cfg.to_dict(), "total_time_s": time.perf_counter() - t_start, "machine": machine_info(started),
              "per_seed": per_seed, "per_seed_cka_null": cka_null, "per_seed_times": timings,
              "per_seed_originals": originals}
    return _ablate_tables(result)


def _ablate_tables(result: dict) -> dict:
    """(Re)compute the summary tables of an ablate result from its per-seed values."""
    per_seed, cka_null = result["per_seed"], result["per_seed_cka_null"]
    names = ["original", "retrained", *result["variants"]]
    result["table"] = _summarise_runs(per_seed, names, "full", paired=list(result["variants"]))
    result["cka_null"] = _null_table(cka_null)
    result["unlearn_time_s"] = {v: summarise(t, None) for v, t in result["per_seed_times"].items()}
    return result


def _check_mergeable(results: list[dict], what: str, same: str, key=None) -> None:
    """Same `same` (read by `key`, default r[same]) and the same config up to the seed; disjoint seeds."""
    if not results:
        raise UserError("--merge: no result files given")
    key = key or (lambda r: r.get(same))
    first = results[0]
    for r in results[1:]:
        if key(r) != key(first) or {**r["config"], "seed": 0} != {**first["config"], "seed": 0}:
            raise UserError(f"{what} results to merge must have the same {same} and configuration")
    seeds = [s for r in results for s in r["seeds"]]
    if len(set(seeds)) != len(seeds):
        raise UserError(f"{what} results to merge must cover disjoint seeds; got seeds {seeds}")


def _concat_seeds(results: list[dict], lists: tuple[str, ...], dicts: tuple[str, ...]) -> dict:
    """The first result with its per-seed lists (and dicts of lists) extended by the others'."""
    first = results[0]
    merged = {**first, "seeds": [s for r in results for s in r["seeds"]],
              "total_time_s": sum(r["total_time_s"] for r in results),
              "merged_from": [{"seeds": r["seeds"], "total_time_s": r["total_time_s"], "machine": r.get("machine")}
                              for r in results]}
    if all("per_seed_originals" in r for r in results):
        lists = (*lists, "per_seed_originals")
    for key in lists:
        merged[key] = [x for r in results for x in r[key]]
    for key in dicts:
        merged[key] = {k: [x for r in results for x in r[key][k]] for k in first[key]}
    return merged


def merge_ablate(results: list[dict]) -> dict:
    """One ablate result from several runs over disjoint seeds with the same variants and config."""
    _check_mergeable(results, "ablate", "variants")
    return _ablate_tables(_concat_seeds(results, ("per_seed", "per_seed_cka_null"), ("per_seed_times",)))


def merge_compare(results: list[dict]) -> dict:
    """One compare / multiclass / continual result from runs over disjoint seeds with the same methods,
    scenario and config (run them with --seed s --seeds 1, then `cnr-fast compare --merge`)."""
    scenario = results[0].get("scenario") if results else None
    if any(r.get("scenario") != scenario for r in results):
        raise UserError("--merge: the results come from different scenarios; merge one scenario at a time")
    if scenario == "multiclass":
        keys = list(results[0]["runs"])
        if any(list(r["runs"]) != keys for r in results):
            raise UserError("multiclass results to merge must have the same class sets")
        merged = {**results[0], "runs": {k: merge_compare([r["runs"][k] for r in results]) for k in keys},
                  "seeds": [s for r in results for s in r["runs"][keys[0]]["seeds"]],
                  "total_time_s": sum(r["total_time_s"] for r in results)}
        return merged
    if scenario == "continual":
        _check_mergeable(results, "continual", "methods")
        merged = _concat_seeds(results, (), ())
        merged["rounds"] = [{"forget": rd["forget"],
                             "per_seed": [x for r in results for x in r["rounds"][i]["per_seed"]],
                             "per_seed_times": {m: [x for r in results for x in r["rounds"][i]["per_seed_times"][m]]
                                                for m in rd["per_seed_times"]}}
                            for i, rd in enumerate(results[0]["rounds"])]
        return _continual_tables(merged)
    _check_mergeable(results, "compare", "methods", key=lambda r: list(r["per_seed_times"]))
    merged = _concat_seeds(results, ("per_seed", "per_seed_cka_null"),
                           ("per_seed_times", "per_seed_reference_times")
                           + (("per_seed_choices",) if all("per_seed_choices" in r for r in results) else ()))
    return _compare_tables(merged)


def ablate_report_md(result: dict, figures: dict | None = None) -> str:
    t = result["table"]
    variants = list(result["variants"])
    keys = [k for k in ABLATE_METRICS if k in t["full"]]
    lines = [f"# ablate: {result['dataset']} / {result['arch']} (width {result['width']}), forget "
             f"{result['forget_classes']}, seeds {result['seeds']}", "",
             "Every variant is CNR with one change (`variants` in ablate.json), on the same original per seed. "
             "Cells: mean [95% t-interval over seeds] (paired t-test p against full CNR, raw and Holm-adjusted over "
             "the variants on that metric); test split except `val_*`.", ""]
    lines += originals_md(result)
    head = ["variant", *keys, "time (s)"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for n in ["original", "retrained", *variants]:
        row = [n]
        for k in keys:
            s = t[n].get(k)
            cell = _cell(s)
            if s is not None and s.get("p_vs_full") is not None:
                cell += f" (p={format_p(s['p_vs_full'])}, Holm {format_p(s.get('p_vs_full_holm'))})"
            row.append(cell)
        tm = result["unlearn_time_s"].get(n)
        row.append(f"{tm['mean']:.0f}" if tm else "-")
        lines.append("| " + " | ".join(row) + " |")
    null = result.get("cka_null", {}).get("neg", {})
    if null:
        lines += ["", "CKA null (retrained vs an independently trained second retrained model), forget examples: "
                  + ", ".join(f"{tap} {_cell(s)}" for tap, s in null.items()) + "."]
    for name in (figures or {}):
        lines += ["", f"![{name}]({name})"]
    return "\n".join(lines) + "\n"


def ablate_figures(result: dict) -> dict[str, bytes]:
    """One PNG per sweep: forget accuracy, retain accuracy and CKA_neg (L4) against the knob."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    out = {}
    t = result["table"]
    for knob, points in result["sweeps"].items():
        pts = sorted((x, v) for v, x in points.items() if v in t)
        if len(pts) < 2:
            continue
        fig, axes = plt.subplots(1, 3, figsize=(10, 2.8))
        for ax, key in zip(axes, ("forget_acc", "retain_acc", "cka_neg.L4")):
            xs = [x for x, _ in pts]
            ys = [t[v].get(key, {}).get("mean", float("nan")) for _, v in pts]
            lo = [t[v].get(key, {}).get("ci_low", float("nan")) for _, v in pts]
            hi = [t[v].get(key, {}).get("ci_high", float("nan")) for _, v in pts]
            ax.plot(xs, ys, marker="o", label="CNR")
            if all(math.isfinite(v) for v in lo + hi):
                ax.fill_between(xs, lo, hi, alpha=0.2)
            ref = t["retrained"].get(key, {}).get("mean")
            if ref is not None:
                ax.axhline(ref, color="k", ls="--", lw=1, label="retrained")
            ax.set_xscale("log", base=2)
            ax.set_xlabel(knob)
            ax.set_title(key)
        out[f"ablate_{knob}.png"] = _png(fig, axes)
    return out


def _png(fig, axes) -> bytes:
    """The figure as PNG bytes (legend on the first panel), closed after."""
    import io as _io

    import matplotlib.pyplot as plt

    axes[0].legend(fontsize=7)
    fig.tight_layout()
    buf = _io.BytesIO()
    fig.savefig(buf, format="png", dpi=80)
    plt.close(fig)
    return buf.getvalue()


# ------------------------------------------------------------------------------------------------
# scenarios (paper Tables 7 and 12): several classes at once, and continual forgetting

MULTICLASS_SETS = ((2, 5), (2, 5, 7, 1, 9))  # 2 and 5 classes; the first is the paper's digit 2
CONTINUAL_ORDER = (2, 5, 7, 1, 9)  # one more class each round


def multiclass(cfg: RunConfig, methods: list[str], seeds: int = 3, *, class_sets=MULTICLASS_SETS, device="cpu",
               cache: str | None = None, quiet: bool = False, ds=None, state=None) -> dict:
    """`compare` once per forget set (all its classes forgotten at once), same budget per method."""
    from .data import check_forget, load_dataset

    ds = ds if ds is not None else load_dataset(cfg.data)
    out = {"scenario": "multiclass", "dataset": ds.name, "class_sets": [list(c) for c in class_sets], "runs": {}}
    t0 = time.perf_counter()
    started = begin_provenance()
    for classes in class_sets:
        check_forget(classes, ds)
        key = ",".join(str(c) for c in classes)
        log(f"multiclass: forget {key}", quiet)
        out["runs"][key] = compare(cfg.replace(data={"forget": tuple(classes)}), methods, seeds, device=device,
                                   cache=cache, quiet=quiet, ds=ds, state=state, unit_prefix=f"f{key}-")
    out["total_time_s"] = time.perf_counter() - t0
    out["machine"] = machine_info(started)
    return out


def continual(cfg: RunConfig, methods: list[str], seeds: int = 3, *, order=CONTINUAL_ORDER, device="cpu",
              cache: str | None = None, quiet: bool = False, ds=None, state=None) -> dict:
    """Round r forgets the first r classes of `order`, each method starting from ITS model of round r-1
    (round 1 from the original), with the same per-round budget. Each round is audited against a model
    retrained without those r classes (and its null). Returns per round and method mean / CI over seeds."""
    from .audit import audit_models, json_view
    from .data import check_forget, load_dataset
    from .train import resolve_device

    bad = [m for m in methods if m not in ALL_METHODS]
    if bad or not methods:
        raise UserError(f"unknown method(s) {bad}; choose from {', '.join(ALL_METHODS)}")
    device = resolve_device(device) if isinstance(device, str) else device
    ds = ds if ds is not None else load_dataset(cfg.data)
    check_forget(list(order), ds)
    t0 = time.perf_counter()
    started = begin_provenance()
    rounds: list[list[dict]] = [[] for _ in order]
    times: list[dict[str, list[float]]] = [{m: [] for m in methods} for _ in order]
    originals: list[dict] = []
    for s in range(seeds):
        scfg = cfg.replace(seed=cfg.seed + s)
        original = load_original(scfg, ds, device, cache, quiet)[0]
        originals.append(original_record(original, scfg.seed))
        current = {m: original for m in methods}
        shared = {m: {} for m in methods}
        for r in range(len(order)):
            forget = tuple(order[: r + 1])
            rcfg = scfg.replace(data={"forget": forget})
            retrained = obtain_reference("retrained", rcfg, ds, device, cache, quiet)[0]
            null = obtain_reference("retrained_null", rcfg, ds, device, cache, quiet)[0]
            models = {"original": original, "retrained": retrained}
            independent = ["retrained"]
            for m in methods:
                log(f"continual: seed {scfg.seed}, round {r + 1} (forget {list(forget)}), method {m}", quiet)
                base = resolve_method(m, cfg)[0]

                def make(m=m, base=base, rcfg=rcfg):
                    model, _, t, _ = unlearn_model(m, current[m], ds, rcfg.replace(method=base), device=device,
                                                   quiet=quiet, shared=shared[m])
                    return model, {"time": t["unlearn"]}

                model, info = _unit(state, f"s{scfg.seed}-r{r + 1}-{m}", current[m], make)
                current[m] = model
                models[m] = model
                times[r][m].append(info["time"])
                if base == "rfs":
                    independent.append(m)

            def audit_round(models=models, forget=forget, independent=independent, null=null):
                view = json_view(audit_models(models, ds, list(forget), device=device, retrained="retrained",
                                              seed=scfg.seed, figures=False, quiet=quiet, relearn=False,
                                              independent=independent, null_model=null))
                return {"metrics": view["metrics"]}

            audit = _audit_unit(state, f"s{scfg.seed}-r{r + 1}-audit", audit_round)
            rounds[r].append({n: flatten(v) for n, v in audit["metrics"].items()})
    result = {"scenario": "continual", "dataset": ds.name, "order": list(order), "methods": list(methods),
              "seeds": [cfg.seed + s for s in range(seeds)], "config": cfg.to_dict(),
              "rounds": [{"forget": list(order[: r + 1]), "per_seed": per_seed, "per_seed_times": times[r]}
                         for r, per_seed in enumerate(rounds)],
              "total_time_s": time.perf_counter() - t0, "machine": machine_info(started),
              "per_seed_originals": originals}
    return _continual_tables(result)


def _continual_tables(result: dict) -> dict:
    """(Re)compute each round's table and times from its per-seed values."""
    methods = result["methods"]
    names = ["original", "retrained", *methods]
    for rd in result["rounds"]:
        base = "cnr" if "cnr" in methods else names[2]
        rd["table"] = _summarise_runs(rd["per_seed"], names, base, paired=methods, p_key=f"p_vs_{base}")
        rd["unlearn_time_s"] = {m: summarise(v, None) for m, v in rd["per_seed_times"].items()}
    return result


def scenario_figure(result: dict, keys=("forget_acc", "retain_acc", "cka_neg.L4")) -> dict[str, bytes]:
    """One PNG for a scenario: each key against the continual round, or against the number of classes
    forgotten at once (multiclass); a line and 95% band per method, retrained and original dashed."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    if result["scenario"] == "continual":
        points = [(len(rd["forget"]), rd["table"]) for rd in result["rounds"]]
        xlabel = "round (classes forgotten so far)"
    else:
        points = [(len(k.split(",")), {"original": run["references"]["original"],
                                       "retrained": run["references"]["retrained"], **run["methods"]})
                  for k, run in result["runs"].items()]
        xlabel = "classes forgotten at once"
    if len(points) < 2:
        return {}
    names = [n for n in points[0][1] if n not in ("original", "retrained")]
    fig, axes = plt.subplots(1, len(keys), figsize=(3.6 * len(keys), 2.9))
    for ax, key in zip(axes, keys):
        xs = [x for x, _ in points]
        for n in ["retrained", "original", *names]:
            cells = [t.get(n, {}).get(key) or {} for _, t in points]
            ys = [c.get("mean", float("nan")) for c in cells]
            if n in ("retrained", "original"):
                ax.plot(xs, ys, ls="--", lw=1, color="k" if n == "retrained" else "0.6", label=n)
                continue
            (line,) = ax.plot(xs, ys, marker="o", label=n)
            lo = [c.get("ci_low", float("nan")) for c in cells]
            hi = [c.get("ci_high", float("nan")) for c in cells]
            if all(math.isfinite(v) for v in lo + hi):
                ax.fill_between(xs, lo, hi, alpha=0.15, color=line.get_color())
        ax.set_xticks(xs)
        ax.set_ylim(-0.05, 1.05)  # accuracies and CKA; a 3-seed t-band can reach far outside
        ax.set_xlabel(xlabel, fontsize=8)
        ax.set_title(key)
    return {f"{result['scenario']}.png": _png(fig, axes)}


def scenario_report_md(result: dict, keys=("forget_acc", "retain_acc", "probe_acc.L4", "cka_neg.L4"),
                       figures: dict | None = None) -> str:
    lines = [f"# {result['scenario']}: {result['dataset']}", ""]
    lines += [f"![{name}]({name})\n" for name in figures or {}]
    if result["scenario"] == "multiclass":
        for key, run in result["runs"].items():
            lines += [f"## forget {{{key}}}", "", compare_report_md(run, short=True), ""]
        return "\n".join(lines) + "\n"
    lines += [f"Round r forgets the first r classes of {result['order']}, each method from its own previous "
              f"model; seeds {result['seeds']}. Cells: mean [95% t-interval]; test split.", ""]
    lines += originals_md(result)
    for key in keys:
        methods = [n for n in result["rounds"][0]["table"] if n not in ("original",)]
        lines += [f"### {key}", "", "| round (forget) | " + " | ".join(methods) + " |",
                  "|" + "---|" * (len(methods) + 1)]
        for rd in result["rounds"]:
            lines.append(f"| {len(rd['forget'])} ({','.join(map(str, rd['forget']))}) | "
                         + " | ".join(_cell(rd["table"][m].get(key)) for m in methods) + " |")
        lines.append("")
    return "\n".join(lines) + "\n"
