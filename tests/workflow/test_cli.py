"""The `vltune` command line: every stage is a subcommand, bad input is one clear error line
(exit 2, no traceback), and no subcommand prints help and fails."""

from __future__ import annotations

import argparse
import subprocess
import sys

import pytest

from vltune.cli import SUBCOMMANDS, build_parser, main

STAGES = {"download", "convert", "fetch-backbone", "make-world", "train-tokenizer", "pretrain-clip", "pretrain-bart", "pretrain-t5", "extract-features",
          "finetune-vlbart", "evaluate-vlbart", "params", "baselines", "report", "merge", "pretrain-vlmo",
          "collect-grams", "merge-experts", "finetune-vlmo", "das-search", "das-finetune", "das-evaluate",
          "das-report", "pretrain-opt", "pretrain-vit", "extract-perception", "finetune-epalm", "evaluate-epalm",
          "import-checkpoint",
          "rulegraph"}
TOOLS = {"verify"}  # no rule calls it: it checks what the stages wrote


def test_every_stage_has_a_subcommand_with_help_texts():
    assert {name for name, *_ in SUBCOMMANDS} == STAGES | TOOLS
    parser = build_parser()
    for action in parser._subparsers._group_actions[0].choices.values():
        for arg in action._actions:
            if arg.dest != "help":
                assert arg.help, f"{action.prog} {arg.dest} has no help text"


def test_no_subcommand_prints_help_and_fails(capsys):
    assert main([]) == 1
    assert "make-world" in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["make-world", "--out", "x", "--params", "{not json"], "--params for make-world is not valid JSON"),
    (["make-world", "--out", "x", "--params", '{"seedz": 1}'], "unknown key 'seedz'"),
    (["make-world", "--out", "x", "--params", "[1, 2]"], "must be a JSON object"),
    (["baselines", "--data", "/nonexistent/data", "--out", "x.json"], "/nonexistent/data"),
])
def test_bad_input_is_one_clear_line(tmp_path, argv, message):
    proc = subprocess.run([sys.executable, "-m", "vltune.cli", *argv], capture_output=True, text=True,
                          cwd=tmp_path, timeout=120)
    assert proc.returncode == 2
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "x").exists() and not (tmp_path / "x.json").exists()


def test_a_repeated_list_option_adds_to_the_list_instead_of_replacing_it():
    """`vltune merge --param density=0.1 --param lambda=1.0` means both parameters: with a plain
    nargs option argparse would keep only the last group (a TIES merge at the default density)."""
    args = build_parser().parse_args(["merge", "--method", "ties", "--inputs", "a.safetensors", "--out", "m",
                                      "--param", "density=0.1", "--param", "lambda=1.0"])
    assert args.param == ["density=0.1", "lambda=1.0"]
    args = build_parser().parse_args(["merge", "--method", "ties", "--inputs", "a", "--inputs", "b", "--out", "m"])
    assert args.inputs == ["a", "b"] and args.param == []
    parser = build_parser()
    for action in parser._subparsers._group_actions[0].choices.values():
        for arg in action._actions:
            if arg.nargs in ("*", "+") and arg.option_strings:  # a positional list takes every word anyway
                assert isinstance(arg, argparse._ExtendAction), f"{action.prog} {arg.option_strings}"
