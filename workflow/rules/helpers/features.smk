# Helpers of features.smk (included at its top).

# features.tokens says how the VL models read the store (grid pooling, [CLS]), not how it is extracted.
EXTRACTION = {k: v for k, v in config["features"].items() if k != "tokens"}
VISUAL_TOKENS = config["features"]["tokens"]


def check_visual_tokens():
    """Each visual position of an image reads its own `<vis_extra_id_k>`: as many as an image has
    visual tokens must be in the VL families' tokenizer (the one trained here has 40, a fetched LM
    gets VL-T5's 100). Known here when the grid is pooled or the CLIP is pretrained here; otherwise
    the fine-tuning job checks it against the feature store before training."""
    from vltune.backbones.tokenizer import N_VIS_EXTRA_IDS, N_VIS_EXTRA_IDS_PUBLISHED

    tokens = config["features"]["tokens"]
    clip = config["backbones"]["clip"]
    if tokens["grid_pool"] is not None:
        cells = tokens["grid_pool"] ** 2
    elif clip.get("published") is None:
        cells = (clip["arch"]["image_size"] // clip["arch"]["patch_size"]) ** 2
    else:
        return
    need = cells + int(tokens["cls"])
    used = set(config["vlpet"]["families"]) | ({"bart"} if (config.get("das") or {}).get("tasks") else set())
    for key in sorted(used):
        have = N_VIS_EXTRA_IDS_PUBLISHED if config["backbones"][key].get("published") is not None else N_VIS_EXTRA_IDS
        if need > have:
            raise ValueError(f"config key features.tokens: an image gives {need} visual tokens, but the "
                             f"tokenizer of backbones.{key} has {have} <vis_extra_id_k>; set features.tokens.grid_pool")


check_visual_tokens()
