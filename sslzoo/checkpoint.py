"""Atomic, durable checkpoints that resume exactly, loaded with ``weights_only=True``.

A checkpoint is serialised once, written to a hidden temporary file in the same folder,
flushed and fsynced, renamed over its final name and the folder entry fsynced, so a kill
at any moment leaves either the old file or the new one, both complete. With ``keep``
step checkpoints (``step-000500.pt``) the older ones are deleted only after the new one
and ``last.pt`` are safely on disk.

Testing hook: when the environment variable ``SSLZOO_CHECKPOINT_PAUSE`` holds a number of
seconds, :func:`save_checkpoint` sleeps that long between writing each temporary file and
renaming it, which lets a test kill a process inside a checkpoint write (other atomic
writes, such as ``config.json`` and the trimmed ``metrics.jsonl`` of a resumed run, do
not wait).
"""
from __future__ import annotations

import io
import os
import random
import re
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sslzoo.errors import CheckpointError, ConfigError

PAUSE_ENV = "SSLZOO_CHECKPOINT_PAUSE"
LAST = "last.pt"
_STEP_RE = re.compile(r"^step-(\d+)\.pt$")


def serialize(obj: Any) -> bytes:
    """``torch.save`` into memory (so one payload can be written to several files)."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def fsync_dir(folder: str | Path) -> None:
    """Make a rename or deletion in ``folder`` durable (a no-op where folders can't be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_atomic(data: bytes, path: str | Path, *, _checkpoint: bool = False) -> Path:
    """Write ``data`` to ``path`` through a fsynced temporary file, a rename and a folder fsync.

    A reader never sees a half-written file, and an interrupted write leaves the previous
    file intact (plus, at worst, a ``.NAME.*.tmp`` file that :func:`remove_temporaries`
    deletes on the next start).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes the file private; a result is not
        pause = os.environ.get(PAUSE_ENV) if _checkpoint else None
        if pause:  # checkpoint files only: other writes (config, metrics) never wait
            time.sleep(float(pause))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
    return path


def write_text_atomic(path: str | Path, text: str) -> Path:
    """:func:`write_atomic` for text: result files such as ``eval.json`` are never seen
    half-written."""
    return write_atomic(text.encode(), path)


def save_atomic(obj: Any, path: str | Path) -> Path:
    """``torch.save`` ``obj`` to ``path`` atomically and durably (see :func:`write_atomic`)."""
    return write_atomic(serialize(obj), path)


def step_name(step: int) -> str:
    """``step-000500.pt``."""
    return f"step-{step:06d}.pt"


def step_checkpoints(folder: str | Path) -> list[Path]:
    """The ``step-*.pt`` files in ``folder``, oldest step first."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _STEP_RE.match(p.name))]
    return [p for _, p in sorted(found)]


def save_checkpoint(obj: Any, folder: str | Path, *, step: int | None = None,
                    keep: int = 0) -> list[Path]:
    """Write ``last.pt`` and, when ``step`` is given and ``keep > 0``, ``step-NNNNNN.pt``.

    Order: the step file, then ``last.pt``, each durable before the next begins; only then
    are step files beyond the ``keep`` most recent deleted. A kill at any point loses no
    checkpoint that was complete. Returns the paths written.
    """
    folder = Path(folder)
    data = serialize(obj)
    written = []
    if step is not None and keep > 0:
        written.append(write_atomic(data, folder / step_name(step), _checkpoint=True))
    written.append(write_atomic(data, folder / LAST, _checkpoint=True))
    if step is not None and keep > 0:
        prune_step_checkpoints(folder, keep)
    return written


def prune_step_checkpoints(folder: str | Path, keep: int) -> list[Path]:
    """Delete all but the ``keep`` most recent step checkpoints; returns the deleted paths."""
    old = step_checkpoints(folder)[:-keep] if keep > 0 else []
    for p in old:
        p.unlink(missing_ok=True)
    if old:
        fsync_dir(folder)
    return old


def remove_temporaries(folder: str | Path) -> list[Path]:
    """Delete the ``.NAME.*.tmp`` files a killed write left in ``folder``."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    stale = [p for p in folder.glob(".*.tmp") if p.is_file()]
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


def check_room(folder: str | Path, bytes_per_checkpoint: int, count: int = 2) -> None:
    """Fail early unless ``folder`` is writable and has room for ``count`` checkpoints.

    Raises:
        ConfigError: naming ``--out``, the folder and the space found.
    """
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise ConfigError(f"--out {folder} is not writable ({exc.strerror or exc}); choose a "
                          "folder you can write to with --out") from None
    free = shutil.disk_usage(folder).free
    needed = bytes_per_checkpoint * count
    if free < needed:
        raise ConfigError(f"--out {folder} has {free / 2 ** 20:.1f} MiB free, but {count} "
                          f"checkpoints need about {needed / 2 ** 20:.1f} MiB; free some space "
                          "or choose another --out")


def load(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint with ``weights_only=True`` (no arbitrary code is run)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise CheckpointError(f"cannot read checkpoint {path} ({type(exc).__name__}: {first}); "
                              "the file may be truncated or not an sslzoo checkpoint") from None
    if not isinstance(ckpt, dict) or "model" not in ckpt:
        raise CheckpointError(f"{path} is not an sslzoo checkpoint (no 'model' entry)")
    return ckpt


def rng_state() -> dict[str, Any]:
    """Every random number generator state training may depend on: torch CPU and CUDA,
    Python's ``random`` and NumPy's global generator (as tensors and plain values, so the
    checkpoint loads with ``weights_only=True``)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": [version, torch.tensor(internal, dtype=torch.int64), gauss_next],
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss),
                  float(gauss)],
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` returned (older checkpoints hold only torch's)."""
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    if "python" in state:
        version, internal, gauss_next = state["python"]
        random.setstate((version, tuple(internal.tolist()), gauss_next))
    if "numpy" in state:
        kind, keys, pos, has_gauss, gauss = state["numpy"]
        np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
