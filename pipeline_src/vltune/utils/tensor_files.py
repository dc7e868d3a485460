"""Tensor files (``.safetensors``) read with one-line errors, and the digests that guard them.

Reading: :func:`read_safetensors` and :func:`safetensors_specs` open a ``.safetensors`` file with
one-line errors that name it (missing, truncated, a damaged header, a ``torch.save`` pickle under
a ``.safetensors`` name: vltune never unpickles), and :func:`check_shapes` compares a file's
tensors with the shapes a model expects before anything is copied into it.

Digests: every command that writes tensor files records their sizes and sha256 when it has
finished (:func:`record_digests`): ``digests.json`` in an output folder (a backbone, a
checkpoint, a merged model; a resume checkpoint has its own), ``<file>.digests.json`` beside an
output file (a merge, Gram matrices). Every read through this module compares a file with its
record first (:func:`check_digest`), so a flipped bit inside a tensor's bytes is named, not loaded.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Mapping

from ..errors import ArtifactError

# The first bytes of what ``torch.save`` writes: a zip archive (its default format since 1.6) or a
# bare pickle (protocol 2+ starts with 0x80, then the protocol number).
_ZIP_MAGIC = b"PK\x03\x04"
_PICKLE_MAGIC = tuple(bytes([0x80, p]) for p in range(2, 6))


# What the errors below suggest unless the caller knows better (a resume folder to delete, a store).
REBUILD = "re-run the rule that wrote it"


def unreadable_safetensors(path: Path, error: Exception, hint: str = REBUILD) -> ArtifactError:
    """The one-line error for a ``.safetensors`` file that safetensors refused."""
    with open(path, "rb") as f:
        head = f.read(4)
    if head.startswith(_ZIP_MAGIC) or head.startswith(_PICKLE_MAGIC):
        kind = "zip archive" if head.startswith(_ZIP_MAGIC) else "pickle"
        return ArtifactError(f"{path}: a torch.save file ({kind}), not safetensors (pickles are never loaded); {hint}")
    size = path.stat().st_size
    detail = str(error).splitlines()[0] if str(error) else type(error).__name__
    return ArtifactError(f"{path}: not a readable safetensors file ({detail}; {size} bytes), truncated or "
                         f"corrupted; {hint}")


def _require_file(path: Path, hint: str) -> None:
    if not path.is_file():
        raise ArtifactError(f"{path}: file not found; {hint}")
    check_digest(path, hint)


# --- recorded digests of tensor files --------------------------------------------------------------

DIGESTS = "digests.json"
_PARENTS_SEARCHED = 3  # a file's record sits in its output folder: <out>/<sub>/<sub>/file at most


def _record_files(root: Path, files: Iterable[Path], record: Path) -> None:
    from .io import sha256_file, write_json

    write_json(record, {"format_version": 1, "files": {
        str(f.relative_to(root)): {"bytes": f.stat().st_size, "sha256": sha256_file(f)} for f in sorted(files)}})


def record_digests(path: str | os.PathLike) -> Path | None:
    """Record every ``.safetensors`` of the folder ``path`` in ``<path>/digests.json`` (or the file
    ``path`` in ``<path>.digests.json``); None when there is no tensor file to record."""
    path = Path(path)
    if path.is_dir():
        files = [f for f in path.rglob("*.safetensors") if f.is_file() and not f.name.startswith(".")]
        if not files:
            return None
        _record_files(path, files, path / DIGESTS)
        return path / DIGESTS
    if path.is_file() and path.suffix == ".safetensors":
        record = path.with_name(path.name + ".digests.json")
        _record_files(path.parent, [path], record)
        return record
    return None


def forget_output_digests(out: str | os.PathLike) -> None:
    """Before a command: a record beside its output file describes the previous output, not the next."""
    record = Path(str(out) + ".digests.json")
    if record.is_file():
        record.unlink()


def _record_of(path: Path) -> tuple[Path, dict] | None:
    from .io import read_json

    candidates = [(path.with_name(path.name + ".digests.json"), path.name)]
    candidates += [(parent / DIGESTS, str(path.relative_to(parent)))
                   for parent in list(path.parents)[:_PARENTS_SEARCHED]]
    for record, name in candidates:
        if record.is_file():
            try:
                entry = read_json(record)["files"].get(name)
            except (ValueError, KeyError, TypeError, AttributeError) as e:
                raise ArtifactError(f"{record}: not a digest record ({e}); {REBUILD}") from None
            if entry is not None:
                return record, entry
    return None


def check_digest(path: str | os.PathLike, hint: str = REBUILD) -> None:
    """Compare a tensor file with the size and sha256 its output recorded (nothing to compare when
    there is no record: a file written by hand or by another tool)."""
    from .io import sha256_file

    path = Path(path)
    found = _record_of(path)
    if found is None:
        return
    record, entry = found
    size = path.stat().st_size
    if size != entry["bytes"]:
        raise ArtifactError(f"{path}: {size} bytes, {record} says {entry['bytes']} (truncated or replaced); {hint}")
    digest = sha256_file(path)
    if digest != entry["sha256"]:
        raise ArtifactError(f"{path}: sha256 {digest[:12]}…, {record} says {entry['sha256'][:12]}… "
                            f"(corrupted or replaced); {hint}")


def read_safetensors(path: str | os.PathLike, hint: str = REBUILD) -> dict:
    """Every tensor of a ``.safetensors`` file (``safetensors.torch.load_file``), or ArtifactError
    naming the file and ending in ``hint`` (how to get a good one)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    _require_file(path, hint)
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise unreadable_safetensors(path, e, hint) from None


def safetensors_specs(path: str | os.PathLike, read: bool = False,
                      hint: str = REBUILD) -> dict[str, tuple[str, tuple[int, ...]]]:
    """{name: (dtype code, shape)} from a ``.safetensors`` header; with ``read``, every tensor's
    bytes are also read (one tensor at a time). ArtifactError naming the file if it fails."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    _require_file(path, hint)
    try:
        with safe_open(str(path), framework="pt") as f:
            specs = {}
            for name in f.keys():
                sl = f.get_slice(name)
                specs[name] = (sl.get_dtype(), tuple(int(n) for n in sl.get_shape()))
                if read:
                    f.get_tensor(name)
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise unreadable_safetensors(path, e, hint) from None
    return specs


def check_shapes(path: str | os.PathLike, expected: Mapping, found: Mapping,
                 hint: str = "the file was written for another architecture or configuration") -> None:
    """Raise ArtifactError naming ``path`` and the first tensor whose shape in ``found`` (the file's
    tensors, or their shapes) differs from ``expected`` (the model's); names in one only are left
    to the caller's missing/unexpected check."""
    for name in sorted(set(expected) & set(found)):
        want, got = _shape(expected[name]), _shape(found[name])
        if want != got:
            raise ArtifactError(f"{path}: tensor {name!r} has shape {list(got)}, the model expects {list(want)}; {hint}")


def check_file_shapes(path: str | os.PathLike, model) -> None:
    """Compare a ``.safetensors`` file's header with ``model``'s state dict, reading no tensor."""
    specs = safetensors_specs(path)
    check_shapes(path, model.state_dict(), {k: shape for k, (_, shape) in specs.items()})


def _shape(x) -> tuple[int, ...]:
    """The shape of a tensor, or a shape given as a sequence of ints."""
    return tuple(int(n) for n in (x.shape if hasattr(x, "shape") else x))
