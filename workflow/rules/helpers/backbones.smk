# Helpers of backbones.smk (included at its top).

# Folder name → config key of every fetched backbone (the fetch_backbone rule's wildcard values).
PUBLISHED = {b["name"]: key for key, b in config["backbones"].items() if b.get("published") is not None}
# The VL side's backbones, pretrained here by one shared definition (eP-ALM's OPT and ViT are in epalm.smk).
PRETRAINED_HERE = [key for key in ("clip", "bart", "t5") if published(key) is None]
NAMES = {key: b["name"] for key, b in config["backbones"].items()}


def backbone_params(name):
    return settings_json("BackboneTrain", f"backbones.{name}")


def fetch_params(wildcards):
    key = PUBLISHED[wildcards.backbone]
    # The VL families read `<vis_extra_id_k>` tokens for the visual positions (VL-T5's tokenizer).
    return as_json({**published(key), "vl_tokens": key in ("bart", "t5")})


def backbone_ledger(key):
    """The ledger record of the job that makes backbones.<key>: fetched or pretrained here."""
    if published(key) is not None:
        return expand(rules.fetch_backbone.output.ledger, backbone=NAMES[key])[0]
    return getattr(rules, f"pretrain_{key}").output.ledger
