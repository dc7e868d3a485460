"""`vltune --help` and building the parser stay cheap: the command modules import their heavy
libraries inside the command functions, never at module top."""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = ("torch", "transformers", "peft", "accelerate", "timm", "safetensors", "pyarrow", "numpy",
         "pycocoevalcap", "tokenizers", "matplotlib", "pandas")


def test_importing_the_cli_and_building_the_parser_imports_no_heavy_library():
    script = ("import json, sys\n"
              "import vltune.cli\n"
              "parser = vltune.cli.build_parser()\n"
              "assert len(vltune.cli.SUBCOMMANDS) > 20\n"
              f"print(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))\n")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == []
