"""The workflow plans its merge jobs from `vltune.merge_methods` (torch-free); the merge registry is
the truth that table must restate."""

from __future__ import annotations

import subprocess
import sys

from vltune.merge import get_method, method_names
from vltune.merge_methods import MERGE_METHODS, based_merges, gram_merges


def test_the_torch_free_table_names_every_registered_merge_with_its_base_and_grams():
    assert sorted(MERGE_METHODS) == sorted(method_names())
    for name, entry in MERGE_METHODS.items():
        method = get_method(name)
        assert (entry["base"], entry["uses_grams"]) == (method.base, method.uses_grams), name
    assert set(based_merges()) == {n for n in method_names() if get_method(n).base == "required"}
    assert set(gram_merges()) == {n for n in method_names() if get_method(n).uses_grams}


def test_the_merge_table_imports_without_torch():
    code = "import sys, vltune.merge_methods as m; print(m.based_merges(), 'torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "('arithmetic', 'ties', 'dare') False"
