"""A job's fixed start-up cost, two checkouts of vltune side by side in one run: per command, the wall
time of ``vltune <cmd> --help`` and of importing the modules the command needs before its work
starts; and the Java time and JVM launches of a tiny caption evaluation.

``--before`` and ``--after`` are two package folders (a checkout's ``pipeline_src``, or the checkout
itself), e.g. a git worktree of an older commit::

    git worktree add /tmp/startup-base <commit>
    python bench/startup.py --before /tmp/startup-base                 # --after: this checkout
    python bench/startup.py --before /tmp/startup-base --commands merge,finetune-vlbart --rounds 3

Every measurement is a fresh ``python`` process with ``PYTHONPATH`` set to one of the two folders,
so nothing is cached between them. In each round the two take turns (the order alternates), so load
from other processes falls on both alike. Minimum and median over the rounds are reported, with
``after / before`` ratios of the medians.

* ``help_s``: wall time of ``python -m vltune.cli <cmd> --help`` (interpreter start included).
* ``import_s``: seconds, measured inside the process, to import ``vltune.cli``, build the parser,
  import ``vltune.launch`` and the modules the command function imports before it reads any data
  (``CHAINS``), plus ``torch`` (every job imports it to set its threads).
* ``breakdown``: for the ``after`` folder, one extra ``python -X importtime`` run per command: the
  cumulative import seconds of each heavy library in that chain (and the rest, under ``other``).
* ``caption``: a process that checks Java (as an evaluation job does at its start) and scores two
  tiny caption evaluations with ``caption_metrics``; ``java_s`` is that part's wall time, and
  ``launches`` counts the JVMs it started (a ``java`` on PATH that logs each launch), by kind.

See bench/README.md. No number here is asserted anywhere.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO / "bench" / "results" / "startup.json"
JOB = ["vltune.cli", "vltune.launch"]  # what every job imports before its command runs
CHAINS = {  # command -> the modules its function imports before its work starts (vltune.commands)
    "finetune-vlbart": ["vltune.recipes.encdec.finetune", "vltune.pet", "vltune.train.loop"],
    "evaluate-vlbart": ["vltune.recipes.encdec.evaluate", "vltune.recipes.encdec.finetune", "vltune.evaluate.caption"],
    "finetune-epalm": ["vltune.recipes.epalm.finetune", "vltune.pet"],
    "evaluate-epalm": ["vltune.recipes.epalm.evaluate", "vltune.evaluate.caption"],
    "finetune-vlmo": ["vltune.recipes.vlmo.experts"],
    "merge": ["vltune.merge"],
    "das-search": ["vltune.das.run", "vltune.das.search", "vltune.pet"],
    "das-finetune": ["vltune.das.run", "vltune.recipes.encdec.finetune"],
    "das-evaluate": ["vltune.evaluate.cost", "vltune.recipes.encdec.evaluate", "vltune.recipes.encdec.finetune"],
}
HEAVY = ("torch", "transformers", "peft", "accelerate", "timm", "safetensors", "pyarrow", "numpy", "PIL",
         "tokenizers", "pycocoevalcap", "scipy", "pandas", "matplotlib")
CAPTION_JOB = textwrap.dedent("""
    import json, time
    from vltune.evaluate.caption import caption_metrics, require_java
    refs = {1: ["a red circle left of a blue square", "one red circle"], 2: ["two green triangles", "green shapes"]}
    t0 = time.perf_counter()
    require_java()
    scores = [caption_metrics({1: "a red circle", 2: "two triangles"}, refs),
              caption_metrics({1: "a blue square", 2: "green triangles"}, refs)]
    print(json.dumps({"java_s": time.perf_counter() - t0, "scores": scores}))
""")


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--before", required=True, type=Path, help="package folder (or checkout) of the baseline")
    p.add_argument("--after", type=Path, default=REPO / "pipeline_src", help="package folder (or checkout) compared")
    p.add_argument("--commands", default=",".join(CHAINS), help="comma-separated commands (keys of CHAINS)")
    p.add_argument("--rounds", type=int, default=5, help="measurements per (command, checkout)")
    p.add_argument("--caption-rounds", type=int, default=2, help="caption evaluations per checkout (0: none)")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON output")
    args = p.parse_args(argv)
    if args.rounds < 1 or args.caption_rounds < 0:
        p.error("--rounds must be >= 1 and --caption-rounds >= 0")
    args.commands = [c for c in args.commands.split(",") if c]
    unknown = [c for c in args.commands if c not in CHAINS]
    if unknown:
        p.error(f"--commands: {unknown[0]!r} is not one of {', '.join(CHAINS)}")
    for name in ("before", "after"):
        setattr(args, name, package_dir(getattr(args, name), p, name))
    return args


def package_dir(path: Path, parser, name: str) -> Path:
    for candidate in (path, path / "pipeline_src"):
        if (candidate / "vltune" / "cli.py").is_file():
            return candidate.resolve()
    parser.error(f"--{name} {path}: no vltune/cli.py there or under pipeline_src/")


def python(pkg: Path, args: list[str], env: dict | None = None) -> tuple[float, subprocess.CompletedProcess]:
    env = {**os.environ, **(env or {}), "PYTHONPATH": str(pkg)}
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env, timeout=900)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args[:3])} with PYTHONPATH={pkg} failed: {proc.stderr.strip()[-2000:]}")
    return wall, proc


def import_script(command: str) -> str:
    modules = [*JOB, *CHAINS[command], "torch"]
    return ("import time\nt0 = time.perf_counter()\nimport vltune.cli\nvltune.cli.build_parser()\n"
            + "".join(f"import {m}\n" for m in modules) + "print(time.perf_counter() - t0)\n")


def help_wall(pkg: Path, command: str) -> float:
    return python(pkg, ["-m", "vltune.cli", command, "--help"])[0]


def import_time(pkg: Path, command: str) -> float:
    return float(python(pkg, ["-c", import_script(command)])[1].stdout.strip().splitlines()[-1])


def breakdown(pkg: Path, command: str) -> dict:
    """Import seconds of each heavy library in this chain (``-X importtime``), what they hold
    together, and the rest (``other_s``: vltune and the standard library).

    A library's seconds are the cumulative times of its modules imported from outside any heavy
    library, summed (a lazy library such as transformers imports more of itself later). A library
    only ever imported by another heavy one (numpy by torch) is listed with ``inside`` and the
    seconds of its largest import, and is not added again to ``heavy_s``."""
    _, proc = python(pkg, ["-X", "importtime", "-c", import_script(command)])
    libraries, total, stack = {}, 0.0, []
    # -X importtime prints a module after the modules it imported: read backwards, each line's
    # parents are on the stack.
    for line in reversed(proc.stderr.splitlines()):
        if not line.startswith("import time:") or "[us]" in line:
            continue
        _, cumulative, raw = line[len("import time:"):].split("|")
        depth, name, seconds = (len(raw) - len(raw.lstrip())) // 2, raw.strip(), int(cumulative) / 1e6
        while stack and stack[-1][0] >= depth:
            stack.pop()
        if depth == 0:
            total += seconds
        top = name.split(".")[0]
        if top in HEAVY:
            parent = next((n for _, n in reversed(stack) if n in HEAVY), None)
            row = libraries.setdefault(top, {"s": 0.0, "inside": parent})
            if parent is None:
                if row["inside"] is not None:  # imported on its own after all
                    row.update(s=0.0, inside=None)
                row["s"] += seconds
            elif row["inside"] is not None:
                row["s"] = max(row["s"], seconds)
        stack.append((depth, top))
    heavy = sum(v["s"] for v in libraries.values() if v["inside"] is None)
    return {"total_s": total, "libraries": libraries, "heavy_s": heavy, "other_s": total - heavy}


def caption_run(pkg: Path, workdir: Path) -> dict:
    real = shutil.which("java")
    if real is None:
        raise RuntimeError("the caption measurement needs `java` on PATH")
    log = workdir / "launches.log"
    log.unlink(missing_ok=True)
    wrapper = workdir / "bin" / "java"
    wrapper.parent.mkdir(exist_ok=True)
    wrapper.write_text(f'#!/bin/sh\necho "$*" >> "{log}"\nexec "{real}" "$@"\n')
    wrapper.chmod(0o755)
    wall, proc = python(pkg, ["-c", CAPTION_JOB], env={"PATH": f"{wrapper.parent}{os.pathsep}{os.environ['PATH']}"})
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    lines = log.read_text().splitlines() if log.exists() else []
    kinds = {"version_check": sum("-version" in x for x in lines), "ptb_tokenizer": sum("PTBTokenizer" in x for x in lines),
             "meteor": sum("meteor" in x for x in lines)}
    kinds["other"] = len(lines) - sum(kinds.values())
    return {"java_s": result["java_s"], "process_s": wall, "launches": kinds, "jvm_launches": len(lines),
            "scores": result["scores"]}


def summary(values: list[float]) -> dict:
    return {"min": min(values), "median": statistics.median(values), "all": values}


def ratio(after: dict, before: dict) -> float:
    return after["median"] / before["median"] if before["median"] else float("nan")


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    pkgs = {"before": args.before, "after": args.after}
    times = {c: {v: {"help_s": [], "import_s": []} for v in pkgs} for c in args.commands}
    for r in range(args.rounds):
        for c in args.commands:
            for v in (("before", "after") if r % 2 == 0 else ("after", "before")):
                times[c][v]["help_s"].append(help_wall(pkgs[v], c))
                times[c][v]["import_s"].append(import_time(pkgs[v], c))
    commands = {}
    for c in args.commands:
        row = {v: {k: summary(x) for k, x in times[c][v].items()} for v in pkgs}
        row["ratio_help"] = ratio(row["after"]["help_s"], row["before"]["help_s"])
        row["ratio_import"] = ratio(row["after"]["import_s"], row["before"]["import_s"])
        row["saved_s"] = row["before"]["import_s"]["median"] - row["after"]["import_s"]["median"]
        row["breakdown_after"] = breakdown(args.after, c)
        commands[c] = row

    caption = None
    if args.caption_rounds:
        runs: dict[str, list] = {v: [] for v in pkgs}
        with tempfile.TemporaryDirectory() as tmp:
            for r in range(args.caption_rounds):
                for v in (("before", "after") if r % 2 == 0 else ("after", "before")):
                    runs[v].append(caption_run(pkgs[v], Path(tmp)))
        caption = {v: {"java_s": summary([x["java_s"] for x in runs[v]]), "launches": runs[v][-1]["launches"],
                       "jvm_launches": runs[v][-1]["jvm_launches"]} for v in pkgs}
        caption["ratio_java"] = ratio(caption["after"]["java_s"], caption["before"]["java_s"])
        caption["saved_s"] = caption["before"]["java_s"]["median"] - caption["after"]["java_s"]["median"]
        caption["identical_scores"] = all(b["scores"] == a["scores"] for b, a in zip(runs["before"], runs["after"]))

    result = {
        "bench": "startup", "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "config": {"before": str(args.before), "after": str(args.after), "commands": args.commands,
                   "rounds": args.rounds, "caption_rounds": args.caption_rounds, "chains": {c: CHAINS[c] for c in args.commands}},
        "env": {"python": platform.python_version(), "platform": platform.platform(), "cpus": os.cpu_count(),
                "load_avg_1m": os.getloadavg()[0], "java": shutil.which("java")},
        "commands": commands, "caption": caption,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print_table(result)
    print(f"wrote {args.out}")
    return result


def print_table(result: dict) -> None:
    print(f"{'command':<16} {'help s (before→after, median)':>30} {'import s (before→after)':>26} {'× import':>9}  heaviest imports (after)")
    for c, row in result["commands"].items():
        b, a = row["before"], row["after"]
        libs = sorted(((k, v["s"]) for k, v in row["breakdown_after"]["libraries"].items() if v["inside"] is None),
                      key=lambda kv: -kv[1])[:3]
        print(f"{c:<16} {b['help_s']['median']:>14.3f} → {a['help_s']['median']:<13.3f} "
              f"{b['import_s']['median']:>11.3f} → {a['import_s']['median']:<11.3f} {row['ratio_import']:>9.3f}  "
              + ", ".join(f"{k} {v:.2f}" for k, v in libs))
    cap = result["caption"]
    if cap:
        print(f"caption evaluation: Java {cap['before']['java_s']['median']:.3f} s → {cap['after']['java_s']['median']:.3f} s "
              f"(× {cap['ratio_java']:.3f}); JVMs {cap['before']['jvm_launches']} → {cap['after']['jvm_launches']} "
              f"{cap['after']['launches']}; identical scores: {cap['identical_scores']}")


if __name__ == "__main__":
    main()
