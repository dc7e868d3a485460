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


_TIED_MODEL = """
import sys, torch
from vltune.utils.io import save_model_file
torch.manual_seed(0)
m = torch.nn.Module()
m.embed, m.encoder_embed, m.decoder_embed, m.head = (torch.nn.Embedding(5, 3) for _ in range(4))
for tied in (m.encoder_embed, m.decoder_embed, m.head):
    tied.weight = m.embed.weight
save_model_file(m, sys.argv[1])
"""


def test_a_model_with_tied_weights_is_written_to_the_same_bytes_by_every_process(tmp_path):
    """Identical runs must give identical model files: safetensors' ``save_model`` records the
    dropped tied names in a header map whose order changes from process to process."""
    import json
    import subprocess
    import sys

    from safetensors.torch import load_model

    paths = [tmp_path / f"run{i}.safetensors" for i in range(3)]
    for p in paths:
        subprocess.run([sys.executable, "-c", _TIED_MODEL, str(p)], check=True)
    assert len({p.read_bytes() for p in paths}) == 1
    header = json.loads(paths[0].read_bytes()[8:8 + int.from_bytes(paths[0].read_bytes()[:8], "little")])
    assert header.pop("__metadata__") == {"format": "pt"}
    assert sorted(header) == ["decoder_embed.weight"]  # the tied group's first name, stored once
    m = torch.nn.Module()
    m.embed, m.encoder_embed, m.decoder_embed, m.head = (torch.nn.Embedding(5, 3) for _ in range(4))
    for tied in (m.encoder_embed, m.decoder_embed, m.head):
        tied.weight = m.embed.weight
    load_model(m, str(paths[0]))  # safetensors' own loader re-ties the rest
    torch.manual_seed(0)
    expected = torch.nn.Embedding(5, 3).weight
    assert torch.equal(m.head.weight, expected) and m.head.weight is m.embed.weight
