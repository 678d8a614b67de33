"""Checkpoints that let a killed run continue exactly where it stopped.

``<run>/checkpoints/step_000010/`` holds ``state.pt`` (model, optimizer and scheduler state dicts,
RNG states of python / numpy / torch, the step, and learner extras such as the data position, the
moving-average baseline, the adaptive KL coefficient and the critic) and ``model/`` (the policy
with ``save_pretrained`` plus its tokenizer, loadable with ``model.name_or_path``). A checkpoint is
written into a temporary directory and renamed into place, so a crash mid-write never leaves a
half checkpoint that ``--resume`` would pick. A save that fails (disk full, a model that cannot be
serialised) removes its temporary directory and leaves the previous checkpoints as they were; a
temporary directory left by a killed process is removed by the next save.
"""

from __future__ import annotations

import errno
import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

_PREFIX = "step_"


def rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class CheckpointError(ValueError):
    """A checkpoint or model directory could not be written. A ``ValueError`` so that ``rlvr``
    commands report it as one line with the advice it carries, not as a traceback."""


def save_checkpoint(run_dir: str | Path, step: int, *, model, optimizer=None, scheduler=None,
                    tokenizer=None, extra: dict[str, Any] | None = None,
                    keep_checkpoints: int = 0) -> Path:
    """Write ``checkpoints/step_<step>`` atomically, then delete all but the newest
    ``keep_checkpoints`` checkpoints (``run.keep_checkpoints``; 0 = keep all). The one just written
    is always kept; ``final/`` and anything else outside ``checkpoints/step_*`` is never touched."""
    if keep_checkpoints < 0:
        raise ValueError(f"run.keep_checkpoints is {keep_checkpoints}; give 0 (keep every "
                         "checkpoint) or how many of the newest to keep")
    root = Path(run_dir) / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    _remove_abandoned(root)
    final = root / f"{_PREFIX}{step:06d}"
    tmp = root / f".tmp-{final.name}-{os.getpid()}"

    def write(into: Path) -> None:
        state = {
            "step": step,
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict() if optimizer is not None else None,
            "scheduler": scheduler.state_dict() if scheduler is not None else None,
            "rng": rng_state(),
            "extra": extra or {},
        }
        torch.save(state, into / "state.pt")
        if hasattr(model, "save_pretrained"):
            model.save_pretrained(into / "model")
            if tokenizer is not None:
                tokenizer.save_pretrained(into / "model")

    _write_atomically(write, tmp, final, what=f"checkpoint {final}")
    if keep_checkpoints:
        older = [p for p in list_checkpoints(run_dir) if p != final]
        for old in older[:max(0, len(older) - (keep_checkpoints - 1))]:
            _remove(old)
    return final


def save_model_dir(model, tokenizer, path: str | Path) -> Path:
    """``save_pretrained`` the model and tokenizer to ``path`` (e.g. a run's ``final/``) atomically:
    on failure ``path`` is as it was before, never half written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_abandoned(path.parent)

    def write(into: Path) -> None:
        model.save_pretrained(into)
        if tokenizer is not None:
            tokenizer.save_pretrained(into)

    _write_atomically(write, path.parent / f".tmp-{path.name}-{os.getpid()}", path,
                      what=f"model directory {path}")
    return path


def _write_atomically(write, tmp: Path, final: Path, *, what: str) -> None:
    """Run ``write(tmp)`` and rename ``tmp`` to ``final``, replacing any earlier ``final`` only once
    the new one is complete. On any failure ``tmp`` is removed and ``final`` is left untouched."""
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir()
        write(tmp)
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if not isinstance(e, Exception):  # KeyboardInterrupt, SystemExit: cleaned up, then let go
            raise
        raise CheckpointError(f"saving {what} failed, and nothing was written there (the "
                              f"previous checkpoints are intact): {type(e).__name__}: {e}. "
                              f"{_advice(e, final)}") from e
    old = final.with_name(f".old-{final.name}-{os.getpid()}")
    if final.exists():  # re-saving the same step (e.g. the final save after a periodic one)
        os.replace(final, old)  # moved aside, not deleted, until the new one is in place
    try:
        os.replace(tmp, final)  # atomic on one filesystem
    except BaseException:
        if old.exists():
            os.replace(old, final)
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(old, ignore_errors=True)


def _advice(error: BaseException, final: Path) -> str:
    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
        return (f"The disk holding {final.parent} is full: free space there, keep fewer "
                f"checkpoints (run.keep_checkpoints N) or save less often (run.save_every), or "
                f"write the run to a bigger disk (--output-dir).")
    if "serializ" in str(error):
        return ("The model cannot be serialised as loaded (e.g. one still quantised); load it "
                "through rlvr.core.models.load_policy, which turns a .gguf file into a plain model.")
    return f"Check that {final.parent} is writable and has room, then run again (--resume continues)."


def _remove(path: Path) -> None:
    """Delete a directory so that no reader ever sees it half deleted: renamed aside first."""
    doomed = path.with_name(f".old-{path.name}-{os.getpid()}")
    try:
        os.replace(path, doomed)
    except OSError:
        return
    shutil.rmtree(doomed, ignore_errors=True)


def _remove_abandoned(root: Path) -> None:
    """Remove ``.tmp-*`` / ``.old-*`` directories whose writer (the pid in the name) is gone: the
    leftovers of a process killed mid-save, up to a whole model's size each."""
    for p in root.iterdir():
        if not (p.is_dir() and p.name.startswith((".tmp-", ".old-"))):
            continue
        pid = p.name.rsplit("-", 1)[-1]
        if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
            shutil.rmtree(p, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    """Complete checkpoints, oldest first (temporary directories are ignored)."""
    root = Path(run_dir) / "checkpoints"
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir()
             if p.is_dir() and p.name.startswith(_PREFIX) and (p / "state.pt").exists()]
    return sorted(found, key=lambda p: int(p.name[len(_PREFIX):]))


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    found = list_checkpoints(run_dir)
    return found[-1] if found else None


def load_checkpoint(path: str | Path, *, model, optimizer=None, scheduler=None,
                    restore_rng: bool = True) -> dict[str, Any]:
    """Load states into the given objects; return ``{"step": ..., "extra": {...}}``."""
    path = Path(path)
    if path.is_dir():
        path = path / "state.pt"
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint state at {path}")
    state = torch.load(path, map_location="cpu", weights_only=False)
    if state.get("format") == "dcp":
        raise ValueError(f"{path.parent} is a sharded (run.parallel fsdp) checkpoint; load it with "
                         "rlvr.learners.sharding.load_checkpoint (rlvr train --resume does)")
    model.load_state_dict(state["model"])
    if optimizer is not None and state.get("optimizer") is not None:
        optimizer.load_state_dict(state["optimizer"])
    if scheduler is not None and state.get("scheduler") is not None:
        scheduler.load_state_dict(state["scheduler"])
    if restore_rng:
        set_rng_state(state["rng"])
    return {"step": int(state["step"]), "extra": state.get("extra", {})}
