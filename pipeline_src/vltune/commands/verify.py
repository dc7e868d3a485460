"""``vltune verify``: check what the stages wrote (no rule calls it)."""

from __future__ import annotations

from ..errors import UserError
from .common import command


@command("verify", "check artifacts: tables against their manifest, feature shards, every .safetensors file", [
    ("paths", dict(nargs="+", metavar="PATH", help="dataset or feature-store folder, checkpoint/model folder, .arrow or .safetensors file")),
])
def verify(args) -> None:
    """One stdout line per artifact (``ok PATH`` or its problem); any failure is a UserError."""
    from ..verify import verify_paths

    results = verify_paths(args.paths)
    for path, problem in results:
        print(f"ok {path}" if problem is None else f"FAILED {problem}", flush=True)
    failed = [problem for _, problem in results if problem is not None]
    if failed:
        raise UserError(f"{len(failed)} of {len(results)} artifacts failed verification; first: {failed[0]}")
