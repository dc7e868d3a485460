# Helpers of report.smk (included at its top).


def report_metrics(wildcards):
    return [*vlpet_metrics(), *merging_metrics(), *epalm_metrics(), rules.baselines.output.metrics]


def ledgers(wildcards):
    """The ledger record of every job `all` runs, each from its rule's output (the DAS study's
    rules are included after this file, so this is read when the DAG is built)."""
    merging = merging_ledgers()
    return [*data_ledgers(), *backbone_ledgers(merging), rules.extract_features.output.ledger,
            rules.baselines.output.ledger, *vlpet_ledgers(), *merging, *epalm_ledgers(), *das_ledgers()]


def backbone_ledgers(merging):
    """CLIP, the VL families' LMs (DAS fine-tunes backbones.bart whatever vlpet.families lists),
    eP-ALM's pair, the merging study's ViT start, and the tokenizer when a backbone pretrained
    here or the merging study needs it."""
    keys = ["clip", *config["vlpet"]["families"], *(["bart"] if any(f == "bart" for f, _ in das_runs()) else []),
            *(["opt", "vit"] if epalm_metrics() else []),
            *(["vit"] if merging and vlmo_image_init() else [])]
    keys = list(dict.fromkeys(keys))
    tokenizer = merging or any(published(key) is None for key in keys)
    return [*([rules.train_tokenizer.output.ledger] if tokenizer else []), *(backbone_ledger(key) for key in keys)]


def report_dir(wildcards, output):
    return os.path.dirname(output.csv)
