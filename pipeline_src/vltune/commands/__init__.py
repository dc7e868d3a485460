"""The subcommands behind ``vltune``, one module per stage of the workflow (workflow/rules/*.smk).
Each module registers its subcommands beside their functions (``common.command``); importing this
package registers them all, stage by stage in the order below."""

from __future__ import annotations

from . import data, backbones, features, vlpet, checkpoints, epalm, merging, das  # noqa: F401, I001
from . import evaluate, params, report, verify  # noqa: F401
from .common import COMMANDS, Command, command_named

__all__ = ["COMMANDS", "Command", "command_named"]
