"""Reference models: the original, the retrained-from-scratch reference and its null, trained with one
recipe (`TrainConfig`) and cached by what they were trained on and how.

- original: all classes, initial weights from `seed`.
- retrained: the retrain-from-scratch reference, retain classes only. With
  `train.reference_init = "independent"` (default) its initial weights and data order come from
  a seed derived from `seed`, so nothing but the recipe and the data ties it to the original;
  "shared" gives it the original's initial weights and data order (what the paper's setup implies).
- retrained_null: a second retrained model, always independent of both. CKA(retrained,
  retrained_null) is the "unrelated model" level printed beside every CKA number.

RFS (a method, baselines/rfs.py, not a reference) trains here too but never takes the reference's
seed: it would be the reference weight for weight. Below the drivers (experiments/) and the baselines,
so both can use it.

A user's own recipe (`Recipe`, set for a block with `user_recipe(...)`: `cnr_fast.compare(train=...)`,
`compare --train-script` / `--originals` / `--references`) takes the place of cnr-fast's: every model
above, RFS included, is then the user's given checkpoint or the user's training function's output,
never cached (cnr-fast cannot know what the function depends on), and its meta names the recipe.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import os
import re
import sys
import time
from contextvars import ContextVar
from typing import Callable

import torch

from .config import RunConfig, stable_hash
from .errors import UserError
from .progress import log

REFERENCE_INIT = ("independent", "shared")
OWN_RECIPE = "cnr-fast's own (train.train_classifier with the train section of the config)"


@dataclasses.dataclass
class Recipe:
    """Whose recipe makes the original, the retrained reference, the null and RFS.

    name: said in every report ("train(...) from mymodels.py", "checkpoints in DIR").
    given(kind, seed) -> nn.Module or None: a model the user trained (kind: original, retrained,
      retrained_null); None where the user gave none for that seed.
    train(model, data, classes, seed) -> nn.Module: the user's training function, called with a fresh
      model from build() (torch seeded with the reference's init seed first), the user's `data`, the
      class indices to train on and the data-order seed; what it returns is used (it may train in place).
    prepare(model) -> the model as cnr-fast works on it (the user's input contract, logits rule and taps).
    """

    name: str
    given: Callable | None = None
    build: Callable | None = None
    train: Callable | None = None
    data: object = None
    prepare: Callable = lambda m: m

    def model(self, kind: str, cfg: RunConfig, ds, device, classes, init_seed, order_seed, quiet=False, desc=None):
        """(model, meta) of `kind` for cfg.seed by this recipe (classes and seeds as train_reference draws them)."""
        from .train import forget_retain_accuracy

        t0 = time.perf_counter()
        given = self.given(kind, cfg.seed) if self.given is not None else None
        if given is not None:
            model, how = given, "given"
            log(f"{desc or kind}: the user's model for seed {cfg.seed} ({self.name})", quiet)
        elif self.train is None:
            raise UserError(f"no {kind} model for seed {cfg.seed} in {self.name}, and no training function to make "
                            "one; give it, or a training function (--train-script / train=)")
        else:
            log(f"{desc or kind}: training on classes {classes} with {self.name} ...", quiet)
            torch.manual_seed(init_seed)
            fresh = self.build()
            model = self.train(fresh, self.data, classes, order_seed)
            model = fresh if model is None else model
            if not isinstance(model, torch.nn.Module):
                raise UserError(f"{self.name} returned {type(model).__name__} for the {kind} model, not the trained "
                                "nn.Module; return the model (or None after training it in place)")
            how = "trained"
        model = self.prepare(model).to(device).eval()
        acc = forget_retain_accuracy(model, ds.test, cfg.data.forget, device=device)
        meta = {"kind": kind, "recipe": self.name, "how": how, "trained_classes": classes,
                "forget_classes": [] if kind == "original" else list(cfg.data.forget), "seed": cfg.seed,
                "init_seed": init_seed, "data_order_seed": order_seed, "test_accuracy": acc,
                "train_time_s": time.perf_counter() - t0 if how == "trained" else None}
        return model, meta


def own_loop(cfg: RunConfig, ds, device, quiet=False):
    """(train function, name) of cnr-fast's own training loop (train.train_classifier with cfg.train) in a
    Recipe's shape: the recipe that trains a user's build() when the user gives no training function."""
    from .train import train_classifier

    def train(model, _data, classes, seed):
        model = model.to(device)
        train_classifier(model, ds.train.of_classes(classes), cfg.train, device=device, seed=seed, quiet=quiet)
        return model

    return train, f"cnr-fast's own recipe (train.train_classifier: {cfg.train.epochs} epochs, lr {cfg.train.lr:g})"


_RECIPE: ContextVar[Recipe | None] = ContextVar("user_recipe", default=None)


@contextlib.contextmanager
def user_recipe(recipe: Recipe | None):
    """Within this block the user's recipe makes every reference model (None: cnr-fast's own, as usual)."""
    token = _RECIPE.set(recipe)
    try:
        yield
    finally:
        _RECIPE.reset(token)


def current_recipe() -> Recipe | None:
    """The user's recipe set for this block (user_recipe), None for cnr-fast's own."""
    return _RECIPE.get()


def recipe_name() -> str:
    """Whose recipe makes the models in this block."""
    r = current_recipe()
    return OWN_RECIPE if r is None else r.name


def derive_seed(seed: int, tag: str) -> int:
    """A seed for `tag` that is a fixed function of `seed` and independent of it in practice."""
    return int(stable_hash({"seed": int(seed), "tag": tag}), 16) % (2**31 - 1)



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
    source = {k: v for k, v in cfg.to_dict()["model"].items() if k in ("model_args", "normalize", "tap_paths",
                                                                        "logits_from")}
    from .models.sources import builder_digest

    builder = builder_digest(cfg.model.arch)  # a changed builder never meets stale weights
    if builder:
        source["builder_sha256"] = builder
    return stable_hash({"kind": kind, "data": ds.fingerprint(), "arch": cfg.model.arch, "width": cfg.model.width,
                        "train": cfg.to_dict()["train"], "seed": cfg.seed, "seeds": reference_seeds(kind, cfg),
                        "forget": forget, "torch_threads": torch.get_num_threads(), **weights, **source})


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


def source_options(cfg: RunConfig) -> dict:
    """build_model's keywords for a model source other than cnr-fast's own archs."""
    return {"model_args": cfg.model.model_args, "normalize": cfg.model.normalize, "tap_paths": cfg.model.tap_paths,
            "logits_from": cfg.model.logits_from}


def train_reference(kind: str, cfg: RunConfig, ds, device, quiet=False, desc=None):
    """Train a fresh original / retrained / retrained_null / RFS model. Returns (model, meta)."""
    from .models import arch_label, build_model, model_meta
    from .train import forget_retain_accuracy, train_classifier

    classes = list(range(ds.num_classes)) if kind == "original" else ds.retain_classes(cfg.data.forget)
    init_seed, order_seed = reference_seeds(kind, cfg)
    recipe = current_recipe()
    if recipe is not None:
        return recipe.model(kind, cfg, ds, device, classes, init_seed, order_seed, quiet, desc)
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
        model = build_model(cfg.model.arch, ds.num_classes, ds.in_channels, ds.image_size, cfg.model.width,
                            **source_options(cfg)).to(device)
    desc = desc or kind
    log(f"{desc}: training {arch_label(cfg.model.arch, cfg.model.width)} on classes {classes} for "
        f"{cfg.train.epochs} epochs ...", quiet)
    t0 = time.perf_counter()
    train_classifier(model, ds.train.of_classes(classes), cfg.train, device=device, amp=cfg.amp, seed=order_seed,
                     compile=cfg.compile, desc=desc, quiet=quiet)
    acc = forget_retain_accuracy(model, ds.test, cfg.data.forget, device=device)
    meta = {**model_meta(cfg.model.arch, cfg.model.width, ds, model, **source_options(cfg)), **weights, "kind": kind,
            "trained_classes": classes,
            "forget_classes": [] if kind == "original" else list(cfg.data.forget), "seed": cfg.seed,
            "init_seed": init_seed, "data_order_seed": order_seed, "reference_init": cfg.train.reference_init,
            "train": cfg.to_dict()["train"], "test_accuracy": acc, "train_time_s": time.perf_counter() - t0,
            "recipe": OWN_RECIPE}
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

    if current_recipe() is not None:  # the user's recipe: never cached
        model, meta = train_reference(kind, cfg, ds, device, quiet)
        return model, meta, None, False
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", f"{cfg.model.arch}-{ds.name}")[-80:]  # sources name files and modules
    path = cache_dir(cache) / "models" / f"{kind}-{safe}-" \
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
        model, meta = model_from_checkpoint(cfg.model.checkpoint, ds, cfg.model.arch, cfg.model.width,
                                            source_options(cfg))
        if meta.get("logit_mask"):
            raise UserError(f"checkpoint {cfg.model.checkpoint!r} is a logit-masked model; pass the original model")
        log(f"original: {cfg.model.checkpoint}", quiet)
        _log_taps(model, quiet, named=bool(cfg.model.tap_paths))
        return model.to(device), meta, cfg.model.checkpoint, True
    found = obtain_reference("original", cfg, ds, device, cache, quiet)
    _log_taps(found[0], quiet, named=bool(cfg.model.tap_paths))
    return found


def _log_taps(model, quiet, named: bool = False) -> None:
    """The taps of a model of another source, before any work on them (named: some came from --taps or from
    the --checkpoint's record)."""
    found = getattr(model, "cnr_fast_taps", None)
    if found:
        how = ("as named (--taps, or the taps the checkpoint records), the rest found automatically" if named else
               "found automatically; --taps L1=module.path,... overrides")
        log("taps: " + ", ".join(f"{n}={p} ({layout})" for n, (p, layout) in found.items())
            + f" ({how}; `cnr-fast taps` lists candidates)", quiet)



def original_record(model, seed: int) -> dict:
    """Which original a table's rows unlearned: its seed, a digest of its weights (tables with the same
    digest share the original) and the thread count it was made with (part of the cache key)."""
    from .resume import weights_digest

    return {"seed": int(seed), "weights_sha256": weights_digest(model), "torch_threads": torch.get_num_threads()}

