"""Lazy tensor sources and a streaming safetensors writer: memory stays near one tensor per input.

A source lists its tensor names and their (dtype, shape) from the file header and loads one tensor
when asked (``safe_open`` memory-maps the file). The writer lays out the output's header from the
(dtype, shape) of every name before any tensor exists, then appends each tensor's bytes as it is
merged, so the merged model is never held in memory either. Views re-name a source's tensors:
``ExpertView`` shows one expert of a modality-specific model under the modality-agnostic names.
"""

from __future__ import annotations

import json
import re
import struct
import sys
from pathlib import Path
from typing import Iterable, Mapping

import torch

from ..utils.io import atomic_path
from ..utils.tensor_files import check_digest
from .base import MergeError

# safetensors' dtype codes
DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
          "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
          "BOOL": torch.bool}
CODES = {v: k for k, v in DTYPES.items()}

Spec = tuple[torch.dtype, tuple[int, ...]]


class Source:
    """Named tensors, loaded one at a time. ``name`` appears in every error about them."""

    name: str = "<memory>"

    def keys(self) -> list[str]:
        raise NotImplementedError

    def spec(self, key: str) -> Spec:
        raise NotImplementedError

    def get(self, key: str) -> torch.Tensor:
        raise NotImplementedError

    def __contains__(self, key: str) -> bool:
        return key in set(self.keys())


class DictSource(Source):
    """An in-memory state dict (the eager path and tests)."""

    def __init__(self, tensors: Mapping[str, torch.Tensor], name: str = "<memory>"):
        self.tensors, self.name = dict(tensors), name

    def keys(self) -> list[str]:
        return sorted(self.tensors)

    def spec(self, key: str) -> Spec:
        t = self.tensors[key]
        return t.dtype, tuple(t.shape)

    def get(self, key: str) -> torch.Tensor:
        return self.tensors[key]

    def __contains__(self, key: str) -> bool:
        return key in self.tensors


class SafetensorsSource(Source):
    """A safetensors file, opened once and read lazily (memory-mapped), one tensor per ``get``."""

    def __init__(self, path: str | Path):
        from safetensors import safe_open

        self.path = Path(path)
        self.name = str(path)
        if not self.path.is_file():
            raise MergeError(f"{self.path}: file not found")
        check_digest(self.path)
        try:
            self._f = safe_open(str(self.path), framework="pt")
            self._keys = sorted(self._f.keys())
            self._specs = {}
            for k in self._keys:
                sl = self._f.get_slice(k)
                self._specs[k] = (DTYPES[sl.get_dtype()], tuple(sl.get_shape()))
        except MergeError:
            raise
        except Exception as e:  # safetensors raises its own error types for a bad header
            from ..utils.tensor_files import unreadable_safetensors

            raise MergeError(str(unreadable_safetensors(self.path, e))) from None
        self.metadata = self._f.metadata() or {}

    def keys(self) -> list[str]:
        return list(self._keys)

    def spec(self, key: str) -> Spec:
        return self._specs[key]

    def get(self, key: str) -> torch.Tensor:
        return self._f.get_tensor(key)

    def __contains__(self, key: str) -> bool:
        return key in self._specs


def open_source(obj) -> Source:
    if isinstance(obj, Source):
        return obj
    if isinstance(obj, Mapping):
        return DictSource(obj)
    return SafetensorsSource(obj)


# --- modality experts: blocks.{i}.{attn|mlp|norm1|norm2}.{v|l|vl}.<rest> ------------------------

EXPERTS = ("v", "l", "vl")  # the order merges see them in: interpolation's ratio weighs v against l
_EXPERT_KEY = re.compile(r"^(blocks\.(\d+)\.(?:attn|mlp|norm1|norm2))\.(v|l|vl)\.(.+)$")


def split_expert_key(key: str) -> tuple[str, str, int] | None:
    """``blocks.3.attn.v.qkv.weight`` → (``blocks.3.attn.qkv.weight``, ``v``, 3); None for shared names."""
    m = _EXPERT_KEY.match(key)
    if m is None:
        return None
    return f"{m.group(1)}.{m.group(4)}", m.group(3), int(m.group(2))


class ExpertView(Source):
    """One expert of a modality-specific source under the modality-agnostic (shared) names."""

    def __init__(self, source: Source, expert: str):
        self.source, self.expert = source, expert
        self.name = f"{source.name} (expert {expert})"
        self._map = {}
        for k in source.keys():
            parsed = split_expert_key(k)
            if parsed and parsed[1] == expert:
                self._map[parsed[0]] = k

    def keys(self) -> list[str]:
        return sorted(self._map)

    def spec(self, key: str) -> Spec:
        return self.source.spec(self._map[key])

    def get(self, key: str) -> torch.Tensor:
        return self.source.get(self._map[key])

    def __contains__(self, key: str) -> bool:
        return key in self._map

    def source_key(self, key: str) -> str:
        return self._map[key]


# --- writing ---------------------------------------------------------------------------------------

class StreamWriter:
    """Write a safetensors file whose header is known up front, one tensor at a time, atomically.

    ``specs`` gives every name's (dtype, shape); tensors must then be written in sorted-name order.
    The file appears under its final name only once every tensor was written.
    """

    def __init__(self, path: str | Path, specs: Mapping[str, Spec], metadata: Mapping[str, str] | None = None):
        if sys.byteorder != "little":  # safetensors stores little-endian bytes
            raise RuntimeError("StreamWriter needs a little-endian machine")
        self.path, self.specs = Path(path), dict(specs)
        self.order = sorted(self.specs)
        header: dict = {"__metadata__": dict(metadata)} if metadata else {}
        offset = 0
        for k in self.order:
            dtype, shape = self.specs[k]
            n = _numel(shape) * torch.empty((), dtype=dtype).element_size()
            header[k] = {"dtype": CODES[dtype], "shape": list(shape), "data_offsets": [offset, offset + n]}
            offset += n
        raw = json.dumps(header, separators=(",", ":")).encode()
        raw += b" " * (-len(raw) % 8)  # the data buffer starts 8-byte aligned
        self._header = struct.pack("<Q", len(raw)) + raw
        self._next = 0

    def __enter__(self) -> "StreamWriter":
        self._ctx = atomic_path(self.path)
        self._tmp = self._ctx.__enter__()
        self._fh = open(self._tmp, "wb")
        self._fh.write(self._header)
        return self

    def write(self, key: str, tensor: torch.Tensor) -> None:
        if self._next >= len(self.order) or self.order[self._next] != key:
            expected = self.order[self._next] if self._next < len(self.order) else "nothing"
            raise RuntimeError(f"{self.path}: tensor {key!r} written out of order (expected {expected!r})")
        dtype, shape = self.specs[key]
        if tensor.dtype != dtype or tuple(tensor.shape) != tuple(shape):
            raise MergeError(f"{key}: merged tensor is {tensor.dtype} {tuple(tensor.shape)}, "
                             f"expected {dtype} {tuple(shape)}")
        flat = tensor.detach().to("cpu").contiguous().reshape(-1).view(torch.uint8)
        self._fh.write(flat.numpy().data)
        self._next += 1

    def __exit__(self, exc_type, exc, tb):
        self._fh.close()
        if exc_type is None and self._next != len(self.order):
            err = RuntimeError(f"{self.path}: only {self._next} of {len(self.order)} tensors were written")
            self._ctx.__exit__(RuntimeError, err, None)  # removes the temporary file
            raise err
        return self._ctx.__exit__(exc_type, exc, tb)


def _numel(shape: Iterable[int]) -> int:
    n = 1
    for s in shape:
        n *= int(s)
    return n
