# DAS study (DAS, arXiv 2309.01479): per backbone family and task, das_search writes skip.json (k blocks to
# skip + the search trace); das_finetune reads it, builds the skipped model and fine-tunes it;
# das_evaluate measures accuracy, latency and FLOPs. k = 0 skips nothing and needs no search.
# family bart: VL-BART's encoder on CLIP features (backbones.bart); family vlmo: the merging study's
# modality-agnostic VLMo on pixels (das.vlmo.backbone), the paper's single-stream setting.


include: "helpers/das.smk"


rule das_search:
    input:
        unpack(das_inputs),
    output:
        skip="results/das/{family}/{task}/k{k}/seed{seed}/skip.json",
        ledger="results/ledger/das_search/{family}/{task}/k{k}/seed{seed}.json",
    wildcard_constraints:
        family="bart|vlmo",
    params:
        data=tables_dir,
        inputs=das_input_args,
        hp=das_search_params,
    log:
        "logs/das_search/{family}/{task}/k{k}/seed{seed}.log",
    benchmark:
        "benchmarks/das_search/{family}/{task}/k{k}/seed{seed}.tsv"
    threads: config["resources"]["threads"]
    resources:
        **gpu_job(),
    conda:
        "../../envs/vltune.yaml"
    shell:
        "vltune --threads {threads} --gpus {resources.gpu} --ledger {output.ledger:q} das-search --data {params.data:q} {params.inputs}"
        " --backbone {input.backbone:q} --family {wildcards.family:q} --task {wildcards.task:q} --k {wildcards.k:q}"
        " --seed {wildcards.seed:q} --params {params.hp:q} --out {output.skip:q} > {log} 2>&1"


rule das_finetune:
    input:
        unpack(das_skip_file),  # skip.json of the same task, k and seed; none for k = 0
        unpack(das_inputs),
    output:
        checkpoint=directory("results/das/{family}/{task}/k{k}/seed{seed}/checkpoint"),
        ledger="results/ledger/das_finetune/{family}/{task}/k{k}/seed{seed}.json",
    wildcard_constraints:
        family="bart|vlmo",
    params:
        data=tables_dir,
        inputs=das_input_args,
        hp=das_finetune_params,
        skip=das_skip_arg,
        # Resume state lives outside the declared outputs: Snakemake deletes those before a re-run.
        resume="resume/das_finetune/{family}/{task}/k{k}/seed{seed}",
    log:
        "logs/das_finetune/{family}/{task}/k{k}/seed{seed}.log",
    benchmark:
        "benchmarks/das_finetune/{family}/{task}/k{k}/seed{seed}.tsv"
    threads: config["resources"]["threads"]
    resources:
        **gpu_job(),
    conda:
        "../../envs/vltune.yaml"
    shell:
        "vltune --threads {threads} --gpus {resources.gpu} --ledger {output.ledger:q} das-finetune --data {params.data:q} {params.inputs}"
        " --backbone {input.backbone:q} --family {wildcards.family:q} --task {wildcards.task:q} {params.skip}"
        " --seed {wildcards.seed:q} --params {params.hp:q} --out {output.checkpoint:q}"
        " --resume-dir {params.resume:q} > {log} 2>&1"


rule das_evaluate:
    input:
        unpack(das_inputs),
        checkpoint="results/das/{family}/{task}/k{k}/seed{seed}/checkpoint",
    output:
        metrics=report(
            "results/das/{family}/{task}/k{k}/seed{seed}/metrics.json",
            caption="../report/das_metrics.rst",
            category=CATEGORY["das"],
            subcategory="{task}",
            labels={"k": "{k}", "seed": "{seed}"},
        ),
        ledger="results/ledger/das_evaluate/{family}/{task}/k{k}/seed{seed}.json",
    wildcard_constraints:
        family="bart|vlmo",
    params:
        data=tables_dir,
        inputs=das_input_args,
        hp=das_evaluate_params,
        experiment="das-{family}-{task}",
    log:
        "logs/das_evaluate/{family}/{task}/k{k}/seed{seed}.log",
    benchmark:
        "benchmarks/das_evaluate/{family}/{task}/k{k}/seed{seed}.tsv"
    threads: config["resources"]["threads"]
    resources:
        **gpu_job(),
    conda:
        "../../envs/vltune.yaml"
    shell:
        "vltune --threads {threads} --gpus {resources.gpu} --ledger {output.ledger:q} das-evaluate --checkpoint {input.checkpoint:q} --backbone {input.backbone:q}"
        " --data {params.data:q} {params.inputs} --task {wildcards.task:q}"
        " --experiment {params.experiment:q} --params {params.hp:q} --out {output.metrics:q} > {log} 2>&1"


rule das_report:
    input:
        metrics=das_metrics(),
        skips=per_run(rules.das_search.output.skip, das_jobs(searched_only=True)),
    output:
        csv=report("results/report/das/das.csv", caption="../report/das.rst", category=CATEGORY["das"],
                   labels={"table": "DAS runs (CSV)"}),
        md=report("results/report/das/das.md", caption="../report/das.rst", category=CATEGORY["das"],
                  labels={"table": "DAS (Markdown)"}),
        latency=report("results/report/das/das_latency.png", caption="../report/das_latency.rst", category=CATEGORY["das"],
                       labels={"figure": "accuracy vs latency"}),
        search=report("results/report/das/das_search.png", caption="../report/das_search.rst", category=CATEGORY["das"],
                      labels={"figure": "search logits"}),
    params:
        out_dir=report_dir,
    log:
        "logs/das_report/das_report.log",
    benchmark:
        "benchmarks/das_report/das_report.tsv"
    localrule: True
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    conda:
        "../../envs/vltune.yaml"
    shell:
        "vltune das-report --metrics {input.metrics:q} --skips {input.skips:q} --out-dir {params.out_dir:q} > {log} 2>&1"
