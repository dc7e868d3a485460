# eP-ALM experiment: a frozen OPT and a frozen ViT, both pretrained unimodally on the world (the LM
# on its text, the ViT on its images' scene tags), joined only by a linear connection (+ a soft
# prompt) trained per task. The ViT's per-block [CLS] vectors are cached once (extract_perception);
# with epalm.perception: recomputed (or augment on), training runs the encoder every step instead.
import shlex

OPT = config["backbones"]["opt"]["name"]
VIT = config["backbones"]["vit"]["name"]
PERCEPTION = f"resources/features/{VIT}/{DATASET}"


wildcard_constraints:
    task="vqa|gqa|caption",


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
    return as_json({**config["features"], "normalize": config["epalm"]["normalize"]})


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


def epalm_metrics():
    e = config.get("epalm")
    if not e or not e["methods"]:
        return []
    return expand("results/epalm/{method}/seed{seed}/metrics.json", method=e["methods"], seed=e["seeds"])


rule pretrain_opt:
    input:
        tables=expand(f"{DATA}/{{table}}.arrow", table=TABLES),
        tokenizer="resources/backbones/tokenizer",
    output:
        directory(f"resources/backbones/{OPT}"),
    params:
        data=tables_dir,
        hp=backbone_params("opt"),
        resume=f"resume/pretrain_opt/{OPT}",
    log:
        f"logs/pretrain_opt/{OPT}.log",
    benchmark:
        f"benchmarks/pretrain_opt/{OPT}.tsv"
    threads: epalm_threads
    resources:
        mem_mb=config["resources"]["mem_mb"],
        runtime=config["resources"]["runtime"],
        gpu=1,
    conda:
        "../../envs/vltune.yaml"
    shell:
        "vltune --threads {threads} pretrain-opt --data {params.data:q} --tokenizer {input.tokenizer:q}"
        " --out {output:q} --params {params.hp:q} --resume-dir {params.resume:q} > {log} 2>&1"


# Unimodal: trained on image labels (the scene's tags) only, never on text.
rule pretrain_vit:
    input:
        tables=expand(f"{DATA}/{{table}}.arrow", table=TABLES),
    output:
        directory(f"resources/backbones/{VIT}"),
    params:
        data=tables_dir,
        hp=vit_params,
        resume=f"resume/pretrain_vit/{VIT}",
    log:
        f"logs/pretrain_vit/{VIT}.log",
    benchmark:
        f"benchmarks/pretrain_vit/{VIT}.tsv"
    threads: epalm_threads
    resources:
        mem_mb=config["resources"]["mem_mb"],
        runtime=config["resources"]["runtime"],
        gpu=1,
    conda:
        "../../envs/vltune.yaml"
    shell:
        "vltune --threads {threads} pretrain-vit --data {params.data:q} --out {output:q}"
        " --params {params.hp:q} --resume-dir {params.resume:q} > {log} 2>&1"


rule extract_perception:
    input:
        tables=[f"{DATA}/images.arrow"],
        encoder=f"resources/backbones/{VIT}",
    output:
        directory(PERCEPTION),
    params:
        data=tables_dir,
        hp=perception_params,
    log:
        f"logs/extract_perception/{VIT}/{DATASET}.log",
    benchmark:
        f"benchmarks/extract_perception/{VIT}/{DATASET}.tsv"
    threads: epalm_threads
    resources:
        mem_mb=config["resources"]["mem_mb"],
        runtime=config["resources"]["runtime"],
        gpu=1,
    conda:
        "../../envs/vltune.yaml"
    shell:
        "vltune --threads {threads} extract-perception --data {params.data:q} --encoder {input.encoder:q}"
        " --out {output:q} --params {params.hp:q} > {log} 2>&1"


# One run per task, as the reference's configs (ePALM_vqa / _caption / _gqa).
rule finetune_epalm:
    input:
        unpack(epalm_inputs),
    output:
        checkpoint=directory("results/epalm/{method}/seed{seed}/{task}/checkpoint"),
    params:
        data=tables_dir,
        hp=epalm_train_params,
        perception=perception_arg,
        resume="resume/finetune_epalm/{method}/seed{seed}/{task}",
    log:
        "logs/finetune_epalm/{method}/seed{seed}/{task}.log",
    benchmark:
        "benchmarks/finetune_epalm/{method}/seed{seed}/{task}.tsv"
    threads: epalm_threads
    resources:
        mem_mb=config["resources"]["mem_mb"],
        runtime=config["resources"]["runtime"],
        gpu=1,
    conda:
        "../../envs/vltune.yaml"
    shell:
        "vltune --threads {threads} finetune-epalm --data {params.data:q} --lm {input.lm:q} --encoder {input.encoder:q}"
        " {params.perception} --task {wildcards.task:q} --out {output.checkpoint:q} --method {wildcards.method:q}"
        " --seed {wildcards.seed:q} --params {params.hp:q} --resume-dir {params.resume:q} > {log} 2>&1"


rule evaluate_epalm:
    input:
        unpack(epalm_inputs),
        checkpoints=epalm_checkpoints,
    output:
        metrics="results/epalm/{method}/seed{seed}/metrics.json",
        predictions="results/epalm/{method}/seed{seed}/predictions.json",
    params:
        data=tables_dir,
        hp=epalm_evaluate_params,
        perception=perception_arg,
        checkpoints=epalm_checkpoint_args,
    log:
        "logs/evaluate_epalm/{method}/seed{seed}.log",
    benchmark:
        "benchmarks/evaluate_epalm/{method}/seed{seed}.tsv"
    threads: epalm_threads
    resources:
        mem_mb=config["resources"]["mem_mb"],
        runtime=config["resources"]["runtime"],
        gpu=1,
    conda:
        "../../envs/vltune.yaml"
    shell:
        "vltune --threads {threads} evaluate-epalm --checkpoints {params.checkpoints} --data {params.data:q}"
        " --lm {input.lm:q} --encoder {input.encoder:q} {params.perception} --experiment epalm"
        " --params {params.hp:q} --out {output.metrics:q} --predictions {output.predictions:q} > {log} 2>&1"
