"""`snakemake -n -p` of the workflow in an empty folder, for the workflow tests: no job runs, the
shell commands it would run are read off its output."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def snakemake_dry_run(workdir: Path, *configfiles: Path, target: str = "all") -> subprocess.CompletedProcess:
    """The finished `snakemake -n -p --cores 2 <target>` process (its return code unchecked)."""
    return subprocess.run(
        [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "--directory", str(workdir),
         "--configfile", *map(str, configfiles), "-n", "-p", "--cores", "2", target],
        capture_output=True, text=True, timeout=300,
    )


def shell_commands(stdout: str) -> list[str]:
    """The vltune command lines a dry run printed."""
    return [line.strip().removeprefix("Shell command: ") for line in stdout.splitlines() if "vltune " in line]
