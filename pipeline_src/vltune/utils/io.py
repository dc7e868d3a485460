"""File helpers shared by every stage: atomic writes, JSON, checksums.

Atomic = write to a temporary name in the same folder, then rename, so a killed job never leaves a
file that looks complete.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator


_UMASK = os.umask(0)
os.umask(_UMASK)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp creates 0600; give the file the usual permissions
    try:
        yield tmp
        # again: a writer may replace the file (safetensors writes its own temporary file, 0600)
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Atomically write ``obj`` as indented, key-sorted JSON (stable bytes for stable input)."""
    text = json.dumps(obj, indent=2, sort_keys=True, allow_nan=False) + "\n"
    write_bytes_atomic(path, text.encode())


def save_model_file(model, path: str | os.PathLike) -> None:
    """Atomically write every tensor of ``model`` (tied ones once) to a safetensors file whose bytes
    depend on the weights only, loadable with ``safetensors.torch.load_model``.

    safetensors' own ``save_model`` lists the dropped tied names in the header's metadata, a map
    the library writes in a different order in each process, so identical runs gave different
    files. Here a tied group keeps its alphabetically first name and the metadata is the fixed
    ``{"format": "pt"}``; ``load_model`` re-ties the others from the model itself.
    """
    from safetensors.torch import save_file

    groups: dict[tuple, list[str]] = {}
    state = model.state_dict()
    for name, t in state.items():
        key = (t.device, t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), tuple(t.stride()), t.dtype)
        groups.setdefault(key, []).append(name)
    kept = {min(names): state[min(names)].detach().contiguous() for names in groups.values()}
    with atomic_path(path) as tmp:
        save_file(dict(sorted(kept.items())), str(tmp), metadata={"format": "pt"})


def read_json(path: str | os.PathLike) -> Any:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: file not found")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def config_hash(obj: Any) -> str:
    """Short stable hash of a JSON-serialisable config (recorded in every metrics.json)."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]
