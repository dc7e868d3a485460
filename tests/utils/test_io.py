"""Atomic writes give outputs the umask's permissions, whatever the writer does with the file."""

from __future__ import annotations

import os

import torch
from safetensors.torch import save_file

from vltune.utils.io import atomic_path, write_json


def test_a_safetensors_output_follows_the_umask_not_the_libraries_0600(tmp_path):
    """safetensors writes its own temporary file and renames it over the target (mode 0600), so a
    model in a shared project folder was readable by its owner only."""
    umask = os.umask(0)
    os.umask(umask)
    with atomic_path(tmp_path / "model.safetensors") as tmp:
        save_file({"w": torch.zeros(2)}, str(tmp))
    write_json(tmp_path / "meta.json", {"a": 1})
    for name in ("model.safetensors", "meta.json"):
        assert oct((tmp_path / name).stat().st_mode & 0o777) == oct(0o666 & ~umask), name
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary file left
