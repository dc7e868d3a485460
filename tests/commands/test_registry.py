"""The subcommands' registration (vltune.commands): the parser is built from it, and whether a
command runs as several data-parallel processes comes from it."""

from __future__ import annotations

from vltune.cli import build_parser
from vltune.commands import COMMANDS
from vltune.launch import process_count

# the commands whose training loop splits each global batch across ranks (tests/train/test_data_parallel.py)
DATA_PARALLEL = {"pretrain-clip", "pretrain-bart", "pretrain-t5", "finetune-vlbart"}


def test_every_registered_command_is_a_subcommand_once():
    names = [c.name for c in COMMANDS]
    assert len(names) == len(set(names))
    assert set(build_parser()._subparsers._group_actions[0].choices) == set(names)


def test_only_the_data_parallel_commands_run_as_several_processes():
    assert {c.name for c in COMMANDS if c.multiprocess} == DATA_PARALLEL
    parser = build_parser()
    finetune = parser.parse_args(["--processes", "2", "finetune-vlbart", "--data", "d", "--features", "f",
                                  "--backbone", "b", "--out", "o", "--method", "full", "--seed", "0", "--params", "{}"])
    assert process_count(finetune) == 2
    evaluate = parser.parse_args(["--processes", "2", "evaluate-vlbart", "--checkpoint", "c", "--data", "d",
                                  "--features", "f", "--out", "o"])
    assert process_count(evaluate) == 1
