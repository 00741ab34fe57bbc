"""Run directories, atomic writes, the model cache and safe checkpoint loading.

Every file is written to a temporary sibling and moved into place with `os.replace`, so a failed
or interrupted run never leaves a half-written file. Checkpoints load with `weights_only=True`:
nothing a file contains is ever executed.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import tempfile
from pathlib import Path

import torch

from .errors import UserError

CHECKPOINT_FORMAT = 1


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# mkstemp creates files 0600; outputs get the usual 0666 & ~umask, like any file the user writes.
_FILE_MODE = 0o666 & ~_umask()


def cache_dir(override: str | None = None) -> Path:
    if override:
        return Path(override)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "cnr-fast"


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, _FILE_MODE)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_text(path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def atomic_write_json(path, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def _json_default(o):
    if hasattr(o, "tolist"):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def save_checkpoint(path, model: torch.nn.Module, meta: dict) -> None:
    """Checkpoint = plain tensors + JSON-able metadata; loadable with weights_only=True."""
    buf = io.BytesIO()
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    torch.save({"format": CHECKPOINT_FORMAT, "state_dict": state, "meta": meta}, buf)
    atomic_write_bytes(path, buf.getvalue())


def load_checkpoint(path) -> tuple[dict, dict]:
    """Returns (state_dict, meta). A bare state_dict (another tool's) gives meta = {}."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint {str(path)!r} does not exist; pass the path of a saved model to --checkpoint")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # corrupt, truncated, pickled code, not a torch file
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(
            f"checkpoint {str(path)!r} cannot be read safely ({first[:160]}); "
            "pass a checkpoint saved by cnr-fast or a plain state_dict saved with torch.save"
        ) from None
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        return obj["state_dict"], dict(obj.get("meta") or {})
    if isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return obj, {}
    raise UserError(
        f"checkpoint {str(path)!r} holds no state_dict; pass a checkpoint saved by cnr-fast or a plain state_dict"
    )


def write_run_files(out: Path, files: dict[str, object]) -> None:
    """Write several outputs, each atomically. bytes -> as is, str -> text, else JSON."""
    out.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        target = out / name
        if isinstance(content, bytes):
            atomic_write_bytes(target, content)
        elif isinstance(content, str):
            atomic_write_text(target, content)
        else:
            atomic_write_json(target, content)
