"""Run directories, atomic writes, the model cache and safe checkpoint loading.

Every file is written to a temporary sibling and moved into place with `os.replace`, so a failed
or interrupted run never leaves a half-written file. Checkpoints load with `weights_only=True`:
nothing a file contains is ever executed.
"""

from __future__ import annotations

import contextlib
import errno
import io
import json
import math
import os
import shutil
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


_DISK_FULL = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}
_NO_PERMISSION = {errno.EACCES, errno.EPERM, errno.EROFS}


def write_error(path, e: OSError) -> UserError:
    """One clear line for an OSError met while writing `path`: disk full, no permission, or other."""
    where = str(path)
    if e.errno in _DISK_FULL:
        return UserError(f"disk full: cannot write {where!r} ({e.strerror}); nothing was left half-written; free "
                         "space on that disk or pass an --out (or --cache-dir) on another one")
    if e.errno in _NO_PERMISSION:
        return UserError(f"cannot write {where!r}: {e.strerror}; pass an --out (or --cache-dir) folder you can "
                         "write to")
    if e.errno in (errno.ENOTDIR, errno.EEXIST):
        return UserError(f"cannot write {where!r}: a part of that path is a file, not a folder; pass a directory path")
    return UserError(f"cannot write {where!r} ({e.strerror or e}); pass another --out (or --cache-dir)")


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write to a temporary sibling, fsync, move into place. An OSError with an errno (disk full,
    permission denied, ...) becomes a UserError naming `path`; no temporary file stays behind."""
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, _FILE_MODE)
        os.replace(tmp, path)
    except BaseException as e:
        if tmp is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        if isinstance(e, OSError) and e.errno is not None:
            raise write_error(path, e) from None
        raise


def atomic_write_text(path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def atomic_write_json(path, obj) -> None:
    """`obj` as strict JSON (RFC 8259): a number that is not finite (NaN: no value, e.g. no interval from one
    seed; an infinity) is written as null, so jq, JavaScript and every other parser read the file;
    `read_result_json` gives the per-seed values back as NaN."""
    atomic_write_text(path, json.dumps(strict_json(obj), indent=2, sort_keys=False, allow_nan=False) + "\n")


def strict_json(obj):
    """`obj` with arrays as lists (numpy, torch), paths as strings and every non-finite float as None."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: strict_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [strict_json(v) for v in obj]
    if isinstance(obj, (str, int, bool)) or obj is None:
        return obj
    return strict_json(_json_default(obj))


# the per-seed values a result is recomputed from (compare / ablate / the scenarios' merge, `cnr-fast power`):
# numbers only, so a null in them is a value that was NaN when written
PER_SEED_VALUES = ("per_seed", "per_seed_cka_null", "per_seed_times", "per_seed_reference_times")


def read_result_json(path) -> dict:
    """A result file (compare.json, results.json, ...) as written, with the nulls inside its per-seed values
    (PER_SEED_VALUES, at any depth) read as NaN, the value they stood for. Files written before nulls (with
    NaN literals) read the same. Raises OSError or ValueError (not JSON) as json.loads does."""
    def nan(x):
        if x is None:
            return math.nan
        if isinstance(x, dict):
            return {k: nan(v) for k, v in x.items()}
        return [nan(v) for v in x] if isinstance(x, list) else x

    def walk(x):
        if isinstance(x, dict):
            return {k: nan(v) if k in PER_SEED_VALUES else walk(v) for k, v in x.items()}
        return [walk(v) for v in x] if isinstance(x, list) else x

    return walk(json.loads(Path(path).read_text()))


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


def _sniff(path: Path) -> str | None:
    """What a file that is not a readable torch checkpoint looks like: "empty", "truncated" (a zip archive,
    torch.save's format, without the end record every complete one has), "safetensors", "text" or None."""
    with open(path, "rb") as fh:
        head = fh.read(4096)
        if head[:2] == b"PK":  # torch's zip archive: its end-of-central-directory record is in the last 64 KiB
            size = fh.seek(0, os.SEEK_END)
            fh.seek(max(0, size - 65_557))
            return None if b"PK\x05\x06" in fh.read() else "truncated"
    if not head:
        return "empty"
    if head[:1] == b"\x80":  # legacy pickle
        return None
    if len(head) >= 10 and head[8:10] in (b'{"', b"{ ") and int.from_bytes(head[:8], "little") < 100_000_000:
        return "safetensors"  # 8-byte little-endian header length, then a JSON header
    if path.suffix == ".safetensors":
        return "safetensors"
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return "text" if text.isprintable() or all(c.isprintable() or c.isspace() for c in text) else None


def load_checkpoint(path) -> tuple[dict, dict]:
    """Returns (state_dict, meta). A bare state_dict (another tool's) gives meta = {}.

    Loads with weights_only=True: a checkpoint holding pickled code is refused, never executed.
    Empty, truncated, text and safetensors files get their own one-line error.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint {str(path)!r} does not exist; pass the path of a saved model to --checkpoint")
    try:
        kind = _sniff(path)
    except OSError as e:
        raise UserError(f"checkpoint {str(path)!r} cannot be read ({e.strerror}); pass a readable file") from None
    if kind == "empty":
        raise UserError(f"checkpoint {str(path)!r} cannot be read: it is empty (0 bytes), probably an interrupted "
                        "copy or save; pass a complete checkpoint")
    if kind == "safetensors":  # tensors only by construction: nothing in it can execute
        try:
            from safetensors.torch import load_file
        except ImportError:
            raise UserError(f"checkpoint {str(path)!r} is a safetensors file; pip install safetensors to read it") from None
        try:
            return dict(load_file(str(path), device="cpu")), {}
        except Exception as e:
            raise UserError(f"checkpoint {str(path)!r} is a safetensors file that cannot be read "
                            f"({(str(e).splitlines() or [type(e).__name__])[0][:160]}); pass a complete file") from None
    if kind == "truncated":
        raise UserError(f"checkpoint {str(path)!r} cannot be read safely: it is truncated or corrupt (a zip archive "
                        "without its end record); pass a complete checkpoint (copy or save it again)")
    if kind == "text":
        raise UserError(f"checkpoint {str(path)!r} cannot be read safely: it is a text file, not a torch "
                        "checkpoint; pass a checkpoint saved by cnr-fast or a state_dict saved with torch.save")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # corrupt, truncated, pickled code, not a torch file
        text = str(e).strip()
        first = text.splitlines()[0] if text else type(e).__name__
        if "Weights only load failed" in text or "Unsupported global" in text or "Unsupported operand" in text:
            bad = next((ln.strip() for ln in text.splitlines() if "nsupported" in ln and "GLOBAL" in ln.upper()), "")
            bad = f" ({bad[:120]})" if bad else ""
            raise UserError(
                f"checkpoint {str(path)!r} cannot be read safely: it holds pickled Python objects, not just tensors"
                f"{bad}; nothing in it was executed. Re-save only the weights "
                "(torch.save(model.state_dict(), path)) and pass that file"
            ) from None
        if "central directory" in text or "unexpected EOF" in text.lower() or isinstance(e, EOFError):
            raise UserError(
                f"checkpoint {str(path)!r} cannot be read safely: it is truncated or corrupt "
                f"({first.split('. ')[0][:120]}); "
                "pass a complete checkpoint (copy or save it again)"
            ) from None
        raise UserError(
            f"checkpoint {str(path)!r} cannot be read safely ({first[:160]}); "
            "pass a checkpoint saved by cnr-fast or a plain state_dict saved with torch.save"
        ) from None
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        return obj["state_dict"], dict(obj.get("meta") or {})
    if isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return obj, {}
    inner = [k for k, v in obj.items() if isinstance(v, dict) and v and all(isinstance(t, torch.Tensor)
                                                                            for t in v.values())] \
        if isinstance(obj, dict) else []
    hint = (f"; its weights look to be under {inner[0]!r}: save that entry alone (torch.save(ckpt[{inner[0]!r}], "
            "path)) and pass that file") if inner else ""
    raise UserError(
        f"checkpoint {str(path)!r} holds no state_dict{hint or '; pass a checkpoint saved by cnr-fast or a plain state_dict'}"
    )


def check_out_dir(out, flag: str = "--out") -> None:
    """Before any work: `out` must be a directory (or creatable as one) that this user can write."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UserError(f"{flag} {str(out)!r} is a file; pass a directory path")
    probe = out
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        raise UserError(f"{flag} {str(out)!r}: {str(probe)!r} is a file, not a folder; pass a directory path")
    if probe.exists() and not os.access(probe, os.W_OK | os.X_OK):
        raise UserError(f"{flag} {str(out)!r} is not writable (no write permission on {str(probe)!r}); "
                        "pass a directory you can write to")


@contextlib.contextmanager
def staged_dir(out, flag: str = "--out"):
    """Yield a staging folder for a run's outputs; move them into `out` only when the block succeeds.

    `out` new: the staging folder is a hidden sibling, renamed to `out` at the end (atomic). `out`
    an existing folder: a hidden folder inside it, whose files replace theirs one by one (each
    os.replace atomic). On any failure the staging folder is removed and `out` is as before: it
    does not exist, or its content is unchanged. Disk full / permission errors name `out`'s path.
    """
    out = Path(out)
    check_out_dir(out, flag)
    existed = out.is_dir()
    created: list[Path] = []  # parent folders made here, removed again on failure
    stage = None
    try:
        if existed:
            stage = Path(tempfile.mkdtemp(prefix=".staging-", dir=out))
        else:
            missing = []
            parent = out.parent
            while not parent.exists():
                missing.append(parent)
                parent = parent.parent
            for d in reversed(missing):
                d.mkdir()
                created.append(d)
            stage = Path(tempfile.mkdtemp(prefix=f".{out.name}.staging-", dir=out.parent))
        os.chmod(stage, 0o777 & ~_umask())
        yield stage
        if existed:
            _merge_into(stage, out)
            os.rmdir(stage)
        else:
            os.rename(stage, out)
        stage = None
    except BaseException as e:
        if stage is not None:
            shutil.rmtree(stage, ignore_errors=True)
        for d in reversed(created):
            with contextlib.suppress(OSError):
                d.rmdir()
        if isinstance(e, UserError) and stage is not None and str(stage) in str(e):
            raise UserError(str(e).replace(str(stage), str(out))) from None
        if isinstance(e, OSError) and e.errno is not None:
            raise write_error(out, e) from None
        raise


def _merge_into(src: Path, dst: Path) -> None:
    for entry in sorted(src.iterdir()):
        target = dst / entry.name
        if entry.is_dir() and target.is_dir():
            _merge_into(entry, target)
            entry.rmdir()
        else:
            os.replace(entry, target)


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
