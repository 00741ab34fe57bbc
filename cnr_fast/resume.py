"""Resumable runs: the state of `cnr-fast unlearn` kept between invocations. (The drivers, compare,
ablate and the scenarios, keep theirs in the same `RunState`, one file per (seed, method) model and
per audit: experiments/runner.py.)

A run's state lives in `<out>.state/`, a folder beside the run directory (not inside it: the run
directory is written in one staged move at the end, see runs.staged_dir, so it does not exist while
the run works). It is removed once the run directory is complete. Each entry (a completed piece of work) is
one file, written atomically (runs.atomic_write_bytes) when it completes:

    run.json                  what the run is (its settings and the original's weights hash)
    detect.pt                 the detected units
    gan-<class>.pt            the class's GAN: G, D, both Adam states, the torch RNG state and the
                              batch-order generator's state after the last completed epoch
    latents-<class>.pt        the class's optimised synthetic images and their log
    [lr=<v>-]reset-<phase>.pt reset (phase "reset", then "stabilise"; one pair per candidate step size
                              when it is chosen on validation): model, Adam state, loss history,
                              the batch-order generator's and the torch RNG states after the last
                              completed epoch
    audit-<model>.pt          one audited model's metrics (and its audit time)

A rerun of the same command loads every completed entry and continues with the first missing one;
work in progress when the process died (a partly trained epoch) is done again from its start, with
the saved RNG states, so the result equals an uninterrupted run's. Files hold tensors and plain
Python values only and load with weights_only=True.

Test hook: CNR_FAST_TEST_KILL_AT=<point>[,<point>...] makes the process SIGKILL itself when it
reaches a named point (`gan:<epoch>`, `latents:<class>`, `reset:<epoch>`, `stabilise:<epoch>`,
`audit:<model>`, `final`; each right after that entry is written), and
CNR_FAST_TEST_KILL_AT=<point>:int sends itself SIGINT (Ctrl-C) there instead. Only the tests use it.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
from pathlib import Path

import torch

from .errors import UserError
from .runs import atomic_write_bytes, atomic_write_json

KILL_ENV = "CNR_FAST_TEST_KILL_AT"


def state_dir_for(out) -> Path:
    out = Path(out)
    return out.parent / f"{out.name}.state"


def kill_point(name: str) -> None:
    """Test hook (see the module doc): die here if CNR_FAST_TEST_KILL_AT names this point."""
    spec = os.environ.get(KILL_ENV)
    if not spec:
        return
    for item in spec.split(","):
        item = item.strip()
        if item == name:
            os.kill(os.getpid(), signal.SIGKILL)
        if item == f"{name}:int":
            os.kill(os.getpid(), signal.SIGINT)


def rng_state() -> dict:
    out = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        out["cuda"] = torch.cuda.get_rng_state_all()
    return out


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class RunState:
    """The files of one run's state folder; `load(name)` is None for an entry not completed yet."""

    def __init__(self, path, key: dict):
        self.path = Path(path)
        self.key = key
        self.reused: list[str] = []  # entries loaded from an earlier invocation (results.json: resumed_entries)

    # -- lifecycle -------------------------------------------------------------------------------

    def open(self, restart: bool = False) -> bool:
        """Create or check the folder. Returns True when it holds an earlier invocation's state.

        Under torchrun rank 0 does this and every rank gets its answer (or an error)."""
        from . import dist

        if not dist.active():
            return self._open(restart)
        resumed, err = False, None
        if dist.is_main():
            try:
                resumed = self._open(restart)
            except UserError as e:
                err = e
        if not dist.agree(err is None):
            raise err or UserError(f"the run's state folder {str(self.path)!r} was refused (see rank 0's message)")
        return dist.agree(resumed)

    def _open(self, restart: bool) -> bool:
        if restart and self.path.exists():
            shutil.rmtree(self.path)
        run_file = self.path / "run.json"
        if run_file.is_file():
            try:
                old = json.loads(run_file.read_text())
            except (OSError, ValueError):
                old = None
            if old != json.loads(json.dumps(self.key)):
                diff = sorted(k for k in set(old or {}) | set(self.key) if (old or {}).get(k) != self.key.get(k))
                raise UserError(
                    f"{str(self.path)!r} holds the state of another run (differs in: {', '.join(diff) or 'format'}); "
                    "rerun that run's exact command to resume it, or pass --restart to discard that state")
            return True
        if self.path.exists() and not self.path.is_dir():
            raise UserError(f"{str(self.path)!r} (the run's state folder) is a file; remove it or pass another --out")
        atomic_write_json(run_file, self.key)
        return False

    def clean_stale(self, out) -> None:
        """On a resume: remove what a killed process could not (its half-written temporary files, its
        staging folder beside or inside `out`); a process that is killed cannot clean up after itself."""
        from . import dist

        if not dist.is_main():
            return
        out = Path(out)
        stale = list(self.path.glob(".*.tmp")) + list(out.parent.glob(f".{out.name}.staging-*"))
        if out.is_dir():
            stale += list(out.glob(".staging-*"))
        for p in stale:
            if p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)

    def remove(self) -> None:
        from . import dist

        if dist.is_main():
            shutil.rmtree(self.path, ignore_errors=True)

    # -- entries ---------------------------------------------------------------------------------

    def save(self, name: str, obj) -> None:
        from . import dist

        if dist.is_main():  # under torchrun rank 0 writes; no rank goes on before the entry is on disk
            buf = io.BytesIO()
            torch.save(obj, buf)
            atomic_write_bytes(self.path / f"{name}.pt", buf.getvalue())
        dist.barrier()

    def load(self, name: str):
        path = self.path / f"{name}.pt"
        if not path.is_file():
            return None
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001  (a foreign or damaged file: ours are written atomically)
            import sys

            print(f"cnr-fast: warning: state file {str(path)!r} is unreadable ({str(e).splitlines()[0][:120]}); "
                  "redoing that entry", file=sys.stderr, flush=True)
            return None
        if name not in self.reused:
            self.reused.append(name)
        return obj


class StateView:
    """The entries of a RunState under a name prefix (one candidate of a validation search keeps its own)."""

    def __init__(self, state: RunState, prefix: str):
        self.state, self.prefix = state, prefix

    def save(self, name: str, obj) -> None:
        self.state.save(self.prefix + name, obj)

    def load(self, name: str):
        return self.state.load(self.prefix + name)


def view(state, prefix: str):
    """`state` with every entry name prefixed (None stays None)."""
    return None if state is None else StateView(state, prefix)


def weights_digest(model: torch.nn.Module) -> str:
    import hashlib

    h = hashlib.sha256()
    for k, v in sorted(model.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()
