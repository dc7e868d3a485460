"""Local GPU assignment: Snakemake counts `gpu` resources but never says *which* GPU a job gets
(snakemake#281), so concurrent GPU jobs on one machine would all land on GPU 0.

Each GPU has a lock file; a job takes ``flock`` locks on N free ones, exports
``CUDA_VISIBLE_DEVICES`` for itself and its child processes, and holds the locks until it exits.
The kernel releases a killed job's locks, so nothing is ever left claimed. Under a scheduler that
already set ``CUDA_VISIBLE_DEVICES`` (Slurm with GRES), nothing is claimed.
"""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import subprocess
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

from .errors import UserError

log = logging.getLogger(__name__)

COUNT_ENV = "VLTUNE_LOCAL_GPUS"  # number of GPUs of this machine (default: nvidia-smi -L)
LOCK_DIR_ENV = "VLTUNE_GPU_LOCK_DIR"  # where the per-GPU lock files live


def local_gpu_count() -> int:
    """GPUs on this machine: ``$VLTUNE_LOCAL_GPUS`` if set, else the lines of ``nvidia-smi -L``
    (0 without the NVIDIA driver). Counted without torch, whose device count is cached for the
    process before ``CUDA_VISIBLE_DEVICES`` is set."""
    if os.environ.get(COUNT_ENV):
        return int(os.environ[COUNT_ENV])
    if shutil.which("nvidia-smi") is None:
        return 0
    out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True)
    return sum(line.startswith("GPU ") for line in out.stdout.splitlines()) if out.returncode == 0 else 0


def lock_dir() -> Path:
    return Path(os.environ.get(LOCK_DIR_ENV) or Path(tempfile.gettempdir()) / "vltune-gpus")


def _try_claim(n: int, total: int, folder: Path) -> list[tuple[int, int]]:
    """Non-blocking: locks on ``n`` free GPUs as (index, fd) pairs, or [] (nothing held) if fewer
    are free. Taking all or nothing means two waiting jobs never hold half of what each needs."""
    held = []
    for i in range(total):
        fd = os.open(folder / f"gpu{i}.lock", os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        held.append((i, fd))
        if len(held) == n:
            return held
    for _, fd in held:
        os.close(fd)
    return []


@contextmanager
def claim_gpus(n: int, poll_s: float = 2.0, timeout_s: float | None = None):
    """Give this process ``n`` GPUs of its own for the ``with`` block (``CUDA_VISIBLE_DEVICES``);
    waits while fewer are free. Yields the claimed indices, or None when nothing was claimed
    (``n`` is 0, the scheduler assigned devices already, or the machine has no GPU)."""
    total = local_gpu_count() if n > 0 and "CUDA_VISIBLE_DEVICES" not in os.environ else 0
    if total == 0:
        yield None
        return
    if n > total:
        raise UserError(f"the job asks for {n} GPUs but this machine has {total}")
    folder = lock_dir()
    folder.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    while not (held := _try_claim(n, total, folder)):
        if timeout_s is not None and time.monotonic() - start > timeout_s:
            raise TimeoutError(f"no {n} free GPUs of {total} within {timeout_s} s (locks in {folder})")
        if time.monotonic() - start < poll_s:
            log.info("waiting for %d free GPU(s) of %d (limit concurrent GPU jobs with --resources gpu=%d)",
                     n, total, total)
        time.sleep(poll_s)
    ids = [i for i, _ in held]
    os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(map(str, ids))
    log.info("GPUs %s claimed (CUDA_VISIBLE_DEVICES)", os.environ["CUDA_VISIBLE_DEVICES"])
    try:
        yield ids
    finally:
        del os.environ["CUDA_VISIBLE_DEVICES"]
        for _, fd in held:
            os.close(fd)
