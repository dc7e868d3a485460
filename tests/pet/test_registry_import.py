"""The workflow reads the PET registry every time it plans (method names for the wildcards, every
method config checked before any job): that must not import torch (~4 s per `snakemake` start)."""

from __future__ import annotations

import subprocess
import sys


def test_the_registry_and_method_configs_load_without_torch_and_apply_pet_brings_it():
    code = (
        "import sys\n"
        "from vltune.pet import method_names, resolve_config\n"
        "names = method_names() + method_names('epalm')\n"
        "for n in names: resolve_config(n)\n"
        "assert resolve_config({'method': 'vlpet-large', 'adapter_dim': 8, 'adapter_heads': 2}).gate == 'large'\n"
        "print(len(names), 'torch' in sys.modules)\n"
        "from vltune.pet import apply_pet, get_method\n"
        "print('torch' in sys.modules, get_method('lora').save.__name__, get_method('das').inject.__name__)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split("\n")
    assert out[0] == "13 False"  # 11 encoder-decoder methods + eP-ALM's 2, no torch
    assert out[1] == "True save_lora inject_das"  # the torch side on first use
