"""``vltune params``: plan trainable / total parameters of a VL model + PET method (workflow/rules/
report.smk tables; meta device, nothing downloaded)."""

from __future__ import annotations

import json

from ..errors import UserError
from .common import check_method_config, command, parse_params


@command("params", "plan trainable/total parameters of a VL model + PET method (meta device, no download)", [
    ("--arch", dict(required=True, help="architecture preset: bart-base, t5-base, or eP-ALM's <opt-350m|opt-2.7b|opt-6.7b>+<vit-b16|vit-l16>")),
    ("--method", dict(required=True, help="PET method (e.g. vlpet-large, lora, full)")),
    ("--params", dict(default="{}", help="JSON method hyper-parameter overrides, e.g. '{\"adapter_dim\": 48}'")),
])
def params(args) -> None:
    from ..recipes.planner import plan_parameters

    overrides = parse_params(args.params, "params")
    check_method_config(args.method, overrides, "params")
    try:
        result = plan_parameters(args.arch, {**overrides, "method": args.method})
    except ValueError as e:
        raise UserError(str(e)) from None
    print(json.dumps(result))
