"""The one training loop (original model, RFS, ROFT, the other baselines, CNR reset) and evaluation.

`fit` runs epochs of (batch -> loss) with Adam, optional AMP (bf16 where supported, fp16 with a
grad scaler otherwise), channels_last on CUDA, optional torch.compile, and a progress bar.
"""

from __future__ import annotations

import contextlib
import copy
import math
import sys
from typing import Callable, Iterable

import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm import tqdm

from . import dist
from .data import Split, batches
from .errors import UserError
from .profiling import nvtx_range


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return dist.local_device(torch.device("cuda" if torch.cuda.is_available() else "cpu"))
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise UserError(f"unknown device {name!r}; pass --device cpu, cuda, cuda:N or auto") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda was asked for but no CUDA device is available; pass --device cpu")
    return dist.local_device(dev)  # under torchrun, cuda is this rank's cuda:LOCAL_RANK


def amp_dtype(device: torch.device, enabled: bool) -> torch.dtype | None:
    """The autocast dtype --amp gives on `device` (None: fp32, no autocast)."""
    if not enabled:
        return None
    device = torch.device(device)
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    from .hardware import cpu_amp_allowed

    # no bf16 instructions: emulated bf16 is several times slower than fp32
    return torch.bfloat16 if cpu_amp_allowed() else None


def precision(device: torch.device, amp: bool) -> str:
    """What a run computes in, as results record it: "bf16 autocast", "fp16 autocast" or "fp32"."""
    d = amp_dtype(device, amp)
    return {torch.bfloat16: "bf16 autocast", torch.float16: "fp16 autocast"}.get(d, "fp32")


def amp_context(device: torch.device, enabled: bool):
    dtype = amp_dtype(device, enabled)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=dtype)


def needs_scaler(device: torch.device, amp: bool) -> bool:
    return amp and device.type == "cuda" and not torch.cuda.is_bf16_supported()


def progress(it: Iterable, desc: str, total: int | None = None, quiet: bool = False):
    # Bars only on a terminal; logs (CI, nohup) get the one-line-per-epoch messages instead.
    return tqdm(it, desc=desc, total=total, file=sys.stderr, disable=quiet or not sys.stderr.isatty(),
                mininterval=1.0, leave=False,
                dynamic_ncols=True)


def prepare(model: nn.Module, device: torch.device) -> nn.Module:
    """The model on `device`, in place; on CUDA with channels_last weights (conv kernels run NHWC)."""
    model = model.to(device)
    if torch.device(device).type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    return model


# Compiled float32 gradients further than this from float64 (relative, per tensor) are a miscompile, not round-off:
# a gradient that cancels (a BatchNorm bias) is 1e-2 off in float32 where the sum runs in float32 (Inductor's
# kernels, and eager's on some batches; eager CPU BatchNorm accumulates in double), bench/results/compile_cpu.json
COMPILE_TOLERANCE = 0.1
# What --compile reaches: every loop that runs through `fit` (doctor prints it)
COMPILED_LOOPS = ("the original, retrained and null models (and RFS)", "CNR's reset and stabilisation", "ROFT", "GAU",
                  "KDU")
EAGER_LOOPS = ("the DCGAN", "the latent optimisation", "RL, SSD, SCRUB, SalUn, NegGrad+, l1-sparse, Bad Teacher, "
               "UNSIR, JiT, loss-free SSD")
_COMPILE_CHECKED: dict = {}  # (model class, input shape, device type) -> compile_gradient_error(...)


def compile_gradient_error(model: nn.Module, x: torch.Tensor, *, compiler=torch.compile) -> dict[str, float]:
    """How far one batch's float32 gradients are from float64, eager and compiled: {"eager", "compiled"},
    each max over parameter tensors of max|g - g64| / max|g64|. The loss is a fixed random linear function
    of the model's output on x (train mode, copies of the model: the model itself is untouched), so every
    output and every parameter reached by the forward pass counts. Float32 round-off is 1e-6 on most
    tensors and up to 1e-2 on one whose gradient cancels; a miscompiled gradient is off by O(1).
    compiler: what compiles a module (torch.compile; tests pass a broken one)."""

    def grads(m, inp, compiled: bool = False):
        f = compiler(m) if compiled else m
        m.train()
        out = f(inp)
        w = torch.randn(out.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
        (out * w.to(out.device, out.dtype)).sum().backward()
        return [p.grad.double() if p.grad is not None else None for p in m.parameters() if p.requires_grad]

    ref = grads(copy.deepcopy(model).double(), x.double())
    eager = grads(copy.deepcopy(model).float(), x.float())
    compiled = grads(copy.deepcopy(model).float(), x.float(), compiled=True)

    def err(gs):
        return max((float((g - r).abs().max() / r.abs().max().clamp_min(1e-300))
                    for g, r in zip(gs, ref) if g is not None and r is not None), default=0.0)

    return {"eager": err(eager), "compiled": err(compiled)}


def check_compiled_gradients(model: nn.Module, x: torch.Tensor, device, quiet: bool = False) -> dict[str, float]:
    """compile_gradient_error once per (model class, input shape, device type) in a process; a compiled
    gradient off by more than COMPILE_TOLERANCE (and 10 x eager's) is said in one warning line."""
    key = (type(model).__name__, tuple(x.shape), torch.device(device).type)
    if key not in _COMPILE_CHECKED:
        say = (lambda msg: None) if quiet else (lambda msg: print(msg, file=sys.stderr))
        say(f"  compile: compiling {key[0]} for input {list(key[1])} and checking its gradients against float64 "
            "(the first steps take longer)")
        e = compile_gradient_error(model, x)
        e["ok"] = not e["compiled"] > max(COMPILE_TOLERANCE, 10 * e["eager"])
        _COMPILE_CHECKED[key] = e
        if not e["ok"]:
            print(f"warning: --compile: torch {torch.__version__} compiles gradients of this {key[0]} that are "
                  f"{e['compiled']:.1e} (relative) from float64 on this {key[2]}, where eager float32 is "
                  f"{e['eager']:.1e}: more than float32 round-off explains (a miscompile); report numbers from a "
                  "run without --compile", file=sys.stderr)
        else:
            say(f"  compile: gradients {e['compiled']:.1e} from float64 (eager float32 {e['eager']:.1e}): "
                "round-off, no miscompile")
    return _COMPILE_CHECKED[key]


def compile_checks() -> list[dict]:
    """Every gradient check this process made (results.json `compile_checks`): model, input shape, device,
    the compiled and eager errors against float64 and whether it passed."""
    return [{"model": m, "input": list(shape), "device": dev, **e} for (m, shape, dev), e in _COMPILE_CHECKED.items()]


def fit(
    model: nn.Module,
    epochs: int,
    make_batches: Callable[[int], Iterable],
    loss_fn: Callable[[nn.Module, object], torch.Tensor],
    *,
    lr: float,
    weight_decay: float,
    device: torch.device,
    amp: bool = False,
    compile: bool = False,
    desc: str = "train",
    quiet: bool = False,
    steps_per_epoch: int | None = None,
    on_epoch_end: Callable[[int], bool] | None = None,
    resume: dict | None = None,
    save_state: Callable[[dict], None] | None = None,
) -> list[float]:
    """Train in place; returns the mean loss of each epoch. on_epoch_end(epoch) -> True stops early.

    save_state(s), if given, is called after every epoch with s = {"epoch": epochs done, "optimizer",
    "scaler", "history"}; passing such an s back as `resume` (with the model's weights and the batch
    generators' states restored by the caller) continues training after that epoch.
    """
    prepare(model, device)  # before the optimizer takes the parameters (module.to keeps them, in place)
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    scaler = torch.amp.GradScaler("cuda") if needs_scaler(device, amp) else None
    step_model = torch.compile(model) if compile else model
    history = []
    start = 0
    if resume is not None:
        opt.load_state_dict(resume["optimizer"])
        if scaler is not None and resume.get("scaler"):
            scaler.load_state_dict(resume["scaler"])
        history, start = list(resume["history"]), int(resume["epoch"])
    for epoch in range(start, epochs):
        model.train()
        total, n = 0.0, 0
        bar = progress(make_batches(epoch), f"{desc} epoch {epoch + 1}/{epochs}", steps_per_epoch, quiet)
        for batch in bar:
            if compile and not amp and n == 0 and epoch == start:
                check_compiled_gradients(model, batch if isinstance(batch, torch.Tensor) else batch[0], device, quiet)
            opt.zero_grad(set_to_none=True)

            def loss_of(b):
                with nvtx_range(f"cnr/{desc}/step"), amp_context(device, amp):
                    return loss_fn(step_model, b)

            # under torchrun: this rank's rows, gradients averaged over ranks (see cnr_fast.dist)
            value = dist.backward(loss_of, batch, model.parameters(), scale=scaler.scale if scaler is not None else None)
            if scaler is not None:
                scaler.step(opt)
                scaler.update()
            else:
                opt.step()
            if not math.isfinite(value):
                raise UserError(
                    f"training stage {desc!r} diverged: its loss is {value} at epoch {epoch + 1}, step {n + 1}; "
                    "nothing was written. Lower that stage's learning rate (--lr for the original model, "
                    "train.lr / reset.lr / baseline.lr in a --config file), or drop --amp"
                )
            total += value
            n += 1
        dist.sync_buffers(model)
        history.append(total / max(n, 1))
        if not quiet:
            print(f"  {desc} epoch {epoch + 1}/{epochs}: loss {history[-1]:.4f}", file=sys.stderr)
        if save_state is not None:
            save_state({"epoch": epoch + 1, "optimizer": opt.state_dict(), "history": list(history),
                        "scaler": scaler.state_dict() if scaler is not None else {}})
        if on_epoch_end is not None and on_epoch_end(epoch):
            break
    model.eval()
    return history


def ce_loss(model, batch):
    x, y = batch
    return F.cross_entropy(model(x), y)


def train_classifier(model: nn.Module, split: Split, cfg, *, device, amp=False, seed=0, desc="train",
                     quiet=False, compile=False) -> list[float]:
    """Standard supervised training on `split` with a TrainConfig `cfg` (original model and RFS)."""
    gen = torch.Generator().manual_seed(seed)
    steps = -(-len(split) // cfg.batch_size)

    def make(epoch):
        for x, y in batches(split, cfg.batch_size, shuffle=True, generator=gen, device=device):
            if cfg.augment:
                x = random_shift(x, gen)
            yield x, y

    return fit(model, cfg.epochs, make, ce_loss, lr=cfg.lr, weight_decay=cfg.weight_decay, device=device, amp=amp,
               compile=compile, desc=desc, quiet=quiet, steps_per_epoch=steps)


def finetune(model: nn.Module, split: Split, epochs: int, *, batch_size: int, lr: float, weight_decay: float,
             gen: torch.Generator, device, amp=False, compile=False, desc="finetune", quiet=False,
             resume: dict | None = None, save_state=None) -> list[float]:
    """Plain cross-entropy fine-tuning on `split` (CNR's stabilisation, ROFT, KDU's retain-only phase)."""
    if epochs <= 0:
        return []
    steps = -(-len(split) // batch_size)
    return fit(model, epochs, lambda e: batches(split, batch_size, shuffle=True, generator=gen, device=device),
               ce_loss, lr=lr, weight_decay=weight_decay, device=device, amp=amp, compile=compile, desc=desc,
               quiet=quiet, steps_per_epoch=steps, resume=resume, save_state=save_state)


def random_shift(x: torch.Tensor, gen: torch.Generator, pad: int = 2) -> torch.Tensor:
    """Random translation by up to `pad` pixels (reflect padding), one shift per batch."""
    dx, dy = (int(v) for v in torch.randint(-pad, pad + 1, (2,), generator=gen))
    xp = F.pad(x, (pad, pad, pad, pad), mode="reflect")
    h, w = x.shape[-2:]
    return xp[..., pad + dy : pad + dy + h, pad + dx : pad + dx + w]


@torch.no_grad()
def predict(model: nn.Module, split: Split, *, device, batch_size: int = 512, amp: bool = False) -> torch.Tensor:
    model.eval()
    out = []
    for x, _ in batches(split, batch_size, device=device):
        with amp_context(device, amp):
            out.append(model(x).float().cpu())
    return torch.cat(out) if out else torch.empty(0)


def forget_retain_accuracy(model, test: Split, forget, *, device, amp=False) -> dict[str, float]:
    """Accuracy on the test examples of the forget classes and of the retain classes."""
    logits = predict(model, test, device=device, amp=amp)
    correct = logits.argmax(1) == test.y
    is_f = torch.isin(test.y, torch.as_tensor(list(forget)))
    return {
        "forget_acc": float(correct[is_f].float().mean()) if is_f.any() else float("nan"),
        "retain_acc": float(correct[~is_f].float().mean()) if (~is_f).any() else float("nan"),
    }
