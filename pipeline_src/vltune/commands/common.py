"""What every ``vltune`` subcommand shares: its registration (name, help, flags, whether it runs
as several data-parallel processes), the runtime set-up, ``--params`` parsing, the training loop's
settings and the provenance block of a metrics record.

Heavy imports happen inside the functions so ``vltune --help`` stays fast."""

from __future__ import annotations

import logging
import os
import platform
from pathlib import Path
from typing import Callable, NamedTuple

from ..errors import UserError
from ..settings import parse_params  # noqa: F401  (the commands' one JSON check)
from ..utils.io import config_hash, read_json, write_json
from ..utils.ledger import note

log = logging.getLogger("vltune")


class Command(NamedTuple):
    """One subcommand: ``vltune <name>`` runs ``func(args)``. ``flags``: (flag, argparse kwargs)
    pairs; ``multiprocess``: it trains, so it runs as one process per visible GPU (vltune.launch)."""

    name: str
    func: Callable
    help: str
    flags: list
    multiprocess: bool = False


COMMANDS: list[Command] = []  # in registration order (the order of vltune.commands.MODULES)


def command(name: str, help: str, flags: list, multiprocess: bool = False):
    """Register the decorated function as ``vltune <name>``."""
    def register(func: Callable) -> Callable:
        if any(c.name == name for c in COMMANDS):
            raise ValueError(f"vltune {name} is registered twice")
        COMMANDS.append(Command(name, func, help, flags, multiprocess))
        return func
    return register


def command_named(name: str) -> Command:
    return next(c for c in COMMANDS if c.name == name)


# Flags several subcommands share (same text everywhere).
RESUME_DIR = ("--resume-dir", dict(default=None, help="where resume checkpoints live (not a declared output)"))


def setup_runtime(threads: int | None) -> None:
    import torch

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    # Denormal optimiser state (tiny AdamW moments) makes CPU steps many times slower; flush it to zero.
    torch.set_flush_denormal(True)
    if threads:
        torch.set_num_threads(threads)


def train_config(train: dict | None, command: str, seed: int | None = None):
    """The training loop's settings from a params ``train`` object (``seed``: the run's --seed)."""
    from ..train.loop import TrainConfig

    fields = dict(train or {})
    if seed is not None:
        fields["seed"] = seed
    try:
        cfg = TrainConfig(**fields)
    except (TypeError, ValueError) as e:
        raise UserError(f"{command}: bad train params {fields}: {e}") from None
    note("train", cfg)  # the resolved settings, defaults included, go to the run's ledger
    return cfg


def check_method_config(method: str, overrides: dict, command: str) -> None:
    """Validate PET hyper-parameters before any work (unknown key, bad value → one clear line)."""
    from ..pet import resolve_config

    if not isinstance(overrides, dict):
        raise UserError(f"{command}: method_config must be a JSON object, got {overrides!r}")
    try:
        resolve_config({**overrides, "method": method})
    except ValueError as e:
        raise UserError(f"{command}: {e}") from None


def visual_tokens(visual: dict | None):
    """How VL-BART / VL-T5 read an image's features (the params' ``visual`` object)."""
    from ..recipes.encdec.tasks import VisualTokens

    return VisualTokens.from_dict(visual)


def vl_family_check(family: str) -> None:
    from ..recipes.encdec.finetune import vl_model_class

    vl_model_class(family)  # an unknown family fails here, before any data is read


def write_train_log(out_dir: str, result: dict) -> None:
    from ..train.distributed import is_main_process

    if is_main_process():  # under `accelerate launch`, rank 0 writes the outputs
        write_json(Path(out_dir) / "train_log.json", result)


def training_record(checkpoint: str | Path) -> dict:
    """What a metrics record says about how the checkpoint was made: its train_log.json (wall time,
    final loss), or for an imported checkpoint its source (import.json) and no training numbers."""
    from ..import_checkpoint import IMPORT_JSON

    checkpoint = Path(checkpoint)
    if not (checkpoint / "train_log.json").exists() and (checkpoint / IMPORT_JSON).exists():
        return {"train_wall_s": None, "train_final_loss": None, "imported_from": read_json(checkpoint / IMPORT_JSON)}
    log = read_json(checkpoint / "train_log.json")
    return {"train_wall_s": log["wall_s"], "train_final_loss": log["final_loss"]}


def caption_scorer_ready(needed: bool) -> None:
    """Caption metrics run Java (pycocoevalcap): checked when the job starts, not after decoding."""
    if needed:
        from ..evaluate.caption import require_java

        try:
            require_java()
        except RuntimeError as e:
            raise UserError(str(e)) from None


def data_record(data_dir: str) -> dict:
    from ..data.tables import data_record as record

    return record(data_dir)


def device() -> str:
    import torch

    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return f"cpu ({os.cpu_count()} cores, {torch.get_num_threads()} threads)"


def provenance(settings) -> dict:
    """The last keys of every metrics record: the hash of the settings that made it, the device
    and the Python version."""
    return {"config_hash": config_hash(settings), "device": device(), "python": platform.python_version()}


def merge_params(pairs: list[str] | None) -> dict:
    """``--param k=v …`` as a dict of strings (the method's resolve() types and checks them)."""
    out = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UserError(f"--param {pair!r} is not of the form name=value")
        out[key] = value
    return out
