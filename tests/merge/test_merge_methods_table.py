"""The workflow plans its merge jobs from `vltune.merge_methods` (torch-free); the merge registry
takes each method's base and Gram use from that table, and must register a function for every name."""

from __future__ import annotations

import subprocess
import sys

import pytest

from vltune.merge import method_names
from vltune.merge.base import register
from vltune.merge_methods import MERGE_METHODS


def test_every_planned_merge_has_a_registered_function_and_no_other_is_registered():
    assert sorted(MERGE_METHODS) == sorted(method_names())


def test_a_merge_the_planning_table_does_not_name_cannot_be_registered():
    with pytest.raises(ValueError, match="no entry in vltune.merge_methods"):
        register("not-planned")(lambda tensors, **kw: tensors[0])


def test_the_merge_table_imports_without_torch():
    code = "import sys, vltune.merge_methods as m; print(m.based_merges(), 'torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "('arithmetic', 'ties', 'dare') False"


def test_the_schemas_merging_inits_are_the_pretrained_inits_and_the_planned_merges():
    import yaml

    from vltune.merge_methods import PRETRAINED_INITS
    from vltune.settings import SCHEMA_FILE

    inits = yaml.safe_load(SCHEMA_FILE.read_text())["properties"]["merging"]["properties"]["inits"]
    assert set(inits["items"]["enum"]) == {*PRETRAINED_INITS, *MERGE_METHODS}
    assert set(inits["default"]) <= set(inits["items"]["enum"])
