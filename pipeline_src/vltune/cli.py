"""``vltune``: one entry point, one subcommand per pipeline stage (each rule calls exactly one).

Every subcommand takes explicit input/output paths; hyper-parameters come as one JSON object
(``--params``) holding the rule's slice of the validated config. The subcommands, their flags and
their work live in ``vltune.commands`` (one module per stage); this file builds the parser from
them and runs the chosen one.
"""

from __future__ import annotations

import argparse
import sys

from . import __version__
from .commands import COMMANDS
from .errors import UserError

SUBCOMMANDS = COMMANDS  # (name, func, help, flags, multiprocess) of every subcommand


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vltune", description="vltune: one subcommand per pipeline stage (each Snakemake rule calls one).")
    parser.add_argument("--version", action="version", version=f"vltune {__version__}")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (the rule's threads)")
    parser.add_argument("--gpus", type=int, default=0,
                        help="GPUs the job was given (the rule's resources.gpu); locally, N free GPUs are claimed")
    parser.add_argument("--processes", type=int, default=None,
                        help="data-parallel training processes (default: one per visible GPU, 1 on CPU)")
    parser.add_argument("--ledger", default=None, help="write this run's ledger record (JSON) here")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for cmd in COMMANDS:
        p = sub.add_parser(cmd.name, help=cmd.help, description=cmd.help)
        for flag, kwargs in cmd.flags:
            p.add_argument(flag, **kwargs)
        p.set_defaults(func=cmd.func)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return 1
    from .launch import run

    try:
        return run(args, sys.argv[1:] if argv is None else list(argv))
    except (UserError, FileNotFoundError) as e:  # bad input: one clear line, no traceback
        print(f"vltune {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
