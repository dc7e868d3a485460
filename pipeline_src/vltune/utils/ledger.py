"""The run ledger: one JSON record per job (what ran, with which resolved parameters, on which code,
packages and device, how long it took and how much memory it peaked at), aggregated by the report.

Commands add their resolved settings with :func:`note`; :func:`recording` writes the record when
the command succeeds. Only rank 0 of a multi-process run writes it. Nothing from the environment
is recorded beyond the device and scheduler ids listed here, so credentials never reach a ledger.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import socket
import subprocess
import time
from contextlib import contextmanager
from dataclasses import asdict, is_dataclass
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

from .io import write_json

COMMIT_ENV = "VLTUNE_GIT_COMMIT"  # set by the workflow (common.smk) from its own checkout
PACKAGES = ("vltune", "torch", "transformers", "tokenizers", "accelerate", "peft", "safetensors", "numpy",
            "pyarrow", "pandas", "snakemake", "snakemake-executor-plugin-slurm")
_NOTES: dict = {}


def note(key: str, value) -> None:
    """Record a resolved setting (a dataclass or JSON-able value) in this job's ledger."""
    _NOTES[key] = asdict(value) if is_dataclass(value) else value


def git_commit(path: str | Path | None = None) -> str | None:
    """``$VLTUNE_GIT_COMMIT`` if set, else ``git rev-parse HEAD`` of the checkout holding ``path``
    (+ ``-dirty`` with uncommitted changes); None outside a git checkout."""
    if os.environ.get(COMMIT_ENV):
        return os.environ[COMMIT_ENV]
    cwd = Path(path or Path(__file__).parent)
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10)
        if head.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return None
    return head.stdout.strip() + ("-dirty" if dirty else "")


def package_versions() -> dict[str, str | None]:
    out = {}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def device_info() -> dict:
    import torch

    info = {"cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
            "torch_threads": torch.get_num_threads(), "cpus": os.cpu_count()}
    if torch.cuda.is_available():
        info["device"] = ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))
        info["gpus"] = torch.cuda.device_count()
    else:
        info["device"] = f"cpu ({platform.processor() or platform.machine()})"
        info["gpus"] = 0
    return info


def peak_memory() -> dict:
    """Peak resident memory of this process (MiB; Linux reports KiB) and, when CUDA was used, the
    peak GPU memory torch allocated on each of its devices."""
    import torch

    out = {"peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        out["peak_gpu_mb"] = round(max(torch.cuda.max_memory_allocated(i)
                                       for i in range(torch.cuda.device_count())) / 2**20, 1)
    return out


def _params(args) -> dict:
    """The command's arguments, with the ``--params`` JSON parsed (already validated by then)."""
    params = {k: v for k, v in vars(args).items() if k not in ("func", "ledger")}
    if isinstance(params.get("params"), str):
        params["params"] = json.loads(params["params"])
    return params


@contextmanager
def recording(path: str | Path | None, args, rank: int = 0, world_size: int = 1):
    """Run the ``with`` block and, if it succeeds and ``path`` is given, write its ledger record."""
    _NOTES.clear()
    start, t0 = datetime.now(timezone.utc), time.perf_counter()
    yield
    if path is None or rank != 0:
        return
    record = {
        "command": args.command, "params": _params(args), "resolved": dict(_NOTES),
        "git_commit": git_commit(), "packages": package_versions(), "python": platform.python_version(),
        "host": socket.gethostname(), "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
        "processes": world_size, **device_info(), **peak_memory(),
        "started": start.isoformat(timespec="seconds"), "wall_s": round(time.perf_counter() - t0, 3),
    }
    write_json(path, record)
