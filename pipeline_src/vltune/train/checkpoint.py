"""Resume checkpoints: safetensors for tensors, JSON for the rest (never pickle).

A checkpoint is a folder ``<resume_dir>/step-<N>/`` with
``model.safetensors`` (trainable parameters), ``optimizer.safetensors`` (optimizer tensors),
``state.json`` (step, optimizer param groups, scheduler state, config). It is written under a
temporary name and renamed, and ``<resume_dir>/latest`` names the newest complete one, so a job
killed mid-write resumes from the previous checkpoint.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import save_file

from ..errors import UserError
from ..pet.base import trainable_state_dict
from ..utils.io import read_json, write_bytes_atomic
from ..utils.tensor_files import check_shapes, read_safetensors, record_digests


def _optimizer_to_flat(opt_state: dict) -> tuple[dict[str, torch.Tensor], dict]:
    tensors, scalars = {}, {}
    for idx, st in opt_state["state"].items():
        for k, v in st.items():
            if torch.is_tensor(v):
                tensors[f"{idx}.{k}"] = v.detach().contiguous().cpu()
            else:
                scalars[f"{idx}.{k}"] = v
    return tensors, {"param_groups": opt_state["param_groups"], "scalars": scalars}


def _optimizer_from_flat(tensors: dict[str, torch.Tensor], meta: dict) -> dict:
    state: dict[int, dict] = {}
    for key, v in list(tensors.items()) + list(meta["scalars"].items()):
        idx, k = key.split(".", 1)
        state.setdefault(int(idx), {})[k] = v
    return {"state": state, "param_groups": meta["param_groups"]}


def save_checkpoint(resume_dir: str | Path, step: int, model, optimizer, scheduler, extra: dict) -> Path:
    resume_dir = Path(resume_dir)
    final = resume_dir / f"step-{step:08d}"
    tmp = resume_dir / f".step-{step:08d}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file(trainable_state_dict(model), str(tmp / "model.safetensors"))
    opt_tensors, opt_meta = _optimizer_to_flat(optimizer.state_dict())
    save_file(opt_tensors, str(tmp / "optimizer.safetensors"))
    state = {"step": step, "optimizer": opt_meta, "scheduler": scheduler.state_dict(), "extra": extra}
    (tmp / "state.json").write_text(json.dumps(state, default=_json_default))
    record_digests(tmp)  # a resume reads these tensors back: a flipped bit must stop it, not train on
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    write_bytes_atomic(resume_dir / "latest", final.name.encode())
    # Keep only the newest complete checkpoint: resume state is not a result.
    for old in resume_dir.glob("step-*"):
        if old != final:
            shutil.rmtree(old, ignore_errors=True)
    return final


def clear_checkpoints(resume_dir: str | Path, recursive: bool = False) -> None:
    """Remove every checkpoint of a finished run (and the folder if it is then empty);
    ``recursive``: those of the folders inside it too (a job that trains one run per sub-folder)."""
    resume_dir = Path(resume_dir)
    if recursive and resume_dir.is_dir():
        for sub in sorted((p for p in resume_dir.iterdir() if p.is_dir() and not p.name.startswith(("step-", ".step-"))),
                          reverse=True):
            clear_checkpoints(sub, recursive=True)
    for path in [*resume_dir.glob("step-*"), *resume_dir.glob(".step-*.tmp"), resume_dir / "latest"]:
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        elif path.exists():
            path.unlink()
    if resume_dir.is_dir() and not any(resume_dir.iterdir()):
        resume_dir.rmdir()
    if not resume_dir.exists() and not resume_dir.is_absolute():
        # the run's folder chain under the working directory (resume/<rule>/<wildcards>/...):
        # parents left empty go too, so a finished workflow leaves no empty tree behind
        for parent in resume_dir.parents:
            if parent == Path(".") or not parent.is_dir() or any(parent.iterdir()):
                break
            parent.rmdir()


def _json_default(o):
    if torch.is_tensor(o):
        return o.item() if o.numel() == 1 else o.tolist()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def latest_extra(resume_dir: str | Path) -> dict | None:
    """The ``extra`` record of the newest checkpoint (what run wrote it), no tensor read; None when
    there is nothing to resume from."""
    resume_dir = Path(resume_dir)
    pointer = resume_dir / "latest"
    if not pointer.exists():
        return None
    try:
        return read_json(resume_dir / pointer.read_text().strip() / "state.json").get("extra", {})
    except (FileNotFoundError, ValueError, OSError) as e:
        raise UserError(f"resume checkpoint in {resume_dir} is unreadable ({e}); delete {resume_dir} to start over") from None


def load_latest(resume_dir: str | Path, model, optimizer, scheduler) -> tuple[int, dict]:
    """Restore the newest checkpoint into ``model``/``optimizer``/``scheduler``; return (step, extra).

    Returns (0, {}) when there is nothing to resume from.
    """
    resume_dir = Path(resume_dir)
    pointer = resume_dir / "latest"
    if not pointer.exists():
        return 0, {}
    ckpt = resume_dir / pointer.read_text().strip()
    start_over = f"delete {resume_dir} to start over"
    try:
        state = read_json(ckpt / "state.json")
    except (FileNotFoundError, ValueError, OSError) as e:
        raise UserError(f"resume checkpoint {ckpt} is unreadable ({e}); {start_over}") from None
    weights = read_safetensors(ckpt / "model.safetensors", hint=start_over)
    opt_tensors = read_safetensors(ckpt / "optimizer.safetensors", hint=start_over)
    missing = set(trainable_state_dict(model)) - set(weights)
    if missing:
        raise UserError(
            f"resume checkpoint {ckpt} does not match the model (missing {sorted(missing)[:3]}…); "
            f"delete {resume_dir} to start over"
        )
    check_shapes(ckpt / "model.safetensors", model.state_dict(), weights,
                 hint=f"the resume checkpoint is of another model: {start_over}")
    model.load_state_dict(weights, strict=False)
    optimizer.load_state_dict(_optimizer_from_flat(opt_tensors, state["optimizer"]))
    scheduler.load_state_dict(state["scheduler"])
    return int(state["step"]), state.get("extra", {})
