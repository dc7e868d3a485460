# Backbones the pipeline pretrains itself on the world: tokenizer, tiny CLIP, tiny BART, tiny T5.


# Byte-level BPE on the train split's text, saved as a PreTrainedTokenizerFast.
rule train_tokenizer:
    input:
        tables=expand(f"{DATA}/{{table}}.arrow", table=TABLES),
    output:
        directory("resources/backbones/tokenizer"),
    params:
        data=tables_dir,
        tok=as_json(config["tokenizer"]),
    log:
        "logs/train_tokenizer/tokenizer.log",
    benchmark:
        "benchmarks/train_tokenizer/tokenizer.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../../envs/vltune.yaml"
    shell:
        "vltune train-tokenizer --data {params.data:q} --out {output:q} --params {params.tok:q} > {log} 2>&1"


# Tiny CLIP (image + text towers) trained with the contrastive loss on image–caption pairs.
rule pretrain_clip:
    input:
        tables=expand(f"{DATA}/{{table}}.arrow", table=TABLES),
        tokenizer="resources/backbones/tokenizer",
    output:
        directory(f"resources/backbones/{CLIP}"),
    params:
        data=tables_dir,
        hp=backbone_params("clip"),
        resume=f"resume/pretrain_clip/{CLIP}",
    log:
        f"logs/pretrain_clip/{CLIP}.log",
    benchmark:
        f"benchmarks/pretrain_clip/{CLIP}.tsv"
    threads: config["resources"]["threads"]
    resources:
        mem_mb=config["resources"]["mem_mb"],
        runtime=config["resources"]["runtime"],
        gpu=1,
    conda:
        "../../envs/vltune.yaml"
    shell:
        "vltune --threads {threads} pretrain-clip --data {params.data:q} --tokenizer {input.tokenizer:q}"
        " --out {output:q} --params {params.hp:q} --resume-dir {params.resume:q} > {log} 2>&1"


# Tiny BART pretrained as a denoising LM (text infilling) on the world's text.
rule pretrain_bart:
    input:
        tables=expand(f"{DATA}/{{table}}.arrow", table=TABLES),
        tokenizer="resources/backbones/tokenizer",
    output:
        directory(f"resources/backbones/{BART}"),
    params:
        data=tables_dir,
        hp=backbone_params("bart"),
        resume=f"resume/pretrain_bart/{BART}",
    log:
        f"logs/pretrain_bart/{BART}.log",
    benchmark:
        f"benchmarks/pretrain_bart/{BART}.tsv"
    threads: config["resources"]["threads"]
    resources:
        mem_mb=config["resources"]["mem_mb"],
        runtime=config["resources"]["runtime"],
        gpu=1,
    conda:
        "../../envs/vltune.yaml"
    shell:
        "vltune --threads {threads} pretrain-bart --data {params.data:q} --tokenizer {input.tokenizer:q}"
        " --out {output:q} --params {params.hp:q} --resume-dir {params.resume:q} > {log} 2>&1"


# Tiny T5 pretrained as a span-corruption denoiser (unique sentinels) on the world's text.
rule pretrain_t5:
    input:
        tables=expand(f"{DATA}/{{table}}.arrow", table=TABLES),
        tokenizer="resources/backbones/tokenizer",
    output:
        directory(f"resources/backbones/{T5}"),
    params:
        data=tables_dir,
        hp=backbone_params("t5"),
        resume=f"resume/pretrain_t5/{T5}",
    log:
        f"logs/pretrain_t5/{T5}.log",
    benchmark:
        f"benchmarks/pretrain_t5/{T5}.tsv"
    threads: config["resources"]["threads"]
    resources:
        mem_mb=config["resources"]["mem_mb"],
        runtime=config["resources"]["runtime"],
        gpu=1,
    conda:
        "../../envs/vltune.yaml"
    shell:
        "vltune --threads {threads} pretrain-t5 --data {params.data:q} --tokenizer {input.tokenizer:q}"
        " --out {output:q} --params {params.hp:q} --resume-dir {params.resume:q} > {log} 2>&1"
