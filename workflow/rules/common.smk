# Config validation, wildcard constraints and every helper the rules use (no logic in rules).
import json
import os
import re
import shlex

from snakemake.utils import validate


def check_finite(value, key="config"):
    """YAML reads `.nan` and `.inf` as numbers, which JSON schema's `number` admits: refused here,
    naming the key, before they become a learning rate or a budget."""
    import math

    if isinstance(value, dict):
        for k, v in value.items():
            check_finite(v, f"{key}.{k}" if key != "config" else str(k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            check_finite(v, f"{key}[{i}]")
    elif isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"config key {key}: {value} is not a finite number")


check_finite(config)
# `1e-4` and `1.0e9` are text to YAML 1.1: refused naming the key and the spelling it reads as a number.
from vltune.config_numbers import check_numbers_written_as_text

check_numbers_written_as_text(config, os.path.join(workflow.current_basedir, "../schemas/config.schema.yaml"))
# Rejects unknown keys and wrong types before any job starts, and fills the schema's defaults.
validate(config, schema="../schemas/config.schema.yaml")



def check_method_configs():
    """Each method's hyper-parameters through its config dataclass now, so a typo in
    `vlpet.method_configs`, `epalm.method_configs` or `das.method_config` stops the workflow before
    any job (the schema cannot know the keys). DAS's `skip` is the search's result, never a config value."""
    from vltune.pet import resolve_config

    checks = [(f"{section}.method_configs.{method}", method, overrides)
              for section in ("vlpet", "epalm") for method, overrides in config[section]["method_configs"].items()]
    das = (config.get("das") or {}).get("method_config", {})
    if "skip" in das:
        raise ValueError("config key das.method_config.skip: the skip set comes from das_search's skip.json")
    checks.append(("das.method_config", "das", das))
    for key, method, overrides in checks:
        try:
            resolve_config({**overrides, "method": method})
        except ValueError as e:
            raise ValueError(f"config key {key}: {e}") from None


check_method_configs()

# Lets `--sdm conda` install this package into the rules' environment (see envs/vltune.yaml).
os.environ.setdefault("VLTUNE_ROOT", workflow.basedir)


def set_commit_env():
    """The workflow's own commit for every job's ledger (jobs may run outside the checkout; an
    environment variable, not a param, so a new commit alone does not re-run anything)."""
    from vltune.utils.ledger import COMMIT_ENV, git_commit

    commit = git_commit(workflow.basedir)
    if commit:
        os.environ.setdefault(COMMIT_ENV, commit)


set_commit_env()


def check_data_and_backbones():
    """What the schema cannot say: a real dataset names its sources, and each backbone is either
    fetched (`published`) or pretrained here (`arch` and `train`)."""
    if config["dataset"] != "shapes" and not config["download"]["sources"]:
        raise ValueError(f"config key download.sources: dataset {config['dataset']!r} is not the synthetic "
                         "'shapes' world, so list the official sources to convert (e.g. [coco2014, vqav2])")
    for key, b in config["backbones"].items():
        if b.get("published") is None and not ("arch" in b and "train" in b):
            raise ValueError(f"config key backbones.{key}: give `published` (a backbone to fetch) or both "
                             "`arch` and `train` (a tiny one the pipeline pretrains)")


check_data_and_backbones()


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


def check_epalm_layers():
    """eP-ALM's injection window (epalm.method_configs.<method>.start_layer / end_layer) must fit
    the OPT's depth: from backbones.opt.arch for a tiny one, the shipped table for a published
    name, a local `published.source` folder's config.json; unknown depths (a Hub id that is not
    shipped) are checked by finetune_epalm once the LM is loaded. Reads no weights, imports no torch
    beyond what check_method_configs already needs."""
    from vltune.backbones.pretrained import known_layers
    from vltune.pet import resolve_config

    e = config.get("epalm")
    if not e or not e["methods"]:
        return
    opt = config["backbones"]["opt"]
    if opt.get("published") is None:
        depth, lm = opt["arch"]["layers"], f"backbones.opt {opt['name']!r} (arch.layers)"
    else:
        source = opt["published"].get("source")
        depth = known_layers(opt["name"], source)
        lm = f"backbones.opt {opt['name']!r}" + (f" ({source}/config.json)" if source else "")
    if depth is None:
        return
    for method in e["methods"]:
        error = resolve_config({**e["method_configs"].get(method, {}), "method": method}).window_error(int(depth), lm)
        if error:
            raise ValueError(error)


check_epalm_layers()

DATASET = config["dataset"]
DATA = f"resources/data/{DATASET}"
CLIP = config["backbones"]["clip"]["name"]
BART = config["backbones"]["bart"]["name"]
T5 = config["backbones"]["t5"]["name"]
FEATURES = f"resources/features/{CLIP}/{DATASET}"
# features.tokens says how the VL models read the store (grid pooling, [CLS]), not how it is extracted.
EXTRACTION = {k: v for k, v in config["features"].items() if k != "tokens"}
VISUAL_TOKENS = config["features"]["tokens"]
TABLES = ["images", "captions", "vqa", "gqa", "nlvr2"]
# Report categories (`snakemake --report`), one per stage of the design; Provenance = rule graph + ledger.
CATEGORY = {"data": "Data", "backbones": "Backbones", "merge": "Merging", "pet": "PET", "das": "DAS",
            "epalm": "eP-ALM", "evaluation": "Evaluation", "provenance": "Provenance"}
RUN_LABELS = {"method": "{method}", "seed": "{seed}", "steps": "{steps}"}

# Cluster placement (config `resources`): GPU rules ask for `gpu`, `cpus_per_gpu` and the GPU
# partition, CPU-only rules for the CPU partition ("" = the cluster's default partition).
RES = config["resources"]
TRAIN_GPUS = RES["gpus"]

from vltune.pet import method_names  # check_method_configs already imported the registry


wildcard_constraints:
    family="bart|t5",
    # merging: vqa|nlvr2|retrieval; eP-ALM: vqa|gqa|caption; DAS: vqa|gqa|nlvr2|caption
    task="vqa|gqa|nlvr2|caption|retrieval",
    k=r"\d+",
    init=r"[a-z]+(-[rl][0-9.]+)?",
    merge=r"average|ties|dare|interpolation-r[0-9.]+|arithmetic-l[0-9.]+|regmean-(vqa|nlvr2|retrieval)",
    # the registry's names, so a mistyped target is refused while planning, not in its job
    method="|".join(re.escape(m) for m in method_names(None)),
    seed=r"\d+",
    steps=r"\d+",
    backbone=r"[A-Za-z0-9][A-Za-z0-9._-]*",  # a folder under resources/backbones/, never . or ..


def attempt_runtime(wildcards, attempt):
    """Walltime in minutes: the n-th attempt (profile `retries`) asks n × resources.runtime; a
    retried training job resumes from its last checkpoint, so the extra time finishes it."""
    return RES["runtime"] * attempt


def cpus_per_gpu(gpus):
    """`cpus_per_gpu` for `gpus` GPUs per job = the job's threads spread over them, rounded up."""

    def per_gpu(wildcards, threads):
        return max(1, -(-threads // gpus))

    return per_gpu


def as_json(obj):
    """One JSON argument for `vltune --params` (quoted with :q in the rules)."""
    return json.dumps(obj, sort_keys=True)


def download_params(wildcards):
    d = config["download"]
    return as_json({k: d[k] for k in ("mirror", "retries", "backoff", "timeout")})


def download_manifest(wildcards):
    """The manifest for vltune download: the shipped one by name, or <download.manifests>/<source>.json."""
    folder = config["download"].get("manifests")
    return os.path.join(folder, f"{wildcards.source}.json") if folder else wildcards.source


def convert_sources(wildcards, input):
    """`NAME=RECORD` items for vltune convert (each source's download.json, which says where its
    files lie), each quoted."""
    return " ".join(shlex.quote(f"{os.path.basename(os.path.dirname(r))}={r}") for r in input.records)


def record_dir(wildcards, output):
    return os.path.dirname(output.record)


def published(key):
    """backbones.<key>.published: the fetch-backbone params, or None for a backbone pretrained here."""
    return config["backbones"][key].get("published")


# Folder name → config key of every fetched backbone (the fetch_backbone rule's wildcard values).
PUBLISHED = {b["name"]: key for key, b in config["backbones"].items() if b.get("published") is not None}


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


def backbone_ledger(key):
    """The ledger record of the job that makes backbones.<key>: fetched or pretrained."""
    name = config["backbones"][key]["name"]
    job = "fetch_backbone" if published(key) is not None else f"pretrain_{key}"
    return f"results/ledger/{job}/{name}.json"


def fetch_params(wildcards):
    key = PUBLISHED[wildcards.backbone]
    # The VL families read `<vis_extra_id_k>` tokens for the visual positions (VL-T5's tokenizer).
    return as_json({**published(key), "vl_tokens": key in ("bart", "t5")})


def world_params():
    return as_json(config["world"])


def backbone_params(name):
    b = config["backbones"][name]
    return as_json({"arch": b["arch"], "train": b["train"], "batch_size": b["batch_size"]})


def family_backbone(wildcards):
    """The pretrained LM a VL-PET run of this family fine-tunes (backbones.<family>)."""
    return f"resources/backbones/{config['backbones'][wildcards.family]['name']}"


def finetune_params(wildcards):
    v = config["vlpet"]
    keys = ("batch_size", "task_weights", "dropout")
    return as_json({**{k: v[k] for k in keys}, "train": {**v["train"], "steps": int(wildcards.steps)},
                    "method_config": v["method_configs"].get(wildcards.method, {}), "visual": VISUAL_TOKENS})


def main_budget_first(wildcards):
    """Scheduling priority: a main-budget run is the DAG's longest job, so it starts first and the
    short runs fill the other cores around it."""
    return 1 if int(wildcards.steps) == config["vlpet"]["train"]["steps"] else 0


def vlpet_experiment(wildcards):
    """`vlpet-<family>` at the main budget; runs at another budget form their own experiment
    (`vlpet-<family>-<steps>steps`), so the report never compares runs of unequal length."""
    main = int(wildcards.steps) == config["vlpet"]["train"]["steps"]
    return f"vlpet-{wildcards.family}" + ("" if main else f"-{wildcards.steps}steps")


def evaluate_params(wildcards):
    v = config["vlpet"]
    short = int(wildcards.steps) != v["train"]["steps"]
    limit = {"max_examples": v["short"]["eval_examples"]} if short and v["short"]["eval_examples"] else {}
    return as_json({**config["evaluate"], "tasks": sorted(v["task_weights"]), **limit})


def vlpet_budgets():
    """(steps, methods) pairs: the main budget (vlpet.train.steps, vlpet.methods) and, when it lists
    methods, the short one (vlpet.short)."""
    v = config["vlpet"]
    budgets = [(v["train"]["steps"], v["methods"])]
    if v["short"]["methods"]:
        budgets.append((v["short"]["steps"], v["short"]["methods"]))
    return budgets


def vlpet_metrics():
    v = config["vlpet"]
    paths = [
        path
        for steps, methods in vlpet_budgets()
        for path in expand(
            "results/vlpet/{family}/{method}/steps{steps}/seed{seed}/metrics.json",
            family=v["families"],
            method=methods,
            steps=steps,
            seed=v["seeds"],
        )
        # an imported method (vlpet.init_from) is not fine-tuned for its family at the main budget
        if not (steps == v["train"]["steps"] and path.startswith(tuple(f"results/vlpet/{f}/{m}/" for f, m in vlpet_imports())))
    ]
    paths += [f"results/vlpet/{f}/{m}/imported/metrics.json" for f, m in vlpet_imports()]
    return list(dict.fromkeys(paths))  # a short budget equal to the main one adds nothing


# --- released checkpoints (vlpet.init_from, epalm.init_from; vltune import-checkpoint) -------------
def vlpet_imports():
    """(family, method) pairs of vlpet.init_from, sorted."""
    return sorted((f, m) for f, methods in config["vlpet"].get("init_from", {}).items() for m in methods)


def imported_vlpet_source(wildcards):
    return config["vlpet"]["init_from"][wildcards.family][wildcards.method]


def imported_vlpet_experiment(wildcards):
    return f"vlpet-{wildcards.family}-imported"


def import_vlpet_params(wildcards):
    return as_json({"method_config": config["vlpet"]["method_configs"].get(wildcards.method, {}),
                    "visual": VISUAL_TOKENS})


def imported_evaluate_params(wildcards):
    return as_json({**config["evaluate"], "tasks": sorted(config["vlpet"]["task_weights"])})


def epalm_imports():
    return (config.get("epalm") or {}).get("init_from", {})


def imported_epalm_source(wildcards):
    return epalm_imports()[wildcards.method][wildcards.task]


def import_epalm_params(wildcards):
    return as_json({"method_config": config["epalm"]["method_configs"].get(wildcards.method, {})})


def imported_epalm_checkpoints(wildcards):
    return [f"results/epalm/{wildcards.method}/imported/{t}/checkpoint" for t in epalm_imports()[wildcards.method]]


def imported_epalm_checkpoint_args(wildcards):
    """`task=dir` items of the imported checkpoints, each quoted."""
    return " ".join(shlex.quote(f"{t}={c}") for t, c in zip(epalm_imports()[wildcards.method],
                                                            imported_epalm_checkpoints(wildcards)))


# --- merging study (workflow/rules/merging.smk) -------------------------------------------------
PRETRAINED_INITS = ("seed", "specific", "agnostic")
BASED_MERGES = ("arithmetic", "ties", "dare")  # task-vector merges: the seed is their centre


def merging_inits():
    """Init names: the pretrained models as they are, and one per merge and ratio / λ
    (`interpolation-r0.5`, `arithmetic-l0.75`); RegMean is one init whose model depends on the task."""
    m = config["merging"]
    names = []
    for init in m["inits"]:
        if init == "interpolation":
            names += [f"interpolation-r{r}" for r in m["interpolation"]["ratios"]]
        elif init == "arithmetic":
            names += [f"arithmetic-l{x}" for x in m["arithmetic"]["lambdas"]]
        else:
            names.append(init)
    return list(dict.fromkeys(names))


def vlmo_pretrain_params(stage):
    """Params of a pretraining stage; the agnostic baseline gets the steps of seed + specific in all."""
    p = config["merging"]["pretrain"]
    train = dict(p["specific" if stage == "agnostic" else stage])
    if stage == "agnostic" and p["agnostic_from"] == "scratch":
        train["steps"] = p["seed"]["steps"] + p["specific"]["steps"]
    return as_json({"arch": config["merging"]["arch"], "train": train, "batch_size": p["batch_size"],
                    "mlm_prob": p["mlm_prob"]})


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
    if merge_method(wildcards) == "regmean":
        inputs["grams"] = f"results/merging/grams/{wildcards.merge.split('-', 1)[1]}.safetensors"
    return inputs


def merge_args(wildcards, input):
    """--base (task-vector merges), --grams (RegMean) and --param k=v, each value shell-quoted."""
    m = config["merging"]
    method, _, suffix = wildcards.merge.partition("-")
    params = {"interpolation": lambda: {"ratio": float(suffix[1:])}, "arithmetic": lambda: {"lambda": float(suffix[1:])},
              "regmean": lambda: m["regmean"], "ties": lambda: m["ties"], "dare": lambda: m["dare"]}.get(method, dict)()
    args = (["--base", input.seed] if method in BASED_MERGES else []) + (["--grams", input.grams] if method == "regmean" else [])
    if params:
        args += ["--param"] + [f"{k}={v}" for k, v in sorted(params.items())]
    return " ".join(shlex.quote(str(a)) for a in args)


def init_dir(init, task):
    if init in PRETRAINED_INITS:
        return f"results/merging/pretrain/{init}"
    return f"results/merging/merged/regmean-{task}" if init == "regmean" else f"results/merging/merged/{init}"


def finetune_vlmo_inputs(wildcards):
    return {"tables": expand(f"{DATA}/{{table}}.arrow", table=TABLES), "tokenizer": "resources/backbones/tokenizer",
            "inits": [init_dir(wildcards.init, t) for t in config["merging"]["tasks"]]}


def vlmo_finetune_params():
    f = config["merging"]["finetune"]
    return as_json({"train": f["train"], "batch_size": f["batch_size"],
                    "evaluate": {"split": config["evaluate"]["split"], "batch_size": config["evaluate"]["batch_size"]}})


def merging_metrics():
    return expand("results/merging/finetune/{init}/seed{seed}/metrics.json", init=merging_inits(),
                  seed=config["merging"]["seeds"])


def metrics_dir(wildcards, output):
    return os.path.dirname(output.metrics)


# --- eP-ALM (workflow/rules/epalm.smk) ---------------------------------------------------------
OPT = config["backbones"]["opt"]["name"]
VIT = config["backbones"]["vit"]["name"]
PERCEPTION = f"resources/features/{VIT}/{DATASET}"


def epalm_cached():
    """Cached perception unless the config asks for the encoder every step (augmentation needs it)."""
    e = config["epalm"]
    return e["perception"] == "cached" and not e["augment"]


def epalm_threads(wildcards=None):
    return config["epalm"]["threads"]


def vit_params(wildcards=None):
    b = config["backbones"]["vit"]
    return as_json({k: b[k] for k in ("arch", "train", "batch_size", "patch_loss_weight")})


def perception_params(wildcards=None):
    return as_json({**EXTRACTION, "normalize": config["epalm"]["normalize"]})


def epalm_inputs(wildcards):
    inputs = {"tables": expand(f"{DATA}/{{table}}.arrow", table=TABLES), "lm": f"resources/backbones/{OPT}",
              "encoder": f"resources/backbones/{VIT}"}
    if epalm_cached():
        inputs["perception"] = PERCEPTION
    return inputs


def perception_arg(wildcards):
    """`--perception <store>` when cached; nothing (the encoder runs) otherwise. Quoted here."""
    return f"--perception {shlex.quote(PERCEPTION)}" if epalm_cached() else ""


def epalm_train_params(wildcards):
    e = config["epalm"]
    keys = ("batch_size", "loss_weight", "dropout", "augment", "normalize")
    return as_json({**{k: e[k] for k in keys}, "train": e["train"],
                    "method_config": e["method_configs"].get(wildcards.method, {})})


def epalm_checkpoints(wildcards):
    return [f"results/epalm/{wildcards.method}/seed{wildcards.seed}/{t}/checkpoint" for t in config["epalm"]["tasks"]]


def epalm_checkpoint_args(wildcards):
    """`task=dir` items for evaluate-epalm, each quoted."""
    return " ".join(shlex.quote(f"{t}={c}") for t, c in zip(config["epalm"]["tasks"], epalm_checkpoints(wildcards)))


def epalm_evaluate_params(wildcards):
    return as_json({"split": config["evaluate"]["split"], **config["epalm"]["evaluate"]})


def epalm_ledgers():
    """Ledger records of the eP-ALM jobs `all` runs (the common ledger list asks for them)."""
    e = config.get("epalm")
    if not e or not (e["methods"] or epalm_imports()):
        return []
    runs = expand("{method}/seed{seed}", method=[m for m in e["methods"] if m not in epalm_imports()], seed=e["seeds"])
    imported = [(m, t) for m, tasks in sorted(epalm_imports().items()) for t in tasks]
    return [
        *([f"results/ledger/extract_perception/{VIT}/{DATASET}.json"] if epalm_cached() else []),
        *(f"results/ledger/finetune_epalm/{run}/{task}.json" for run in runs for task in e["tasks"]),
        *(f"results/ledger/evaluate_epalm/{run}.json" for run in runs),
        *(f"results/ledger/import_epalm/{m}/imported/{t}.json" for m, t in imported),
        *(f"results/ledger/evaluate_epalm/{m}/imported.json" for m in sorted(epalm_imports())),
    ]


def epalm_metrics():
    e = config.get("epalm")
    if not e or not (e["methods"] or epalm_imports()):
        return []
    trained = [m for m in e["methods"] if m not in epalm_imports()]  # an imported method is not trained
    return (expand("results/epalm/{method}/seed{seed}/metrics.json", method=trained, seed=e["seeds"])
            + expand("results/epalm/{method}/imported/metrics.json", method=sorted(epalm_imports())))


def report_inputs():
    return vlpet_metrics() + merging_metrics() + epalm_metrics() + [f"results/baselines/{DATASET}/metrics.json"]


def ledger_inputs():
    """The ledger record of every job `all` runs (results/ledger/<rule>/<its wildcards>.json)."""
    runs = [os.path.relpath(os.path.dirname(path), "results/vlpet") for path in vlpet_metrics()]
    merging = merging_ledgers()
    return [
        *data_ledgers(),
        *backbone_ledgers(merging),
        f"results/ledger/extract_features/{CLIP}/{DATASET}.json",
        f"results/ledger/baselines/{DATASET}.json",
        *(f"results/ledger/{rule}/{run}.json" for run in runs
          for rule in (("import_vlbart" if run.endswith("/imported") else "finetune_vlbart"), "evaluate_vlbart")),
        *merging,
        *epalm_ledgers(),
        *das_ledgers(),
    ]


def data_ledgers():
    if DATASET == "shapes":
        return [f"results/ledger/make_world/{DATASET}.json"]
    return [*(f"results/ledger/download/{s}.json" for s in config["download"]["sources"]),
            f"results/ledger/convert/{DATASET}.json"]


def backbone_ledgers(merging):
    """CLIP, the VL families' LMs (DAS fine-tunes backbones.bart whatever vlpet.families lists),
    eP-ALM's pair, the merging study's ViT start, and the tokenizer when a backbone pretrained
    here or the merging study needs it."""
    keys = ["clip", *config["vlpet"]["families"], *(["bart"] if any(f == "bart" for f, _ in das_runs()) else []),
            *(["opt", "vit"] if epalm_metrics() else []),
            *(["vit"] if merging and vlmo_image_init() else [])]
    keys = list(dict.fromkeys(keys))
    tokenizer = merging or any(published(key) is None for key in keys)
    return [*(["results/ledger/train_tokenizer/tokenizer.json"] if tokenizer else []),
            *(backbone_ledger(key) for key in keys)]


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
    grams = sorted(name.split("-", 1)[1] for name in merged if name.startswith("regmean-"))
    return [
        *(f"results/ledger/{stage}_pretrain/{stage}.json" for stage in sorted(stages)),
        *(f"results/ledger/collect_grams/{task}.json" for task in grams),
        *(f"results/ledger/merge_experts/{name}.json" for name in merged),
        *(f"results/ledger/finetune_vlmo/{init}/seed{seed}.json" for init in inits for seed in m["seeds"]),
    ]


def get_final_outputs():
    return [
        "results/report/summary.csv",
        "results/report/summary.md",
        "results/report/scores.png",
        "results/report/pareto.png",
        "results/report/merging.png",
        "results/report/ledger.csv",
        "results/report/rulegraph.svg",
    ] + das_report_outputs()


# Folder arguments derived from the declared files (not hard-coded prefixes: see `snakemake --lint`).
def tables_dir(wildcards, input):
    return os.path.dirname(input.tables[0])


def world_dir(wildcards, output):
    return os.path.dirname(output.info)


def report_dir(wildcards, output):
    return os.path.dirname(output.csv)


# --- DAS study (workflow/rules/das.smk) -------------------------------------------------------------
def das_config():
    return config.get("das") or {"tasks": []}


def _das_common():
    d = das_config()
    return {"batch_size": d["batch_size"], "dropout": d["dropout"], "method_config": d["method_config"],
            "visual": VISUAL_TOKENS}


def das_search_params(wildcards):
    d = das_config()
    search = dict(d["search"])
    train = {**d["train"], "steps": search.pop("steps")}
    return as_json({**_das_common(), "train": train, "search": search})


def das_finetune_params(wildcards):
    return as_json({**_das_common(), "train": das_config()["train"]})


def das_evaluate_params(wildcards):
    e = config["evaluate"]
    keys = ("split", "batch_size", "caption_beams", "caption_max_len", "answer_max_len")
    return as_json({**{k: e[k] for k in keys}, "latency": das_config()["latency"]})


def das_skip_file(wildcards):
    """k > 0 fine-tunes the blocks its search chose; k = 0 needs no search."""
    if int(wildcards.k) == 0:
        return {}
    return {"skip": f"results/das/{wildcards.family}/{wildcards.task}/k{wildcards.k}/seed{wildcards.seed}/skip.json"}


def das_skip_arg(wildcards, input):
    return f"--skip {shlex.quote(input.skip)}" if "skip" in input.keys() else ""


def das_runs():
    """(family, task) of every DAS experiment: das.tasks on VL-BART, das.vlmo.tasks on the VLMo."""
    d = das_config()
    return [("bart", t) for t in d.get("tasks", [])] + [("vlmo", t) for t in (d.get("vlmo") or {}).get("tasks", [])]


def das_backbone(family):
    """The frozen backbone DAS adapts: backbones.bart, or the merging study's pretrained VLMo."""
    if family == "vlmo":
        return f"results/merging/pretrain/{das_config()['vlmo']['backbone']}"
    return f"resources/backbones/{BART}"


def das_inputs(wildcards):
    """VL-BART reads CLIP features; the VLMo reads pixels (the tables) and the tokenizer."""
    backbone = {"backbone": das_backbone(wildcards.family)}
    if wildcards.family == "vlmo":
        return {**vlmo_data_inputs(), **backbone}
    return {"tables": expand(f"{DATA}/{{table}}.arrow", table=TABLES), "features": FEATURES, **backbone}


def das_input_args(wildcards, input):
    if wildcards.family == "vlmo":
        return f"--tokenizer {shlex.quote(input.tokenizer)}"
    return f"--features {shlex.quote(input.features)}"


def _das_files(name, searched_only=False):
    """``name`` in every DAS run folder (``searched_only``: the runs with a search, k > 0)."""
    d = das_config()
    return [f"results/das/{family}/{task}/k{k}/seed{seed}/{name}" for family, task in das_runs()
            for k in d.get("k", []) if k > 0 or not searched_only for seed in d.get("seeds", [])]


def das_metrics():
    return _das_files("metrics.json")


def das_skips():
    return _das_files("skip.json", searched_only=True)


def das_ledgers():
    """Ledger records of the DAS jobs: a search per k > 0, then fine-tuning and evaluation per k."""
    searched = [os.path.relpath(os.path.dirname(path), "results/das") for path in das_skips()]
    runs = [os.path.relpath(os.path.dirname(path), "results/das") for path in das_metrics()]
    return [
        *(f"results/ledger/das_search/{run}.json" for run in searched),
        *(f"results/ledger/{rule}/{run}.json" for run in runs for rule in ("das_finetune", "das_evaluate")),
    ]


def das_report_outputs():
    if not das_metrics():
        return []
    return [f"results/report/das/{name}" for name in ("das.csv", "das.md", "das_latency.png", "das_search.png")]
