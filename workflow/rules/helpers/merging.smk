# Helpers of merging.smk (included at its top).

from vltune.merge_methods import PRETRAINED_INITS, based_merges

# Each swept merge's parameter and the config list of its values (letter in the name: common.smk).
SWEPT_PARAMS = {"interpolation": ("ratio", "ratios"), "arithmetic": ("lambda", "lambdas")}


def check_merging_image_init():
    """merging.pretrain.image_init: vit copies the ViT's weights into the VLMo, so a ViT pretrained
    here must have the VLMo's shape (a published one is checked when its weights are read)."""
    m = config["merging"]
    if not m["inits"] or m["pretrain"]["image_init"] != "vit" or config["backbones"]["vit"].get("published") is not None:
        return
    vit, vlmo = config["backbones"]["vit"]["arch"], m["arch"]
    pairs = {"hidden": "d_model", "layers": "layers", "heads": "heads", "mlp_ratio": "mlp_ratio",
             "patch_size": "patch_size", "image_size": "image_size"}
    for vk, mk in pairs.items():
        if vit.get(vk) is not None and float(vit[vk]) != float(vlmo[mk]):
            raise ValueError(f"config key merging.arch.{mk}: {vlmo[mk]} differs from backbones.vit.arch.{vk} "
                             f"{vit[vk]}, but merging.pretrain.image_init: vit copies the ViT's weights into the VLMo")


check_merging_image_init()


def merging_inits():
    """Init names: the pretrained models as they are, and one per swept merge and value
    (`interpolation-r0.5`, `arithmetic-l0.75`); RegMean is one init whose model depends on the task."""
    m = config["merging"]
    names = []
    for init in m["inits"]:
        if init in SWEPT_MERGES:
            names += [f"{init}-{SWEPT_MERGES[init]}{x}" for x in m[init][SWEPT_PARAMS[init][1]]]
        else:
            names.append(init)
    return list(dict.fromkeys(names))


def vlmo_pretrain_params(stage):
    """Params of a pretraining stage; the agnostic baseline gets the steps of seed + specific in all."""
    p = config["merging"]["pretrain"]
    train = dict(p["specific" if stage == "agnostic" else stage])
    if stage == "agnostic" and p["agnostic_from"] == "scratch":
        train["steps"] = p["seed"]["steps"] + p["specific"]["steps"]
    return settings_json("VlmoPretrain", train=train)


def vlmo_image_init():
    """The ViT folder a from-scratch VLMo pretraining starts from (merging.pretrain.image_init), or None."""
    return f"resources/backbones/{VIT}" if config["merging"]["pretrain"]["image_init"] == "vit" else None


def vlmo_data_inputs():
    return {"tables": expand(f"{DATA}/{{table}}.arrow", table=TABLES), "tokenizer": "resources/backbones/tokenizer"}


def seed_inputs(wildcards):
    image_init = vlmo_image_init()
    return {**vlmo_data_inputs(), **({"image_init": image_init} if image_init else {})}


def agnostic_inputs(wildcards):
    if config["merging"]["pretrain"]["agnostic_from"] == "scratch":
        return seed_inputs(wildcards)  # from scratch = from the same start as the seed
    return {**vlmo_data_inputs(), "init": "results/merging/pretrain/seed"}


def vlmo_init_arg(wildcards, input):
    """--init (a pretrained VLMo) or --image-init (a ViT), whichever the stage's inputs hold."""
    if "init" in input.keys():
        return f"--init {shlex.quote(input.init)}"
    return f"--image-init {shlex.quote(input.image_init)}" if "image_init" in input.keys() else ""


def merge_method(wildcards):
    return wildcards.merge.split("-")[0]


def merge_inputs(wildcards):
    inputs = {"specific": "results/merging/pretrain/specific", "seed": "results/merging/pretrain/seed"}
    if merge_method(wildcards) in gram_merges():
        inputs["grams"] = expand(rules.collect_grams.output.grams, task=wildcards.merge.split("-", 1)[1])[0]
    return inputs


def merge_args(wildcards, input):
    """--base (task-vector merges), --grams (RegMean) and --param k=v (the swept value, or the
    method's config section), each value shell-quoted."""
    method, _, suffix = wildcards.merge.partition("-")
    if method in SWEPT_MERGES:
        params = {SWEPT_PARAMS[method][0]: float(suffix[1:])}
    else:
        params = config["merging"].get(method, {})
    args = (["--base", input.seed] if method in based_merges() else []) + (["--grams", input.grams] if method in gram_merges() else [])
    if params:
        args += ["--param"] + [f"{k}={v}" for k, v in sorted(params.items())]
    return " ".join(shlex.quote(str(a)) for a in args)


def init_dir(init, task):
    if init in PRETRAINED_INITS:
        return f"results/merging/pretrain/{init}"
    return f"results/merging/merged/{init}-{task}" if init in gram_merges() else f"results/merging/merged/{init}"


def finetune_vlmo_inputs(wildcards):
    return {"tables": expand(f"{DATA}/{{table}}.arrow", table=TABLES), "tokenizer": "resources/backbones/tokenizer",
            "inits": [init_dir(wildcards.init, t) for t in config["merging"]["tasks"]]}


def vlmo_finetune_params():
    e = config["evaluate"]
    return settings_json("VlmoFinetune", evaluate={"split": e["split"], "batch_size": e["batch_size"]})


def metrics_dir(wildcards, output):
    return os.path.dirname(output.metrics)


def merging_metrics():
    return expand(rules.finetune_vlmo.output.metrics, init=merging_inits(), seed=config["merging"]["seeds"])


def merging_ledgers():
    """Ledger records of the merging study's jobs: the pretraining stages its inits (and DAS on the
    VLMo) need, the Gram matrices and merges they are built from, and one fine-tuning run per init and seed."""
    m = config["merging"]
    inits = merging_inits()
    dirs = {init_dir(init, task) for init in inits for task in m["tasks"]}
    dirs |= {das_backbone(family) for family, _ in das_runs() if family == "vlmo"}  # DAS on the VLMo
    merged = sorted(os.path.basename(d) for d in dirs if d.startswith("results/merging/merged/"))
    stages = {os.path.basename(d) for d in dirs if d.startswith("results/merging/pretrain/")}
    if merged or "specific" in stages:
        stages |= {"seed", "specific"}
    if "agnostic" in stages and m["pretrain"]["agnostic_from"] == "seed":
        stages.add("seed")
    grams = sorted(name.split("-", 1)[1] for name in merged if name.split("-")[0] in gram_merges())
    return [
        *(getattr(rules, f"{stage}_pretrain").output.ledger for stage in sorted(stages)),
        *expand(rules.collect_grams.output.ledger, task=grams),
        *expand(rules.merge_experts.output.ledger, merge=merged),
        *expand(rules.finetune_vlmo.output.ledger, init=inits, seed=m["seeds"]),
    ]
