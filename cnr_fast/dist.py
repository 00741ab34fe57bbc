"""Data parallelism on torch.distributed (torchrun): one process per device, gloo on CPU, NCCL on GPU.

    torchrun --nproc_per_node N -m cnr_fast.cli unlearn ...                         # one machine
    torchrun --nnodes 2 --node_rank R --nproc_per_node N \\
             --rdzv_backend c10d --rdzv_endpoint HOST:29500 -m cnr_fast.cli unlearn ...  # several

Without torchrun's environment (WORLD_SIZE unset or 1) every function here is a no-op and the code
paths are the single-process ones.

How the work is split, and why the result does not depend on the number of processes:

* Every rank draws the same random numbers (same seed, same generators, same order): the batch
  order, the augmentation shifts, the GAN noise, the initial latents and the synthetic images'
  labels are the *global* draws of a one-process run. Each rank then takes its share of every
  global batch (`local`): rows rank, rank + W, rank + 2W, ...
* Gradients are averaged over ranks after every backward (`all_reduce_grads`) and every rank steps
  the same optimiser on the same averaged gradient, so the weights stay identical on all ranks
  without a broadcast. With equal shares the average of the ranks' mean losses is the global
  batch's mean loss; a last batch that does not divide by W weights its rows by at most
  ceil/floor of its share. BatchNorm normalises with each rank's own share of the batch (as DDP
  does without SyncBatchNorm, which has no CPU form); running statistics are averaged over ranks
  after each epoch (`sync_buffers`). These two, and the order of the floating-point reductions,
  are the only differences from one process with the same global batch (tests/test_dist.py
  measures them).
* Detection and the audit's feature pass read one contiguous shard of the data per rank; per-class
  sums and counts are all-reduced, per-example features gathered back in the original order.
* Latent optimisation is sharded: rank r optimises its contiguous share of the B latent codes
  (their losses are independent per image, with the generator and classifier in eval mode), and
  the images are gathered in order at the end.
* Rank 0 alone writes (run directory, resume state, model cache); the others wait at a barrier.
"""

from __future__ import annotations

import os
from datetime import timedelta

import torch
import torch.distributed as tdist

_STATE = {"on": False}


def env_world_size() -> int:
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        return 1


def setup(device_name: str = "auto") -> bool:
    """Join the process group torchrun describes (no-op when WORLD_SIZE is unset or 1). Returns active."""
    if _STATE["on"] or env_world_size() <= 1:
        return _STATE["on"]
    from .errors import UserError

    use_cuda = device_name != "cpu" and torch.cuda.is_available()
    if use_cuda:
        local = int(os.environ.get("LOCAL_RANK", "0"))
        if local >= torch.cuda.device_count():
            raise UserError(f"LOCAL_RANK {local} but only {torch.cuda.device_count()} CUDA device(s); pass "
                            f"--nproc_per_node {torch.cuda.device_count()} or fewer to torchrun")
        torch.cuda.set_device(local)
    for key in ("MASTER_ADDR", "MASTER_PORT", "RANK"):
        if key not in os.environ:
            raise UserError(f"WORLD_SIZE is set but {key} is not: start distributed runs with torchrun "
                            "(torchrun --nproc_per_node N -m cnr_fast.cli ...)")
    tdist.init_process_group("nccl" if use_cuda else "gloo", timeout=timedelta(minutes=60))
    _STATE["on"] = True
    return True


def active() -> bool:
    return _STATE["on"]


def world() -> int:
    return tdist.get_world_size() if _STATE["on"] else 1


def rank() -> int:
    return tdist.get_rank() if _STATE["on"] else 0


def is_main() -> bool:
    return rank() == 0


def local_device(device: torch.device) -> torch.device:
    """cuda -> this rank's cuda:LOCAL_RANK under torchrun; anything else unchanged."""
    if _STATE["on"] and device.type == "cuda" and device.index is None:
        return torch.device("cuda", torch.cuda.current_device())
    return device


def barrier() -> None:
    if _STATE["on"]:
        tdist.barrier()


def shutdown() -> None:
    """Tear the process group down once every rank has reached this point (a rank that destroys its group while
    a peer still writes, as rank 0 does its outputs, can make gloo abort that peer at exit)."""
    if _STATE["on"]:
        tdist.barrier()
        tdist.destroy_process_group()
        _STATE["on"] = False


# -- splitting work -------------------------------------------------------------------------------


def local(batch):
    """This rank's rows (rank, rank + W, ...) of every tensor in a (tuple of) global batch tensors."""
    if not _STATE["on"]:
        return batch
    r, w = rank(), world()
    if isinstance(batch, torch.Tensor):
        return batch[r::w]
    return type(batch)(b[r::w] if isinstance(b, torch.Tensor) else b for b in batch)


def shard_range(n: int) -> tuple[int, int]:
    """[start, stop) of this rank's contiguous share of n items (sizes differ by at most one)."""
    w, r = world(), rank()
    base, extra = divmod(n, w)
    start = r * base + min(r, extra)
    return start, start + base + (1 if r < extra else 0)


def backward(loss_of, batch, params, scale=None) -> float:
    """One data-parallel backward: loss_of(this rank's rows of `batch`) -> loss, weighted by the rank's
    share of the batch, gradients of `params` averaged over ranks. Returns the global batch's loss
    value (the same on every rank). In one process: loss_of(batch).backward(), its value.

    scale: e.g. a GradScaler's scale, applied to the loss before backward.
    """
    share = 1.0
    if _STATE["on"]:
        first = batch if isinstance(batch, torch.Tensor) else batch[0]
        n_global = int(first.shape[0])
        batch = local(batch)
        first = batch if isinstance(batch, torch.Tensor) else batch[0]
        share = int(first.shape[0]) * world() / max(n_global, 1)
    value = 0.0
    if share > 0:  # else: a global batch smaller than the world left this rank no row (zero gradient)
        loss = loss_of(batch)
        (scale(loss * share) if scale is not None else loss * share).backward()
        value = float(loss.detach()) * share
    all_reduce_grads(params)
    return mean_value(value)


def shard(split):
    """This rank's contiguous share of a data.Split (the whole split in one process)."""
    if not _STATE["on"]:
        return split
    start, stop = shard_range(len(split))
    return split.subset(slice(start, stop))


# -- reductions -----------------------------------------------------------------------------------


def all_reduce_sum_(t: torch.Tensor) -> torch.Tensor:
    if _STATE["on"]:
        tdist.all_reduce(t, op=tdist.ReduceOp.SUM)
    return t


def mean_value(value: float) -> float:
    """The mean over ranks of a Python float (every rank gets the same number)."""
    if not _STATE["on"]:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=_comm_device())
    tdist.all_reduce(t)
    return float(t) / world()


def agree(flag: bool) -> bool:
    """Rank 0's value of `flag` on every rank."""
    if not _STATE["on"]:
        return flag
    t = torch.tensor([1 if flag else 0], device=_comm_device())
    tdist.broadcast(t, 0)
    return bool(int(t))


def all_reduce_grads(params) -> None:
    """Average the gradients of `params` over ranks, in one flat buffer (a missing grad counts as 0)."""
    if not _STATE["on"]:
        return
    params = [p for p in params if p.requires_grad]
    if not params:
        return
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1).float() for g in grads])
    tdist.all_reduce(flat)
    flat /= world()
    i = 0
    for p, g in zip(params, grads):
        n = g.numel()
        p.grad = flat[i : i + n].view_as(g).to(g.dtype)
        i += n


def sync_buffers(module: torch.nn.Module) -> None:
    """Average floating-point buffers (BatchNorm running statistics) over ranks; others from rank 0."""
    if not _STATE["on"]:
        return
    for b in module.buffers():
        if b.is_floating_point():
            tdist.all_reduce(b)
            b /= world()
        else:
            tdist.broadcast(b, 0)


def gather_rows(t: torch.Tensor) -> torch.Tensor:
    """Concatenate every rank's rows in rank order (shares may differ in length)."""
    if not _STATE["on"]:
        return t
    dev = _comm_device()
    n = torch.tensor([t.shape[0]], device=dev)
    sizes = [torch.zeros_like(n) for _ in range(world())]
    tdist.all_gather(sizes, n)
    sizes = [int(s) for s in sizes]
    pad = max(sizes)
    src = t.to(dev)
    if t.shape[0] < pad:
        src = torch.cat([src, src.new_zeros((pad - t.shape[0], *t.shape[1:]))])
    out = [torch.empty_like(src) for _ in sizes]
    tdist.all_gather(out, src.contiguous())
    return torch.cat([o[:s] for o, s in zip(out, sizes)]).to(t.device)


def _comm_device() -> torch.device:
    return torch.device("cuda", torch.cuda.current_device()) if tdist.get_backend() == "nccl" else torch.device("cpu")
